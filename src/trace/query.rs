//! A search of the trace: the filter `srs-relay trace` builds, turned into SQL
//! conditions, and the rows it gives back (one per message and recipient).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::sql::{self, Dialect};

/// The statuses `--status` takes.
pub const STATUSES: &[&str] = &[
    "delivered",
    "deferred",
    "failed",
    "refused",
    "bounced",
    "expired",
    "held",
    "released",
    "deleted",
];

/// Most rows one search returns.
pub const MAX_LIMIT: u32 = 100_000;

/// What to look for; every field set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Envelope sender, as given or as rewritten; `*` wildcards.
    pub sender: Option<String>,
    /// Recipient, as given or after expansion; `*` wildcards.
    pub recipient: Option<String>,
    /// Part of the subject; `*` wildcards.
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub queue_id: Option<String>,
    /// One of [`STATUSES`].
    pub status: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: u32,
}

/// One message and recipient with its final status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Received (or refused), ms since the epoch.
    pub time: i64,
    pub queue_id: Option<String>,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub srs_sender: Option<String>,
    pub original_recipient: Option<String>,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub size: Option<u64>,
    /// delivered, deferred, failed, expired, refused, or queued (no attempt yet).
    pub status: String,
    /// A reversed bounce.
    pub bounce: bool,
    /// When the status was reached, ms since the epoch.
    pub status_time: i64,
    pub remote: Option<String>,
    pub reply: Option<String>,
    pub attempts: Option<u32>,
}

/// A parameter of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
}

impl Filter {
    /// The search as SQL for `dialect` and its parameters (numbered `$1`...).
    pub fn to_sql(&self, dialect: Dialect) -> (String, Vec<Param>) {
        let mut sql = sql::SEARCH_HEAD.to_owned();
        let mut params = Vec::new();
        let next = bind;
        let cond = |col: &str, op: &str, n: &str| condition(dialect, col, op, n);
        let either = |cols: &[&str], pattern: &str, params: &mut Vec<Param>| {
            let (op, value) = matcher(&pattern.to_ascii_lowercase(), false);
            let n = bind(Param::Text(value), params);
            let any: Vec<String> = cols.iter().map(|c| cond(c, op, &n)).collect();
            format!(" AND ({})", any.join(" OR "))
        };
        if let Some(s) = &self.sender {
            // `<>`: the null sender, stored as the empty address.
            let s = if s.trim() == "<>" { "" } else { s };
            sql += &either(&["r.sender", "r.srs_sender"], s, &mut params);
        }
        if let Some(r) = &self.recipient {
            sql += &either(&["r.recipient", "r.original_recipient"], r, &mut params);
        }
        if let Some(s) = &self.subject {
            let (op, value) = matcher(s, true);
            let n = next(Param::Text(value), &mut params);
            sql += &format!(" AND {}", cond("r.subject", op, &n));
        }
        if let Some(m) = &self.message_id {
            let id = strip_brackets(m).to_owned();
            sql += &format!(" AND r.message_id = {}", next(Param::Text(id), &mut params));
        }
        if let Some(q) = &self.queue_id {
            sql += &format!(
                " AND r.queue_id = {}",
                next(Param::Text(q.clone()), &mut params)
            );
        }
        match self.status.as_deref() {
            None => {}
            Some("bounced") => sql += " AND r.status = 'bounced'",
            // Both as the planners can estimate them (PostgreSQL's planner, taking the
            // final status for 0.5 % of rows, hashed the whole table for `delivered`).
            Some("refused") => {
                sql += sql::REFUSED;
                if !self.by_index() {
                    sql += sql::REFUSED_BY_OUTCOME;
                }
            }
            Some(s) if sql::DELIVERY_KINDS.contains(&s) => {
                let n = next(Param::Text(s.to_owned()), &mut params);
                sql += &format!(" AND f.kind = {n}");
                // A rare status is found from its events, unless an index on an address
                // or id finds the few rows anyway (the planner might not choose it then).
                let rare = sql::RARE_OUTCOMES.iter().find(|k| **k == s);
                if let Some(kind) = rare
                    && !self.by_index()
                {
                    let since = self.since.map(|t| {
                        let t = t.saturating_sub(sql::CLOCK_SLACK_MS);
                        next(Param::Int(t), &mut params)
                    });
                    sql += &sql::by_outcome(kind, since.as_deref());
                }
            }
            Some(s) => {
                let n = next(Param::Text(s.to_owned()), &mut params);
                sql += &format!(" AND {} = {n}", sql::FINAL_STATUS);
            }
        }
        if let Some(t) = self.since {
            sql += &format!(" AND r.time >= {}", next(Param::Int(t), &mut params));
        }
        if let Some(t) = self.until {
            sql += &format!(" AND r.time <= {}", next(Param::Int(t), &mut params));
        }
        let limit = next(
            Param::Int(i64::from(self.limit.min(MAX_LIMIT))),
            &mut params,
        );
        sql += sql::SEARCH_TAIL;
        sql += &limit;
        (sql, params)
    }

    /// Whether an index finds the rows: an address without wildcards, a Message-ID or a
    /// queue id.
    fn by_index(&self) -> bool {
        let exact = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.contains('*'));
        exact(&self.sender)
            || exact(&self.recipient)
            || self.message_id.is_some()
            || self.queue_id.is_some()
    }
}

/// `col op $n`; LIKE case-insensitive in both dialects, with the same escape character.
fn condition(dialect: Dialect, col: &str, op: &str, n: &str) -> String {
    if op == "LIKE" {
        format!("{col} {} {n} ESCAPE '\\'", dialect.like())
    } else {
        format!("{col} {op} {n}")
    }
}

/// Adds a parameter; returns its placeholder.
fn bind(p: Param, params: &mut Vec<Param>) -> String {
    params.push(p);
    format!("${}", params.len())
}

/// `=` for a plain value, `LIKE` (with `\` escaping) for one with `*` wildcards or a
/// `contains` search.
fn matcher(pattern: &str, contains: bool) -> (&'static str, String) {
    if !pattern.contains('*') && !contains {
        return ("=", pattern.to_owned());
    }
    let mut like = String::new();
    if contains {
        like.push('%');
    }
    for c in pattern.chars() {
        match c {
            '*' => like.push('%'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    if contains {
        like.push('%');
    }
    ("LIKE", like)
}

/// A Message-ID without its angle brackets.
pub fn strip_brackets(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .unwrap_or(id)
}

/// `--since` / `--until`: RFC 3339 (`2026-12-01T10:00:00Z`) or a time ago (`2h`, `3d`),
/// in ms since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let at = match humantime::parse_duration(text) {
        Ok(ago) => SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{text:?}: too long ago"))?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|e| {
            format!(
                "{text:?}: expected RFC 3339 (2026-12-01T10:00:00Z) or a time ago (2h, 3d): {e}"
            )
        })?,
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// ms since the epoch as UTC ISO 8601 (`2026-12-04T15:00:00Z`).
pub fn format_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_like_patterns() {
        assert_eq!(matcher("a@b.example", false), ("=", "a@b.example".into()));
        assert_eq!(
            matcher("*@b_c.example", false),
            ("LIKE", "%@b\\_c.example".into())
        );
        assert_eq!(matcher("50%", true), ("LIKE", "%50\\%%".into()));
    }

    #[test]
    fn rare_statuses_start_from_their_events_unless_an_index_finds_the_rows() {
        let sql = |status: &str, recipient: Option<&str>| {
            Filter {
                status: Some(status.into()),
                recipient: recipient.map(Into::into),
                since: Some(1_000_000_000),
                limit: 10,
                ..Filter::default()
            }
            .to_sql(Dialect::Sqlite)
        };
        let (text, params) = sql("deferred", None);
        assert!(text.contains("s.kind = 'deferred'"), "{text}");
        assert_eq!(
            params[1..3],
            [
                Param::Int(1_000_000_000 - sql::CLOCK_SLACK_MS),
                Param::Int(1_000_000_000)
            ]
        );
        assert!(
            sql("failed", Some("*@b.example"))
                .0
                .contains("trace_events s")
        );
        assert!(!sql("delivered", None).0.contains("trace_events s"));
        assert!(
            !sql("deferred", Some("a@b.example"))
                .0
                .contains("trace_events s")
        );
        assert!(sql("refused", None).0.contains(sql::REFUSED_BY_OUTCOME));
        assert!(
            !sql("refused", Some("a@b.example"))
                .0
                .contains(sql::REFUSED_BY_OUTCOME)
        );
    }

    #[test]
    fn times_parse_both_ways() {
        let now = parse_time("0s").unwrap();
        assert!((now - parse_time("2h").unwrap() - 7_200_000).abs() < 5_000);
        assert_eq!(parse_time("1970-01-01T00:00:10Z").unwrap(), 10_000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(10_000), "1970-01-01T00:00:10Z");
    }
}

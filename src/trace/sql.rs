//! Every SQL statement of the trace store, in one place. Parameters are written `$1`,
//! `$2`, ...: PostgreSQL reads them as numbers; SQLite as names, numbered in the order
//! they first appear, so every statement uses them in that order and both stores run
//! the same text. The two differences are in [`Dialect`].

/// Where SQLite and PostgreSQL differ, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The id column: in SQLite `INTEGER PRIMARY KEY` is the rowid, numbered on insert;
    /// PostgreSQL needs a sequence.
    fn id_column(self) -> &'static str {
        match self {
            Dialect::Sqlite => "id INTEGER PRIMARY KEY",
            Dialect::Postgres => "id BIGSERIAL PRIMARY KEY",
        }
    }

    /// Case-insensitive pattern match: SQLite's LIKE is, PostgreSQL's is not (ILIKE is).
    pub fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }
}

/// The schema: one table of events; indexes for the searches of `srs-relay trace`.
pub fn schema(dialect: Dialect) -> impl Iterator<Item = String> {
    std::iter::once(TABLE.replace("{id}", dialect.id_column()))
        .chain(INDEXES.iter().map(|s| (*s).to_owned()))
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS trace_events (
        {id},
        time BIGINT NOT NULL,
        kind TEXT NOT NULL,
        queue_id TEXT,
        message_id TEXT,
        sender TEXT,
        srs_sender TEXT,
        recipient TEXT,
        original_recipient TEXT,
        subject TEXT,
        remote TEXT,
        reply TEXT,
        tls TEXT,
        attempt BIGINT,
        size BIGINT,
        status TEXT,
        detail TEXT
    )";

/// The kinds of the events after a message's receipt that make its status, as an SQL list.
macro_rules! delivery_kinds {
    () => {
        "('delivered', 'deferred', 'failed', 'expired', 'held', 'released', 'deleted')"
    };
}

/// The kinds of [`OUTCOME_INDEX`], as an SQL list: delivery outcomes that are rare next to
/// `received` and `delivered`, and `refused`.
macro_rules! rare_kinds {
    () => {
        "('deferred', 'failed', 'expired', 'held', 'released', 'deleted', 'refused')"
    };
}

/// The events a search by a rare status starts from ([`by_outcome`], [`REFUSED_BY_OUTCOME`]):
/// partial, so it costs nothing to write for the received and delivered events (most of
/// them), and covers the columns [`by_outcome`] reads. Being partial also keeps SQLite,
/// which has no statistics, from using it for the `r.kind IN ('received', 'refused')` of
/// every search (a `kind` index would: a search of everything then sorted every row).
const OUTCOME_INDEX: &str = concat!(
    "CREATE INDEX IF NOT EXISTS trace_outcome ON trace_events \
    (kind, time, queue_id, recipient, id) WHERE kind IN ",
    rare_kinds!()
);

const INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS trace_time ON trace_events (time)",
    "CREATE INDEX IF NOT EXISTS trace_queue ON trace_events (queue_id, recipient)",
    "CREATE INDEX IF NOT EXISTS trace_message_id ON trace_events (message_id)",
    "CREATE INDEX IF NOT EXISTS trace_recipient ON trace_events (recipient, time)",
    "CREATE INDEX IF NOT EXISTS trace_original ON trace_events (original_recipient, time)",
    "CREATE INDEX IF NOT EXISTS trace_sender ON trace_events (sender, time)",
    "CREATE INDEX IF NOT EXISTS trace_srs_sender ON trace_events (srs_sender, time)",
    OUTCOME_INDEX,
];

pub const INSERT: &str = "INSERT INTO trace_events (time, kind, queue_id, message_id, \
    sender, srs_sender, recipient, original_recipient, subject, remote, reply, tls, attempt, \
    size, status, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
    $14, $15, $16)";

/// Columns of one event in [`INSERT`].
pub const INSERT_COLUMNS: usize = 16;

/// [`INSERT`] for `rows` events in one statement (`$1`..`$16` the first, and so on): one
/// round trip for many rows where each statement costs one (PostgreSQL).
pub fn insert_rows(rows: usize) -> String {
    let head = &INSERT[..INSERT.find("VALUES").expect("VALUES") + "VALUES ".len()];
    let mut out = String::with_capacity(head.len() + rows * INSERT_COLUMNS * 6);
    out.push_str(head);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..INSERT_COLUMNS {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * INSERT_COLUMNS + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// Events removed per [`PRUNE`] statement.
pub const PRUNE_STEP: i64 = 10_000;

/// Removes up to `$2` events older than `$1`: run until it removes none, so that a large
/// prune never holds the write lock for long.
pub const PRUNE: &str = "DELETE FROM trace_events WHERE id IN \
    (SELECT id FROM trace_events WHERE time < $1 LIMIT $2)";

/// The head of a search: one row per message and recipient (its received or refused
/// event) with the latest delivery event for it. The caller appends `AND` conditions on
/// `r.` and `f.` columns, then [`SEARCH_TAIL`].
pub const SEARCH_HEAD: &str = concat!(
    "SELECT r.time, r.kind, r.queue_id, r.message_id, r.sender, \
    r.srs_sender, r.original_recipient, r.recipient, r.subject, r.size, r.status, r.reply, \
    f.kind, f.time, f.remote, f.reply, f.attempt \
    FROM trace_events r \
    LEFT JOIN trace_events f ON f.id = (SELECT e.id FROM trace_events e \
        WHERE e.queue_id = r.queue_id AND e.recipient = r.recipient AND e.kind IN ",
    delivery_kinds!(),
    " ORDER BY e.id DESC LIMIT 1) \
    WHERE r.kind IN ('received', 'refused')"
);

/// The kinds of `delivery_kinds!`: a row's status is the latest of them, `f.kind`.
pub const DELIVERY_KINDS: &[&str] = &[
    "delivered",
    "deferred",
    "failed",
    "expired",
    "held",
    "released",
    "deleted",
];

/// The final status of a search row (`queued`: received, no delivery event yet).
pub const FINAL_STATUS: &str =
    "COALESCE(f.kind, CASE r.kind WHEN 'refused' THEN 'refused' ELSE 'queued' END)";

/// The delivery kinds [`by_outcome`] takes (those of [`OUTCOME_INDEX`]).
pub const RARE_OUTCOMES: &[&str] = &[
    "deferred", "failed", "expired", "held", "released", "deleted",
];

/// How much older than its message a delivery event may be (a clock set back between the
/// two): [`by_outcome`] looks this far before the search's start.
pub const CLOCK_SLACK_MS: i64 = 86_400_000;

/// A condition for a search by a rare final status `kind` (one of [`RARE_OUTCOMES`]): the
/// messages whose latest delivery event is of that kind, found from those events through
/// [`OUTCOME_INDEX`] instead of by working out the final status of every message in the
/// time range (one second per million messages when few match). Implied by
/// `f.kind = kind`, which the search keeps, so the rows are the same. `since`: the
/// parameter holding the search's start less [`CLOCK_SLACK_MS`], if it has one.
pub fn by_outcome(kind: &'static str, since: Option<&str>) -> String {
    let since = since
        .map(|n| format!(" AND s.time >= {n}"))
        .unwrap_or_default();
    format!(
        " AND r.id IN (SELECT r2.id FROM trace_events r2 \
        WHERE r2.kind IN ('received', 'refused') AND (r2.queue_id, r2.recipient) IN ( \
            SELECT s.queue_id, s.recipient FROM trace_events s \
            WHERE s.kind = '{kind}' AND s.kind IN {}{since} \
            AND NOT EXISTS (SELECT 1 FROM trace_events l \
                WHERE l.queue_id = s.queue_id AND l.recipient = s.recipient \
                AND l.id > s.id AND l.kind IN {})))",
        rare_kinds!(),
        delivery_kinds!()
    )
}

/// A search by the status `refused`: refused events without a delivery event.
pub const REFUSED: &str = " AND r.kind = 'refused' AND f.id IS NULL";

/// With [`REFUSED`] (implied by it), so that the search reads the refused events through
/// [`OUTCOME_INDEX`].
pub const REFUSED_BY_OUTCOME: &str = concat!(" AND r.kind IN ", rare_kinds!());

/// Appended with the number of the limit parameter.
pub const SEARCH_TAIL: &str = " ORDER BY r.time DESC, r.id DESC LIMIT ";

/// Every event of a message (`$1`, a queue id or a Message-ID) and of the messages
/// sharing its Message-ID, oldest first.
pub const SHOW: &str = "WITH ids AS ( \
        SELECT m.message_id FROM trace_events m \
        WHERE (m.queue_id = $1 OR m.message_id = $1) AND m.message_id IS NOT NULL \
    ), queues AS ( \
        SELECT $1 AS queue_id \
        UNION SELECT q.queue_id FROM trace_events q \
        WHERE q.message_id IN (SELECT message_id FROM ids) AND q.queue_id IS NOT NULL \
    ) \
    SELECT time, kind, queue_id, message_id, sender, srs_sender, recipient, \
        original_recipient, subject, remote, reply, tls, attempt, size, status, detail \
    FROM trace_events WHERE queue_id IN (SELECT queue_id FROM queues) \
    ORDER BY time, id";

/// Messages refused as mail loops between `$1` and `$2` (ms), newest first, at most `$3`:
/// one row per message (by its Message-ID, else its queue id: the envelopes one message
/// became, one per alias, share the Message-ID and the detail).
pub const LOOPS: &str = "SELECT COALESCE(message_id, queue_id), MAX(time), MAX(detail) \
    FROM trace_events \
    WHERE kind = 'refused' AND detail LIKE '%\"reason\":\"loop\"%' \
    AND time >= $1 AND time <= $2 \
    GROUP BY COALESCE(message_id, queue_id) ORDER BY MAX(time) DESC LIMIT $3";

/// What [`TraceStore::tally`](super::TraceStore::tally) counts by, besides the time
/// bucket and the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyKey {
    Nothing,
    /// The TLS description (inbound on `connection` events, outbound on delivery events).
    Tls,
    /// The address as given at RCPT (the alias, or the SRS address of a bounce); counts
    /// messages (distinct queue ids), not events.
    OriginalRecipient,
    /// The JSON detail (the reason of a refusal).
    Detail,
}

/// Events from `$2` to before `$3` (ms) of the given kinds, counted per time bucket of `$1`
/// ms, kind and `key`: rows of (bucket start, kind, key or NULL, count), oldest first.
pub fn tally(key: TallyKey, kinds: &[&str]) -> String {
    let column = match key {
        TallyKey::Nothing => None,
        TallyKey::Tls => Some("tls"),
        TallyKey::OriginalRecipient => Some("original_recipient"),
        TallyKey::Detail => Some("detail"),
    };
    let kinds = kinds
        .iter()
        .filter(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let (select, group) = match column {
        Some(c) => (c, ", 3"),
        None => ("NULL", ""),
    };
    let count = match key {
        TallyKey::OriginalRecipient => "COUNT(DISTINCT queue_id)",
        _ => "COUNT(*)",
    };
    format!(
        "SELECT (time / $1) * $1, kind, {select}, {count} FROM trace_events \
         WHERE time >= $2 AND time < $3 AND kind IN ({kinds}) GROUP BY 1, 2{group} ORDER BY 1"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kind_lists_agree() {
        let list = |kinds: &[&str]| {
            let quoted: Vec<String> = kinds.iter().map(|k| format!("'{k}'")).collect();
            format!("({})", quoted.join(", "))
        };
        assert_eq!(delivery_kinds!(), list(super::DELIVERY_KINDS));
        let mut rare = super::RARE_OUTCOMES.to_vec();
        rare.push("refused");
        assert_eq!(rare_kinds!(), list(&rare));
    }

    #[test]
    fn insert_rows_numbers_every_parameter() {
        let two = super::insert_rows(2);
        assert!(two.ends_with("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16), ($17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)"), "{two}");
        assert_eq!(super::insert_rows(1), super::INSERT);
    }
}

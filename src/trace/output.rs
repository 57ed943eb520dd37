//! How `srs-relay trace` prints: a table for a terminal, CSV (RFC 4180) or JSON for
//! programs, and `trace show`'s event list with advice on failures.

use std::fmt::Write;

use super::event::Event;
use super::explain::explain;
use super::loops::LoopHost;
use super::query::{Row, format_time};

/// The CSV columns, in order.
pub const CSV_HEADER: &[&str] = &[
    "time",
    "queue_id",
    "message_id",
    "sender",
    "srs_sender",
    "original_recipient",
    "recipient",
    "subject",
    "size",
    "status",
    "bounce",
    "status_time",
    "remote",
    "reply",
    "attempts",
];

fn fields(r: &Row) -> Vec<String> {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        format_time(r.time),
        s(&r.queue_id),
        s(&r.message_id),
        s(&r.sender),
        s(&r.srs_sender),
        s(&r.original_recipient),
        s(&r.recipient),
        s(&r.subject),
        r.size.map(|n| n.to_string()).unwrap_or_default(),
        r.status.clone(),
        r.bounce.to_string(),
        format_time(r.status_time),
        s(&r.remote),
        s(&r.reply),
        r.attempts.map(|n| n.to_string()).unwrap_or_default(),
    ]
}

/// RFC 4180: a header row, then one row per message and recipient; CRLF line ends.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let quoted: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        out.push_str(&quoted.join(","));
        out.push_str("\r\n");
    };
    let header: Vec<String> = CSV_HEADER.iter().map(|h| (*h).to_owned()).collect();
    line(&mut out, &header);
    for r in rows {
        line(&mut out, &fields(r));
    }
    out
}

fn csv_field(c: &str) -> String {
    if c.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

/// A JSON array of objects with the CSV's keys.
pub fn json(rows: &[Row]) -> String {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let map: serde_json::Map<String, serde_json::Value> = CSV_HEADER
                .iter()
                .zip(fields(r))
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v)))
                .collect();
            serde_json::Value::Object(map)
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default()
}

/// Columns cut to `width` characters, for a terminal.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(width.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// A table: time, queue id, status, sender, recipient (as given → delivered to), subject.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<20}  {:<16}  {:<9}  {:<30}  {:<50}  {}\n",
        "TIME (UTC)", "QUEUE ID", "STATUS", "SENDER", "RECIPIENT", "SUBJECT"
    );
    for r in rows {
        let given = r.original_recipient.as_deref().filter(|a| !a.is_empty());
        let rcpt = match (given, r.recipient.as_deref().filter(|a| !a.is_empty())) {
            (Some(o), Some(t)) if o != t => format!("{o} → {t}"),
            (o, t) => t.or(o).unwrap_or_default().to_owned(),
        };
        let status = if r.bounce {
            format!("{}*", r.status)
        } else {
            r.status.clone()
        };
        let sender = match r.sender.as_deref() {
            Some("") => "<>",
            Some(s) => s,
            None => "",
        };
        let _ = writeln!(
            out,
            "{:<20}  {:<16}  {:<9}  {:<30}  {:<50}  {}",
            format_time(r.time),
            r.queue_id.as_deref().unwrap_or("-"),
            status,
            cut(sender, 30),
            cut(&rcpt, 50),
            cut(r.subject.as_deref().unwrap_or(""), 40)
        );
    }
    if rows.iter().any(|r| r.bounce) {
        out.push_str(
            "* a bounce that came back to an SRS address, reversed to the original sender\n",
        );
    }
    out
}

/// `trace --loops` as a table: one host per line, most looping messages first.
pub fn loops_table(hosts: &[LoopHost], loops: usize) -> String {
    let mut out = format!("{loops} message(s) refused as mail loops (554 5.4.6)\n");
    if hosts.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<50}  {:>8}  {:>8}  LAST (UTC)",
        "HOST (Received: by)", "MESSAGES", "STAMPS"
    );
    for h in hosts {
        let _ = writeln!(
            out,
            "{:<50}  {:>8}  {:>8}  {}",
            cut(&h.host, 50),
            h.messages,
            h.stamps,
            format_time(h.last)
        );
    }
    out
}

/// `trace --loops --csv`: RFC 4180, a header row, one host per row.
pub fn loops_csv(hosts: &[LoopHost]) -> String {
    let mut out = String::from("host,messages,stamps,last\r\n");
    for h in hosts {
        let _ = write!(
            out,
            "{},{},{},{}\r\n",
            csv_field(&h.host),
            h.messages,
            h.stamps,
            format_time(h.last)
        );
    }
    out
}

/// `trace --loops --json`.
pub fn loops_json(hosts: &[LoopHost], loops: usize) -> String {
    let hosts: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "host": h.host,
                "messages": h.messages,
                "stamps": h.stamps,
                "last": format_time(h.last),
            })
        })
        .collect();
    serde_json::json!({ "loops": loops, "hosts": hosts }).to_string()
}

/// `trace show`: every event, one block each, with advice under failures.
pub fn events(list: &[Event]) -> String {
    let mut out = String::new();
    for e in list {
        let _ = writeln!(
            out,
            "{}  {:<15}  {}",
            format_time(e.time),
            e.kind.as_str(),
            e.queue_id.as_deref().unwrap_or("-")
        );
        let mut field = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                let _ = writeln!(out, "    {name:<19} {v}");
            }
        };
        field("message-id", &e.message_id);
        field("subject", &e.subject);
        field(
            "sender",
            &e.sender
                .as_ref()
                .map(|s| if s.is_empty() { "<>".into() } else { s.clone() }),
        );
        field("sent as", &e.srs_sender);
        field("recipient as given", &e.original_recipient);
        field("recipient", &e.recipient);
        field("remote", &e.remote);
        field("tls", &e.tls);
        field("attempt", &e.attempt.map(|a| a.to_string()));
        field("size", &e.size.map(|a| a.to_string()));
        field("reply", &e.reply);
        field("detail", &e.detail);
        if let Some(advice) = explain(e) {
            let _ = writeln!(out, "    what to do          {advice}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert!(csv(&[]).starts_with("time,queue_id,"));
    }
}

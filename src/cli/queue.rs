//! `srs-relay queue`: list, show and act on queued messages. Through the running
//! relay's control socket; with the relay stopped, on the spool directly (reading
//! without a lock; acting with the spool locked, as the relay would).

use std::fmt::Write;
use std::time::Duration;

use serde_json::json;
use srs_relay::config::Config;
use srs_relay::control::{self, ClientError, Reply, Request};
use srs_relay::delivery::DeliverySettings;
use srs_relay::delivery::control::{
    Action, ActionResult, EntryState, Outcome, QueueEntry, Select, apply,
};
use srs_relay::spool::{Envelope, RecipientState, Spool, SpoolReader};
use srs_relay::srs::unix_now;
use srs_relay::trace::format_time;

use crate::Failure;

/// How long the relay gets to answer (an action waits for its fsyncs).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Most header octets `queue show` prints.
const MAX_HEADERS: u64 = 64 * 1024;

/// `queue list`.
pub fn list(cfg: &Config, as_json: bool) -> Result<(), Failure> {
    let entries = entries(cfg)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
        return Ok(());
    }
    let now = unix_now();
    let mut out = String::new();
    for e in &entries {
        write_entry(&mut out, e, now);
    }
    let held = entries
        .iter()
        .filter(|e| e.state == EntryState::Held)
        .count();
    let _ = writeln!(out, "-- {} messages, {held} on hold", entries.len());
    print!("{out}");
    Ok(())
}

/// `queue show ID`: the envelope, the message's header and, where the trace is on, its
/// history.
pub fn show(cfg: &Config, id: &str, as_json: bool) -> Result<(), Failure> {
    let entry = entries(cfg)?
        .into_iter()
        .find(|e| e.envelope.id == id)
        .ok_or_else(|| Failure::Refused(format!("{id}: not in the queue")))?;
    let headers = SpoolReader::open(&cfg.resolve(&cfg.spool.dir))
        .and_then(|r| r.read_message_prefix(id, MAX_HEADERS))
        .map(|m| header_block(&m))
        .map_err(|e| Failure::Usage(format!("{id}: reading the message: {e}")))?;
    let history = if cfg.trace.enabled {
        let store = srs_relay::trace::open_for_reading(cfg).map_err(Failure::Usage)?;
        Some(
            store
                .show(id)
                .map_err(|e| Failure::Usage(format!("trace: {e}")))?,
        )
    } else {
        None
    };
    if as_json {
        let history = history.as_ref().map(|events| {
            events
                .iter()
                .map(|e| {
                    json!({"time": format_time(e.time), "kind": e.kind.as_str(),
                        "queue_id": e.queue_id, "recipient": e.recipient, "remote": e.remote,
                        "reply": e.reply, "tls": e.tls, "attempt": e.attempt, "detail": e.detail})
                })
                .collect::<Vec<_>>()
        });
        let out = json!({"entry": entry, "headers": headers, "history": history});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    let mut out = String::new();
    write_entry(&mut out, &entry, unix_now());
    let _ = writeln!(out, "\nheader:\n{}", headers.trim_end());
    match &history {
        Some(events) => {
            let _ = write!(
                out,
                "\nhistory:\n{}",
                srs_relay::trace::output::events(events)
            );
        }
        None => out.push_str("\nhistory: the message trace is off ([trace] enabled)\n"),
    }
    print!("{out}");
    Ok(())
}

/// `queue retry|hold|release|delete|bounce`: one line per message; exits 1 when any
/// message was not found or could not be changed.
pub fn act(cfg: &Config, action: Action, select: Select) -> Result<(), Failure> {
    let path = control::socket_path(&cfg.resolve(&cfg.spool.dir));
    let request = Request::Act {
        action,
        select: select.clone(),
    };
    let results = match control::request(&path, &request, TIMEOUT) {
        Ok(Reply::Act { results }) => results,
        Ok(Reply::Error { message }) => return Err(Failure::Usage(message)),
        Ok(_) => return Err(Failure::Usage("unexpected reply from the relay".into())),
        Err(ClientError::NotRunning) => act_on_spool(cfg, action, &select)?,
        Err(e) => return Err(Failure::Usage(e.to_string())),
    };
    let mut out = String::new();
    let mut bad = 0;
    for r in &results {
        let what = match &r.outcome {
            Outcome::Done => action.done().to_owned(),
            Outcome::AfterAttempt => format!(
                "being attempted now: {} when the attempt ends, unless it finishes the message",
                action.done()
            ),
            Outcome::NotFound => {
                bad += 1;
                "not in the queue".to_owned()
            }
            Outcome::Unchanged(why) => format!("unchanged: {why}"),
            Outcome::Failed(why) => {
                bad += 1;
                format!("failed: {why}")
            }
        };
        let _ = writeln!(out, "{}: {what}", r.id);
    }
    if results.is_empty() {
        out.push_str("no message matched\n");
    }
    print!("{out}");
    if bad > 0 {
        return Err(Failure::Refused(format!(
            "{bad} of {} messages not changed",
            results.len()
        )));
    }
    Ok(())
}

/// The queue from the running relay, else from the spool on disk.
fn entries(cfg: &Config) -> Result<Vec<QueueEntry>, Failure> {
    let dir = cfg.resolve(&cfg.spool.dir);
    match control::request(&control::socket_path(&dir), &Request::List, TIMEOUT) {
        Ok(Reply::List { entries }) => Ok(entries),
        Ok(Reply::Error { message }) => Err(Failure::Usage(message)),
        Ok(_) => Err(Failure::Usage("unexpected reply from the relay".into())),
        Err(ClientError::NotRunning) => {
            let envelopes = SpoolReader::open(&dir)
                .and_then(|r| r.envelopes())
                .map_err(|e| Failure::Usage(format!("spool.dir: {}: {e}", dir.display())))?;
            Ok(envelopes.into_iter().map(stored_entry).collect())
        }
        Err(e) => Err(Failure::Usage(e.to_string())),
    }
}

fn stored_entry(envelope: Envelope) -> QueueEntry {
    let state = if envelope.held_since.is_some() {
        EntryState::Held
    } else {
        EntryState::Waiting
    };
    QueueEntry { state, envelope }
}

/// The relay is stopped: lock the spool and apply `action` as the relay would. DSNs
/// (`bounce`) are spooled and go out when the relay starts.
fn act_on_spool(
    cfg: &Config,
    action: Action,
    select: &Select,
) -> Result<Vec<ActionResult>, Failure> {
    let dir = cfg.resolve(&cfg.spool.dir);
    let (spool, recovered) = Spool::open(&dir).map_err(|e| {
        Failure::Usage(format!(
            "spool.dir: {}: {e} (the relay does not answer on its control socket)",
            dir.display()
        ))
    })?;
    let spool = std::sync::Arc::new(spool);
    let mut settings = DeliverySettings::from_config(cfg)?;
    let tracer = srs_relay::trace::from_config(cfg)?;
    settings.tracer = tracer.clone();
    // Nothing delivers now: the DSNs wait in the spool for the relay.
    let (submit, _) = tokio::sync::mpsc::unbounded_channel();
    let dsn = srs_relay::bounce::DsnSettings::from_config(cfg)?;
    let on_failure = srs_relay::bounce::dsn_on_failure(
        spool.clone(),
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(dsn)),
        submit,
        tracer.clone(),
    );
    let mut by = format!("uid {} (relay stopped)", nix::unistd::geteuid());
    if let Ok(user) = std::env::var("SUDO_USER") {
        let _ = write!(by, ", sudo by {user}");
    }
    let mut results = Vec::new();
    let mut found = Vec::new();
    for env in recovered.envelopes {
        if env.is_done() || !select.matches(&env) {
            continue;
        }
        found.push(env.id.clone());
        let id = env.id.clone();
        let (_, outcome) = apply(&settings, &spool, &on_failure, action, env, unix_now(), &by);
        results.push(ActionResult { id, outcome });
    }
    if let Select::Ids(ids) = select {
        for id in ids {
            if !found.contains(id) {
                results.push(ActionResult {
                    id: id.clone(),
                    outcome: Outcome::NotFound,
                });
            }
        }
    }
    // The spool is the relay's again before the trace is waited for.
    drop(on_failure);
    drop(spool);
    tracer.settle(Duration::from_secs(2));
    Ok(results)
}

/// One message, `postqueue -p` style: id, state, age, attempts and next attempt; the
/// sender as received and as sent; each recipient with its state and last reply.
fn write_entry(out: &mut String, e: &QueueEntry, now: u64) {
    let env = &e.envelope;
    let state = match e.state {
        EntryState::Waiting => "waiting",
        EntryState::Active => "active",
        EntryState::Held => "held",
    };
    let next = match e.state {
        EntryState::Held => "never (on hold)".to_owned(),
        EntryState::Active => "now".to_owned(),
        EntryState::Waiting if env.next_attempt <= now => "due".to_owned(),
        EntryState::Waiting => format!("in {}", age(env.next_attempt - now)),
    };
    let _ = writeln!(
        out,
        "{}  {state}  arrived {} ({} ago)  {} bytes  attempts {}  next {next}",
        env.id,
        format_time(i64::try_from(env.arrival).unwrap_or(0).saturating_mul(1000)),
        age(now.saturating_sub(env.arrival)),
        env.size,
        env.attempts,
    );
    let sender = |s: &str| {
        if s.is_empty() {
            "<>".to_owned()
        } else {
            s.to_owned()
        }
    };
    let _ = writeln!(out, "    from     {}", sender(&env.original_sender));
    if env.sender != env.original_sender {
        let _ = writeln!(out, "    sent as  {}", sender(&env.sender));
    }
    for r in &env.recipients {
        let state = match r.state {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        };
        let _ = write!(out, "    to       {} [{state}]", r.address);
        if !r.original.eq_ignore_ascii_case(&r.address) {
            let _ = write!(out, " (for {})", r.original);
        }
        out.push('\n');
        if let Some(reply) = &r.last_error {
            let _ = write!(out, "             {reply}");
            if let Some(remote) = &r.remote {
                let _ = write!(out, " ({remote})");
            }
            out.push('\n');
        }
    }
}

/// `1d02h`, `3h05m`, `12m`, `40s`.
fn age(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60);
    match () {
        _ if d > 0 => format!("{d}d{h:02}h"),
        _ if h > 0 => format!("{h}h{m:02}m"),
        _ if m > 0 => format!("{m}m"),
        _ => format!("{secs}s"),
    }
}

/// The header of a message: up to its first empty line, or all of `message`.
fn header_block(message: &[u8]) -> String {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    String::from_utf8_lossy(&message[..end]).replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(super::age(40), "40s");
        assert_eq!(super::age(12 * 60 + 5), "12m");
        assert_eq!(super::age(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(super::age(86400 + 2 * 3600 + 59), "1d02h");
    }

    #[test]
    fn the_header_ends_at_the_first_empty_line() {
        assert_eq!(
            super::header_block(b"Subject: a\r\nFrom: b\r\n\r\nbody\r\n"),
            "Subject: a\nFrom: b\n"
        );
        assert_eq!(super::header_block(b"Subject: a\r\n"), "Subject: a\n");
    }
}

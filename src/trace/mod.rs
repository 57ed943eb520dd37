//! The message trace (issue 13): every event of every message — connection, received,
//! refused, bounce reversed, delivered / deferred / failed, DSN sent, expired — in a
//! store that `srs-relay trace` searches. Recording never makes the relay wait: see
//! [`Tracer`]. The spool, not the trace, is the durable record of a message.

mod encoded_words;
mod event;
mod explain;
mod headers;
pub mod loops;
pub mod output;
mod query;
mod sql;
mod store;
mod tracer;

#[cfg(test)]
mod tests;

use crate::config::{Config, ConfigError, duration};

pub use event::{Event, Kind, now_ms};
pub use explain::explain;
pub use headers::HeaderCapture;
pub use query::{Filter, MAX_LIMIT, Row, STATUSES, format_time, parse_time, strip_brackets};
pub use store::{SqliteStore, StoreError, TraceStore};
pub use tracer::{CHANNEL_CAPACITY, Opener, Tracer};

/// The tracer the configuration asks for: disabled, or writing to `trace.store`.
pub fn from_config(cfg: &Config) -> Result<Tracer, ConfigError> {
    if !cfg.trace.enabled {
        return Ok(Tracer::disabled());
    }
    let retention = duration("trace.retention", &cfg.trace.retention)?;
    let path = cfg.trace_path()?;
    tracing::info!(store = %path.display(), "message trace on");
    let open: Opener =
        Box::new(move || SqliteStore::open(&path).map(|s| Box::new(s) as Box<dyn TraceStore>));
    Ok(Tracer::start(open, retention))
}

/// The store `srs-relay trace` reads.
pub fn open_for_reading(cfg: &Config) -> Result<Box<dyn TraceStore>, String> {
    let path = cfg.trace_path().map_err(|e| e.to_string())?;
    Ok(Box::new(
        SqliteStore::open_read_only(&path).map_err(|e| e.to_string())?,
    ))
}

//! The message trace (issue 13): every event of every message — connection, received,
//! refused, bounce reversed, delivered / deferred / failed, DSN sent, expired — in a
//! store that `srs-relay trace` searches. Recording never makes the relay wait: see
//! [`Tracer`]. The spool, not the trace, is the durable record of a message.

mod columns;
mod encoded_words;
mod event;
mod explain;
mod headers;
pub mod loops;
pub mod output;
mod pg_url;
mod postgres;
mod query;
mod sql;
mod store;
mod tracer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::config::{Config, ConfigError, duration};

pub use event::{Event, Kind, now_ms};
pub use explain::explain;
pub use headers::HeaderCapture;
pub use pg_url::PostgresUrl;
pub use postgres::PostgresStore;
pub use query::{Filter, MAX_LIMIT, Row, STATUSES, format_time, parse_time, strip_brackets};
pub use sql::TallyKey;
pub use store::{SqliteStore, StoreError, Tally, TraceStore};
pub use tracer::{CHANNEL_CAPACITY, Opener, Tracer};

/// Where `trace.store` says the trace is.
#[derive(Debug, Clone)]
pub enum Store {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://`).
    Postgres(Box<PostgresUrl>),
}

impl Store {
    /// `trace.store` parsed and checked; errors name the key, never the password.
    pub fn from_config(cfg: &Config) -> Result<Store, ConfigError> {
        let store = cfg.trace.store.trim();
        if PostgresUrl::is_postgres(store) {
            return PostgresUrl::parse(store)
                .map(|url| Store::Postgres(Box::new(url)))
                .map_err(|e| ConfigError::key("trace.store", e));
        }
        cfg.trace_path().map(Store::Sqlite)
    }

    /// Opens it for the writer (creating the file or schema if missing).
    pub fn open(&self) -> Result<Box<dyn TraceStore>, StoreError> {
        Ok(match self {
            Store::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            Store::Postgres(url) => Box::new(PostgresStore::open(url)?),
        })
    }

    /// Opens it for `srs-relay trace`.
    pub fn open_read_only(&self) -> Result<Box<dyn TraceStore>, StoreError> {
        Ok(match self {
            Store::Sqlite(path) => Box::new(SqliteStore::open_read_only(path)?),
            Store::Postgres(url) => Box::new(PostgresStore::open_read_only(url)?),
        })
    }
}

/// A path, or a URL without its password.
impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Sqlite(path) => write!(f, "{}", path.display()),
            Store::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// The tracer the configuration asks for: disabled, or writing to `trace.store`.
pub fn from_config(cfg: &Config) -> Result<Tracer, ConfigError> {
    if !cfg.trace.enabled {
        return Ok(Tracer::disabled());
    }
    let retention = duration("trace.retention", &cfg.trace.retention)?;
    let store = Store::from_config(cfg)?;
    tracing::info!(store = %store, "message trace on");
    let open: Opener = Box::new(move || store.open());
    Ok(Tracer::start(open, retention))
}

/// The store `srs-relay trace` reads.
pub fn open_for_reading(cfg: &Config) -> Result<Box<dyn TraceStore>, String> {
    let store = Store::from_config(cfg).map_err(|e| e.to_string())?;
    store.open_read_only().map_err(|e| e.to_string())
}

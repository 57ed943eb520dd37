//! Where events are kept: the [`TraceStore`] trait (what the writer and the CLI need) and
//! its embedded SQLite implementation. The SQL itself is in `sql`, shared with the
//! PostgreSQL store (`postgres`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params_from_iter};

use super::columns;
use super::event::Event;
use super::query::{Filter, Param, Row};
use super::sql::{self, Dialect, TallyKey};

/// A store failure, as text (the writer logs it and counts what it dropped).
#[derive(Debug, thiserror::Error)]
#[error("trace store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// What a trace store does. Blocking: the writer runs it on a thread of its own.
pub trait TraceStore: Send {
    /// Adds `events`, all or none (one transaction).
    fn insert(&mut self, events: &[Event]) -> Result<(), StoreError>;
    /// Removes events older than `before` (ms since the epoch); returns how many.
    fn prune(&mut self, before: i64) -> Result<u64, StoreError>;
    /// One row per message and recipient matching `filter`, newest first.
    fn search(&self, filter: &Filter) -> Result<Vec<Row>, StoreError>;
    /// Every event of the message `id` (queue id or Message-ID) and of those sharing its
    /// Message-ID, oldest first.
    fn show(&self, id: &str) -> Result<Vec<Event>, StoreError>;
    /// The messages refused as mail loops in `[since, until]` (ms), newest first, at
    /// most `limit`: (time, detail) each.
    fn loop_refusals(
        &self,
        since: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Option<String>)>, StoreError>;
    /// Events of `kinds` in `[since, until)` (ms) counted per `bucket` ms, kind and `key`
    /// ([`TallyKey`]).
    fn tally(
        &self,
        since: i64,
        until: i64,
        bucket: i64,
        key: TallyKey,
        kinds: &[&str],
    ) -> Result<Vec<Tally>, StoreError>;
}

/// One count of [`TraceStore::tally`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Start of the time bucket, ms since the epoch.
    pub bucket: i64,
    pub kind: String,
    pub key: Option<String>,
    pub count: i64,
}

/// The embedded store: one SQLite file in WAL mode, so `srs-relay trace` reads it while
/// `serve` writes.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating it and its schema if missing) the file for writing.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        // Addresses and subjects: for the relay's user alone (SQLite gives its -wal and
        // -shm files the database file's mode).
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError(format!("{}: {e}", path.display()))),
            }
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        for statement in sql::schema(Dialect::Sqlite) {
            conn.execute(&statement, [])?;
        }
        Ok(SqliteStore { conn })
    }

    /// Opens an existing file for reading only (the CLI).
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.exists() {
            return Err(StoreError(format!(
                "{}: no trace yet (serve creates it)",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(SqliteStore { conn })
    }
}

impl TraceStore for SqliteStore {
    fn insert(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(sql::INSERT)?;
            for e in events {
                insert.execute(rusqlite::params![
                    e.time,
                    e.kind.as_str(),
                    e.queue_id,
                    e.message_id,
                    e.sender,
                    e.srs_sender,
                    e.recipient,
                    e.original_recipient,
                    e.subject,
                    e.remote,
                    e.reply,
                    e.tls,
                    e.attempt,
                    e.size.map(|s| s as i64),
                    e.status,
                    e.detail,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn prune(&mut self, before: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.conn.execute(sql::PRUNE, [before, sql::PRUNE_STEP])? as u64;
            total += n;
            if n < sql::PRUNE_STEP as u64 {
                return Ok(total);
            }
        }
    }

    fn search(&self, filter: &Filter) -> Result<Vec<Row>, StoreError> {
        let (text, params) = filter.to_sql(Dialect::Sqlite);
        let values = params.into_iter().map(|p| match p {
            Param::Text(t) => rusqlite::types::Value::Text(t),
            Param::Int(i) => rusqlite::types::Value::Integer(i),
        });
        let mut stmt = self.conn.prepare(&text)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut found = Vec::new();
        while let Some(r) = rows.next()? {
            found.push(columns::search_row(r)?);
        }
        Ok(found)
    }

    fn show(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let id = super::query::strip_brackets(id);
        let mut stmt = self.conn.prepare(sql::SHOW)?;
        let mut rows = stmt.query([id])?;
        let mut found = Vec::new();
        while let Some(r) = rows.next()? {
            found.push(columns::event(r)?);
        }
        Ok(found)
    }

    fn loop_refusals(
        &self,
        since: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare(sql::LOOPS)?;
        let rows = stmt.query_map(rusqlite::params![since, until, limit], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn tally(
        &self,
        since: i64,
        until: i64,
        bucket: i64,
        key: TallyKey,
        kinds: &[&str],
    ) -> Result<Vec<Tally>, StoreError> {
        let mut stmt = self.conn.prepare(&sql::tally(key, kinds))?;
        let mut rows = stmt.query(rusqlite::params![bucket.max(1), since, until])?;
        let mut found = Vec::new();
        while let Some(r) = rows.next()? {
            found.push(columns::tally(r)?);
        }
        Ok(found)
    }
}

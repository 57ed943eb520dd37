//! The shared trace store: one PostgreSQL database that several relays (behind one MX)
//! write and `srs-relay trace` reads. Same schema and statements as SQLite (`sql`, its
//! `Dialect` holds the differences); the URL and the connection are `pg_url`'s.

use std::sync::{Mutex, PoisonError};

use postgres::Client;
use postgres::types::ToSql;

use super::columns;
use super::event::Event;
use super::pg_url::{PostgresUrl, describe};
use super::query::{Filter, Param, Row, strip_brackets};
use super::sql::{self, Dialect, TallyKey};
use super::store::{StoreError, Tally, TraceStore};

/// Events per INSERT: one round trip each (16 parameters a row, far under the
/// protocol's 65,535).
const ROWS_PER_STATEMENT: usize = 200;

/// Serialises schema creation between relays that start at once (any fixed key).
const SCHEMA_LOCK: i64 = 0x7372_735f_7472_6163;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError(describe(&e))
    }
}

/// The PostgreSQL store. The writer thread (or the CLI) owns it and its connection.
pub struct PostgresStore {
    client: Mutex<Client>,
}

impl PostgresStore {
    /// Connects and creates the schema if missing (under a lock: relays may start at once).
    pub fn open(url: &PostgresUrl) -> Result<PostgresStore, StoreError> {
        let mut client = url.connect()?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        for statement in sql::schema(Dialect::Postgres) {
            tx.batch_execute(&statement)?;
        }
        tx.commit()?;
        Ok(PostgresStore {
            client: Mutex::new(client),
        })
    }

    /// Connects for reading only (the CLI); the schema must be there.
    pub fn open_read_only(url: &PostgresUrl) -> Result<PostgresStore, StoreError> {
        let mut client = url.connect()?;
        client.batch_execute("SET default_transaction_read_only = on")?;
        let exists: bool = client
            .query_one("SELECT to_regclass('trace_events') IS NOT NULL", &[])?
            .get(0);
        if !exists {
            return Err(StoreError(format!(
                "{url}: no trace yet (serve creates it)"
            )));
        }
        Ok(PostgresStore {
            client: Mutex::new(client),
        })
    }

    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TraceStore for PostgresStore {
    /// `ROWS_PER_STATEMENT` events per statement, all in one transaction.
    fn insert(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        // Prepared once per transaction, and only when a full chunk needs it.
        let full = if events.len() >= ROWS_PER_STATEMENT {
            Some(tx.prepare(&sql::insert_rows(ROWS_PER_STATEMENT))?)
        } else {
            None
        };
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            // The parameters that are not fields as they are.
            let owned: Vec<(&str, Option<i64>, Option<i64>)> = chunk
                .iter()
                .map(|e| {
                    (
                        e.kind.as_str(),
                        e.attempt.map(i64::from),
                        e.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                    )
                })
                .collect();
            let mut params: Vec<&(dyn ToSql + Sync)> =
                Vec::with_capacity(chunk.len() * sql::INSERT_COLUMNS);
            for (e, (kind, attempt, size)) in chunk.iter().zip(&owned) {
                params.extend_from_slice(&[
                    &e.time,
                    kind,
                    &e.queue_id,
                    &e.message_id,
                    &e.sender,
                    &e.srs_sender,
                    &e.recipient,
                    &e.original_recipient,
                    &e.subject,
                    &e.remote,
                    &e.reply,
                    &e.tls,
                    attempt,
                    size,
                    &e.status,
                    &e.detail,
                ]);
            }
            if let (Some(full), ROWS_PER_STATEMENT) = (&full, chunk.len()) {
                tx.execute(full, &params)?;
            } else {
                tx.execute(&sql::insert_rows(chunk.len()), &params)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// In steps of `sql::PRUNE_STEP` rows, each its own short transaction.
    fn prune(&mut self, before: i64) -> Result<u64, StoreError> {
        let mut client = self.client();
        let mut total = 0;
        loop {
            let n = client.execute(sql::PRUNE, &[&before, &sql::PRUNE_STEP])?;
            total += n;
            if n < sql::PRUNE_STEP as u64 {
                return Ok(total);
            }
        }
    }

    fn search(&self, filter: &Filter) -> Result<Vec<Row>, StoreError> {
        let (text, params) = filter.to_sql(Dialect::Postgres);
        let values: Vec<Box<dyn ToSql + Sync>> = params
            .into_iter()
            .map(|p| match p {
                Param::Text(t) => Box::new(t) as Box<dyn ToSql + Sync>,
                Param::Int(i) => Box::new(i),
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(AsRef::as_ref).collect();
        let rows = self.client().query(&text, &refs)?;
        rows.iter().map(columns::search_row).collect()
    }

    fn show(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let rows = self.client().query(sql::SHOW, &[&strip_brackets(id)])?;
        rows.iter().map(columns::event).collect()
    }

    fn loop_refusals(
        &self,
        since: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Option<String>)>, StoreError> {
        let rows = self
            .client()
            .query(sql::LOOPS, &[&since, &until, &i64::from(limit)])?;
        rows.iter()
            .map(|r| Ok((r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    fn tally(
        &self,
        since: i64,
        until: i64,
        bucket: i64,
        key: TallyKey,
        kinds: &[&str],
    ) -> Result<Vec<Tally>, StoreError> {
        let rows = self
            .client()
            .query(&sql::tally(key, kinds), &[&bucket.max(1), &since, &until])?;
        rows.iter().map(columns::tally).collect()
    }
}

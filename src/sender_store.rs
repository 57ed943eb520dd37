//! Where the stored SRS form (`bounces+SRS=<TOKEN><CHECK>=<TT>@domain`, see
//! [`crate::srs::Decoded`]) keeps the original senders: token → sender, each entry
//! expiring after `srs.max_age_days`, like the address that names it.
//!
//! Two backends behind one door, chosen by `srs.store`:
//!
//! * a path (the default, `srs-senders.redb` beside the configuration): an embedded redb
//!   database file. Every `put` is a durable commit (fsync) before the RCPT that needs it
//!   is answered, so a message accepted with a stored sender can bounce after a crash.
//!   redb locks the file: one relay per file.
//! * `redis://…`, `rediss://…` or `redis+unix://…`: a Redis server shared by several
//!   relays behind one MX, so a bounce may come back through any of them. Entries are
//!   `SET srs-relay:sender:<TOKEN> <sender> EX <max-age>`; Redis expires them itself.
//!   The promise is then Redis's own (`appendonly yes`, `appendfsync always` to match
//!   the embedded store).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, TableDefinition};

use crate::srs::{TOKEN_LEN, unix_now};

/// token (upper case) → (sender, expiry in Unix seconds).
const SENDERS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("senders");
const REDIS_PREFIX: &str = "srs-relay:sender:";
/// A store that does not answer within this is treated as down (RCPT gets a 4xx).
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("sender store {what}: {message}")]
pub struct StoreError {
    what: &'static str,
    message: String,
}

impl StoreError {
    fn new(what: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError {
            what,
            message: e.to_string(),
        }
    }
}

/// The store of original senders; cheap to clone.
#[derive(Clone)]
pub enum SenderStore {
    Embedded {
        db: Arc<redb::Database>,
        path: PathBuf,
    },
    Redis {
        conn: redis::aio::ConnectionManager,
        url: String,
    },
}

impl std::fmt::Debug for SenderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn is_redis_url(spec: &str) -> bool {
    ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|p| spec.starts_with(p))
}

impl SenderStore {
    /// Opens the store `spec` names: a Redis URL, else a database file path (relative
    /// paths from `base_dir`), created if missing.
    pub async fn open(spec: &str, base_dir: &Path) -> Result<SenderStore, StoreError> {
        if is_redis_url(spec) {
            let client = redis::Client::open(spec).map_err(|e| StoreError::new("url", e))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(2);
            let eager = tokio::time::timeout(
                REDIS_TIMEOUT * 2,
                redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()),
            )
            .await;
            let conn = match eager {
                Ok(Ok(conn)) => conn,
                // A wrong password, ACL or TLS setting is a configuration error: say so now.
                Ok(Err(e)) if !(e.is_io_error() || e.is_connection_refusal() || e.is_timeout()) => {
                    return Err(StoreError::new("connect", e));
                }
                // Redis down at start: the relay starts anyway, answers 451 where the store
                // is needed, and connects when Redis is back.
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(store = %redact(spec), error = %why,
                        "sender store unreachable; starting without it, retrying on use");
                    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| StoreError::new("connect", e))?
                }
            };
            return Ok(SenderStore::Redis {
                conn,
                url: redact(spec),
            });
        }
        let path = base_dir.join(spec);
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || -> Result<redb::Database, StoreError> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::new("open", e))?;
            }
            let db = redb::Database::create(&p)
                .map_err(|e| StoreError::new("open", format!("{}: {e}", p.display())))?;
            // Create the table so that readers never meet a missing one.
            let txn = db.begin_write().map_err(|e| StoreError::new("open", e))?;
            txn.open_table(SENDERS)
                .map_err(|e| StoreError::new("open", e))?;
            txn.commit().map_err(|e| StoreError::new("open", e))?;
            restrict_mode(&p);
            Ok(db)
        })
        .await
        .map_err(|e| StoreError::new("open", e))??;
        Ok(SenderStore::Embedded {
            db: Arc::new(db),
            path,
        })
    }

    /// For logs: the file, or the Redis URL without its password.
    pub fn describe(&self) -> String {
        match self {
            SenderStore::Embedded { path, .. } => format!("embedded {}", path.display()),
            SenderStore::Redis { url, .. } => format!("redis {url}"),
        }
    }

    /// Keeps `sender` under `token` for `ttl`, durably, before returning.
    pub async fn put(&self, token: &str, sender: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = token.to_ascii_uppercase();
        match self {
            SenderStore::Embedded { db, .. } => {
                let db = db.clone();
                let sender = sender.to_owned();
                let expires = unix_now().saturating_add(ttl.as_secs());
                tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                    let txn = db.begin_write().map_err(|e| StoreError::new("write", e))?;
                    {
                        let mut table = txn
                            .open_table(SENDERS)
                            .map_err(|e| StoreError::new("write", e))?;
                        table
                            .insert(key.as_str(), (sender.as_str(), expires))
                            .map_err(|e| StoreError::new("write", e))?;
                    }
                    txn.commit().map_err(|e| StoreError::new("write", e))
                })
                .await
                .map_err(|e| StoreError::new("write", e))?
            }
            SenderStore::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("SET")
                    .arg(format!("{REDIS_PREFIX}{key}"))
                    .arg(sender)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .to_owned();
                tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn))
                    .await
                    .map_err(|_| StoreError::new("write", "timed out"))?
                    .map_err(|e| StoreError::new("write", e))
            }
        }
    }

    /// The sender kept under `token`, if it is there and has not expired.
    pub async fn get(&self, token: &str) -> Result<Option<String>, StoreError> {
        if token.len() != TOKEN_LEN {
            return Ok(None);
        }
        let key = token.to_ascii_uppercase();
        match self {
            SenderStore::Embedded { db, .. } => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || -> Result<Option<String>, StoreError> {
                    let txn = db.begin_read().map_err(|e| StoreError::new("read", e))?;
                    let table = txn
                        .open_table(SENDERS)
                        .map_err(|e| StoreError::new("read", e))?;
                    let found = table
                        .get(key.as_str())
                        .map_err(|e| StoreError::new("read", e))?;
                    Ok(found.and_then(|v| {
                        let (sender, expires) = v.value();
                        (expires > unix_now()).then(|| sender.to_owned())
                    }))
                })
                .await
                .map_err(|e| StoreError::new("read", e))?
            }
            SenderStore::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("GET")
                    .arg(format!("{REDIS_PREFIX}{key}"))
                    .to_owned();
                tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Option<String>>(&mut conn))
                    .await
                    .map_err(|_| StoreError::new("read", "timed out"))?
                    .map_err(|e| StoreError::new("read", e))
            }
        }
    }

    /// Drops expired entries from the embedded store (Redis expires its own); returns how
    /// many went.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let SenderStore::Embedded { db, .. } = self else {
            return Ok(0);
        };
        let db = db.clone();
        tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
            let now = unix_now();
            let txn = db.begin_write().map_err(|e| StoreError::new("purge", e))?;
            let mut purged = 0;
            {
                let mut table = txn
                    .open_table(SENDERS)
                    .map_err(|e| StoreError::new("purge", e))?;
                table
                    .retain(|_, (_, expires)| {
                        let keep = expires > now;
                        purged += usize::from(!keep);
                        keep
                    })
                    .map_err(|e| StoreError::new("purge", e))?;
            }
            txn.commit().map_err(|e| StoreError::new("purge", e))?;
            Ok(purged)
        })
        .await
        .map_err(|e| StoreError::new("purge", e))?
    }
}

/// How long a stored sender is kept: as long as the address naming it is accepted
/// (`max_age_days`), plus a day for clocks and timestamp rounding.
pub fn entry_lifetime(max_age_days: u32) -> Duration {
    Duration::from_secs((u64::from(max_age_days) + 1) * 86_400)
}

/// A fresh token: 80 bits from the OS's CSPRNG, base32.
pub fn new_token() -> Result<String, StoreError> {
    let mut raw = [0u8; TOKEN_LEN * 5 / 8];
    getrandom::fill(&mut raw).map_err(|e| StoreError::new("token", e))?;
    Ok(data_encoding::BASE32_NOPAD.encode(&raw))
}

/// The original senders are personal data: owner-only, like the spool.
fn restrict_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// `redis://user:secret@host` → `redis://user:***@host`, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_tokens_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(crate::srs::is_token(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://u:pw@h/1"), "redis://u:***@h/1");
        assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }

    #[tokio::test]
    async fn embedded_round_trip_expiry_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SenderStore::open("senders.redb", dir.path()).await.unwrap();
        store
            .put(
                "abcdefghijklmnop",
                "bob@example.org",
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        store
            .put(
                "ABCDEFGHIJKLMNOQ",
                "gone@example.org",
                Duration::from_secs(0),
            )
            .await
            .unwrap();
        assert_eq!(
            store.get("ABCDEFGHIJKLMNOP").await.unwrap().as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(store.get("ABCDEFGHIJKLMNOQ").await.unwrap(), None);
        assert_eq!(store.get("ABCDEFGHIJKLMNOR").await.unwrap(), None);
        assert_eq!(store.purge_expired().await.unwrap(), 1);
        drop(store);
        let again = SenderStore::open("senders.redb", dir.path()).await.unwrap();
        assert_eq!(
            again.get("abcdefghijklmnop").await.unwrap().as_deref(),
            Some("bob@example.org")
        );
    }
}

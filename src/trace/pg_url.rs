//! A PostgreSQL trace store's URL (`postgres://` or `postgresql://`): parsed, checked,
//! and connected to. The password stays in here: logs and errors show the URL with it
//! replaced by `***`. TLS (rustls, ring) with `sslmode=require`, the server's
//! certificate checked against `sslrootcert`; otherwise plain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::store::StoreError;

/// Unless the URL sets `connect_timeout`: the writer must not wait long for a server
/// that is down (events are dropped meanwhile; it tries again 5 s later).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sent data unacknowledged this long, or a peer silent to keepalives, ends the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Any one statement, server side: an insert batch, a prune step, a search.
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = '60s'";

/// A `postgres://` or `postgresql://` URL, parsed and checked. Shown redacted.
#[derive(Clone)]
pub struct PostgresUrl {
    config: postgres::Config,
    /// For `sslmode=require`: trusts the certificates of `sslrootcert`.
    tls: Option<Arc<rustls::ClientConfig>>,
    shown: String,
    password: Option<String>,
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

impl PostgresUrl {
    /// True for a store string this module handles.
    pub fn is_postgres(store: &str) -> bool {
        store.starts_with("postgres://") || store.starts_with("postgresql://")
    }

    /// Parses `url`; the error is one line, with the password redacted.
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        let shown = redact(url);
        let fail = |e: String| format!("{shown}: {e}");
        let (url, tls) = take_tls(url).map_err(fail)?;
        let tls = tls.as_deref().map(tls_config).transpose().map_err(fail)?;
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| format!("{shown}: {}", describe(&e)))?;
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        if config.get_hosts().is_empty() {
            return Err(format!(
                "{shown}: no host (postgres://user@host:port/dbname)"
            ));
        }
        if config.get_dbname().is_none_or(str::is_empty) {
            return Err(format!(
                "{shown}: no database name (postgres://user@host:port/dbname)"
            ));
        }
        config.ssl_mode(if tls.is_some() {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("srs-relay");
        }
        Ok(PostgresUrl {
            config,
            tls,
            shown,
            password,
        })
    }

    pub(super) fn connect(&self) -> Result<Client, StoreError> {
        let failed = |e: postgres::Error| {
            let text = describe(&e);
            let text = match &self.password {
                Some(p) => scrub(&text, p),
                None => text,
            };
            StoreError(format!("{}: {text}", self.shown))
        };
        let connected = match &self.tls {
            Some(tls) => self
                .config
                .connect(MakeRustlsConnect::new(rustls::ClientConfig::clone(tls))),
            None => self.config.connect(NoTls),
        };
        let mut client = connected.map_err(failed)?;
        client.batch_execute(STATEMENT_TIMEOUT).map_err(failed)?;
        Ok(client)
    }
}

/// `url` without `sslmode` and `sslrootcert` (tokio-postgres knows neither
/// `verify-full` nor root files), and the root file if TLS is asked for.
fn take_tls(url: &str) -> Result<(String, Option<String>), String> {
    // As tokio-postgres reads it: the parameters follow the first '?' after the user info.
    let info_end = url.find('@').map_or(0, |i| i + 1);
    let Some(q) = url[info_end..].find('?').map(|i| i + info_end) else {
        return Ok((url.to_owned(), None));
    };
    let (mut tls, mut root, mut kept) = (false, None, Vec::new());
    for kv in url[q + 1..].split('&') {
        match kv.split_once('=') {
            Some(("sslmode", "disable")) => tls = false,
            Some(("sslmode", "require" | "verify-full")) => tls = true,
            Some(("sslmode", other)) => {
                return Err(format!(
                    "sslmode={other}: use disable (plain), or require (TLS, the server's \
                     certificate checked against sslrootcert, as verify-full)"
                ));
            }
            Some(("sslrootcert", path)) => root = Some(path.to_owned()),
            _ => kept.push(kv),
        }
    }
    let rest = match kept.is_empty() {
        true => url[..q].to_owned(),
        false => format!("{}?{}", &url[..q], kept.join("&")),
    };
    match (tls, root) {
        (true, None) => Err(
            "sslmode=require needs sslrootcert=FILE: the CA certificate(s) \
             that signed the server's, PEM (for a public CA, the system's bundle)"
                .into(),
        ),
        (false, Some(_)) => Err("sslrootcert is only for sslmode=require".into()),
        (_, root) => Ok((rest, root)),
    }
}

/// TLS trusting only the certificates in `root` (PEM, an absolute path).
fn tls_config(root: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = Path::new(root);
    if !path.is_absolute() {
        return Err(format!("sslrootcert={root}: give an absolute path"));
    }
    let bad = |e: &dyn std::fmt::Display| format!("sslrootcert={root}: {e}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `url` with the password (in the user info or a `password=` parameter) as `***`.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // The user info ends at the last '@' before the query, so that all of a password
    // holding an '@' is hidden (however tokio-postgres would have cut it).
    let authority_end = rest.find('?').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***{}", &rest[at..]),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    // Any `password=` left, wherever it stands (a query that an '@' cut in two, any case).
    let mut out = String::with_capacity(rest.len());
    let mut left = rest.as_str();
    while let Some(at) = left.to_ascii_lowercase().find("password=") {
        let value = at + "password=".len();
        out.push_str(&left[..value]);
        out.push_str("***");
        let end = left[value..].find('&').map_or(left.len(), |e| value + e);
        left = &left[end..];
    }
    out.push_str(left);
    format!("{scheme}://{out}")
}

/// `text` without any copy of `secret` (none expected: a guard). Too short a secret
/// would only garble the text.
fn scrub(text: &str, secret: &str) -> String {
    if secret.len() < 4 {
        text.to_owned()
    } else {
        text.replace(secret, "***")
    }
}

/// The error with its causes ("error connecting to server: Connection refused ..."):
/// postgres' own text stops at the first.
pub(super) fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        for (url, shown) in [
            (
                "postgres://trace:s3cret@db.example:5433/trace",
                "postgres://trace:***@db.example:5433/trace",
            ),
            (
                "postgresql://db.example/trace?user=t&password=s3cret&connect_timeout=3",
                "postgresql://db.example/trace?user=t&password=***&connect_timeout=3",
            ),
            (
                "postgres://t@db.example/trace",
                "postgres://t@db.example/trace",
            ),
        ] {
            let parsed = PostgresUrl::parse(url).unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("s3cret"));
        }
        for bad in [
            "postgres://t:s3cret@db.example:port/trace",
            "postgres://t:s3cret@db.example/trace?sslmode=require",
            "postgres://t:s3cret@db.example/trace?sslmode=prefer",
            "postgres://t:s3cret@db.example/trace?sslmode=require&sslrootcert=/nonexistent.pem",
            "postgres://t:s3cret@db.example/trace?sslmode=require&sslrootcert=ca.pem",
            "postgres://t:s3cret@db.example/trace?sslrootcert=/etc/ssl/certs/ca-certificates.crt",
            "postgres://t:s3cret@db.example/trace?sslmode=sometimes",
            "postgres://t:s3cret@db.example/trace?colour=blue",
            "postgres://t:s3cret@db.example",
            "postgres://t:s3cret@/trace",
        ] {
            let e = PostgresUrl::parse(bad).unwrap_err();
            assert!(!e.contains("s3cret") && !e.contains('\n'), "{bad}: {e}");
            assert!(e.contains("t:***@"), "{bad}: {e}");
        }
        // An '@' in the query (user=relay@server) or in the password itself: the
        // `password=` parameter and the rest of the password stay hidden all the same.
        for url in [
            "postgresql://db:5432/trace?user=relay@db&password=s3cret",
            "postgresql://db:5432/trace?user=relay@db&PassWord=s3cret&x=1",
            "postgres://u:p@s3cret@db.example/trace",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("s3cret"), "{url}: {shown}");
            if let Err(e) = PostgresUrl::parse(url) {
                assert!(!e.contains("s3cret"), "{url}: {e}");
            }
        }
    }

    #[test]
    fn a_server_that_is_not_there_fails_fast_without_the_password() {
        // A port nobody listens on (bound, then closed): refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url =
            PostgresUrl::parse(&format!("postgres://t:s3cret@127.0.0.1:{port}/trace")).unwrap();
        let started = std::time::Instant::now();
        let Err(e) = super::super::PostgresStore::open(&url) else {
            panic!("connected to nothing")
        };
        assert!(started.elapsed() < CONNECT_TIMEOUT * 2);
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}

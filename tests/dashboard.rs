//! The dashboard's login and API over real HTTP against the real `serve`: the password
//! from the credentials file it made (0600), a wrong one refused with 401 after a delay
//! and logged, the session cookie's attributes, CSRF on POSTs, the bearer for scripts,
//! the trace search and CSV of mail sent over SMTP, the queue and its actions.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

struct Dashboard {
    relay: Relay,
    receiver: Receiver,
    port: u16,
}

fn start() -> Dashboard {
    let receiver = Receiver::start();
    let port = free_port();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        &format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n[queue]\nretry_intervals = [\"1h\"]\n"),
    );
    Dashboard {
        relay,
        receiver,
        port,
    }
}

impl Dashboard {
    fn password(&self) -> String {
        let path = self.relay.dir.path().join("admin-credentials");
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    }

    fn bearer(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.password())
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = http(self.port, "GET", path, &self.bearer(), "");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Logs in with the password: the cookie header line and the CSRF token.
    fn login(&self) -> (String, String) {
        // Form encoding: base64's `+` and `/` escaped.
        let password = self.password().replace('+', "%2B").replace('/', "%2F");
        let form = format!("password={password}");
        let (status, head, _) = http(
            self.port,
            "POST",
            "/login",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            &form,
        );
        assert_eq!(status, 303, "{head}");
        let set_cookie = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap()
            .to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "not over TLS: {set_cookie}");
        let pair = set_cookie
            .split_once(':')
            .unwrap()
            .1
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let cookie = format!("Cookie: {pair}\r\n");
        let (_, _, body) = http(self.port, "GET", "/api/session", &cookie, "");
        let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap()["csrf"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(csrf.len(), 64);
        (cookie, csrf)
    }
}

fn send(relay: &Relay, to: &str, subject: &str) -> String {
    send_queued(relay, "bob@example.org", to, subject)
}

#[test]
fn everything_but_the_probes_needs_the_login() {
    let d = start();
    let mode = std::fs::metadata(d.relay.dir.path().join("admin-credentials"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(d.password().len(), 43, "256 bits, base64 without padding");

    for path in [
        "/",
        "/api/overview",
        "/api/trace?since=1d",
        "/api/queue",
        "/metrics",
        "/ui/app.js",
    ] {
        let (status, head, _) = http(d.port, "GET", path, "", "");
        assert!(
            status == 401 || (status == 303 && head.contains("location: /login")),
            "{path}: {head}"
        );
    }
    for path in ["/healthz", "/readyz", "/login", "/ui/style.css"] {
        assert_eq!(http(d.port, "GET", path, "", "").0, 200, "{path}");
    }
    // A wrong password: 401 after a delay, logged; a wrong bearer: 401.
    let t = Instant::now();
    let (status, _, body) = http(
        d.port,
        "POST",
        "/login",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "password=guess",
    );
    assert_eq!(status, 401);
    assert!(body.contains("Wrong password"));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(wait_until(Duration::from_secs(5), || d
        .relay
        .log()
        .contains("admin login refused: wrong password")));
    assert!(
        !d.relay.log().contains(&d.password()),
        "the password is never logged"
    );
    let (status, _, _) = http(
        d.port,
        "GET",
        "/api/queue",
        "Authorization: Bearer guess\r\n",
        "",
    );
    assert_eq!(status, 401);
    let (status, _, _) = http(
        d.port,
        "GET",
        "/api/queue",
        "Cookie: srs_relay_session=forged\r\n",
        "",
    );
    assert_eq!(status, 401);

    // The right one: a session; its POSTs need the CSRF token.
    let (cookie, csrf) = d.login();
    assert_eq!(http(d.port, "GET", "/", &cookie, "").0, 200);
    let (status, head, _) = http(d.port, "GET", "/", &cookie, "");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let json = "Content-Type: application/json\r\n";
    let body = r#"{"ids":["nosuchid"]}"#;
    let (status, _, _) = http(
        d.port,
        "POST",
        "/api/queue/hold",
        &format!("{cookie}{json}"),
        body,
    );
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, _) = http(
        d.port,
        "POST",
        "/api/queue/hold",
        &format!("{cookie}{json}X-CSRF-Token: {}\r\n", "0".repeat(64)),
        body,
    );
    assert_eq!(status, 403, "a wrong CSRF token");
    let (status, _, reply) = http(
        d.port,
        "POST",
        "/api/queue/hold",
        &format!("{cookie}{json}X-CSRF-Token: {csrf}\r\n"),
        body,
    );
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("not_found"), "{reply}");
    // Logged out: the cookie is worth nothing.
    let (status, _, _) = http(
        d.port,
        "POST",
        "/logout",
        &format!("{cookie}X-CSRF-Token: {csrf}\r\n"),
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(http(d.port, "GET", "/api/queue", &cookie, "").0, 401);
}

#[test]
fn the_api_finds_traced_mail_and_acts_on_the_queue() {
    let d = start();
    send(&d.relay, "john@forward.example", "api delivered");
    assert!(wait_until(Duration::from_secs(10), || d.receiver.count() == 1));

    let rows = || d.get_json("/api/trace?recipient=john@forward.example&since=1h");
    assert!(wait_until(Duration::from_secs(5), || rows()["rows"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["status"] == "delivered"))));
    let r = rows();
    let row = &r["rows"][0];
    assert_eq!(row["subject"], "api delivered");
    assert!(row["srs_sender"].as_str().unwrap().contains("+srs="));
    let id = row["queue_id"].as_str().unwrap().to_owned();

    let m = d.get_json(&format!("/api/message/{id}"));
    let kinds: Vec<&str> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"received") && kinds.contains(&"delivered"),
        "{kinds:?}"
    );

    // CSV: all rows, or the selected ones, with the columns of `trace --csv`.
    let (status, head, csv) = http(d.port, "GET", "/api/trace.csv?since=1h", &d.bearer(), "");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("text/csv"));
    assert!(csv.starts_with("time,queue_id,"), "{csv}");
    assert!(csv.contains(&id));
    let (_, _, none) = http(
        d.port,
        "GET",
        "/api/trace.csv?since=1h&rows=nothing/here",
        &d.bearer(),
        "",
    );
    assert_eq!(none.lines().count(), 1, "header only: {none}");
    let (status, _, bad) = http(d.port, "GET", "/api/trace?status=nonsense", &d.bearer(), "");
    assert_eq!(status, 400, "{bad}");

    // Reports: the alias's message, a bounce back to it (reversed), a forged one refused.
    let srs_address = row["srs_sender"].as_str().unwrap().to_owned();
    swaks_ok(&[
        "--server",
        &d.relay.addr(),
        "--from",
        "",
        "--to",
        &srs_address,
    ]);
    let forged = srs_address.replacen("+srs=", "+srs=x", 1);
    let o = swaks(&["--server", &d.relay.addr(), "--from", "", "--to", &forged]);
    assert!(!o.status.success());
    let reports = || d.get_json("/api/reports?days=1");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let r = reports();
            r["srs"]["reversed"][0] == 1
                && r["srs"]["refused"]["malformed"][0].as_i64().unwrap_or(0)
                    + r["srs"]["refused"]["forged"][0].as_i64().unwrap_or(0)
                    == 1
        }),
        "{}",
        reports()
    );
    let r = reports();
    let john = r["forwarding"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["alias"] == "john@forward.example")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(john["messages"], serde_json::json!([1]), "{r}");
    assert_eq!(john["bounces"], serde_json::json!([1]), "{r}");
    assert!(
        r["tls"]["inbound_connections"]["plaintext"][0].as_i64() >= Some(3),
        "{r}"
    );

    // Overview counts what went through.
    let o = d.get_json("/api/overview");
    assert!(o["last_hour"]["received"].as_i64() >= Some(1), "{o}");
    assert!(o["last_hour"]["delivered"].as_i64() >= Some(1), "{o}");
    assert_eq!(o["hours"].as_array().unwrap().len(), 24);

    // The queue: a hold by the API (bearer: no CSRF needed).
    let q = || d.get_json("/api/queue");
    let json = format!("{}Content-Type: application/json\r\n", d.bearer());
    d.receiver
        .script
        .lock()
        .unwrap()
        .rcpt
        .insert("home.example".into(), "451 4.3.0 later".into());
    let queued = send(&d.relay, "john@forward.example", "api queued");
    assert!(wait_until(Duration::from_secs(10), || {
        q()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == queued && e["attempts"].as_u64() >= Some(1))
    }));
    let (status, _, reply) = http(
        d.port,
        "POST",
        "/api/queue/hold",
        &json,
        &format!(r#"{{"ids":["{queued}"]}}"#),
    );
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#""outcome":"done""#), "{reply}");
    assert!(
        q()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == queued && e["state"] == "held")
    );
    assert_eq!(d.get_json("/api/overview")["queue"]["held"], 1);
    assert!(d.relay.log().contains("by=\"admin web 127.0.0.1\""));
    let (status, _, _) = http(
        d.port,
        "POST",
        "/api/queue/explode",
        &json,
        &format!(r#"{{"ids":["{queued}"]}}"#),
    );
    assert_eq!(status, 404);
}

#[test]
fn over_https_the_cookie_is_secure_and_plain_http_gets_nothing() {
    use std::io::{Read, Write};
    let certs = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args([
            "gen-cert",
            "--hostname",
            "relay.test",
            "--dir",
            certs.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let port = free_port();
    let relay = Relay::start_full(
        "",
        "",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\ntls = true\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            certs.path().join("cert.pem").display(),
            certs.path().join("key.pem").display()
        ),
    );
    let password = std::fs::read_to_string(relay.dir.path().join("admin-credentials"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .replace('+', "%2B")
        .replace('/', "%2F");
    let https = |request: &str| -> String {
        let config = tls_client_trusting_any(&[&rustls::version::TLS13, &rustls::version::TLS12]);
        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let body = format!("password={password}");
    let reply = https(&format!(
        "POST /login HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert!(reply.starts_with("HTTP/1.1 303"), "{reply}");
    let cookie = reply
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let health = https("GET /healthz HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Plain HTTP on the TLS port: no page, no answer in the clear.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{got:?}");
}

/// A client that opens admin connections and holds them gets 16; the 17th is closed at
/// once and logged; once it lets go, it is served again.
#[test]
fn one_client_cannot_hold_every_admin_connection() {
    use std::io::Read;
    let d = start();
    let addr = format!("127.0.0.1:{}", d.port);
    // `/healthz` on a connection of its own: served or not (closed, reset), no panic.
    let healthz = |mut c: std::net::TcpStream| -> bool {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut answer = String::new();
        std::io::Write::write_all(
            &mut c,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_ok()
            && c.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    };
    // 16 connections open at once, each then served: every place is free.
    let all_served = || {
        let open: Vec<std::net::TcpStream> = (0..16)
            .map(|_| std::net::TcpStream::connect(&addr).unwrap())
            .collect();
        open.into_iter().all(healthz)
    };
    assert!(all_served());
    // The server gives the places back as it sees them closed: all 16 again.
    assert!(wait_until(Duration::from_secs(5), all_served));
    let held: Vec<std::net::TcpStream> = (0..16)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let got = extra.read(&mut buf);
    assert!(
        matches!(got, Ok(0)) || got.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "the 17th connection is closed at once"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        d.relay.log().contains("connection refused: too many open")
    }));
    drop(held);
    let ok = wait_until(Duration::from_secs(5), all_served);
    assert!(
        ok,
        "all 16 places free again once the held connections are closed"
    );
}

//! The dashboard in a real browser: Debian's Chromium driven through chromedriver
//! (WebDriver) against the real `serve`. Logs in (a wrong password first), finds mail the
//! test sent over SMTP in the message trace, opens its details, exports CSV (all rows and
//! the selected one) and parses the files, holds and releases a queued message, sees the
//! queue alert banner, and leaves a screenshot of each page in
//! `target/dashboard-screenshots/`. The browser's console must stay free of errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free loopback port.
fn chromedriver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed by scripts/test.sh (chromium-driver)");
    let driver = Driver(child);
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "chromedriver did not listen"
    );
    (driver, port)
}

async fn browser(driver_port: u16, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
            },
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session")
}

/// What the page wrote to the console at level SEVERE since the last call.
async fn console_errors(c: &Client, driver_port: u16) -> Vec<String> {
    let id = c.session_id().await.unwrap().unwrap();
    let (status, _, body) = http(
        driver_port,
        "POST",
        &format!("/session/{id}/se/log"),
        "Content-Type: application/json\r\n",
        r#"{"type":"browser"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Clicks the element at `css`.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `text` into the element at `css`, once it is there.
async fn type_into(c: &Client, css: &str, text: &str) {
    wait_css(c, css).await.send_keys(text).await.unwrap();
}

/// Waits until the page's text at `css` satisfies `f`.
async fn wait_text(c: &Client, css: &str, f: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && f(&t)
        {
            return t;
        }
        assert!(Instant::now() < end, "{css}: never as expected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A file that appeared in `dir` and is whole (Chromium writes `.crdownload` first).
fn downloaded(dir: &Path, before: usize) -> PathBuf {
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let files: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            if files.len() > before {
                found = files
                    .into_iter()
                    .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
                true
            } else {
                false
            }
        }),
        "no CSV downloaded into {}",
        dir.display()
    );
    found.unwrap()
}

fn send(relay: &Relay, to: &str, subject: &str) -> String {
    send_queued(relay, "alice@example.org", to, subject)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium() {
    let receiver = Receiver::start();
    // b@home.example defers: those messages stay queued.
    receiver
        .script
        .lock()
        .unwrap()
        .rcpt
        .insert("b@home.example".into(), "451 4.3.0 mailbox busy".into());
    let admin = free_port();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[queue]\nretry_intervals = [\"1h\"]\n\
             [alerts]\nqueue_threshold = 2\ncheck_interval = \"1s\"\n"
        ),
    );
    let delivered = send(&relay, "john@forward.example", "Browser test delivered");
    let queued: Vec<String> = (0..3)
        .map(|i| {
            send(
                &relay,
                "team@forward.example",
                &format!("Browser test queued {i}"),
            )
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || receiver.count() >= 4));
    let password = std::fs::read_to_string(relay.dir.path().join("admin-credentials"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();

    let downloads = tempfile::tempdir().unwrap();
    let (_driver, driver_port) = chromedriver();
    let c = browser(driver_port, downloads.path()).await;
    let base = format!("http://127.0.0.1:{admin}");

    // Not logged in: the login page. A wrong password is refused.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    type_into(&c, "#password", "not the password").await;
    click(&c, "#login").await;
    wait_text(&c, ".error", |t| t.contains("Wrong password")).await;
    screenshot(&c, "login").await;
    // The refusal is the one console message (the 401 itself); the rest must be clean.
    let errors = console_errors(&c, driver_port).await;
    assert!(
        errors.len() == 1 && errors[0].contains("/login") && errors[0].contains("401"),
        "{errors:#?}"
    );
    type_into(&c, "#password", &password).await;
    click(&c, "#login").await;

    // Overview: counts, the queue and the alert banner (3 queued, alert at 2).
    wait_css(&c, "#queue-messages").await;
    wait_text(&c, "#alert", |t| t.contains("Queue alert")).await;
    let received = wait_text(&c, "#day-received .n", |t| {
        t.parse::<u32>().is_ok_and(|n| n >= 4)
    })
    .await;
    assert!(received.parse::<u32>().unwrap() >= 4);
    wait_css(&c, "#chart").await;
    screenshot(&c, "overview").await;

    // Message trace: the search is in the URL; the results come back sortable.
    c.goto(&format!(
        "{base}/#/trace?recipient=john%40forward.example&range=1h"
    ))
    .await
    .unwrap();
    let count = wait_text(&c, "#result-count", |t| t.starts_with("1 rows")).await;
    let took: u64 = count
        .split(" in ")
        .nth(1)
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!(took < 1000, "{count}");
    wait_text(&c, "#trace-table tbody", |t| {
        t.contains("Browser test delivered")
    })
    .await;
    assert_eq!(
        c.find(Locator::Css("#f-recipient"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("john@forward.example"),
        "the form shows the search from the URL"
    );
    // Details: every event, the SRS address, the next hop and its reply.
    click(&c, "#trace-table tbody tr.row").await;
    let details = wait_text(&c, "#message-details", |t| t.contains("delivered")).await;
    assert!(details.contains(&delivered), "{details}");
    assert!(details.contains("+srs="), "{details}");
    assert!(details.contains("250 2.0.0 queued"), "{details}");
    screenshot(&c, "trace").await;

    // CSV, all rows: the columns of `srs-relay trace --csv`.
    click(&c, "#export-all").await;
    let all = downloaded(downloads.path(), 0);
    let text = std::fs::read_to_string(&all).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("time,queue_id,message_id,sender,srs_sender"),
        "{header}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(rows[0].contains(&delivered) && rows[0].contains("delivered"));

    // All of the last hour, one row selected: only that one exported.
    c.goto(&format!("{base}/#/trace?range=1h")).await.unwrap();
    wait_text(&c, "#result-count", |t| t.starts_with("7 rows")).await;
    click(&c, "#trace-table tbody tr.row input[type=checkbox]").await;
    click(&c, "#export-selected").await;
    let selected = downloaded(downloads.path(), 1);
    let text = std::fs::read_to_string(&selected).unwrap();
    assert_eq!(
        text.lines().count(),
        2,
        "header and the selected row:\n{text}"
    );
    // Sorting by a column header.
    click(&c, "th[data-key=subject]").await;
    let first = wait_text(&c, "#trace-table tbody tr.row", |t| !t.is_empty()).await;
    assert!(
        first.contains("Browser test delivered"),
        "ascending by subject: {first}"
    );

    // Queue: hold one queued message, then release it.
    c.goto(&format!("{base}/#/queue")).await.unwrap();
    let id = &queued[0];
    let checkbox = format!("input[data-id='{id}']");
    wait_css(&c, &checkbox).await.click().await.unwrap();
    click(&c, "#queue-hold").await;
    c.accept_alert().await.unwrap();
    let row = format!("#queue-table tr[data-queue-id='{id}']");
    wait_text(&c, &row, |t| t.contains("held")).await;
    wait_text(&c, "#action-result", |t| t.contains(&format!("{id}: done"))).await;
    screenshot(&c, "queue").await;
    let out = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args([
            "queue",
            "list",
            "--json",
            "--config",
            relay.config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == *id && e["state"] == "held")
    );
    wait_css(&c, &checkbox).await.click().await.unwrap();
    click(&c, "#queue-release").await;
    c.accept_alert().await.unwrap();
    wait_text(&c, &row, |t| !t.contains("held")).await;
    assert!(relay.log().contains("by=\"admin web 127.0.0.1\""));

    // Reports: the aliases' messages, TLS of the inbound connections.
    c.goto(&format!("{base}/#/reports?days=10")).await.unwrap();
    let fwd = wait_text(&c, "#report-forwarding", |t| {
        t.contains("team@forward.example")
    })
    .await;
    assert!(fwd.contains("john@forward.example"), "{fwd}");
    wait_text(&c, "#report-tls-in", |t| t.contains("plaintext")).await;
    screenshot(&c, "reports").await;

    // Explain: an address this relay made, and one altered.
    let made = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args([
            "forward",
            "--config",
            relay.config.to_str().unwrap(),
            "--alias",
            "john@forward.example",
            "bob@example.org",
        ])
        .output()
        .unwrap();
    let made = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    c.goto(&format!("{base}/#/explain")).await.unwrap();
    type_into(&c, "#explain-address", &made).await;
    click(&c, "#explain").await;
    wait_text(&c, "#explain-verdict", |t| {
        t.contains("goes to bob@example.org")
    })
    .await;
    let text = wait_text(&c, "#explain-text", |t| {
        t.contains("verifies under secret 1 (line 1")
    })
    .await;
    assert!(!text.contains(SECRET), "no secret shown");
    screenshot(&c, "explain").await;
    let altered = made.replacen("+SRS=", "+SRS=A", 1);
    c.goto(&format!(
        "{base}/#/explain?address={}",
        altered.replace('+', "%2B")
    ))
    .await
    .unwrap();
    wait_text(&c, "#explain-verdict", |t| t.starts_with("Refused")).await;

    let errors = console_errors(&c, driver_port).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    c.close().await.unwrap();
}

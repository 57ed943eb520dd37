//! The `srs-relay` command line, run as a user would: exit codes, one-line errors, the
//! secrets file, the configuration file and environment overrides.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOW: &str = "1577836860"; // TT = 2W

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_srs-relay"))
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env_remove("SRS_RELAY__SRS__FORMAT")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .trim_end()
        .to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn secrets(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("secrets");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn forward_reverse_roundtrip_microsoft() {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(dir.path(), "tops3cr3t\n");
    let s = s.to_str().unwrap();
    let o = run(&[
        "forward",
        "--secrets-file",
        s,
        "--alias",
        "john@forward.example",
        "--now",
        NOW,
        "bob@example.org",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let srs = stdout(&o);
    assert!(
        srs.starts_with("john+SRS=") && srs.ends_with("=2W=example.org=bob@forward.example"),
        "{srs}"
    );
    let o = run(&["reverse", "--secrets-file", s, "--now", NOW, &srs]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "bob@example.org");
}

#[test]
fn forward_classic_matches_public_vector() {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(dir.path(), "# comment\n\ntops3cr3t\n");
    let o = run(&[
        "forward",
        "--secrets-file",
        s.to_str().unwrap(),
        "--format",
        "classic",
        "--domain",
        "example.com",
        "--now",
        NOW,
        "test@otherdomain.com",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "SRS0=vmyz=2W=otherdomain.com=test@example.com");
}

#[test]
fn reverse_failures_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(dir.path(), "tops3cr3t\n");
    let s = s.to_str().unwrap();
    for (addr, says) in [
        ("bob@example.org", "not an SRS address"),
        (
            "SRS0=vmyy=2W=otherdomain.com=test@example.com",
            "bad SRS hash",
        ),
        ("SRS0=te87=T7=otherdomain.com=test@example.com", "expired"),
        ("SRS0=vmyz=2W@example.com", "malformed"),
    ] {
        let o = run(&["reverse", "--secrets-file", s, "--now", NOW, addr]);
        assert_eq!(o.status.code(), Some(1), "{addr}");
        let err = stderr(&o);
        assert!(err.contains(says), "{addr}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn usage_and_config_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(dir.path(), "k\n");
    let s = s.to_str().unwrap();
    // No forwarding address anywhere.
    let o = run(&["forward", "--secrets-file", s, "bob@example.org"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1);
    // --alias and --domain together.
    let o = run(&[
        "forward",
        "--secrets-file",
        s,
        "--alias",
        "a@b.c",
        "--domain",
        "d.e",
        "bob@example.org",
    ]);
    assert_eq!(o.status.code(), Some(2));
    // Missing secrets file.
    let o = run(&["reverse", "--secrets-file", "/nonexistent/secrets", "x@y.z"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("srs.secrets_file"));
    // Empty secrets file.
    let empty = secrets(dir.path(), "# nothing\n\n");
    let o = run(&[
        "reverse",
        "--secrets-file",
        empty.to_str().unwrap(),
        "x@y.z",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds no secret"));
    // Missing config file.
    let o = run(&["check-config", "--config", "/nonexistent.toml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn secrets_never_come_from_argv() {
    // There is no option that takes a secret; clap refuses one.
    let o = run(&["reverse", "--secret", "tops3cr3t", "x@y.z"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn key_rotation_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = secrets(dir.path(), "old-secret\n");
    let o = run(&[
        "forward",
        "--secrets-file",
        old.to_str().unwrap(),
        "--alias",
        "j@f.example",
        "bob@example.org",
    ]);
    let made = stdout(&o);
    let both = dir.path().join("rotated");
    std::fs::write(&both, "new-secret\nold-secret\n").unwrap();
    let o = run(&["reverse", "--secrets-file", both.to_str().unwrap(), &made]);
    assert_eq!(stdout(&o), "bob@example.org", "{}", stderr(&o));
}

#[test]
fn keygen_prints_256_bit_secrets() {
    let a = stdout(&run(&["keygen"]));
    let b = stdout(&run(&["keygen"]));
    assert_ne!(a, b);
    let bytes = data_encoding::BASE64_NOPAD.decode(a.as_bytes()).unwrap();
    assert!(bytes.len() >= 32, "{a}");
    assert!(!a.contains(char::is_whitespace) && !a.starts_with('#'));
}

#[test]
fn check_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    for (text, key) in [
        ("[srs]\nformat = \"weird\"\n", "srs.format"),
        (
            "[srs]\nmicrosoft_hash_length = 4\n",
            "srs.microsoft_hash_length",
        ),
        ("[srs]\nmax_age_days = \"x\"\n", "srs.max_age_days"),
        ("[srs]\nunknown_key = 1\n", "unknown_key"),
        (
            "[queue]\nconnection_cache_time = \"soon\"\n",
            "queue.connection_cache_time",
        ),
        (
            "[queue]\nconnection_reuse_time = \"5 parsecs\"\n",
            "queue.connection_reuse_time",
        ),
        (
            "[server]\nrefused_rcpts_window = \"soon\"\n",
            "server.refused_rcpts_window",
        ),
        ("[srs]\nbounce_senders = \"all\"\n", "srs.bounce_senders"),
        ("[trace]\nretention = \"forever\"\n", "trace.retention"),
        ("[trace]\nretention = \"0s\"\n", "trace.retention"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        (
            "[trace]\nstore = \"postgres://db:port/trace\"\n",
            "trace.store",
        ),
        ("[trace]\nstore = \"mysql://db/trace\"\n", "trace.store"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = run(&["check-config", "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(key), "{text}: {}", stderr(&o));
    }
    // The shipped example is valid.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/srs-relay.toml");
    let o = run(&["check-config", "--config", example.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn config_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    secrets(dir.path(), "tops3cr3t\n");
    let cfg = dir.path().join("c.toml");
    // secrets_file is relative to the configuration file.
    std::fs::write(&cfg, "[srs]\nformat = \"classic\"\nsecrets_file = \"secrets\"\ndefault_domain = \"example.com\"\n").unwrap();
    let c = cfg.to_str().unwrap();
    let o = run(&[
        "forward",
        "--config",
        c,
        "--now",
        NOW,
        "test@otherdomain.com",
    ]);
    assert_eq!(
        stdout(&o),
        "SRS0=vmyz=2W=otherdomain.com=test@example.com",
        "{}",
        stderr(&o)
    );
    // The environment overrides the file.
    let o = bin()
        .args([
            "forward",
            "--config",
            c,
            "--now",
            NOW,
            "test@otherdomain.com",
        ])
        .env("SRS_RELAY__SRS__SEPARATOR", "+")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "SRS0+vmyz=2W=otherdomain.com=test@example.com",
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args([
            "forward",
            "--config",
            c,
            "--now",
            NOW,
            "test@otherdomain.com",
        ])
        .env("SRS_RELAY__SRS__LOCAL_DOMAINS", "x.example,otherdomain.com")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "test@otherdomain.com", "{}", stderr(&o));
    // --format beats the file.
    let o = run(&[
        "forward",
        "--config",
        c,
        "--format",
        "microsoft",
        "--now",
        NOW,
        "test@otherdomain.com",
    ]);
    assert!(stdout(&o).starts_with("bounces+SRS="), "{}", stdout(&o));
}

#[test]
fn null_sender_is_printed_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(dir.path(), "k\n");
    let o = run(&[
        "forward",
        "--secrets-file",
        s.to_str().unwrap(),
        "--domain",
        "f.example",
        "<>",
    ]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "<>");
}

#[test]
fn reverse_looks_stored_forms_up_in_the_store() {
    use srs_relay::srs::{Options, Srs};
    let dir = tempfile::tempdir().unwrap();
    secrets(dir.path(), "tops3cr3t\n");
    let config = dir.path().join("srs-relay.toml");
    std::fs::write(
        &config,
        "[srs]\nsecrets_file = \"secrets\"\nstore = \"senders.redb\"\n",
    )
    .unwrap();
    put_stored(
        dir.path(),
        "ABCDEFGHIJKLMNOP",
        "a.very.long.sender@example.org",
    );
    let srs = Srs::new(&["tops3cr3t"], Options::default()).unwrap();
    let now = NOW.parse().unwrap();
    let known = srs.stored_address_at("ABCDEFGHIJKLMNOP", "forward.example", now);
    let unknown = srs.stored_address_at("ABCDEFGHIJKLMNOQ", "forward.example", now);
    let cfg = config.to_str().unwrap();
    let o = run(&["reverse", "--config", cfg, "--now", NOW, &known]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "a.very.long.sender@example.org");
    let o = run(&["reverse", "--config", cfg, "--now", NOW, &unknown]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown or expired"), "{}", stderr(&o));
}

/// `explain`: each verdict with its reason, the secret named by line (never shown), the
/// hops through our own domains, the stored form, and the exit status of `reverse`.
#[test]
fn explain_says_where_a_bounce_goes_or_exactly_why_not() {
    use srs_relay::srs::{Format, Options, Srs};
    let dir = tempfile::tempdir().unwrap();
    secrets(
        dir.path(),
        "# signing from 2026-12\nnewsecret\n\noldsecret\n",
    );
    std::fs::write(
        dir.path().join("aliases"),
        "john@forward.example: john@home.example\nmary@forward.example: mary@home.example\n",
    )
    .unwrap();
    let config = dir.path().join("srs-relay.toml");
    std::fs::write(
        &config,
        "[srs]\nsecrets_file = \"secrets\"\nstore = \"senders.redb\"\n\
         local_domains = [\"forward.example\", \"other.example\"]\n[relay]\naliases_file = \"aliases\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let now: u64 = NOW.parse().unwrap();
    let explain = |address: &str, at: u64| {
        let o = run(&[
            "explain",
            "--config",
            cfg,
            "--now",
            &at.to_string(),
            address,
        ]);
        let reverse = run(&[
            "reverse",
            "--config",
            cfg,
            "--now",
            &at.to_string(),
            address,
        ]);
        assert_eq!(o.status.code(), reverse.status.code(), "{}", stdout(&o));
        (o.status.code(), stdout(&o), stderr(&o))
    };
    let old = Srs::new(&["oldsecret"], Options::default()).unwrap();
    let a = old
        .forward_at("bob@example.org", "john@forward.example", now)
        .unwrap();

    let (code, out, _) = explain(&a, now + 2 * 86_400);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Microsoft (+SRS=) for alias user john"),
        "{out}"
    );
    assert!(out.contains("stands for  bob@example.org"), "{out}");
    assert!(
        out.contains("made        2 day(s) ago; max_age_days 21: accepted for 19 more day(s)"),
        "{out}"
    );
    assert!(out.contains("verifies under secret 2 (line 4 of "), "{out}");
    assert!(
        out.ends_with("verdict: a bounce to this address goes to bob@example.org"),
        "{out}"
    );
    assert!(
        !out.contains("oldsecret") && !out.contains("newsecret"),
        "{out}"
    );

    let (code, out, err) = explain(&a.replacen("john+", "mary+", 1), now);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("does not verify for this alias (it does for john)"),
        "{out}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("wrong alias: signed for john@forward.example, not mary@forward.example"),
        "{err}"
    );

    let (code, _, err) = explain(&a, now + 30 * 86_400);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("expired: made 30 days ago, max_age_days is 21"),
        "{err}"
    );

    let other = Srs::new(&["someone else"], Options::default()).unwrap();
    let forged = other
        .forward_at("bob@example.org", "john@forward.example", now)
        .unwrap();
    let (code, out, err) = explain(&forged, now);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("does not verify under any configured secret"),
        "{out}"
    );
    assert!(
        err.contains("not signed by any configured secret; made by another forwarder or altered"),
        "{err}"
    );

    let (code, _, err) = explain("bob@forward.example", now);
    assert_eq!(code, Some(1));
    assert!(err.contains("not an SRS address"), "{err}");
    // As at RCPT: an SRS address outside our domains, or an alias, is not decoded.
    let foreign = old
        .forward_at("bob@example.org", "john@elsewhere.example", now)
        .unwrap();
    for (address, why) in [
        (foreign.as_str(), "not in one of our domains"),
        ("john@forward.example", "an alias of ours"),
    ] {
        let o = run(&["explain", "--config", cfg, "--now", NOW, address]);
        assert_eq!(o.status.code(), Some(1), "{address}");
        assert!(stderr(&o).contains(why), "{address}: {}", stderr(&o));
    }
    let (code, out, _) = explain("SRS0=abcd=2W=example.org@forward.example", now);
    assert_eq!(code, Some(1));
    assert!(out.contains("malformed"), "{out}");

    // Classic, forwarded twice through us: SRS1 back to SRS0 at our own domain, then on.
    let classic = Srs::new(
        &["newsecret"],
        Options {
            format: Format::Classic,
            ..Options::default()
        },
    )
    .unwrap();
    let srs0 = classic
        .forward_at("bob@example.org", "x@other.example", now)
        .unwrap();
    let srs1 = classic.forward_at(&srs0, "y@forward.example", now).unwrap();
    let (code, out, _) = explain(&srs1, now);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("hop 1  SRS1=") && out.contains("hop 2  SRS0="),
        "{out}"
    );
    assert!(out.contains("classic SRS1 (forwarded again)"), "{out}");
    assert!(out.ends_with("goes to bob@example.org"), "{out}");

    // The stored form: looked up in srs.store.
    put_stored(dir.path(), "ABCDEFGHIJKLMNOP", "carol@example.net");
    let stored = classic.stored_address_at("ABCDEFGHIJKLMNOP", "forward.example", now);
    let (code, out, _) = explain(&stored, now);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("token       ABCDEFGHIJKLMNOP"), "{out}");
    assert!(out.ends_with("goes to carol@example.net"), "{out}");
    let unknown = classic.stored_address_at("ABCDEFGHIJKLMNOQ", "forward.example", now);
    let (code, _, err) = explain(&unknown, now);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown or expired"), "{err}");

    let o = run(&["explain", "--json", "--config", cfg, "--now", NOW, &a]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["accepted"], true);
    assert_eq!(json["goes_to"], "bob@example.org");
    assert_eq!(json["hops"][0]["form"], "microsoft");
    assert_eq!(json["hops"][0]["verifies"], true);
}

/// What `serve` says about its secrets file when it cannot start: its port is taken, so
/// it stops at the listener, after the secrets file has been read.
fn serve_until_the_listener(dir: &Path) -> Output {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[srs]\nsecrets_file = \"secrets\"\n[server]\nlisten = [\"{}\"]\n[spool]\ndir = \"spool\"\n",
            busy.local_addr().unwrap()
        ),
    )
    .unwrap();
    let o = bin()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
        .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("server.listen"),
        "{}",
        stderr(&o)
    );
    o
}

#[test]
fn a_secrets_file_open_to_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = secrets(dir.path(), "tops3cr3t\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = stderr(&serve_until_the_listener(dir.path()));
    let warning = err
        .lines()
        .find(|l| l.contains("WARN") && l.contains("secrets file"))
        .unwrap_or_else(|| panic!("no warning:\n{err}"));
    assert!(
        warning.contains(path.to_str().unwrap())
            && warning.contains("0644")
            && warning.contains("chmod 600"),
        "{warning}"
    );
    assert!(
        !err.contains("tops3cr3t"),
        "the secret must never be logged"
    );
    // Mode 0600: no warning.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = stderr(&serve_until_the_listener(dir.path()));
    assert!(!err.contains("chmod"), "{err}");
}

#[test]
fn serve_creates_the_secrets_file_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let err = stderr(&serve_until_the_listener(dir.path()));
    assert!(err.contains("created a new secrets file"), "{err}");
    let path = dir.path().join("secrets");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(
        !err.contains(secret.trim()),
        "the secret must never be logged"
    );
    // Only the secrets file, the spool and the store: no temporary file left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// Keeps `sender` under `token` in the embedded sender store `senders.redb` in `dir`.
fn put_stored(dir: &Path, token: &str, sender: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = srs_relay::sender_store::SenderStore::open("senders.redb", dir)
            .await
            .unwrap();
        store
            .put(token, sender, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
    });
}

#[test]
fn arc_keygen_writes_a_private_key_once_and_says_why_it_cannot() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("arc.key");
    let key_arg = key.to_str().unwrap();
    let args = [
        "arc-keygen",
        "--selector",
        "s1",
        "--domain",
        "forward.example",
    ];
    // RSA by default, made through openssl; the record in strings of at most 255 octets.
    let o = run(&[&args[..], &["--out", key_arg]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(
        line.starts_with("s1._domainkey.forward.example. IN TXT \"v=DKIM1; k=rsa; p="),
        "{line}"
    );
    assert!(
        line.contains("\" \""),
        "an RSA-2048 record needs two strings: {line}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // Never overwritten.
    let o = run(&[&args[..], &["--out", key_arg, "--algorithm", "ed25519"]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
    // Too small an RSA key, and no openssl to make one: a one-line reason, no file.
    let small = dir.path().join("small.key");
    let o = run(&[
        &args[..],
        &["--out", small.to_str().unwrap(), "--bits", "1024"],
    ]
    .concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("2048 to 4096"), "{}", stderr(&o));
    assert!(!small.exists());
    let o = bin()
        .args([&args[..], &["--out", small.to_str().unwrap()]].concat())
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1);
    assert!(stderr(&o).contains("install openssl"), "{}", stderr(&o));
    assert!(!small.exists());
    let o = run(&[
        &args[..],
        &[
            "--out",
            small.to_str().unwrap(),
            "--algorithm",
            "ed25519",
            "--bits",
            "4096",
        ],
    ]
    .concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--bits is for RSA keys"),
        "{}",
        stderr(&o)
    );
    assert!(!small.exists());
    // Ed25519: one short string.
    let ed = dir.path().join("ed.key");
    let o = run(&[
        &args[..],
        &["--out", ed.to_str().unwrap(), "--algorithm", "ed25519"],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"v=DKIM1; k=ed25519; p="));
    assert!(!stdout(&o).contains("\" \""));
}

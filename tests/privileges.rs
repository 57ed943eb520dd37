//! Started as root, the relay binds its listener, hands its state to `server.user` and
//! becomes that user for good before it accepts a connection; without `server.user` it
//! refuses to run as root unless `server.allow_root`. CI runs the tests as root; run as
//! another user, the same test checks that switching users is refused.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The four ids (real, effective, saved, file system) of a `/proc/PID/status` line.
fn uid_line(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn root_hands_over_to_server_user_before_accepting() {
    if euid() != 0 {
        // Not root: asking for another user is refused with one line.
        let relay = Relay::prepare_full("user = \"root\"\n", "", "");
        let o = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["serve", "--config", relay.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("server.user"));
        return;
    }
    let receiver = Receiver::start();
    let mut relay = Relay::prepare_full(
        "user = \"nobody\"\n",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "",
    );
    // The test's directory is root's (0700): let the unprivileged user through it.
    std::fs::set_permissions(relay.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    relay.spawn();
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.pid())).unwrap();
    assert_eq!(uid_line(&status, "Uid:"), [65534; 4], "{status}");
    assert_eq!(uid_line(&status, "Gid:"), [65534; 4], "{status}");
    assert_eq!(uid_line(&status, "Groups:"), [65534], "{status}");
    assert!(relay.log().contains("running as an unprivileged user"));

    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        "bob@example.org",
        "--to",
        "john@forward.example",
    ]);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 1));
    let owned = |name: &str| {
        std::fs::metadata(relay.dir.path().join(name))
            .unwrap()
            .uid()
    };
    for name in ["spool", "spool/queue", "secrets", "trace.sqlite"] {
        assert_eq!(owned(name), 65534, "{name}");
    }
}

#[test]
fn root_without_server_user_is_refused_unless_allowed() {
    if euid() != 0 {
        return; // Only root can be refused for being root; CI runs as root.
    }
    let relay = Relay::prepare_full("", "", "");
    let o = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .args(["serve", "--config", relay.config.to_str().unwrap()])
        .env_remove("SRS_RELAY__SERVER__ALLOW_ROOT")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("running as root: set server.user"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("srs-relay:")).count(),
        1,
        "{err}"
    );
}

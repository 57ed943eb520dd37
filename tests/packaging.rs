//! What ships in `contrib/`: the systemd unit passes `systemd-analyze verify` with an
//! exposure score of at most 2.0 in `systemd-analyze security`, and the configuration it
//! expects is valid and runs: a message sent through the relay, started with that file
//! (its paths moved under a temporary directory), arrives.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn contrib(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib")
            .join(name),
    )
    .unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_is_locked_down() {
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists: point it at the one just built.
    let unit = contrib("systemd/srs-relay.service")
        .replace("/usr/local/bin/srs-relay", env!("CARGO_BIN_EXE_srs-relay"));
    let path = dir.path().join("srs-relay.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (the test command installs systemd)");
    let said =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{said}");
    assert!(
        !said.contains(dir.path().to_str().unwrap()),
        "verify warned: {said}"
    );

    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for srs-relay.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}

#[test]
fn the_packaged_configuration_runs() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/srs-relay");
    let state = root.path().join("var/lib/srs-relay");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let port = free_port();
    let config = contrib("srs-relay.toml")
        .replace("/etc/srs-relay/", &format!("{}/", etc.display()))
        .replace("/var/lib/srs-relay/", &format!("{}/", state.display()))
        .replace(
            "listen = [\"0.0.0.0:25\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace(
            "# default_domain = \"forward.example\"",
            "default_domain = \"forward.example\"",
        )
        .replace(
            "# local_domains = [\"forward.example\"]",
            "local_domains = [\"forward.example\"]",
        )
        .replace(
            "[relay]\n",
            &format!("[relay]\nsmarthost = \"{}\"\n", receiver.addr()),
        )
        // Tests run side by side: the admin listener on a port of its own.
        .replace("127.0.0.1:9025", &format!("127.0.0.1:{}", free_port()));
    let aliases = contrib("aliases") + "john@forward.example: john@home.example\n";
    std::fs::write(etc.join("aliases"), aliases).unwrap();
    let cfg = etc.join("srs-relay.toml");
    std::fs::write(&cfg, config).unwrap();
    let bin = env!("CARGO_BIN_EXE_srs-relay");
    let o = Command::new(bin)
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let log = root.path().join("relay.log");
    let child = Command::new(bin)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        // Tests run as root in CI: root is allowed here (see tests/privileges.rs).
        .env("SRS_RELAY__SERVER__ALLOW_ROOT", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _stop = KillOnDrop(child);
    let addr = format!("127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    swaks_ok(&[
        "--server",
        &addr,
        "--from",
        "bob@example.org",
        "--to",
        "john@forward.example",
    ]);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 1));
    assert!(receiver.messages()[0].mail_from.starts_with("john+SRS="));
    // All state is under the state directory, none next to the configuration.
    for made in ["secrets", "spool", "trace.sqlite"] {
        let there = wait_until(Duration::from_secs(10), || state.join(made).exists());
        assert!(
            there,
            "{made} not in the state directory: {:?}\n{}",
            std::fs::read_dir(&state)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect::<Vec<_>>(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let in_etc: Vec<_> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(in_etc.len(), 2, "{in_etc:?}");
}

/// Stops the relay however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The container image (Dockerfile) without a Docker daemon: its configuration read-only
/// under /etc/srs-relay, the state volume owned by the image's unprivileged user, the
/// relay run as that user (uid 65534 here) with the image's command, a message sent
/// through it, and its HEALTHCHECK command healthy while it runs and not after.
#[test]
fn the_container_image_layout_runs_unprivileged() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    for line in [
        "COPY contrib/docker/srs-relay.toml contrib/aliases /etc/srs-relay/",
        "USER srs-relay",
        "VOLUME [\"/var/lib/srs-relay\"]",
        "EXPOSE 2525",
        "CMD [\"/usr/local/bin/srs-relay\", \"healthcheck\", \"--config\", \"/etc/srs-relay/srs-relay.toml\"]",
        "CMD [\"serve\", \"--config\", \"/etc/srs-relay/srs-relay.toml\"]",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks {line:?}");
    }
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = root.path().join("etc/srs-relay");
    let state = root.path().join("var/lib/srs-relay");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let is_root = euid() == 0;
    if is_root {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (port, admin) = (free_port(), free_port());
    // Loopback only in tests; the image listens on 0.0.0.0.
    let config = contrib("docker/srs-relay.toml")
        .replace("/etc/srs-relay/", &format!("{}/", etc.display()))
        .replace("/var/lib/srs-relay/", &format!("{}/", state.display()))
        .replace(
            "listen = [\"0.0.0.0:2525\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace("127.0.0.1:9025", &format!("127.0.0.1:{admin}"))
        .replace(
            "aliases_file = ",
            &format!("smarthost = \"{}\"\naliases_file = ", receiver.addr()),
        );
    std::fs::write(etc.join("srs-relay.toml"), config).unwrap();
    std::fs::write(
        etc.join("aliases"),
        contrib("aliases") + "john@forward.example: john@home.example\n",
    )
    .unwrap();
    for f in ["srs-relay.toml", "aliases"] {
        std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o555)).unwrap();
    let cfg = etc.join("srs-relay.toml");
    let bin = env!("CARGO_BIN_EXE_srs-relay");
    let as_image_user = |args: &[&str]| {
        let mut c = if is_root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                bin,
            ]);
            c
        } else {
            Command::new(bin)
        };
        c.args(args).current_dir(&state);
        c
    };
    let healthy = || {
        as_image_user(&["healthcheck", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let log = root.path().join("relay.log");
    let child = as_image_user(&["serve", "--config", cfg.to_str().unwrap()])
        .env("SRS_RELAY__SRS__DEFAULT_DOMAIN", "forward.example")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut relay = KillOnDrop(child);
    let up = wait_until(Duration::from_secs(20), || healthy().status.success());
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let addr = format!("127.0.0.1:{port}");
    swaks_ok(&[
        "--server",
        &addr,
        "--from",
        "bob@example.org",
        "--to",
        "john@forward.example",
    ]);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 1));
    for made in [
        "secrets",
        "spool",
        "senders.redb",
        "trace.sqlite",
        "admin-credentials",
    ] {
        let there = wait_until(Duration::from_secs(10), || state.join(made).exists());
        assert!(there, "{made} not on the state volume");
    }
    let _ = relay.0.kill();
    let _ = relay.0.wait();
    let o = healthy();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("srs-relay: unhealthy: ") && err.lines().count() == 1,
        "{err}"
    );
    // So that the temporary directory can be removed by a user other than root too.
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
}

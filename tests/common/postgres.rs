//! A private PostgreSQL server for tests: its own cluster in a temporary directory, on a
//! loopback port picked at run time, its unix socket in that directory; never the
//! system's cluster. Stopped (immediately) when dropped. Debian's `postgresql` package
//! (scripts/test.sh installs it). `initdb` refuses to run as root, so as root the server
//! runs as the `postgres` user. Every wait is bounded. Shared by the unit tests
//! (src/trace/tests.rs) and the end-to-end tests, so it uses only std and tempfile.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The superuser's password: TCP connections must give it (scram-sha-256).
pub const PASSWORD: &str = "pg-Secret-4-tests";
pub const DATABASE: &str = "trace";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The `postgres` user's uid and gid, when we are root: the server's tools run as it.
    owner: Option<(u32, u32)>,
    running: bool,
    /// Serve TLS with `server.crt` and `server.key` in the directory.
    tls: bool,
}

impl PgServer {
    /// A fresh cluster, running, with the database [`DATABASE`].
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let id = |args: &[&str]| -> u32 {
            output(Command::new("id").args(args))
                .trim()
                .parse()
                .unwrap()
        };
        let owner = (id(&["-u"]) == 0).then(|| (id(&["-u", "postgres"]), id(&["-g", "postgres"])));
        let mut pg = PgServer {
            dir,
            bin,
            port: 0,
            owner,
            running: false,
            tls: false,
        };
        pg.chown(pg.dir.path());
        let pwfile = pg.path("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        pg.chown(&pwfile);
        let init = pg.run(
            "initdb",
            &[
                "-D",
                pg.path("data").to_str().unwrap(),
                "-U",
                "postgres",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(init.status.success(), "initdb: {}", text(&init));
        // A port picked free may be taken before the server binds it: try another.
        for _ in 0..5 {
            pg.port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if pg.start_again() {
                let made = pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
                assert!(made.status.success(), "createdb: {}", text(&made));
                return pg;
            }
        }
        panic!("postgres could not get a port; log:\n{}", pg.log());
    }

    /// Starts the (stopped) server on its port; false if the port was taken.
    pub fn start_again(&mut self) -> bool {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options += &format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.path("server.crt").display(),
                self.path("server.key").display()
            );
        }
        let data = self.path("data");
        let log = self.path("server.log");
        let started = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        if started.status.success() {
            self.running = true;
            return true;
        }
        assert!(
            self.log().contains("could not bind") || self.log().contains("in use"),
            "pg_ctl start: {}\nlog:\n{}",
            text(&started),
            self.log()
        );
        false
    }

    /// Serves TLS from now on with `cert` and `key` (PEM): restarts the server.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.path(name);
            std::fs::copy(from, &to).unwrap();
            // The server refuses a key others may read.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            self.chown(&to);
        }
        self.tls = true;
        self.stop();
        assert!(self.start_again(), "restart with TLS: {}", self.log());
    }

    /// Stops the server at once (no shutdown checkpoint), like a crash.
    pub fn stop(&mut self) {
        let data = self.path("data");
        let o = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ],
        );
        assert!(o.status.success(), "pg_ctl stop: {}", text(&o));
        self.running = false;
    }

    /// The URL the relay is given: TCP on loopback, with the password.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// Runs `sql` in `db` over the unix socket; the output unaligned, tuples only.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        let sock = self.dir.path().to_str().unwrap().to_owned();
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                &sock,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
    }

    /// `sql`'s single value, from the trace database.
    pub fn query_value(&self, sql: &str) -> String {
        let o = self.psql(DATABASE, sql);
        assert!(o.status.success(), "{sql}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    /// Runs one of the server's tools, as `postgres` if we are root, in the directory.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.owner.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.path("data");
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
            );
        }
    }
}

/// The newest of /usr/lib/postgresql/<version>/bin (Debian's layout).
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| root.join(v.to_string()).join("bin/initdb").exists())
        .max();
    match newest {
        Some(v) => root.join(v.to_string()).join("bin"),
        None => panic!(
            "no PostgreSQL under {}: run scripts/test.sh, which installs Debian's postgresql",
            root.display()
        ),
    }
}

fn output(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

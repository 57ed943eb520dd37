//! Real DNS and an independent DKIM/ARC implementation for the mail authentication tests:
//! `dnsmasq` answering on a loopback port with the test domains' TXT records, and Debian's
//! dkimpy (`tests/support/dkimpy.py`) asking it. Keys are made with `openssl`.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// A `dnsmasq` on 127.0.0.1:`port`, authoritative (`--local`) for `.test` and `.example`:
/// names it has no record for are NXDOMAIN, never forwarded anywhere.
pub struct Dns {
    pub port: u16,
    child: Child,
}

/// A loopback UDP port free now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Dns {
    /// Serves `records` as (name, text) TXT records; a text longer than 255 octets is
    /// split into several strings, as DNS needs.
    pub fn start(records: &[(String, String)]) -> Dns {
        Self::start_with(records, &[])
    }

    /// As [`Dns::start`], with more dnsmasq options (`--mx-host=...`, say).
    pub fn start_with(records: &[(String, String)], options: &[&str]) -> Dns {
        for _ in 0..5 {
            let port = free_udp_port();
            let mut cmd = Command::new("dnsmasq");
            cmd.args([
                &format!("--port={port}"),
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
                "--local=/example/",
                "--user=root",
            ]);
            cmd.args(options);
            for (name, text) in records {
                // On the command line dnsmasq keeps quotes as part of the text, and a comma
                // separates strings: none of these records has one.
                assert!(!text.contains(','), "{text}");
                let chunks: Vec<&str> = text
                    .as_bytes()
                    .chunks(250)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect();
                cmd.arg(format!("--txt-record={name},{}", chunks.join(",")));
            }
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (scripts/test.sh installs it)");
            // Up once the port is taken (dnsmasq binds it before it answers nothing else).
            let up = wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || UdpSocket::bind(("127.0.0.1", port)).is_err()
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Dns { port, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }

    /// `[dns]` for the relay's configuration: this server only.
    pub fn relay_config(&self) -> String {
        format!(
            "[dns]\nservers = [\"127.0.0.1:{}\"]\ntimeout = \"2s\"\n",
            self.port
        )
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RSA-2048 key made by openssl in `dir`: its PEM file and the `p=` of its DNS record.
pub fn rsa_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let pem = dir.join(format!("{name}.pem"));
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pem, base64(&out.stdout))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs tests/support/dkimpy.py: (exit status was 0, what it printed).
pub fn dkimpy(dns_port: u16, args: &[&str], message: &[u8]) -> (bool, Vec<u8>) {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dkimpy.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dns_port.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-dkim and python3-dnspython");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    (out.status.success(), text)
}

/// dkimpy's verdict on the (first) DKIM signature of `message`.
pub fn dkim_verify(dns_port: u16, message: &[u8]) -> (bool, String) {
    let (ok, out) = dkimpy(dns_port, &["dkim"], message);
    (ok, String::from_utf8_lossy(&out).into_owned())
}

/// dkimpy's verdict on the ARC chain of `message`: (cv is pass, "cv comment").
pub fn arc_verify(dns_port: u16, message: &[u8]) -> (bool, String) {
    let (ok, out) = dkimpy(dns_port, &["arc"], message);
    (ok, String::from_utf8_lossy(&out).into_owned())
}

/// `message` DKIM-signed by dkimpy for `domain` with `selector` and the key in `key`.
pub fn dkim_sign(
    dns_port: u16,
    selector: &str,
    domain: &str,
    key: &Path,
    message: &[u8],
) -> Vec<u8> {
    let (ok, out) = dkimpy(
        dns_port,
        &["sign", selector, domain, key.to_str().unwrap()],
        message,
    );
    assert!(ok, "dkimpy sign: {}", String::from_utf8_lossy(&out));
    out
}

//! `srs-relay healthcheck`: is the relay on this host up? For a container's HEALTHCHECK
//! or a monitoring probe: `/healthz` on the admin listener when there is one, else an
//! SMTP greeting and `NOOP` on the first `server.listen` address. Exit 0, or 1 with one
//! line saying why.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use srs_relay::config::Config;

use crate::Failure;

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(cfg: &Config) -> Result<(), Failure> {
    match cfg.admin_listen()? {
        Some(addr) => http_healthz(reachable(addr)),
        None => {
            let first = cfg
                .server
                .listen
                .first()
                .ok_or_else(|| Failure::Usage("server.listen is empty".into()))?;
            let addr: SocketAddr = first
                .parse()
                .map_err(|e| Failure::Usage(format!("server.listen: {first:?}: {e}")))?;
            smtp_noop(reachable(addr))
        }
    }
    .map_err(|why| Failure::Refused(format!("unhealthy: {why}")))
}

/// A wildcard listen address is reached on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn http_healthz(addr: SocketAddr) -> Result<(), String> {
    let mut s = connect(addr)?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut reply = Vec::new();
    s.take(4096)
        .read_to_end(&mut reply)
        .map_err(|e| format!("{addr}: {e}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply.lines().next().unwrap_or_default();
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!("http://{addr}/healthz answered {status:?}"))
    }
}

fn smtp_noop(addr: SocketAddr) -> Result<(), String> {
    let s = connect(addr)?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut reply = |want: &str| -> Result<(), String> {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| format!("{addr}: {e}"))?;
            if !line.starts_with(want) {
                return Err(format!("{addr} answered {:?}", line.trim_end()));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    };
    reply("220")?;
    w.write_all(b"NOOP\r\n").map_err(|e| e.to_string())?;
    reply("250")?;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(())
}

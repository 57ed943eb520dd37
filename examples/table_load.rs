//! Load client for Postfix lookup servers: srs-relay's socketmap and tcp_table, and
//! postsrsd's tcp_table. Like Postfix, each connection sends one request and waits for its
//! reply before the next (no pipelining); one thread per connection with blocking sockets,
//! so the client costs two system calls per lookup and is not the bottleneck.
//! `benches/compare-postsrsd.sh` runs it against both servers.
//!
//! ```text
//! cargo run --release --example table_load -- --protocol socketmap --addr 127.0.0.1:10003 \
//!     --map forward --connections 20 --seconds 5
//! cargo run --release --example table_load -- --protocol tcp_table --addr 127.0.0.1:10002 \
//!     --forward-addr 127.0.0.1:10001 --map reverse --connections 1 --seconds 5
//! ```
//!
//! Forward lookups ask for distinct generated senders (`user<N>@domain<M>.example`), all
//! of which must be rewritten. Reverse lookups first get the SRS addresses of such senders
//! from the server's own forward map (tcp_table: `--forward-addr`), then reverse them; each
//! must come back as its sender. Any other reply is counted as an error and makes the
//! exit status 1. Prints `lookups=… seconds=… per_second=… errors=…`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use srs_relay::socketmap::netstring::{read_netstring, write_netstring};
use srs_relay::socketmap::tcp_table::{url_decode, url_encode_into};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Socketmap,
    TcpTable,
}

struct Args {
    protocol: Protocol,
    addr: String,
    forward_addr: Option<String>,
    reverse: bool,
    connections: usize,
    seconds: f64,
    keys: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        protocol: Protocol::Socketmap,
        addr: String::new(),
        forward_addr: None,
        reverse: false,
        connections: 1,
        seconds: 5.0,
        keys: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--protocol" => {
                args.protocol = match value()?.as_str() {
                    "socketmap" => Protocol::Socketmap,
                    "tcp_table" => Protocol::TcpTable,
                    p => return Err(format!("--protocol: {p:?}: socketmap or tcp_table")),
                }
            }
            "--addr" => args.addr = value()?,
            "--forward-addr" => args.forward_addr = Some(value()?),
            "--map" => {
                args.reverse = match value()?.as_str() {
                    "forward" => false,
                    "reverse" => true,
                    m => return Err(format!("--map: {m:?}: forward or reverse")),
                }
            }
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--keys" => args.keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    if args.addr.is_empty() {
        return Err(
            "usage: table_load --protocol socketmap|tcp_table --addr HOST:PORT \
             [--forward-addr HOST:PORT] [--map forward|reverse] [--connections N] \
             [--seconds S] [--keys N]"
                .into(),
        );
    }
    if args.connections == 0 || args.keys == 0 || args.seconds <= 0.0 {
        return Err("--connections, --keys and --seconds must be positive".into());
    }
    if args.reverse && args.protocol == Protocol::TcpTable && args.forward_addr.is_none() {
        return Err("reverse over tcp_table needs --forward-addr (the forward map's port)".into());
    }
    Ok(args)
}

/// One connection speaking one protocol, one request at a time.
struct Client {
    stream: TcpStream,
    protocol: Protocol,
    request: Vec<u8>,
    buf: Vec<u8>,
    filled: usize,
}

/// A reply: `Some(data)` when found, `None` otherwise (the raw reply is kept for errors).
type Reply = Result<Option<String>, String>;

impl Client {
    fn connect(addr: &str, protocol: Protocol) -> Result<Client, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        Ok(Client {
            stream,
            protocol,
            request: Vec::with_capacity(512),
            buf: vec![0; 8192],
            filled: 0,
        })
    }

    fn lookup(&mut self, map: &str, key: &str) -> Reply {
        self.request.clear();
        match self.protocol {
            Protocol::Socketmap => {
                let mut payload = Vec::with_capacity(map.len() + 1 + key.len());
                payload.extend_from_slice(map.as_bytes());
                payload.push(b' ');
                payload.extend_from_slice(key.as_bytes());
                write_netstring(&mut self.request, &payload);
            }
            Protocol::TcpTable => {
                self.request.extend_from_slice(b"get ");
                url_encode_into(&mut self.request, key.as_bytes());
                self.request.push(b'\n');
            }
        }
        self.stream
            .write_all(&self.request)
            .map_err(|e| format!("write: {e}"))?;
        loop {
            if let Some((reply, used)) = self.parse()? {
                self.buf.copy_within(used..self.filled, 0);
                self.filled -= used;
                return Ok(reply);
            }
            if self.filled == self.buf.len() {
                return Err("reply too long".into());
            }
            let n = self
                .stream
                .read(&mut self.buf[self.filled..])
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            self.filled += n;
        }
    }

    #[allow(clippy::type_complexity)]
    fn parse(&self) -> Result<Option<(Option<String>, usize)>, String> {
        let input = &self.buf[..self.filled];
        match self.protocol {
            Protocol::Socketmap => {
                let Some((payload, used)) =
                    read_netstring(input, 100_000).map_err(|e| e.to_string())?
                else {
                    return Ok(None);
                };
                let text = String::from_utf8_lossy(payload);
                match text.strip_prefix("OK ") {
                    Some(data) => Ok(Some((Some(data.to_owned()), used))),
                    None if text.starts_with("NOTFOUND") => Ok(Some((None, used))),
                    None => Err(format!("reply {text:?}")),
                }
            }
            Protocol::TcpTable => {
                let Some(end) = input.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let line = String::from_utf8_lossy(&input[..end]);
                match line.strip_prefix("200 ") {
                    Some(data) => {
                        let data = url_decode(data.as_bytes()).ok_or("bad %-encoding")?;
                        Ok(Some((
                            Some(String::from_utf8_lossy(&data).into_owned()),
                            end + 1,
                        )))
                    }
                    None if line.starts_with("500 ") => Ok(Some((None, end + 1))),
                    None => Err(format!("reply {line:?}")),
                }
            }
        }
    }
}

fn sender(i: usize) -> String {
    format!("user{i}@domain{}.example", i % 997)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("table_load: {e}");
            std::process::exit(2);
        }
    };
    let senders: Vec<String> = (0..args.keys).map(sender).collect();
    // Reverse: the server's own SRS addresses for the senders, paired with the answer due.
    let keys: Arc<Vec<(String, String)>> = Arc::new(if args.reverse {
        let addr = args.forward_addr.as_deref().unwrap_or(&args.addr);
        let mut c = Client::connect(addr, args.protocol).unwrap_or_else(|e| fail(&e));
        senders
            .iter()
            .map(|s| match c.lookup("forward", s) {
                Ok(Some(srs)) => (srs, s.clone()),
                other => fail(&format!("forward {s} to seed the reverse keys: {other:?}")),
            })
            .collect()
    } else {
        senders.iter().map(|s| (s.clone(), String::new())).collect()
    });
    let map = if args.reverse { "reverse" } else { "forward" };
    let barrier = Arc::new(Barrier::new(args.connections + 1));
    let duration = Duration::from_secs_f64(args.seconds);
    let workers: Vec<_> = (0..args.connections)
        .map(|n| {
            let mut client =
                Client::connect(&args.addr, args.protocol).unwrap_or_else(|e| fail(&e));
            let (keys, barrier) = (keys.clone(), barrier.clone());
            let reverse = args.reverse;
            std::thread::spawn(move || {
                barrier.wait();
                let end = Instant::now() + duration;
                let (mut done, mut errors) = (0u64, 0u64);
                let mut i = n * 7919;
                while Instant::now() < end {
                    let (key, want) = &keys[i % keys.len()];
                    i += 1;
                    match client.lookup(map, key) {
                        Ok(Some(got)) if !reverse || got == *want => done += 1,
                        Ok(other) => {
                            if errors == 0 {
                                eprintln!("table_load: {map} {key}: unexpected {other:?}");
                            }
                            errors += 1;
                        }
                        Err(e) => {
                            eprintln!("table_load: {map} {key}: {e}");
                            errors += 1;
                            break;
                        }
                    }
                }
                (done, errors)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let (mut lookups, mut errors) = (0, 0);
    for w in workers {
        let (d, e) = w.join().expect("worker");
        lookups += d;
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "lookups={lookups} seconds={seconds:.2} per_second={:.0} errors={errors}",
        lookups as f64 / seconds
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("table_load: {message}");
    std::process::exit(1)
}

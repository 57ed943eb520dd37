//! Holds many idle SMTP sessions open against a server, and reports at each step the
//! server's resident memory and how long a new session then waits for its 220.
//! `benches/scale.sh` runs it against a release build of `srs-relay serve`.
//!
//! ```text
//! cargo run --release --example idle_sessions -- ADDR --pid PID
//!     [--steps 0,1000,10000] [--probes 15] [--limit-secs 300]
//! ```
//!
//! One line per step: `sessions=N rss_kib=R greet_ms_median=M greet_ms_min=A
//! greet_ms_max=B`. Sessions are opened a few hundred at a time (the listen backlog is
//! not the thing measured), each waits for its 220, then they stay open and silent until
//! the end. Exits non-zero if anything fails or `--limit-secs` passes.

use std::error::Error;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections being opened at once.
const CONNECTING: usize = 256;

struct Args {
    addr: String,
    pid: u32,
    steps: Vec<usize>,
    probes: usize,
    limit: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        addr: String::new(),
        pid: 0,
        steps: vec![0, 1000, 10_000],
        probes: 15,
        limit: Duration::from_secs(300),
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--pid" => args.pid = value("--pid")?.parse().map_err(|e| format!("--pid: {e}"))?,
            "--steps" => {
                args.steps = value("--steps")?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--steps: {s:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--probes" => {
                args.probes = value("--probes")?
                    .parse()
                    .map_err(|e| format!("--probes: {e}"))?
            }
            "--limit-secs" => {
                args.limit = Duration::from_secs(
                    value("--limit-secs")?
                        .parse()
                        .map_err(|e| format!("--limit-secs: {e}"))?,
                )
            }
            _ if args.addr.is_empty() && !a.starts_with('-') => args.addr = a,
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    if args.addr.is_empty() || args.pid == 0 {
        return Err("usage: idle_sessions ADDR --pid PID [--steps 0,1000,10000] [--probes N] [--limit-secs S]".into());
    }
    if args.steps.windows(2).any(|w| w[0] > w[1]) {
        return Err("--steps must not decrease".into());
    }
    Ok(args)
}

/// Connects and reads up to the end of the greeting line; `Err` unless it is a 220.
async fn greeted(addr: &str) -> Result<TcpStream, Box<dyn Error + Send + Sync>> {
    let mut s = TcpStream::connect(addr).await?;
    let mut got = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err("closed before the greeting".into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    if !got.starts_with(b"220") {
        return Err(format!("greeting: {}", String::from_utf8_lossy(&got).trim_end()).into());
    }
    Ok(s)
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for pid {pid}"))
}

async fn run(args: Args) -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut open: Vec<TcpStream> = Vec::new();
    for &step in &args.steps {
        let mut connecting = JoinSet::new();
        let mut wanted = step - open.len();
        while wanted > 0 || !connecting.is_empty() {
            while wanted > 0 && connecting.len() < CONNECTING {
                let addr = args.addr.clone();
                connecting.spawn(async move { greeted(&addr).await });
                wanted -= 1;
            }
            if let Some(done) = connecting.join_next().await {
                open.push(done??);
            }
        }
        // Let the server settle before reading its memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(args.pid)?;
        let mut greet = Vec::with_capacity(args.probes);
        for _ in 0..args.probes {
            let t = Instant::now();
            let s = greeted(&args.addr).await?;
            greet.push(t.elapsed().as_secs_f64() * 1000.0);
            drop(s);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        greet.sort_by(f64::total_cmp);
        let median = greet.get(greet.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "sessions={} rss_kib={rss} greet_ms_median={median:.2} greet_ms_min={:.2} greet_ms_max={:.2}",
            open.len(),
            greet.first().copied().unwrap_or(f64::NAN),
            greet.last().copied().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = parse_args()?;
    let limit = args.limit;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::time::timeout(limit, run(args))
            .await
            .map_err(|_| format!("not done within {limit:?}"))?
    })
}

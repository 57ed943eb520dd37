//! The trace store at scale: fills a store with N messages as the relay records them
//! (received + delivered per recipient, some deferred first, a few refused), then times
//! the searches `srs-relay trace` runs. `benches/trace-store.sh` runs it.
//!
//! ```text
//! cargo run --release --example trace_scale -- --messages 1000000 --store /tmp/t/trace.sqlite
//! cargo run --release --example trace_scale -- --messages 1000000 --store postgres://u:p@127.0.0.1:5433/trace
//! ```
//!
//! Prints the insert rate, the store's size per message, and for each search the median
//! and slowest of `--repeat` runs (each with a different key), with the rows it found.
//! Exits 1 if a search finds nothing it should. `--repeat 0` only fills the store
//! (`benches/dashboard.sh` then searches it through `serve`).

use std::time::{Duration, Instant};

use srs_relay::trace::{Event, Filter, Kind, PostgresUrl, Store, now_ms};

struct Args {
    messages: u64,
    store: String,
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args {
        messages: 100_000,
        store: "/tmp/trace-scale/trace.sqlite".into(),
        repeat: 21,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => a.messages = value().parse().expect("--messages"),
            "--store" => a.store = value(),
            "--repeat" => a.repeat = value().parse().expect("--repeat"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Distinct recipients, senders and domains: each recipient gets messages/RECIPIENTS.
const RECIPIENTS: u64 = 20_000;
const SENDERS: u64 = 50_000;
const DOMAINS: u64 = 2_000;
/// Recorded over the last 10 days.
const SPAN_MS: i64 = 10 * 86_400_000;

fn recipient(n: u64) -> String {
    format!("user{}@d{}.home.example", n % RECIPIENTS, n % DOMAINS)
}

fn alias(n: u64) -> String {
    format!("user{}@forward.example", n % RECIPIENTS)
}

fn sender(n: u64) -> String {
    format!("sender{}@s{}.example.org", n % SENDERS, n % 997)
}

/// The events the relay records for message `n`.
fn message(n: u64, start: i64, total: u64) -> Vec<Event> {
    let time = start + (n as i64 * SPAN_MS / total as i64);
    let id = format!("{:016X}", n * 0x9E37_79B9 + 1);
    let rcpt = recipient(n * 7919);
    let orig = alias(n * 7919);
    let at = |mut e: Event, dt: i64| {
        e.time = time + dt;
        e
    };
    let mut received = Event::new(Kind::Received)
        .queue_id(&id)
        .sender(&sender(n))
        .srs_sender(&format!(
            "{}+SRS=ABCDEFGH=2W=example.org=x@forward.example",
            n
        ))
        .recipient(&rcpt)
        .original_recipient(&orig)
        .remote("192.0.2.7")
        .detail(&[("helo", "mail.example.org")]);
    received.message_id = Some(format!("{n}.{id}@mail.example.org"));
    received.subject = Some(format!("Invoice {n} for December"));
    received.size = Some(4096 + n % 50_000);
    received.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
    if n % 100 == 99 {
        let refused = Event::new(Kind::Refused)
            .sender(&sender(n))
            .original_recipient(&orig)
            .remote("192.0.2.66")
            .reply("550 5.7.1 Invalid SRS address: bad hash")
            .detail(&[("stage", "rcpt"), ("reason", "forged")]);
        return vec![at(refused, 0)];
    }
    let mut out = vec![at(received, 0)];
    let mut attempt = 1;
    if n % 10 == 3 {
        let mut deferred = Event::new(Kind::Deferred)
            .queue_id(&id)
            .recipient(&rcpt)
            .remote("mx.home.example[192.0.2.25]:25")
            .reply("451 4.7.1 Greylisted, try again later")
            .detail(&[("delay", "1.2s")]);
        deferred.attempt = Some(attempt);
        out.push(at(deferred, 900));
        attempt += 1;
        // One in a thousand is still deferred, one in a thousand failed after a deferral.
        match n % 1000 {
            3 => return out,
            13 => {
                let mut failed = Event::new(Kind::Failed)
                    .queue_id(&id)
                    .recipient(&rcpt)
                    .remote("mx.home.example[192.0.2.25]:25")
                    .reply("550 5.1.1 No such user");
                failed.attempt = Some(attempt);
                out.push(at(failed, 600_000));
                return out;
            }
            _ => {}
        }
    }
    let mut delivered = Event::new(Kind::Delivered)
        .queue_id(&id)
        .recipient(&rcpt)
        .remote("mx.home.example[192.0.2.25]:25")
        .reply("250 2.0.0 Ok: queued as 4Xyz")
        .detail(&[("delay", "0.4s")]);
    delivered.attempt = Some(attempt);
    delivered.tls = Some("TLSv1.3 TLS13_AES_128_GCM_SHA256".into());
    out.push(at(delivered, 400 + 600_000 * i64::from(attempt - 1)));
    out
}

/// An SQLite file's size, with its WAL; `None` for PostgreSQL (the script asks it).
fn size_of(store: &Store) -> Option<u64> {
    let Store::Sqlite(path) = store else {
        return None;
    };
    let path = path.display();
    Some(
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{path}{s}")).ok())
            .map(|m| m.len())
            .sum(),
    )
}

fn main() {
    let a = args();
    let store = if PostgresUrl::is_postgres(&a.store) {
        Store::Postgres(Box::new(PostgresUrl::parse(&a.store).expect("the URL")))
    } else {
        if let Some(dir) = std::path::Path::new(&a.store).parent() {
            std::fs::create_dir_all(dir).expect("store directory");
        }
        Store::Sqlite(a.store.clone().into())
    };
    let mut writer = store.open().expect("open the store");
    let start = now_ms() - SPAN_MS;
    let fresh = writer
        .search(&Filter {
            limit: 1,
            ..Filter::default()
        })
        .expect("search")
        .is_empty();
    if fresh {
        let t0 = Instant::now();
        let mut events = 0u64;
        let mut batch = Vec::with_capacity(1100);
        for n in 0..a.messages {
            batch.extend(message(n, start, a.messages));
            if batch.len() >= 1000 {
                events += batch.len() as u64;
                writer.insert(&batch).expect("insert");
                batch.clear();
            }
        }
        events += batch.len() as u64;
        writer.insert(&batch).expect("insert");
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "filled messages={} events={events} seconds={secs:.1} events_per_second={:.0}",
            a.messages,
            events as f64 / secs
        );
    } else {
        println!("store exists; searching it as it is");
    }
    drop(writer);
    if a.repeat == 0 {
        return;
    }
    if let Some(bytes) = size_of(&store) {
        println!(
            "size bytes={bytes} per_message={:.0}",
            bytes as f64 / a.messages as f64
        );
    }

    let store = store.open_read_only().expect("open for reading");
    let base = || Filter {
        limit: 1000,
        ..Filter::default()
    };
    type Make = Box<dyn Fn(u64) -> Filter>;
    let searches: Vec<(&str, Make)> = vec![
        (
            "recipient (delivered to)",
            Box::new(move |k| Filter {
                recipient: Some(recipient(k * 31)),
                ..base()
            }),
        ),
        (
            "recipient (as given)",
            Box::new(move |k| Filter {
                recipient: Some(alias(k * 37)),
                ..base()
            }),
        ),
        (
            "recipient, last day",
            // A recipient of one of the newest messages.
            Box::new(move |k| Filter {
                recipient: Some(recipient((a.messages - 1 - k * 37) * 7919)),
                since: Some(now_ms() - 86_400_000),
                ..base()
            }),
        ),
        (
            "sender",
            Box::new(move |k| Filter {
                sender: Some(sender(k * 43)),
                ..base()
            }),
        ),
        (
            "message-id",
            Box::new(move |k| {
                let n = (k * 104_729) % a.messages;
                Filter {
                    message_id: Some(format!("{n}.{:016X}@mail.example.org", n * 0x9E37_79B9 + 1)),
                    ..base()
                }
            }),
        ),
        (
            "recipient wildcard (*@domain)",
            Box::new(move |k| Filter {
                recipient: Some(format!("*@d{}.home.example", k % DOMAINS)),
                ..base()
            }),
        ),
        (
            "status failed, last day",
            Box::new(move |_| Filter {
                status: Some("failed".into()),
                since: Some(now_ms() - 86_400_000),
                ..base()
            }),
        ),
    ];
    let mut failed = false;
    for (name, make) in &searches {
        let mut times = Vec::new();
        let mut rows = 0;
        for k in 0..a.repeat as u64 {
            let filter = make(k + 1);
            let t0 = Instant::now();
            let found = store.search(&filter).expect("search");
            times.push(t0.elapsed());
            rows += found.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "search {name:<32} median_ms={:.2} max_ms={:.2} rows_per_search={:.0}",
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap()),
            rows as f64 / a.repeat as f64
        );
        failed |= rows == 0;
    }
    let t0 = Instant::now();
    let shown = store
        .show(&format!("{:016X}", 12_345u64 * 0x9E37_79B9 + 1))
        .expect("show");
    println!(
        "show one message ms={:.2} events={}",
        t0.elapsed().as_secs_f64() * 1000.0,
        shown.len()
    );
    if failed || shown.is_empty() {
        eprintln!("a search found nothing");
        std::process::exit(1);
    }
}

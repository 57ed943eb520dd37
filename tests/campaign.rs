//! Crash campaign: load through the real relay binary while it is `kill -9`ed at random
//! moments and restarted on the same spool; every message that got a 250 after DATA must
//! reach the sink. Duplicates (a crash between the sink's 250 and the spool update) are
//! allowed, counted and printed.
//!
//! Bounded for CI (`CAMPAIGN_KILLS`=12 kills over `CAMPAIGN_SECS`=30 s by default);
//! `scripts/crash-campaign.sh KILLS SECONDS` runs it longer. `CAMPAIGN_SEED` repeats a run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 4;
/// Messages per session before QUIT: sessions are also opened while the relay restarts.
const PER_SESSION: usize = 5;

/// What one client saw, by message id.
#[derive(Default)]
struct Log {
    /// 250 after the final dot: must arrive.
    accepted: Vec<String>,
    /// Another reply after the final dot: must not arrive.
    refused: Vec<String>,
    /// The connection died as the final dot went out or before its reply: may arrive.
    unknown: Vec<String>,
    /// The connection died, or a command was refused, before the dot: must not arrive.
    not_sent: Vec<String>,
}

/// Sends distinct messages until `stop`, logging each outcome.
/// The size of client `t`'s message number `n`.
fn message_size(t: usize, n: usize) -> usize {
    500 + (n * 7919 + t * 104_729) % 150_000
}

fn client(t: usize, addr: String, stop: Arc<AtomicBool>) -> Log {
    let mut log = Log::default();
    let mut n = 0usize;
    // Bounded even if `stop` never comes.
    let end = Instant::now() + Duration::from_secs(3600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let Ok(mut s) = Session::open(&addr, Duration::from_secs(10)) else {
            // Down, or restarting: try again shortly.
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        for _ in 0..PER_SESSION {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let id = format!("c{t}-{n}");
            n += 1;
            // Sizes vary so kills land in all parts of the store; past 64 KiB the message
            // streams through a file on its way in.
            let size = message_size(t, n);
            let from = format!("c{t}@sender.example");
            match s.send(&from, "john@forward.example", &numbered_message(&id, size)) {
                Ok(Outcome::Reply(r)) if r.starts_with("250") => log.accepted.push(id),
                Ok(Outcome::Reply(_)) => log.refused.push(id),
                Ok(Outcome::NotSent(_)) => log.not_sent.push(id),
                Ok(Outcome::NoReply) => {
                    log.unknown.push(id);
                    break;
                }
                Err(_) => {
                    log.not_sent.push(id);
                    break;
                }
            }
        }
        s.quit();
    }
    log
}

#[test]
fn kill_9_under_load_loses_nothing_that_got_250() {
    let kills = env_u64("CAMPAIGN_KILLS", 12);
    let secs = env_u64("CAMPAIGN_SECS", 30);
    let seed = seed_from_env("CAMPAIGN_SEED");
    assert!(kills >= 1 && secs >= 1);
    eprintln!("campaign: CAMPAIGN_KILLS={kills} CAMPAIGN_SECS={secs} CAMPAIGN_SEED={seed}");
    let mut rng = Rng(seed);

    let sink = Receiver::start();
    let mut relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", sink.addr()),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    );
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (addr, stop) = (relay.addr(), stop.clone());
            thread::spawn(move || client(t, addr, stop))
        })
        .collect();

    // Kills at random moments, `secs / kills` apart on average; sometimes the relay stays
    // down a moment (clients see refused connections), sometimes it is killed again
    // right after it came up (recovery and the first deliveries are cut short).
    let mean_gap_ms = secs * 1000 / kills;
    for _ in 0..kills {
        let gap = if rng.below(5) == 0 {
            rng.below(100)
        } else {
            rng.below(2 * mean_gap_ms)
        };
        thread::sleep(Duration::from_millis(gap));
        assert!(
            relay.is_running(),
            "the relay died by itself; log:\n{}",
            relay.log()
        );
        relay.kill9();
        thread::sleep(Duration::from_millis(rng.below(300)));
        relay.spawn();
    }
    // A little load on the last instance too, then stop the clients.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<Log> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let load_secs = started.elapsed().as_secs_f64();

    let accepted: HashSet<&str> = logs
        .iter()
        .flat_map(|l| &l.accepted)
        .map(String::as_str)
        .collect();
    let refused: HashSet<&str> = logs
        .iter()
        .flat_map(|l| &l.refused)
        .map(String::as_str)
        .collect();
    let unknown: HashSet<&str> = logs
        .iter()
        .flat_map(|l| &l.unknown)
        .map(String::as_str)
        .collect();
    let not_sent: usize = logs.iter().map(|l| l.not_sent.len()).sum();
    assert!(
        accepted.len() >= 20,
        "too little got through to prove anything: {} accepted; log:\n{}",
        accepted.len(),
        relay.log()
    );

    // Drain: the final instance delivers what is left.
    let arrived = || {
        let mut by_id: HashMap<String, usize> = HashMap::new();
        for m in sink.messages() {
            let id = message_id(&m.data).expect("a message of ours");
            *by_id.entry(id).or_default() += 1;
        }
        by_id
    };
    let drained = wait_until(Duration::from_secs(60), || {
        relay.spooled() == 0 && {
            let got = arrived();
            accepted.iter().all(|id| got.contains_key(*id))
        }
    });
    let got = arrived();
    let lost: Vec<&&str> = accepted
        .iter()
        .filter(|id| !got.contains_key(**id))
        .collect();
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let unknown_arrived = unknown.iter().filter(|id| got.contains_key(**id)).count();
    eprintln!(
        "campaign: {kills} kills in {load_secs:.1} s; transactions: {} with a 250, {} refused after the dot, \
         {} cut at the dot (of them {unknown_arrived} arrived), {not_sent} cut before it or refused; \
         arrived: {} distinct, {duplicates} duplicates; lost: {}",
        accepted.len(),
        refused.len(),
        unknown.len(),
        got.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} messages that got a 250: {lost:?}; log:\n{}",
        lost.len(),
        relay.log()
    );
    assert!(drained, "spool not drained: {} left", relay.spooled());

    // Nothing arrives that was not sent, nor what was refused; every copy is whole.
    for m in sink.messages() {
        let id = message_id(&m.data).unwrap();
        // A message cut before its final dot, or refused after it, was never accepted.
        assert!(
            accepted.contains(id.as_str()) || unknown.contains(id.as_str()),
            "{id} arrived but was refused or never sent whole"
        );
        let size_of = |id: &str| {
            let (t, n) = id[1..].split_once('-').unwrap();
            let (t, n): (usize, usize) = (t.parse().unwrap(), n.parse().unwrap());
            message_size(t, n + 1)
        };
        assert_bytes_eq(
            without_our_received(&m.data),
            &dot_stuff(&numbered_message(&id, size_of(&id))),
            &id,
        );
        assert_eq!(m.rcpt_to, ["john@home.example"]);
    }
    // Recovery never had to set a file aside as unreadable.
    let corrupt = std::fs::read_dir(relay.dir.path().join("spool/corrupt"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(corrupt, 0, "files set aside in spool/corrupt");
    relay.terminate();
}

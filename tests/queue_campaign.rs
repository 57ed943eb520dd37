//! Crash campaign for `srs-relay queue`: clients send mail through the real relay to a
//! receiver that defers (so messages stay queued) and accepts by turns; a driver issues
//! random `queue hold/release/retry/delete/bounce` commands (by id from `queue list
//! --json`, sometimes `--all` or `--domain`), and the relay is `kill -9`ed at random
//! moments, some while a command runs, and restarted on the same spool. Commands issued
//! while it is down work on the spool directly; now and then a command is `kill -9`ed
//! itself.
//!
//! At the end everything still held is released, the receiver accepts, the queue drains,
//! and the campaign checks that
//! 1. every message that got a 250 arrived, or was deleted or bounced by a command that
//!    said so or may have applied (one cut by a kill); nothing reported deleted or
//!    bounced is sent after the report;
//! 2. a bounced message's sender got a DSN, and no DSN went out for a message no bounce
//!    touched;
//! 3. no message was sent while reported held: no transaction of it began between a
//!    `held` report (or a `queue list` showing it held) and the next release that may
//!    have applied to it (a hold reported `being attempted now` starts nothing);
//! 4. the spool is empty after the drain, and 5. nothing was set aside in `corrupt/`;
//! 6. every action reported done is a log line (the relay's, or the command's own when
//!    it worked on the spool), and 7. a trace event, unless a kill came before the trace
//!    writer could store it.
//!
//! "Sent" is when the receiver read the transaction's MAIL FROM: a relay killed after
//! its final dot may still have its message taken a moment later, after the restart.
//!
//! Bounded for CI: `QUEUE_CAMPAIGN_KILLS`=10 kills over `QUEUE_CAMPAIGN_SECS`=30 s;
//! `QUEUE_CAMPAIGN_SEED` repeats a run's choices (timing still varies).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 2;
/// Messages per session before QUIT.
const PER_SESSION: usize = 5;
/// Domains the aliases send to: every fifth message goes to `AWAY`.
const HOME: &str = "home.example";
const AWAY: &str = "away.example";
/// What the relay says in a postmaster's DSN.
const RETURNED: &str = "returned to the sender by the postmaster";

/// The size of client `t`'s message number `n`.
fn message_size(t: usize, n: usize) -> usize {
    300 + (n * 7919 + t * 104_729) % 4000
}

/// Client `t`'s message number `n`: its id, sender (one per message, so its DSN can be
/// told apart) and recipient alias with the domain it leads to.
fn message(t: usize, n: usize) -> (String, String, &'static str, &'static str) {
    let id = format!("c{t}-{n}");
    let from = format!("{id}@sender.example");
    if n % 5 == 4 {
        (id, from, "jane@forward.example", AWAY)
    } else {
        (id, from, "john@forward.example", HOME)
    }
}

/// A message that got a 250 after DATA.
struct Accepted {
    id: String,
    qid: String,
}

#[derive(Default)]
struct ClientLog {
    accepted: Vec<Accepted>,
    /// The connection died at the dot: may have been accepted.
    unknown: Vec<String>,
    /// Refused after the dot, or not sent whole: must not arrive.
    not_sent: Vec<String>,
}

fn client(t: usize, addr: String, stop: Arc<AtomicBool>) -> ClientLog {
    let mut log = ClientLog::default();
    let mut n = 0usize;
    let end = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let Ok(mut s) = Session::open(&addr, Duration::from_secs(10)) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        for _ in 0..PER_SESSION {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (id, from, to, _) = message(t, n);
            let body = numbered_message(&id, message_size(t, n));
            n += 1;
            match s.send(&from, to, &body) {
                Ok(Outcome::Reply(r)) if r.starts_with("250") => {
                    let qid = r
                        .split("queued as ")
                        .nth(1)
                        .map(|q| q.trim().to_owned())
                        .unwrap_or_else(|| panic!("no queue id in {r:?}"));
                    log.accepted.push(Accepted { id, qid });
                }
                Ok(Outcome::Reply(_)) | Ok(Outcome::NotSent(_)) => log.not_sent.push(id),
                Ok(Outcome::NoReply) => {
                    log.unknown.push(id);
                    break;
                }
                Err(_) => {
                    log.not_sent.push(id);
                    break;
                }
            }
            // A steady trickle, not a flood: the queue stays small enough to list often.
            thread::sleep(Duration::from_millis(50 + (n as u64 * 37) % 200));
        }
        s.quit();
    }
    log
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Act {
    Hold,
    Release,
    Retry,
    Delete,
    Bounce,
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Hold => "hold",
            Act::Release => "release",
            Act::Retry => "retry",
            Act::Delete => "delete",
            Act::Bounce => "bounce",
        }
    }
}

#[derive(Clone, Debug)]
enum Sel {
    Ids(Vec<String>),
    All,
    Domain(String),
}

/// What a command did to one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Res {
    Done,
    /// `being attempted now: … when the attempt ends`.
    AfterAttempt,
    NotFound,
    Unchanged,
    Failed,
    /// The command was cut (the relay or the command killed): may or may not have applied.
    Unknown,
}

impl Res {
    /// The action may have been carried out.
    fn may_have_applied(self) -> bool {
        matches!(self, Res::Done | Res::AfterAttempt | Res::Unknown)
    }
}

/// One `srs-relay queue` action and what it said.
#[derive(Debug)]
struct Cmd {
    act: Act,
    sel: Sel,
    start: Instant,
    end: Instant,
    /// Exit 0 or 1: the output has one line per message the command found.
    complete: bool,
    lines: HashMap<String, Res>,
    stdout: String,
    stderr: String,
    /// The command itself was killed.
    killed: bool,
}

impl Cmd {
    /// What this command did to message `qid` (recipient domain `domain`, `None` for a
    /// DSN); `None` if it did not touch it.
    fn result_for(&self, qid: &str, domain: Option<&str>) -> Option<Res> {
        if let Some(r) = self.lines.get(qid) {
            return Some(*r);
        }
        if self.complete {
            return None;
        }
        let may = match &self.sel {
            Sel::Ids(ids) => ids.iter().any(|i| i == qid),
            Sel::All => true,
            Sel::Domain(d) => domain.is_some_and(|x| x.eq_ignore_ascii_case(d)),
        };
        may.then_some(Res::Unknown)
    }
}

/// One line of an action's output: `ID: what`.
fn parse_line(line: &str) -> Option<(String, Res)> {
    let (id, what) = line.split_once(": ")?;
    let res = match what {
        "held" | "released" | "retry" | "deleted" | "returned to the sender" => Res::Done,
        w if w.starts_with("being attempted now") => Res::AfterAttempt,
        "not in the queue" => Res::NotFound,
        w if w.starts_with("unchanged") => Res::Unchanged,
        w if w.starts_with("failed") => Res::Failed,
        _ => panic!("unexpected line from srs-relay queue: {line:?}"),
    };
    Some((id.to_owned(), res))
}

/// Runs `srs-relay queue ARGS --config CONFIG`; kills it after `kill_after` if given.
/// Returns the exit status (`None`: killed), stdout, stderr, and whether it was killed.
fn run_queue(
    config: &Path,
    args: &[String],
    kill_after: Option<Duration>,
) -> (Option<i32>, String, String, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let mut killed = false;
    if let Some(after) = kill_after {
        thread::sleep(after);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            killed = true;
        }
    }
    // The command waits at most 60 s for the relay.
    let end = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("srs-relay queue {args:?} did not end in 90 s");
        }
        thread::sleep(Duration::from_millis(2));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    (status.code(), out, err, killed)
}

/// A message as `queue list --json` showed it.
#[derive(Clone)]
struct Listed {
    held: bool,
    dsn: bool,
}

/// What the driver did and saw.
#[derive(Default)]
struct DriverLog {
    cmds: Vec<Cmd>,
    /// `queue list` results: when the list ended, and the ids it showed held.
    held_seen: Vec<(Instant, Vec<String>)>,
    /// Queue id → our message id (from the original sender), as listed.
    qid_to_id: HashMap<String, String>,
    lists: usize,
}

/// Issues random queue commands until `stop`; `busy` is set while an action runs (the
/// killer waits for it).
fn driver(config: PathBuf, seed: u64, stop: Arc<AtomicBool>, busy: Arc<AtomicBool>) -> DriverLog {
    let mut rng = Rng(seed);
    let mut log = DriverLog::default();
    let mut known: HashMap<String, Listed> = HashMap::new();
    let end = Instant::now() + Duration::from_secs(600);
    for _ in 0..20_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > end {
            break;
        }
        if known.is_empty() || rng.one_in(5) {
            let (code, out, _, _) = run_queue(&config, &["list".into(), "--json".into()], None);
            let at = Instant::now();
            log.lists += 1;
            // Cut by a kill, or the relay is starting (spool locked): no list this time.
            let parsed = (code == Some(0))
                .then(|| serde_json::from_str::<Vec<serde_json::Value>>(&out).ok())
                .flatten();
            let Some(entries) = parsed else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            known.clear();
            let mut held = Vec::new();
            for e in &entries {
                let qid = e["id"].as_str().unwrap().to_owned();
                let sender = e["original_sender"].as_str().unwrap();
                let dsn = sender.is_empty();
                if let Some(id) = sender.strip_suffix("@sender.example") {
                    log.qid_to_id.insert(qid.clone(), id.to_owned());
                }
                let is_held = e["state"] == "held";
                if is_held {
                    held.push(qid.clone());
                }
                known.insert(qid, Listed { held: is_held, dsn });
            }
            log.held_seen.push((at, held));
            continue;
        }

        let act = match rng.below(100) {
            0..38 => Act::Hold,
            38..70 => Act::Release,
            70..82 => Act::Retry,
            82..91 => Act::Delete,
            _ => Act::Bounce,
        };
        // Delete and bounce never go to every message: they would remove the DSNs of
        // earlier bounces, and with them what check 2 looks for.
        let removes = matches!(act, Act::Delete | Act::Bounce);
        let sel = match rng.below(10) {
            0 if !removes => Sel::All,
            1 => {
                let domains: &[&str] = if removes {
                    &[AWAY, "nowhere.example"]
                } else {
                    &[HOME, AWAY, "HOME.Example", "nowhere.example"]
                };
                Sel::Domain(domains[rng.below(domains.len() as u64) as usize].to_owned())
            }
            _ => {
                // Holds mostly pick waiting messages, releases held ones; now and then
                // an id that is gone, or one in the wrong state.
                let mut listed: Vec<(&String, &Listed)> = known.iter().collect();
                listed.sort_by_key(|(q, _)| *q);
                let pool: Vec<&String> = listed
                    .into_iter()
                    .filter(|(_, l)| !(removes && l.dsn))
                    .filter(|(_, l)| match act {
                        Act::Hold => !l.held || rng.one_in(10),
                        Act::Release => l.held || rng.one_in(10),
                        _ => true,
                    })
                    .map(|(q, _)| q)
                    .collect();
                if pool.is_empty() {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let mut ids = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    ids.push(pool[rng.below(pool.len() as u64) as usize].clone());
                }
                ids.sort();
                ids.dedup();
                Sel::Ids(ids)
            }
        };
        let mut args = vec![act.name().to_owned()];
        match &sel {
            Sel::Ids(ids) => args.extend(ids.iter().cloned()),
            Sel::All => args.push("--all".into()),
            Sel::Domain(d) => args.extend(["--domain".to_owned(), d.clone()]),
        }
        // Now and then the command itself dies (it matters when it works on the spool).
        let kill_after = rng.one_in(12).then(|| Duration::from_millis(rng.below(40)));
        busy.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let (code, stdout, stderr, killed) = run_queue(&config, &args, kill_after);
        let killed = killed && code.is_none();
        let end = Instant::now();
        busy.store(false, Ordering::SeqCst);
        let complete = matches!(code, Some(0 | 1));
        let lines: HashMap<String, Res> = if complete {
            stdout.lines().filter_map(parse_line).collect()
        } else {
            HashMap::new()
        };
        for (qid, res) in &lines {
            if *res != Res::Done {
                continue;
            }
            match act {
                Act::Hold => {
                    known.entry(qid.clone()).and_modify(|l| l.held = true);
                }
                Act::Release => {
                    known.entry(qid.clone()).and_modify(|l| l.held = false);
                }
                Act::Delete | Act::Bounce => {
                    known.remove(qid);
                }
                Act::Retry => {}
            }
        }
        log.cmds.push(Cmd {
            act,
            sel,
            start,
            end,
            complete,
            lines,
            stdout,
            stderr,
            killed,
        });
        thread::sleep(Duration::from_millis(rng.below(120)));
    }
    log
}

/// The value of field `name` in a text log line (`name=value` or `name="value"`).
fn log_field(line: &str, name: &str) -> Option<String> {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.trim_matches('"').to_owned())
}

/// How the receiver answers, changed by turns.
fn set_receiver(script: &Mutex<Script>, rng: &mut Rng) -> &'static str {
    let mut s = script.lock().unwrap();
    s.rcpt.clear();
    s.data = "250 2.0.0 queued".into();
    s.data_delay = Duration::from_millis(rng.below(150));
    match rng.below(10) {
        0..4 => "accept",
        4..8 => {
            for d in [HOME, AWAY] {
                s.rcpt.insert(d.into(), "451 4.3.0 try again later".into());
            }
            "defer at RCPT"
        }
        _ => {
            // DSNs are deferred too; the attempts last a moment (holds during them).
            s.data = "451 4.3.0 not now".into();
            "defer after DATA"
        }
    }
}

#[test]
fn queue_commands_under_kill_9_lose_nothing_and_never_send_what_is_held() {
    let kills = env_u64("QUEUE_CAMPAIGN_KILLS", 10);
    let secs = env_u64("QUEUE_CAMPAIGN_SECS", 30);
    let seed = seed_from_env("QUEUE_CAMPAIGN_SEED");
    assert!(kills >= 1 && secs >= 1);
    eprintln!(
        "queue campaign: QUEUE_CAMPAIGN_KILLS={kills} QUEUE_CAMPAIGN_SECS={secs} QUEUE_CAMPAIGN_SEED={seed}"
    );
    let mut rng = Rng(seed);

    let receiver = Receiver::start();
    let mut relay = Relay::prepare_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    );
    let aliases = relay.dir.path().join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str(&format!("jane@forward.example: jane@{AWAY}\n"));
    std::fs::write(&aliases, text).unwrap();
    relay.spawn();
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (addr, stop) = (relay.addr(), stop.clone());
            thread::spawn(move || client(t, addr, stop))
        })
        .collect();
    let driver_thread = {
        let (config, stop, busy) = (relay.config.clone(), stop.clone(), busy.clone());
        let seed = seed.rotate_left(17) | 1;
        thread::spawn(move || driver(config, seed, stop, busy))
    };

    // The receiver changes its mind every few seconds.
    let phases = {
        let (receiver_script, stop) = (receiver.script.clone(), stop.clone());
        let mut rng = Rng(seed.rotate_left(31) | 1);
        thread::spawn(move || {
            let mut modes = Vec::new();
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                modes.push(set_receiver(&receiver_script, &mut rng));
                let until = Instant::now() + Duration::from_millis(1000 + rng.below(3000));
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            modes
        })
    };

    // Kills: half right as a command runs, the others at random moments (some right
    // after the restart), spread over `secs`.
    let deadline = started + Duration::from_secs(secs);
    let mut during_command = 0;
    let mut kill_times = Vec::new();
    for k in 0..kills {
        let budget_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
            / (kills - k);
        if rng.one_in(2) {
            // The moment a command starts, then a little later: it is connecting, the
            // relay is changing the spool, or the reply is on its way.
            thread::sleep(Duration::from_millis(rng.below(budget_ms)));
            let end = Instant::now() + Duration::from_secs(3);
            while !busy.load(Ordering::SeqCst) && Instant::now() < end {
                thread::sleep(Duration::from_micros(200));
            }
            thread::sleep(Duration::from_micros(rng.below(6000)));
            during_command += usize::from(busy.load(Ordering::SeqCst));
        } else if rng.one_in(5) {
            thread::sleep(Duration::from_millis(rng.below(100)));
        } else {
            thread::sleep(Duration::from_millis(rng.below(2 * budget_ms)));
        }
        assert!(
            relay.is_running(),
            "the relay died by itself; log:\n{}",
            relay.log()
        );
        relay.kill9();
        kill_times.push(Instant::now());
        // Down a moment: commands now work on the spool.
        thread::sleep(Duration::from_millis(rng.below(400)));
        relay.spawn();
    }
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<ClientLog> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let mut dlog = driver_thread.join().unwrap();
    let modes = phases.join().unwrap();
    let load_secs = started.elapsed().as_secs_f64();

    // Release everything, accept everything, drain.
    {
        let mut s = receiver.script.lock().unwrap();
        s.rcpt.clear();
        s.data = "250 2.0.0 queued".into();
        s.data_delay = Duration::ZERO;
    }
    let final_release = Instant::now();
    let config = relay.config.clone();
    let listed = || -> Vec<serde_json::Value> {
        let (code, out, err, _) = run_queue(&config, &["list".into(), "--json".into()], None);
        assert_eq!(code, Some(0), "queue list: {out}{err}");
        serde_json::from_str(&out).unwrap()
    };
    let released_all = wait_until(Duration::from_secs(20), || {
        let start = Instant::now();
        let (code, stdout, stderr, _) =
            run_queue(&config, &["release".into(), "--all".into()], None);
        assert!(
            matches!(code, Some(0 | 1)),
            "release --all: {stdout}{stderr}"
        );
        dlog.cmds.push(Cmd {
            act: Act::Release,
            sel: Sel::All,
            start,
            end: Instant::now(),
            complete: true,
            lines: stdout.lines().filter_map(parse_line).collect(),
            stdout,
            stderr,
            killed: false,
        });
        thread::sleep(Duration::from_millis(200));
        listed().iter().all(|e| e["state"] != "held")
    });
    assert!(released_all, "messages still held: {:?}", listed());

    let accepted: HashMap<&str, &Accepted> = logs
        .iter()
        .flat_map(|l| &l.accepted)
        .map(|a| (a.id.as_str(), a))
        .collect();
    let unknown: HashSet<&str> = logs
        .iter()
        .flat_map(|l| &l.unknown)
        .map(String::as_str)
        .collect();
    let not_sent: usize = logs.iter().map(|l| l.not_sent.len()).sum();
    let mut qid_of: HashMap<String, String> = dlog
        .qid_to_id
        .iter()
        .map(|(q, id)| (id.clone(), q.clone()))
        .collect();
    // The relay logs every message it takes, also those whose 250 a kill cut off.
    let log = relay.log();
    for line in log.lines().filter(|l| l.contains("event=\"received\"")) {
        if let (Some(qid), Some(from)) = (log_field(line, "queue_id"), log_field(line, "from"))
            && let Some(id) = from.strip_suffix("@sender.example")
        {
            qid_of.insert(id.to_owned(), qid);
        }
    }
    for a in accepted.values() {
        qid_of.insert(a.id.clone(), a.qid.clone());
    }
    let domain_of = |id: &str| -> &'static str {
        let (t, n) = id[1..].split_once('-').unwrap();
        message(t.parse().unwrap(), n.parse().unwrap()).3
    };
    // Every result of every action on message `id`.
    let results = |id: &str, act: Act| -> Vec<(&Cmd, Res)> {
        let Some(qid) = qid_of.get(id) else {
            return Vec::new();
        };
        dlog.cmds
            .iter()
            .filter(|c| c.act == act)
            .filter_map(|c| c.result_for(qid, Some(domain_of(id))).map(|r| (c, r)))
            .collect()
    };
    let may = |id: &str, act: Act| results(id, act).iter().any(|(_, r)| r.may_have_applied());
    let done = |id: &str, act: Act| results(id, act).iter().any(|(_, r)| *r == Res::Done);

    // Messages by id; DSNs by the message they return.
    let arrivals = || {
        let (mut msgs, mut dsns): (
            HashMap<String, Vec<Received>>,
            HashMap<String, Vec<Received>>,
        ) = Default::default();
        for m in receiver.messages() {
            if m.mail_from.is_empty() {
                let to = m.rcpt_to.first().cloned().unwrap_or_default();
                let id = to.strip_suffix("@sender.example").unwrap_or(&to).to_owned();
                dsns.entry(id).or_default().push(m);
            } else {
                let id = message_id(&m.data).expect("a message of ours");
                msgs.entry(id).or_default().push(m);
            }
        }
        (msgs, dsns)
    };
    let explained =
        |id: &str, msgs: &HashMap<String, Vec<Received>>, dsns: &HashMap<String, Vec<Received>>| {
            msgs.contains_key(id)
                || may(id, Act::Delete)
                || (may(id, Act::Bounce) && dsns.contains_key(id))
        };
    let drained = wait_until(Duration::from_secs(60), || {
        relay.spooled() == 0 && {
            let (msgs, dsns) = arrivals();
            accepted.keys().all(|id| {
                explained(id, &msgs, &dsns) && (!done(id, Act::Bounce) || dsns.contains_key(*id))
            })
        }
    });
    let (msgs, dsns) = arrivals();
    let log = relay.log();

    // The figures.
    let count = |act: Act, res: Res| {
        dlog.cmds
            .iter()
            .filter(|c| c.act == act)
            .map(|c| c.lines.values().filter(|r| **r == res).count())
            .sum::<usize>()
    };
    let deleted = accepted
        .keys()
        .filter(|id| !msgs.contains_key(**id) && may(id, Act::Delete))
        .count();
    let bounced = accepted
        .keys()
        .filter(|id| !msgs.contains_key(**id) && !may(id, Act::Delete) && may(id, Act::Bounce))
        .count();
    let delivered = accepted.keys().filter(|id| msgs.contains_key(**id)).count();
    let duplicates: usize = msgs.values().map(|v| v.len() - 1).sum();
    let cut = dlog.cmds.iter().filter(|c| !c.complete).count();
    let mut took: Vec<Duration> = dlog.cmds.iter().map(|c| c.end - c.start).collect();
    took.sort();
    let cli_killed = dlog.cmds.iter().filter(|c| c.killed).count();
    let locked_restarts = relay.log().matches("is already open (locked)").count();
    let mode_count = |m: &str| modes.iter().filter(|x| **x == m).count();
    let after_attempt: usize = dlog
        .cmds
        .iter()
        .map(|c| {
            c.lines
                .values()
                .filter(|r| **r == Res::AfterAttempt)
                .count()
        })
        .sum();
    eprintln!(
        "queue campaign: {kills} kills ({during_command} while a command ran) in {load_secs:.1} s; \
         receiver turns: {} accept, {} defer at RCPT, {} defer after DATA",
        mode_count("accept"),
        mode_count("defer at RCPT"),
        mode_count("defer after DATA")
    );
    eprintln!(
        "queue campaign: messages: {} accepted, {} cut at the dot, {not_sent} not sent; \
         {delivered} delivered ({duplicates} duplicates), {deleted} deleted, {bounced} bounced \
         ({} DSNs to {} senders)",
        accepted.len(),
        unknown.len(),
        dsns.values().map(Vec::len).sum::<usize>(),
        dsns.len(),
    );
    eprintln!(
        "queue campaign: commands: {} actions (median {:.1} ms; {cut} cut, {cli_killed} by \
         killing the command), {} lists; done: {} holds, {} releases, {} retries, {} deletes, \
         {} bounces; {after_attempt} after the attempt; held in a list {} times; restarts that \
         waited for a command on the spool: {locked_restarts}",
        dlog.cmds.len(),
        took.get(took.len() / 2)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        dlog.lists,
        count(Act::Hold, Res::Done),
        count(Act::Release, Res::Done),
        count(Act::Retry, Res::Done),
        count(Act::Delete, Res::Done),
        count(Act::Bounce, Res::Done),
        dlog.held_seen.iter().map(|(_, h)| h.len()).sum::<usize>(),
    );
    let tail = |s: &str| {
        let mut from = s.len().saturating_sub(20_000);
        while !s.is_char_boundary(from) {
            from += 1;
        }
        s[from..].to_owned()
    };
    assert!(
        accepted.len() >= 20,
        "too little got through to prove anything; log:\n{}",
        tail(&log)
    );

    // What happened to message `id`, for failures: seconds since the start.
    let history = |id: &str| {
        let secs = |t: Instant| t.duration_since(started).as_secs_f64();
        let qid = qid_of.get(id).map_or("?", String::as_str);
        let mut out = format!("history of {id} ({qid}), seconds from the start:\n");
        for c in &dlog.cmds {
            if let Some(r) = c.result_for(qid, Some(domain_of(id))) {
                out += &format!(
                    "  {:.3}-{:.3} {} {:?}: {r:?}\n",
                    secs(c.start),
                    secs(c.end),
                    c.act.name(),
                    c.sel
                );
            }
        }
        for (at, held) in &dlog.held_seen {
            if held.iter().any(|h| h == qid) {
                out += &format!("  {:.3} listed held\n", secs(*at));
            }
        }
        for m in msgs.get(id).into_iter().flatten() {
            out += &format!("  {:.3}-{:.3} sent\n", secs(m.mail_at), secs(m.at));
        }
        for k in &kill_times {
            out += &format!("  {:.3} kill -9\n", secs(*k));
        }
        out += "relay log:\n";
        for l in log
            .lines()
            .filter(|l| l.contains(qid) || l.contains("spool recovered"))
        {
            out += l;
            out.push('\n');
        }
        out
    };

    // 1. Nothing accepted is lost.
    let mut lost: Vec<&str> = accepted
        .keys()
        .copied()
        .filter(|id| !explained(id, &msgs, &dsns))
        .collect();
    lost.sort();
    assert!(
        lost.is_empty(),
        "lost {} messages that got a 250: {lost:?}\n{}",
        lost.len(),
        lost.iter()
            .take(3)
            .map(|id| history(id))
            .collect::<String>()
    );
    // ... and what was reported deleted or bounced does not come back afterwards.
    for (id, copies) in &msgs {
        for act in [Act::Delete, Act::Bounce] {
            for (c, r) in results(id, act) {
                let late = copies.iter().find(|m| r == Res::Done && m.mail_at > c.end);
                assert!(
                    late.is_none(),
                    "{id} was sent {:?} after `{}` said {:?}\n{}",
                    late.unwrap().mail_at - c.end,
                    c.act.name(),
                    c.stdout,
                    history(id)
                );
            }
        }
    }
    // Nothing arrives that was not sent whole; every copy is whole.
    for (id, copies) in &msgs {
        assert!(
            accepted.contains_key(id.as_str()) || unknown.contains(id.as_str()),
            "{id} arrived but was never accepted"
        );
        let (t, n) = id[1..].split_once('-').unwrap();
        let (t, n): (usize, usize) = (t.parse().unwrap(), n.parse().unwrap());
        let (_, _, _, domain) = message(t, n);
        for m in copies {
            assert_bytes_eq(
                without_our_received(&m.data),
                &dot_stuff(&numbered_message(id, message_size(t, n))),
                id,
            );
            assert_eq!(m.rcpt_to.len(), 1);
            assert!(
                m.rcpt_to[0].ends_with(&format!("@{domain}")),
                "{id}: {:?}",
                m.rcpt_to
            );
        }
    }

    // 2. Every bounce reported done has its DSN; every DSN came from a bounce.
    for id in accepted.keys() {
        if done(id, Act::Bounce) {
            assert!(
                dsns.contains_key(*id),
                "{id} was bounced but its sender got no DSN"
            );
        }
    }
    for (id, copies) in &dsns {
        assert!(
            may(id, Act::Bounce),
            "a DSN to {id}'s sender, but no bounce touched it: {:?}",
            String::from_utf8_lossy(&copies[0].data)
        );
        for d in copies {
            assert!(
                String::from_utf8_lossy(&d.data).contains(RETURNED),
                "DSN for {id} without {RETURNED:?}"
            );
        }
    }

    // 3. Nothing was sent while it was reported held.
    let mut held_from: HashMap<&str, Vec<Instant>> = HashMap::new();
    for c in dlog.cmds.iter().filter(|c| c.act == Act::Hold) {
        for (qid, r) in &c.lines {
            if *r == Res::Done {
                held_from.entry(qid).or_default().push(c.end);
            }
        }
    }
    for (at, held) in &dlog.held_seen {
        for qid in held {
            held_from.entry(qid).or_default().push(*at);
        }
    }
    let mut checked_holds = 0;
    for (id, copies) in &msgs {
        let Some(qid) = qid_of.get(id) else { continue };
        let Some(holds) = held_from.get(qid.as_str()) else {
            continue;
        };
        // Where a hold may have ended: a release that may have applied.
        let mut releases: Vec<Instant> = results(id, Act::Release)
            .into_iter()
            .filter(|(_, r)| r.may_have_applied() || *r == Res::Failed)
            .map(|(c, _)| c.start)
            .collect();
        releases.push(final_release);
        for m in copies {
            let Some(held) = holds.iter().filter(|h| **h < m.mail_at).max() else {
                continue;
            };
            checked_holds += 1;
            let released = releases.iter().any(|r| r > held && *r < m.mail_at);
            assert!(
                released,
                "{id} ({qid}) was sent {:?} after it was reported held, with no release in \
                 between\n{}",
                m.mail_at - *held,
                history(id)
            );
        }
    }

    // 4. Nothing is left in the spool.
    assert!(
        drained,
        "not drained: {} in the spool, {} lost; queue: {:?}",
        relay.spooled(),
        lost.len(),
        listed()
    );
    assert!(listed().is_empty(), "queue not empty: {:?}", listed());
    let leftovers: Vec<String> = std::fs::read_dir(relay.dir.path().join("spool/queue"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".free"))
        .collect();
    assert!(leftovers.is_empty(), "left in spool/queue: {leftovers:?}");

    // 5. Recovery never had to set a file aside.
    let corrupt: Vec<_> = std::fs::read_dir(relay.dir.path().join("spool/corrupt"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        corrupt.is_empty(),
        "files set aside in spool/corrupt: {corrupt:?}"
    );

    // 6. Every action reported done is a log line: the relay's, or on the spool the
    // command's own.
    let mut logged: HashMap<(String, &str), usize> = HashMap::new();
    let texts = std::iter::once(log.as_str()).chain(dlog.cmds.iter().map(|c| c.stderr.as_str()));
    for text in texts {
        for line in text.lines().filter(|l| l.contains("queue_action")) {
            if let (Some(qid), Some(action)) =
                (log_field(line, "queue_id"), log_field(line, "action"))
            {
                for act in [
                    Act::Hold,
                    Act::Release,
                    Act::Retry,
                    Act::Delete,
                    Act::Bounce,
                ] {
                    if act.name() == action {
                        *logged.entry((qid.clone(), act.name())).or_default() += 1;
                    }
                }
            }
        }
    }
    let mut reported: HashMap<(String, &str), usize> = HashMap::new();
    for c in &dlog.cmds {
        for (qid, r) in &c.lines {
            if *r == Res::Done {
                *reported.entry((qid.clone(), c.act.name())).or_default() += 1;
            }
        }
    }
    let mut unlogged: Vec<_> = reported
        .iter()
        .filter(|(k, n)| logged.get(*k).copied().unwrap_or(0) < **n)
        .map(|((q, a), _)| format!("{a} {q}"))
        .collect();
    unlogged.sort();
    assert!(
        unlogged.is_empty(),
        "{} actions reported done without a log line: {:?}",
        unlogged.len(),
        &unlogged[..unlogged.len().min(20)]
    );

    // 7. Every action reported done is a trace event per recipient, unless a kill came
    // before the trace writer could store it (it gathers events for 200 ms): the relay
    // stops with SIGTERM, which lets it store what it holds.
    assert!(relay.terminate().success());
    let cfg = srs_relay::config::Config::load(Some(&config)).unwrap();
    let trace = srs_relay::trace::open_for_reading(&cfg).unwrap();
    let kind = |a: Act| match a {
        Act::Hold => "held",
        Act::Release => "released",
        Act::Retry => "retry",
        Act::Delete => "deleted",
        Act::Bounce => "failed",
    };
    let mut traced = 0;
    let mut untraced = Vec::new();
    let mut events: HashMap<String, Vec<&'static str>> = HashMap::new();
    for c in &dlog.cmds {
        let killed_soon = kill_times
            .iter()
            .any(|k| *k >= c.start && *k <= c.end + Duration::from_secs(2));
        for (qid, r) in &c.lines {
            if *r != Res::Done || killed_soon {
                continue;
            }
            let kinds = events.entry(qid.clone()).or_insert_with(|| {
                trace
                    .show(qid)
                    .unwrap()
                    .iter()
                    .filter(|e| e.queue_id.as_deref() == Some(qid.as_str()))
                    .map(|e| e.kind.as_str())
                    .collect()
            });
            // Counted off, so that an action done twice needs two events.
            match kinds.iter().position(|k| *k == kind(c.act)) {
                Some(i) => {
                    kinds.swap_remove(i);
                    traced += 1;
                }
                None => untraced.push(format!("{} {qid}", c.act.name())),
            }
        }
    }
    assert!(
        untraced.is_empty(),
        "{} actions reported done without a trace event: {:?}",
        untraced.len(),
        &untraced[..untraced.len().min(20)]
    );
    eprintln!(
        "queue campaign: checked {checked_holds} arrivals after a hold; {} actions logged, \
         {traced} traced",
        reported.values().sum::<usize>()
    );
}

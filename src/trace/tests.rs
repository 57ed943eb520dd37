//! The store's searches, the same test bodies against a real SQLite file and a real
//! PostgreSQL server (a private cluster: tests/common/postgres.rs), and the tracer's
//! promise: a slow or failing store drops (and counts) events, and `record` never waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

#[path = "../../tests/common/postgres.rs"]
mod pg_server;

fn received(id: &str, rcpt: &str, orig: &str, subject: &str) -> Event {
    let mut e = Event::new(Kind::Received)
        .queue_id(id)
        .sender("Bob@Example.org")
        .srs_sender("bounces+SRS=x=y=example.org=bob@fwd.example")
        .recipient(rcpt)
        .original_recipient(orig);
    e.message_id = Some(format!("{id}@example.org"));
    e.subject = Some(subject.into());
    e
}

fn outcome(kind: Kind, id: &str, rcpt: &str, attempt: u32, reply: &str) -> Event {
    let mut e = Event::new(kind)
        .queue_id(id)
        .recipient(rcpt)
        .remote("mx.home.example[127.0.0.1]:25")
        .reply(reply);
    e.attempt = Some(attempt);
    e
}

fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t/trace.sqlite")).unwrap();
    (dir, s)
}

#[test]
fn the_sqlite_file_and_its_journal_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, mut s) = sqlite();
    s.insert(&[received("Q1", "a@x.org", "a@x.org", "s")])
        .unwrap();
    for name in ["trace.sqlite", "trace.sqlite-wal", "trace.sqlite-shm"] {
        let mode = std::fs::metadata(dir.path().join("t").join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

fn postgres() -> (PostgresStore, pg_server::PgServer) {
    let pg = pg_server::PgServer::start();
    let s = PostgresStore::open(&PostgresUrl::parse(&pg.url()).unwrap()).unwrap();
    (s, pg)
}

/// `$body` (a fn taking `&mut dyn TraceStore`) as one test per store.
macro_rules! on_both_stores {
    ($body:ident, $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            let (_dir, mut s) = sqlite();
            $body(&mut s);
        }
        #[test]
        fn $postgres() {
            let (mut s, _pg) = postgres();
            $body(&mut s);
        }
    };
}

on_both_stores!(
    search_gives_each_recipient_its_final_status,
    sqlite_search_gives_each_recipient_its_final_status,
    postgres_search_gives_each_recipient_its_final_status
);
on_both_stores!(
    a_status_search_finds_what_the_whole_search_says,
    sqlite_a_status_search_finds_what_the_whole_search_says,
    postgres_a_status_search_finds_what_the_whole_search_says
);
on_both_stores!(
    show_follows_the_message_id_and_prune_forgets,
    sqlite_show_follows_the_message_id_and_prune_forgets,
    postgres_show_follows_the_message_id_and_prune_forgets
);
on_both_stores!(
    loop_refusals_come_once_per_message_within_the_window,
    sqlite_loop_refusals_come_once_per_message_within_the_window,
    postgres_loop_refusals_come_once_per_message_within_the_window
);
on_both_stores!(
    prune_goes_in_steps_and_keeps_the_recent,
    sqlite_prune_goes_in_steps_and_keeps_the_recent,
    postgres_prune_goes_in_steps_and_keeps_the_recent
);

on_both_stores!(
    tally_counts_per_bucket_kind_and_key,
    sqlite_tally_counts_per_bucket_kind_and_key,
    postgres_tally_counts_per_bucket_kind_and_key
);

fn tally_counts_per_bucket_kind_and_key(s: &mut dyn TraceStore) {
    let hour = 3_600_000;
    let at = |mut e: Event, t: i64| {
        e.time = t;
        e
    };
    let mut tls = outcome(Kind::Delivered, "Q2", "a@x.org", 1, "250 ok");
    tls.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
    s.insert(&[
        at(received("Q1", "a@x.org", "a@x.org", "s"), 10 * hour + 5),
        at(received("Q2", "a@x.org", "a@x.org", "s"), 10 * hour + 6),
        at(received("Q3", "a@x.org", "a@x.org", "s"), 11 * hour),
        at(
            outcome(Kind::Delivered, "Q1", "a@x.org", 1, "250 ok"),
            10 * hour + 9,
        ),
        at(tls, 11 * hour + 1),
        // Outside the window, and a kind not asked for.
        at(received("Q0", "a@x.org", "a@x.org", "s"), 9 * hour),
        at(
            outcome(Kind::Deferred, "Q3", "a@x.org", 1, "451"),
            11 * hour + 2,
        ),
    ])
    .unwrap();
    let kinds = ["received", "delivered"];
    let t = s
        .tally(10 * hour, 12 * hour, hour, TallyKey::Nothing, &kinds)
        .unwrap();
    let got: Vec<(i64, &str, i64)> = t
        .iter()
        .map(|t| (t.bucket / hour, t.kind.as_str(), t.count))
        .collect();
    let mut want = vec![
        (10, "delivered", 1),
        (10, "received", 2),
        (11, "delivered", 1),
        (11, "received", 1),
    ];
    let mut got = got;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(t.iter().all(|t| t.key.is_none()));
    let by_tls = s
        .tally(
            10 * hour,
            12 * hour,
            24 * hour,
            TallyKey::Tls,
            &["delivered"],
        )
        .unwrap();
    let mut keys: Vec<(Option<String>, i64)> =
        by_tls.into_iter().map(|t| (t.key, t.count)).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            (None, 1),
            (Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into()), 1)
        ]
    );
}

fn filter() -> Filter {
    Filter {
        limit: 1000,
        ..Filter::default()
    }
}

fn search_gives_each_recipient_its_final_status(s: &mut dyn TraceStore) {
    let mut refused = Event::new(Kind::Refused)
        .sender("eve@bad.example")
        .original_recipient("bounces+SRS=forged@fwd.example")
        .reply("550 5.7.1 bad hash");
    refused.time -= 10;
    let mut bounce = received(
        "Q3",
        "bob@example.org",
        "bounces+SRS=ok@fwd.example",
        "Undeliverable",
    );
    bounce.status = Some("bounced".into());
    s.insert(&[
        refused,
        received(
            "Q1",
            "john@home.example",
            "john@fwd.example",
            "Lunch on Friday",
        ),
        received(
            "Q1",
            "jane@else.example",
            "john@fwd.example",
            "Lunch on Friday",
        ),
        outcome(
            Kind::Deferred,
            "Q1",
            "john@home.example",
            1,
            "451 4.3.0 later",
        ),
        outcome(Kind::Delivered, "Q1", "john@home.example", 2, "250 ok"),
        outcome(
            Kind::Failed,
            "Q1",
            "jane@else.example",
            1,
            "550 5.1.1 no such user",
        ),
        received("Q2", "ann@home.example", "ann@fwd.example", "50% off"),
        outcome(
            Kind::Deferred,
            "Q2",
            "ann@home.example",
            1,
            "451 4.4.1 connection refused",
        ),
        bounce,
    ])
    .unwrap();

    let by = |f: Filter| -> Vec<(String, String)> {
        s.search(&f)
            .unwrap()
            .into_iter()
            .map(|r| (r.recipient.or(r.original_recipient).unwrap(), r.status))
            .collect()
    };
    let john = by(Filter {
        recipient: Some("JOHN@home.example".into()),
        ..filter()
    });
    assert_eq!(john, [("john@home.example".into(), "delivered".into())]);
    // The address as given matches every recipient it expanded to.
    let mut fwd = by(Filter {
        recipient: Some("john@fwd.example".into()),
        ..filter()
    });
    fwd.sort();
    assert_eq!(
        fwd,
        [
            ("jane@else.example".into(), "failed".into()),
            ("john@home.example".into(), "delivered".into())
        ]
    );
    assert_eq!(
        by(Filter {
            recipient: Some("*@home.example".into()),
            status: Some("deferred".into()),
            ..filter()
        }),
        [("ann@home.example".into(), "deferred".into())]
    );
    assert_eq!(
        by(Filter {
            status: Some("refused".into()),
            ..filter()
        }),
        [("bounces+srs=forged@fwd.example".into(), "refused".into())]
    );
    assert_eq!(
        by(Filter {
            status: Some("bounced".into()),
            ..filter()
        }),
        [("bob@example.org".into(), "queued".into())]
    );
    assert_eq!(
        by(Filter {
            subject: Some("50%".into()),
            ..filter()
        })
        .len(),
        1
    );
    assert_eq!(
        by(Filter {
            subject: Some("5_%".into()),
            ..filter()
        })
        .len(),
        0
    );
    // Case-insensitive, in both stores.
    assert_eq!(
        by(Filter {
            subject: Some("FRIDAY".into()),
            ..filter()
        })
        .len(),
        2
    );
    assert_eq!(
        by(Filter {
            sender: Some("bob@example.org".into()),
            ..filter()
        })
        .len(),
        4
    );
    assert_eq!(
        by(Filter {
            sender: Some("bounces+srs=*".into()),
            ..filter()
        })
        .len(),
        4
    );
    assert_eq!(
        by(Filter {
            message_id: Some("<Q2@example.org>".into()),
            ..filter()
        })
        .len(),
        1
    );
    assert_eq!(
        by(Filter {
            limit: 2,
            ..filter()
        })
        .len(),
        2
    );
    assert_eq!(
        by(Filter {
            since: Some(now_ms() + 60_000),
            ..filter()
        })
        .len(),
        0
    );

    let row = &s
        .search(&Filter {
            recipient: Some("john@home.example".into()),
            ..filter()
        })
        .unwrap()[0];
    assert_eq!(row.attempts, Some(2));
    assert_eq!(row.reply.as_deref(), Some("250 ok"));
    assert_eq!(row.subject.as_deref(), Some("Lunch on Friday"));
}

/// A search by status (which for the rare ones starts from their events: `sql::by_outcome`)
/// gives exactly the rows of that status a search without one gives, in the same order.
fn a_status_search_finds_what_the_whole_search_says(s: &mut dyn TraceStore) {
    let start = now_ms() - 86_400_000;
    let at = |mut e: Event, t: i64| {
        e.time = t;
        e
    };
    let mut events = Vec::new();
    for i in 0..240i64 {
        let id = format!("Q{i}");
        let rcpt = format!("r{}@home{}.example", i % 7, i % 2);
        let t = start + i * 1000;
        events.push(at(received(&id, &rcpt, "a@fwd.example", "s"), t));
        let then: &[Kind] = match i % 12 {
            0 => &[],
            1 => &[Kind::Deferred],
            2 => &[Kind::Deferred, Kind::Deferred],
            3 => &[Kind::Deferred, Kind::Delivered],
            4 => &[Kind::Delivered],
            5 => &[Kind::Failed],
            6 => &[Kind::Deferred, Kind::Failed],
            7 => &[Kind::Deferred, Kind::Expired],
            8 => &[Kind::Held],
            9 => &[Kind::Held, Kind::Released],
            10 => &[Kind::Held, Kind::Released, Kind::Delivered],
            _ => &[Kind::Deferred, Kind::Deleted],
        };
        for (n, kind) in then.iter().enumerate() {
            let e = outcome(*kind, &id, &rcpt, n as u32 + 1, "reply");
            events.push(at(e, t + 100 + n as i64));
        }
        // Kinds that are not delivery events change nothing.
        if i % 5 == 0 {
            events.push(at(
                Event::new(Kind::DsnSent).queue_id(&id).recipient(&rcpt),
                t + 50,
            ));
        }
        if i % 13 == 0 {
            let refused = Event::new(Kind::Refused)
                .sender("eve@bad.example")
                .original_recipient(&format!("x{i}@fwd.example"))
                .reply("550 5.7.1 bad hash");
            events.push(at(refused, t + 1));
        }
    }
    // The clock set back an hour between a message and its deferral.
    let late = start + 300_000;
    events.push(at(
        received("QC", "c@home0.example", "c@fwd.example", "s"),
        late,
    ));
    events.push(at(
        outcome(Kind::Deferred, "QC", "c@home0.example", 1, "451"),
        late - 3_600_000,
    ));
    s.insert(&events).unwrap();

    let all = |f: Filter| s.search(&Filter { limit: 1000, ..f }).unwrap();
    for since in [None, Some(start + 120_000), Some(late)] {
        for recipient in [None, Some("*@home0.example"), Some("r3@home1.example")] {
            let whole = all(Filter {
                since,
                recipient: recipient.map(Into::into),
                ..filter()
            });
            for status in STATUSES.iter().filter(|s| **s != "bounced") {
                let found = all(Filter {
                    since,
                    recipient: recipient.map(Into::into),
                    status: Some((*status).into()),
                    ..filter()
                });
                let want: Vec<Row> = whole
                    .iter()
                    .filter(|r| r.status == *status)
                    .cloned()
                    .collect();
                assert_eq!(found, want, "{status}, since {since:?}, {recipient:?}");
                if since.is_none() && recipient.is_none() {
                    assert!(!found.is_empty(), "{status}");
                }
            }
        }
    }
}

fn show_follows_the_message_id_and_prune_forgets(s: &mut dyn TraceStore) {
    let mut dsn = Event::new(Kind::DsnSent)
        .queue_id("Q1")
        .recipient("bob@example.org");
    dsn.detail = Some(r#"{"dsn_id":"Q9"}"#.into());
    s.insert(&[
        received("Q1", "john@home.example", "john@fwd.example", "Hi"),
        outcome(
            Kind::Failed,
            "Q1",
            "john@home.example",
            1,
            "550 5.7.1 SPF fail",
        ),
        dsn,
        // Another copy of the same message (another sender group).
        {
            let mut e = received("Q2", "x@y.example", "x@fwd.example", "Hi");
            e.message_id = Some("Q1@example.org".into());
            e
        },
        received("Q3", "z@y.example", "z@fwd.example", "Other"),
    ])
    .unwrap();
    let kinds: Vec<(Option<String>, Kind)> = s
        .show("Q1")
        .unwrap()
        .into_iter()
        .map(|e| (e.queue_id, e.kind))
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(kinds.contains(&(Some("Q2".into()), Kind::Received)));
    assert_eq!(s.show("<Q1@example.org>").unwrap().len(), 4);
    let failed = s
        .show("Q1")
        .unwrap()
        .into_iter()
        .find(|e| e.kind == Kind::Failed)
        .unwrap();
    assert!(explain(&failed).unwrap().contains("SPF"));

    assert_eq!(s.prune(now_ms() + 1).unwrap(), 5);
    assert!(s.show("Q1").unwrap().is_empty());
}

fn loop_refusals_come_once_per_message_within_the_window(s: &mut dyn TraceStore) {
    let refusal = |id: &str, rcpt: &str, time: i64, reason: &str| {
        let mut detail = serde_json::Map::new();
        detail.insert("stage".into(), "data".into());
        detail.insert("reason".into(), reason.into());
        detail.insert(
            "received_hosts".into(),
            serde_json::json!([["a.example", 30], [id, 1]]),
        );
        let mut e = Event::new(Kind::Refused)
            .queue_id(id)
            .recipient(rcpt)
            .reply("554 5.4.6 loop")
            .detail_json(detail);
        e.time = time;
        e
    };
    s.insert(&[
        refusal("L1", "a@x.example", 1_000, "loop"),
        refusal("L1", "b@x.example", 1_000, "loop"),
        refusal("L2", "a@x.example", 2_000, "loop"),
        refusal("N1", "a@x.example", 2_500, "size"),
        refusal("L3", "a@x.example", 9_000, "loop"),
    ])
    .unwrap();
    // One message to two aliases: two envelopes, one Message-ID, one loop.
    let with_id = |id: &str| {
        let mut e = refusal(id, "c@x.example", 3_000, "loop");
        e.message_id = Some("m4@x.example".into());
        e
    };
    s.insert(&[with_id("L4A"), with_id("L4B")]).unwrap();
    let got = s.loop_refusals(0, 5_000, 100).unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, 3_000);
    assert_eq!(got[1].0, 2_000);
    assert_eq!(got[2].0, 1_000);
    let (hosts, loops) = loops::by_host(&got);
    assert_eq!(loops, 3);
    assert_eq!(
        (hosts[0].host.as_str(), hosts[0].messages, hosts[0].stamps),
        ("a.example", 3, 90)
    );
    assert_eq!(s.loop_refusals(0, 10_000, 1).unwrap().len(), 1);
}

fn prune_goes_in_steps_and_keeps_the_recent(s: &mut dyn TraceStore) {
    let old = 2 * sql::PRUNE_STEP as usize + 5;
    let events: Vec<Event> = (0..old)
        .map(|i| {
            let mut e = received(&format!("OLD{i}"), "a@home.example", "a@fwd.example", "x");
            e.time = 1_000 + i as i64;
            e
        })
        .collect();
    for chunk in events.chunks(1000) {
        s.insert(chunk).unwrap();
    }
    s.insert(&[received("NEW", "b@home.example", "b@fwd.example", "y")])
        .unwrap();
    assert_eq!(s.prune(now_ms() - 60_000).unwrap(), old as u64);
    let left = s.search(&filter()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].queue_id.as_deref(), Some("NEW"));
}

#[test]
fn postgres_schema_is_made_once_by_relays_starting_together() {
    let pg = pg_server::PgServer::start();
    let url = PostgresUrl::parse(&pg.url()).unwrap();
    let e = PostgresStore::open_read_only(&url).err().unwrap();
    assert!(e.to_string().contains("no trace yet"), "{e}");
    let opened: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut s = PostgresStore::open(&url)?;
                s.insert(&[received(
                    &format!("Q{i}"),
                    "a@b.example",
                    "a@fwd.example",
                    "x",
                )])
            })
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let mut reader = PostgresStore::open_read_only(&url).unwrap();
    assert_eq!(reader.search(&filter()).unwrap().len(), 6);
    // The reader cannot write.
    assert!(reader.insert(&[Event::new(Kind::Connection)]).is_err());
    assert_eq!(pg.query_value("SELECT count(*) FROM trace_events"), "6");
}

/// A store that fails while `down` is set, and can be made to stall.
struct Flaky {
    down: Arc<AtomicBool>,
    stall: Arc<Mutex<()>>,
    kept: Arc<Mutex<Vec<Event>>>,
}

impl TraceStore for Flaky {
    fn insert(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let _stalled = self.stall.lock().unwrap();
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError("disk on fire".into()));
        }
        self.kept.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
    fn prune(&mut self, _: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn search(&self, _: &Filter) -> Result<Vec<Row>, StoreError> {
        Ok(Vec::new())
    }
    fn show(&self, _: &str) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }
    fn loop_refusals(
        &self,
        _: i64,
        _: i64,
        _: u32,
    ) -> Result<Vec<(i64, Option<String>)>, StoreError> {
        Ok(Vec::new())
    }
    fn tally(
        &self,
        _: i64,
        _: i64,
        _: i64,
        _: TallyKey,
        _: &[&str],
    ) -> Result<Vec<Tally>, StoreError> {
        Ok(Vec::new())
    }
}

/// A tracer over a [`Flaky`] store, with its switches and what it kept.
type FlakyParts = (
    Tracer,
    Arc<AtomicBool>,
    Arc<Mutex<()>>,
    Arc<Mutex<Vec<Event>>>,
);

fn flaky(capacity: usize) -> FlakyParts {
    let down = Arc::new(AtomicBool::new(false));
    let stall = Arc::new(Mutex::new(()));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (d, st, k) = (down.clone(), stall.clone(), kept.clone());
    let open: Opener = Box::new(move || {
        Ok(Box::new(Flaky {
            down: d.clone(),
            stall: st.clone(),
            kept: k.clone(),
        }) as Box<dyn TraceStore>)
    });
    (
        Tracer::start_with(open, Duration::from_secs(3600), capacity),
        down,
        stall,
        kept,
    )
}

#[test]
fn a_stalled_store_drops_and_counts_without_blocking() {
    let (tracer, _down, stall, kept) = flaky(100);
    let held = stall.lock().unwrap();
    let started = Instant::now();
    for _ in 0..10_000 {
        tracer.record(Event::new(Kind::Connection));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "record waited");
    // At most the channel and one batch in the writer's hands get through.
    assert!(
        tracer.dropped() >= 10_000 - 100 - 1_000,
        "dropped {}",
        tracer.dropped()
    );
    drop(held);
    tracer.settle(Duration::from_secs(10));
    let kept = kept.lock().unwrap().len() as u64;
    assert_eq!(kept + tracer.dropped(), 10_000);
    assert_eq!(tracer.stored(), kept);
}

#[test]
fn a_failing_store_drops_then_catches_up() {
    let (tracer, down, _stall, kept) = flaky(1000);
    down.store(true, Ordering::SeqCst);
    tracer.record(Event::new(Kind::Connection));
    tracer.settle(Duration::from_secs(10));
    assert_eq!(tracer.dropped(), 1);
    down.store(false, Ordering::SeqCst);
    // Within the retry pause the events are dropped; after it they are kept again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while kept.lock().unwrap().is_empty() && Instant::now() < deadline {
        tracer.record(Event::new(Kind::Received));
        tracer.settle(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!kept.lock().unwrap().is_empty(), "never caught up");
    assert!(tracer.dropped() >= 1);
}

#[test]
fn disabled_records_nothing() {
    let t = Tracer::disabled();
    t.record(Event::new(Kind::Connection));
    assert_eq!((t.dropped(), t.stored(), t.enabled()), (0, 0, false));
}

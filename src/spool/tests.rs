use super::*;

use super::envelope::encode_line;
use super::files::{overwrite_file, rename_noreplace};
use super::free::{MAX_FREE_FILES, RECYCLE_MAX_LEN};
use super::id::valid_id;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sample(id: &str) -> Envelope {
    Envelope {
        id: id.to_owned(),
        arrival: 1_700_000_000,
        original_sender: "alice@example.org".into(),
        sender: "SRS0=abcd=XY=example.org=alice@forward.example".into(),
        recipients: vec![
            Recipient {
                address: "john@home.example".into(),
                original: "john@forward.example".into(),
                state: RecipientState::Pending,
                last_error: None,
                remote: None,
                notify: Some("FAILURE,DELAY".into()),
                orcpt: None,
            },
            Recipient {
                address: "jane@else.example".into(),
                original: "john@forward.example".into(),
                state: RecipientState::Pending,
                last_error: None,
                remote: None,
                notify: None,
                orcpt: None,
            },
        ],
        client: ClientInfo {
            ip: "192.0.2.7".into(),
            helo: "mail.example.org".into(),
            tls: Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into()),
        },
        attempts: 0,
        next_attempt: 1_700_000_000,
        size: 0,
        env_id: Some("QQ314159".into()),
        ret_full: false,
        delay_warned: false,
        dsn_owed: Vec::new(),
        held_since: None,
        held_secs: 0,
        sender_authenticated: None,
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Stores a message with a fresh id and returns its envelope.
fn store_new(spool: &Spool, body: &[u8]) -> Envelope {
    let mut env = sample(&Spool::new_id());
    env.size = body.len() as u64;
    spool.store(&env, body).unwrap();
    env
}

#[test]
fn store_then_open_roundtrip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/spool");
    let (spool, rec) = Spool::open(&dir).unwrap();
    assert_eq!(rec, Recovered::default());
    assert_eq!(spool.dir(), dir);

    let a = store_new(&spool, b"Subject: one\r\n\r\nbody\r\n");
    let mut b = sample(&Spool::new_id());
    b.original_sender = String::new();
    b.sender = String::new();
    b.client.tls = None;
    b.env_id = None;
    b.ret_full = true;
    spool.store(&b, b"").unwrap();
    assert_eq!(
        names(&dir.join("queue")),
        vec![format!("{}.q", a.id), format!("{}.q", b.id)]
    );
    // One file: the envelope line, then the message as received.
    let file = fs::read_to_string(dir.join("queue").join(format!("{}.q", a.id))).unwrap();
    let (json, message) = file.split_once('\n').unwrap();
    assert!(
        json.starts_with("{\"version\":2,\"message_len\":22,"),
        "{json}"
    );
    assert!(json.ends_with('}'));
    assert!(json.contains("\"state\":\"pending\""), "{json}");
    assert_eq!(message, "Subject: one\r\n\r\nbody\r\n");
    assert_eq!(spool.envelope(&a.id).unwrap(), Some(a.clone()));
    drop(spool);

    let (spool, rec) = Spool::open(&dir).unwrap();
    assert_eq!(rec.envelopes, vec![a.clone(), b.clone()]);
    assert_eq!(rec.removed_incomplete, 0);
    assert!(rec.set_aside.is_empty());
    assert_eq!(
        spool.read_message(&a.id).unwrap(),
        b"Subject: one\r\n\r\nbody\r\n"
    );
    assert_eq!(spool.read_message(&b.id).unwrap(), b"");
}

#[test]
fn update_persists_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let mut env = store_new(&spool, b"x\r\n");
    assert!(!env.is_done());
    assert_eq!(env.pending().count(), 2);

    env.attempts = 1;
    env.next_attempt += 300;
    env.recipients[0].state = RecipientState::Delivered;
    env.recipients[0].remote = Some("mx.home.example".into());
    env.recipients[0].last_error = Some("250 2.0.0 Ok: queued as 4Xyz".into());
    env.recipients[1].last_error = Some("451 4.7.1 try again later".into());
    spool.update(&env).unwrap();
    assert_eq!(env.pending().count(), 1);
    assert!(!env.is_done());

    env.recipients[1].state = RecipientState::Failed;
    env.recipients[1].last_error = Some("550 5.1.1 no such user".into());
    env.attempts = 2;
    spool.update(&env).unwrap();
    assert!(env.is_done());
    // The queue file and the updated envelope; no temporary file left behind.
    assert_eq!(
        names(&tmp.path().join("queue")),
        vec![format!("{}.q", env.id), format!("{}.state", env.id)]
    );
    assert_eq!(spool.envelope(&env.id).unwrap(), Some(env.clone()));
    assert_eq!(spool.read_message(&env.id).unwrap(), b"x\r\n");
    drop(spool);

    let (_spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![env]);
    assert_eq!(rec.removed_incomplete, 0);
}

#[test]
fn update_of_unknown_id_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let env = sample(&Spool::new_id());
    let err = spool.update(&env).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(names(&tmp.path().join("queue")).is_empty());
}

#[test]
fn remove_takes_the_message_out_and_keeps_its_file_for_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let long = vec![b'L'; 10_000];
    let mut a = store_new(&spool, &long);
    a.attempts = 1;
    spool.update(&a).unwrap();
    let b = store_new(&spool, b"b\r\n");
    spool.remove(&a.id).unwrap();
    assert_eq!(
        names(&q),
        sorted(vec!["0.free".to_owned(), format!("{}.q", b.id)])
    );
    assert_eq!(
        spool.read_message(&a.id).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(spool.envelope(&a.id).unwrap(), None);
    // Idempotent.
    spool.remove(&a.id).unwrap();

    // A free file is reused once a directory fsync made its rename durable: the next
    // store makes one, the store after it overwrites the file, cut to its new length.
    let c = store_new(&spool, b"c\r\n");
    assert_eq!(names(&q).len(), 3, "{:?}", names(&q));
    let d = store_new(&spool, b"short\r\n");
    let queue_files =
        |envs: &[&Envelope]| sorted(envs.iter().map(|e| format!("{}.q", e.id)).collect());
    assert_eq!(names(&q), queue_files(&[&b, &c, &d]));
    assert_eq!(spool.read_message(&d.id).unwrap(), b"short\r\n");
    let len = fs::metadata(q.join(format!("{}.q", d.id))).unwrap().len();
    assert_eq!(len, encode_line(&d, Some(7)).unwrap().len() as u64 + 7);

    // Free files outlive a restart, and are reused after it (after the first fsync).
    spool.remove(&d.id).unwrap();
    drop(spool);
    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![b.clone(), c.clone()]);
    assert_eq!(rec.removed_incomplete, 0);
    let mut expected = queue_files(&[&b, &c]);
    expected.push("1.free".to_owned());
    assert_eq!(names(&q), sorted(expected));
    let e = store_new(&spool, b"e\r\n");
    let f = store_new(&spool, b"f\r\n");
    assert_eq!(names(&q), queue_files(&[&b, &c, &e, &f]));
    assert_eq!(spool.read_message(&f.id).unwrap(), b"f\r\n");
}

#[test]
fn a_free_file_with_another_name_is_never_reused() {
    // As a crash between link and unlink in the hard-link fallback, or a file system
    // check, can leave it: a free name on a live queue file's inode.
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let live = store_new(&spool, b"live\r\n");
    drop(spool);
    fs::hard_link(q.join(format!("{}.q", live.id)), q.join("7.free")).unwrap();
    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![live.clone()]);
    assert_eq!(names(&q), vec![format!("{}.q", live.id)]);
    for _ in 0..3 {
        store_new(&spool, b"other\r\n");
    }
    assert_eq!(spool.read_message(&live.id).unwrap(), b"live\r\n");

    // And at run time, an overwrite refuses such a file.
    fs::hard_link(q.join(format!("{}.q", live.id)), q.join("8.free")).unwrap();
    assert!(overwrite_file(&q.join("8.free"), &[b"x"]).is_err());
    assert_eq!(spool.read_message(&live.id).unwrap(), b"live\r\n");
}

#[test]
fn large_messages_are_not_kept_for_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let big = store_new(&spool, &vec![b'B'; RECYCLE_MAX_LEN as usize]);
    spool.remove(&big.id).unwrap();
    assert!(names(&tmp.path().join("queue")).is_empty());
}

#[test]
fn the_free_pool_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let envs: Vec<Envelope> = (0..MAX_FREE_FILES + 5)
        .map(|_| store_new(&spool, b"m"))
        .collect();
    for env in &envs {
        spool.remove(&env.id).unwrap();
    }
    assert_eq!(names(&q).len(), MAX_FREE_FILES);
    drop(spool);
    // More free files than the pool takes (left by a build with a larger pool): the
    // extra ones go.
    for n in 0..3 {
        fs::write(q.join(format!("{}.free", 10_000 + n)), b"old").unwrap();
    }
    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert!(rec.envelopes.is_empty() && rec.set_aside.is_empty());
    assert_eq!(names(&q).len(), MAX_FREE_FILES);
    let env = store_new(&spool, b"new");
    assert_eq!(spool.read_message(&env.id).unwrap(), b"new");
}

#[test]
fn recovery_removes_orphan_msg_and_tmp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let kept = store_new(&spool, b"kept\r\n");
    drop(spool);

    // Crash while writing a store.
    fs::write(q.join("0002.7.tmp"), b"{\"version\":2,\"id\":\"00").unwrap();
    // Crash during an update: the old envelope stands, the .tmp goes.
    let update_tmp = format!("{}.3.tmp", kept.id);
    fs::write(q.join(&update_tmp), b"{").unwrap();
    // Crash during remove: .q gone, .state still there.
    fs::write(q.join("0003.state"), b"{}").unwrap();
    // Crash while a store overwrote a free file: it is still free.
    fs::write(q.join("5.free"), b"{\"version\":2,\"id\":\"0004\", half").unwrap();

    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![kept.clone()]);
    assert_eq!(rec.removed_incomplete, 3);
    assert!(rec.set_aside.is_empty());
    assert_eq!(
        names(&q),
        sorted(vec!["5.free".to_owned(), format!("{}.q", kept.id)])
    );
    assert!(names(&tmp.path().join("corrupt")).is_empty());
    assert_eq!(spool.read_message(&kept.id).unwrap(), b"kept\r\n");
}

#[test]
fn a_garbage_queue_file_is_set_aside_with_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let c = tmp.path().join("corrupt");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let kept = store_new(&spool, b"kept\r\n");
    drop(spool);

    fs::write(q.join("bad.q"), b"this is not json\nprecious mail").unwrap();
    fs::write(q.join("bad.state"), b"{}").unwrap();

    let (_spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![kept.clone()]);
    assert_eq!(rec.removed_incomplete, 0);
    assert_eq!(rec.set_aside, vec!["bad.q", "bad.state"]);
    assert_eq!(names(&c), vec!["bad.q", "bad.state"]);
    assert_eq!(
        fs::read(c.join("bad.q")).unwrap(),
        b"this is not json\nprecious mail"
    );
    assert_eq!(names(&q), vec![format!("{}.q", kept.id)]);
}

#[test]
fn a_garbage_state_is_set_aside_and_the_message_kept_as_received() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let kept = store_new(&spool, b"kept\r\n");
    drop(spool);
    let state = format!("{}.state", kept.id);
    fs::write(q.join(&state), b"{\"version\":2,").unwrap();

    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![kept.clone()]);
    assert_eq!(rec.set_aside, vec![state.clone()]);
    assert_eq!(names(&tmp.path().join("corrupt")), vec![state]);
    assert_eq!(spool.read_message(&kept.id).unwrap(), b"kept\r\n");
}

#[test]
fn unusable_envelopes_and_stray_files_are_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let c = tmp.path().join("corrupt");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let good = store_new(&spool, b"good\r\n");
    drop(spool);

    let json = |env: &Envelope, version: u32| {
        let mut v = serde_json::to_value(env).unwrap();
        v["version"] = version.into();
        serde_json::to_vec(&v).unwrap()
    };
    let queue_file = |env: &Envelope, version: u32, len: Option<u64>, message: &[u8]| {
        let mut v = serde_json::to_value(env).unwrap();
        v["version"] = version.into();
        if let Some(len) = len {
            v["message_len"] = len.into();
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        bytes.push(b'\n');
        bytes.extend_from_slice(message);
        bytes
    };
    // Version 1: an .env whose .msg is missing.
    fs::write(q.join("nomsg.env"), json(&sample("nomsg"), 1)).unwrap();
    // A version this code does not know.
    fs::write(
        q.join("future.q"),
        queue_file(&sample("future"), 3, Some(1), b"m"),
    )
    .unwrap();
    // No version at all.
    let mut unversioned = serde_json::to_vec(&sample("nover")).unwrap();
    unversioned.extend_from_slice(b"\nm");
    fs::write(q.join("nover.q"), unversioned).unwrap();
    // An envelope naming another id.
    fs::write(
        q.join("other.q"),
        queue_file(&sample("different"), 2, Some(1), b"m"),
    )
    .unwrap();
    // Cut short: fewer octets than the envelope says.
    fs::write(
        q.join("short.q"),
        queue_file(&sample("short"), 2, Some(5), b"m"),
    )
    .unwrap();
    // No message length.
    fs::write(
        q.join("nolen.q"),
        queue_file(&sample("nolen"), 2, None, b"m"),
    )
    .unwrap();
    // Something that is not ours, twice (the second time the name is taken in corrupt/).
    fs::write(q.join("README"), b"hello").unwrap();
    fs::write(c.join("README"), b"earlier").unwrap();
    // A sub-directory is left alone.
    fs::create_dir(q.join("subdir")).unwrap();

    let (_spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![good.clone()]);
    let mut aside = rec.set_aside.clone();
    aside.sort();
    assert_eq!(
        aside,
        vec![
            "README",
            "future.q",
            "nolen.q",
            "nomsg.env",
            "nover.q",
            "other.q",
            "short.q",
        ]
    );
    assert_eq!(fs::read(c.join("README")).unwrap(), b"earlier");
    assert_eq!(fs::read(c.join("README.1")).unwrap(), b"hello");
    assert_eq!(
        names(&q),
        vec![format!("{}.q", good.id), "subdir".to_owned()]
    );
}

#[test]
fn a_known_good_queue_file_parses() {
    // The documented format, written by hand: guards against accidental format changes.
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    fs::create_dir_all(&q).unwrap();
    let text = r#"{"version":2,"message_len":5,"id":"0006123456789a0000000004d2deadbeef","arrival":1700000000,"original_sender":"","sender":"","recipients":[{"address":"a@b.example","original":"x@y.example","state":"delivered","last_error":"250 ok","remote":"mx.b.example","notify":null},{"address":"c@d.example","original":"c@d.example","state":"failed"}],"client":{"ip":"2001:db8::1","helo":"h","tls":null},"attempts":3,"next_attempt":1700000900,"size":5,"env_id":null,"ret_full":true,"future_field":7}
hello"#;
    fs::write(q.join("0006123456789a0000000004d2deadbeef.q"), text).unwrap();
    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert!(rec.set_aside.is_empty(), "{:?}", rec.set_aside);
    let env = &rec.envelopes[0];
    assert_eq!(env.recipients[0].state, RecipientState::Delivered);
    assert_eq!(env.recipients[1].state, RecipientState::Failed);
    assert_eq!(env.recipients[1].notify, None);
    assert!(env.is_done());
    assert_eq!(env.attempts, 3);
    assert!(env.ret_full);
    assert_eq!(spool.read_message(&env.id).unwrap(), b"hello");
}

#[test]
fn a_version_1_spool_is_converted() {
    // Written by hand as srs-relay wrote version 1: an .env and a .msg per message.
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    fs::create_dir_all(&q).unwrap();
    let text = r#"{"version":1,"id":"0006123456789a0000000004d2deadbeef","arrival":1700000000,
        "original_sender":"","sender":"","recipients":[{"address":"a@b.example",
        "original":"x@y.example","state":"delivered","last_error":"250 ok",
        "remote":"mx.b.example","notify":null},{"address":"c@d.example",
        "original":"c@d.example","state":"failed"}],
        "client":{"ip":"2001:db8::1","helo":"h","tls":null},"attempts":3,
        "next_attempt":1700000900,"size":5,"env_id":null,"ret_full":true,"future_field":7}"#;
    let id = "0006123456789a0000000004d2deadbeef";
    fs::write(q.join(format!("{id}.env")), text).unwrap();
    fs::write(q.join(format!("{id}.msg")), b"hello").unwrap();
    // A conversion cut short after its queue file was committed.
    let mut half = sample("half");
    half.attempts = 4;
    fs::write(q.join("half.env"), serde_json::to_vec(&half).unwrap()).unwrap();
    fs::write(q.join("half.msg"), b"old").unwrap();
    half.attempts = 5;
    let mut converted = encode_line(&half, Some(3)).unwrap();
    converted.extend_from_slice(b"new");
    fs::write(q.join("half.q"), converted).unwrap();
    // Version 1 recovery's cases: a .msg alone is an unfinished receive.
    fs::write(q.join("orphan.msg"), b"x").unwrap();
    // A damaged queue file beside a version 1 pair: the pair is the good copy.
    let mut both = sample("both");
    both.attempts = 2;
    let mut v1 = serde_json::to_value(&both).unwrap();
    v1["version"] = 1.into();
    fs::write(q.join("both.env"), serde_json::to_vec(&v1).unwrap()).unwrap();
    fs::write(q.join("both.msg"), b"v1 copy").unwrap();
    fs::write(q.join("both.q"), b"{\"version\":2,\"id\":\"bo").unwrap();

    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.set_aside, vec!["both.q"]);
    assert_eq!(rec.removed_incomplete, 1);
    assert_eq!(
        names(&q),
        vec![format!("{id}.q"), "both.q".to_owned(), "half.q".to_owned()]
    );
    assert_eq!(spool.read_message("both").unwrap(), b"v1 copy");
    assert!(rec.envelopes.contains(&both));
    let all = rec.envelopes.clone();
    let rec = Recovered {
        envelopes: rec
            .envelopes
            .into_iter()
            .filter(|e| e.id != "both")
            .collect(),
        ..rec
    };
    let env = &rec.envelopes[0];
    assert_eq!(env.id, id);
    assert_eq!(env.recipients[0].state, RecipientState::Delivered);
    assert_eq!(env.recipients[0].last_error.as_deref(), Some("250 ok"));
    assert_eq!(env.attempts, 3);
    assert!(env.ret_full);
    assert_eq!(spool.read_message(id).unwrap(), b"hello");
    assert_eq!(rec.envelopes[1], half);
    assert_eq!(spool.read_message("half").unwrap(), b"new");
    drop(spool);

    // And it stays converted.
    let (_spool, again) = Spool::open(tmp.path()).unwrap();
    assert_eq!(again.envelopes, all);
    assert_eq!(again.removed_incomplete, 0);
}

#[test]
fn ids_are_unique_sorted_and_filename_safe() {
    let ids: Vec<String> = (0..10_000).map(|_| Spool::new_id()).collect();
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len());
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
    }
    for id in &ids {
        assert_eq!(id.len(), 34);
        assert!(valid_id(id), "{id}");
    }

    // And from several threads at once.
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..2_500).map(|_| Spool::new_id()).collect::<Vec<_>>()))
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(all.insert(id));
        }
    }
    assert_eq!(all.len(), 10_000);
}

#[test]
fn bad_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    fs::write(tmp.path().join("secret.msg"), b"outside the queue").unwrap();
    let long = "a".repeat(65);
    for id in [
        "",
        "..",
        "../secret",
        "a/b",
        "/etc/passwd",
        "a.b",
        "a b",
        "a\0b",
        "é",
        &long,
    ] {
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            spool.read_message(id).unwrap_err().kind(),
            io::ErrorKind::InvalidInput,
            "{id:?}"
        );
        assert_eq!(kind(spool.remove(id)), io::ErrorKind::InvalidInput);
        assert_eq!(
            kind(spool.store(&sample(id), b"x")),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(kind(spool.update(&sample(id))), io::ErrorKind::InvalidInput);
    }
    assert!(tmp.path().join("secret.msg").exists());
    assert!(names(&tmp.path().join("queue")).is_empty());
    assert!(valid_id(&"a".repeat(64)));
    assert!(valid_id("Abc-123_x"));
}

#[test]
fn storing_an_existing_id_fails_and_keeps_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let env = store_new(&spool, b"original\r\n");
    let err = spool.store(&env, b"impostor\r\n").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(spool.read_message(&env.id).unwrap(), b"original\r\n");

    assert_eq!(
        names(&tmp.path().join("queue")),
        vec![format!("{}.q", env.id)]
    );
    // The commit itself never replaces a queue file, whatever checks came before it.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::write(&a, b"a").unwrap();
    fs::write(&b, b"b").unwrap();
    assert_eq!(
        rename_noreplace(&a, &b).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(fs::read(&b).unwrap(), b"b");
    drop(spool);
    let (_spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![env]);
}

#[test]
fn a_spool_is_locked_while_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let env = store_new(&spool, b"x");
    // A msg being received right now must not be taken for an orphan by a second opener.
    let err = Spool::open(tmp.path()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let clone = spool.clone();
    drop(spool);
    assert!(Spool::open(tmp.path()).is_err());
    drop(clone);
    let (_spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![env]);
}

#[test]
fn open_fails_when_the_spool_path_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    fs::write(&file, b"").unwrap();
    assert!(Spool::open(&file).is_err());
    assert!(Spool::open(&file.join("sub")).is_err());
}

/// Switches this thread's filesystem uid away from root (which ignores permission bits)
/// for as long as the guard lives. `setfsuid` is per thread, so other tests are not affected.
struct NotRoot(Option<libc::uid_t>);

impl NotRoot {
    fn new() -> NotRoot {
        // SAFETY: plain syscalls without pointers.
        unsafe {
            if libc::geteuid() == 0 {
                NotRoot(Some(libc::setfsuid(65534) as libc::uid_t))
            } else {
                NotRoot(None)
            }
        }
    }
}

impl Drop for NotRoot {
    fn drop(&mut self) {
        if let Some(uid) = self.0 {
            // SAFETY: as above.
            unsafe { libc::setfsuid(uid) };
        }
    }
}

#[test]
fn store_to_an_unwritable_dir_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("queue");
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let good = store_new(&spool, b"before\r\n");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&q, fs::Permissions::from_mode(0o555)).unwrap();

    let (probe, result) = {
        let _guard = NotRoot::new();
        let probe = File::create(q.join("probe"));
        let env = sample(&Spool::new_id());
        (probe.is_ok(), spool.store(&env, b"hello\r\n"))
    };
    fs::set_permissions(&q, fs::Permissions::from_mode(0o700)).unwrap();
    if probe {
        eprintln!("skipped: could not make a directory unwritable for this process");
        return;
    }
    let err = result.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert_eq!(names(&q), vec![format!("{}.q", good.id)]);

    // An unwritable queue also fails update, and the old envelope stands.
    let mut changed = good.clone();
    changed.attempts = 9;
    fs::set_permissions(&q, fs::Permissions::from_mode(0o555)).unwrap();
    let result = {
        let _guard = NotRoot::new();
        spool.update(&changed)
    };
    fs::set_permissions(&q, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(result.is_err());
    drop(spool);
    let (_spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.envelopes, vec![good]);
}

/// Runs this test binary again, filtered to `test`, with `var=value` in its environment,
/// optionally wrapped in `wrapper`. Returns the child's stdout, or `None` if the wrapper
/// could not set things up (exit code 77 or the wrapper missing).
fn rerun_self(wrapper: &[&str], test: &str, var: &str, value: &Path) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let mut args: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
    args.push(value.into());
    args.push(exe.into());
    for a in ["--exact", test, "--nocapture", "--test-threads=1"] {
        args.push(a.into());
    }
    let out = Command::new(&args[0])
        .args(&args[1..])
        .env(var, value)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(101) || stdout.contains("FAILED") {
        panic!("child failed:\n{stdout}\n{stderr}");
    }
    if !out.status.success() {
        eprintln!("child could not run ({}): {stderr}", out.status);
        return None;
    }
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    Some(stdout)
}

const ENOSPC_VAR: &str = "SRS_RELAY_SPOOL_TEST_ENOSPC_DIR";

/// A real ENOSPC: a 256 KiB tmpfs mounted in a private user+mount namespace (no root
/// needed where unprivileged user namespaces are allowed). Skipped where they are not.
#[test]
fn store_on_a_full_disk_fails_and_leaves_nothing() {
    if let Some(mnt) = std::env::var_os(ENOSPC_VAR) {
        return enospc_child(Path::new(&mnt));
    }
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        r#"mount -t tmpfs -o size=256k tmpfs "$0" || exit 77; exec "$@""#,
    ];
    let test = "spool::tests::store_on_a_full_disk_fails_and_leaves_nothing";
    if rerun_self(&wrapper, test, ENOSPC_VAR, tmp.path()).is_none() {
        eprintln!("skipped: cannot mount a small tmpfs in a user namespace here");
    }
}

fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid C string and `st` a properly sized out-parameter.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

fn enospc_child(mnt: &Path) {
    let dir = mnt.join("spool");
    let q = dir.join("queue");
    let (spool, _) = Spool::open(&dir).unwrap();
    let free = free_bytes(mnt);
    assert!(
        free > 0 && free <= 256 * 1024,
        "not on the small tmpfs: {free}"
    );

    // The message does not fit.
    let big = vec![b'x'; free as usize + 64 * 1024];
    let err = spool.store(&sample(&Spool::new_id()), &big).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(names(&q).is_empty(), "{:?}", names(&q));

    // The message fills the disk exactly: no room for the envelope.
    let exact = vec![b'y'; free as usize];
    let err = spool.store(&sample(&Spool::new_id()), &exact).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(names(&q).is_empty(), "{:?}", names(&q));

    // The space was given back: a small message still fits, and updates work.
    let mut env = store_new(&spool, b"small\r\n");
    env.attempts = 1;
    spool.update(&env).unwrap();

    // Disk full during update: the old envelope stands.
    let filler = mnt.join("filler");
    let mut f = File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&chunk[..1]);
    drop(f);
    let mut bigger = env.clone();
    bigger.recipients[0].last_error = Some("e".repeat(16 * 1024));
    let err = spool.update(&bigger).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(spool);
    fs::remove_file(&filler).unwrap();

    let (spool, rec) = Spool::open(&dir).unwrap();
    assert_eq!(rec.envelopes, vec![env.clone()]);
    assert_eq!(rec.removed_incomplete, 0);
    assert!(rec.set_aside.is_empty());
    assert_eq!(spool.read_message(&env.id).unwrap(), b"small\r\n");

    // Free files give their space back when the disk is full.
    let kept: Vec<Envelope> = (0..8).map(|_| store_new(&spool, &[b'k'; 8000])).collect();
    for k in &kept {
        spool.remove(&k.id).unwrap();
    }
    // 8 free files, the message's queue file and its updated envelope.
    assert_eq!(names(&q).len(), 10, "{:?}", names(&q));
    let mut f = File::create(&filler).unwrap();
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&chunk[..1]);
    drop(f);
    let wide = store_new(&spool, &[b'w'; 30_000]);
    assert_eq!(spool.read_message(&wide.id).unwrap(), vec![b'w'; 30_000]);
    assert_eq!(
        names(&q),
        sorted(vec![
            format!("{}.q", env.id),
            format!("{}.state", env.id),
            format!("{}.q", wide.id)
        ])
    );
}

const CRASH_VAR: &str = "SRS_RELAY_SPOOL_TEST_CRASH_DIR";

/// The message body a crash-test writer stores under `id`: its length and content derive
/// from the id, so the reader can check every recovered message byte for byte.
fn crash_body(id: &str) -> Vec<u8> {
    let n = id
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let len = (n % 200_000) as usize + 1;
    id.bytes().chain(*b"\r\n").cycle().take(len).collect()
}

/// `kill -9` a process that stores, updates and removes as fast as it can, at varying
/// moments; every time, recovery must find only whole messages, and nothing to set aside.
#[test]
fn kill_9_at_any_moment_leaves_a_consistent_spool() {
    if let Some(dir) = std::env::var_os(CRASH_VAR) {
        return crash_child(Path::new(&dir));
    }
    let test = "spool::tests::kill_9_at_any_moment_leaves_a_consistent_spool";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let exe = std::env::current_exe().unwrap();
    let mut total = 0;
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CRASH_VAR, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child is running (it creates the lock file), then a bit more.
        let start = Instant::now();
        while !dir.join("queue").exists() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(30 + round * 23));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "child exited on its own: {status}");

        let (spool, rec) = Spool::open(&dir).unwrap();
        assert!(rec.set_aside.is_empty(), "{:?}", rec.set_aside);
        for env in &rec.envelopes {
            let body = spool.read_message(&env.id).unwrap();
            assert_eq!(body.len() as u64, env.size);
            assert_eq!(body, crash_body(&env.id), "{}", env.id);
        }
        let left = names(&dir.join("queue"));
        let count = |ext: &str| left.iter().filter(|n| n.ends_with(ext)).count();
        assert_eq!(count(".q"), rec.envelopes.len(), "{left:?}");
        assert!(count(".state") <= rec.envelopes.len(), "{left:?}");
        assert_eq!(
            count(".q") + count(".state") + count(".free"),
            left.len(),
            "{left:?}"
        );
        total += rec.envelopes.len();
    }
    assert!(total > 0, "the writer never got anything stored");
}

fn crash_child(dir: &Path) {
    let (spool, _) = Spool::open(dir).unwrap();
    let start = Instant::now();
    let mut i = 0u64;
    // Bounded, in case the parent dies without killing us.
    while start.elapsed() < Duration::from_secs(20) {
        let id = Spool::new_id();
        let body = crash_body(&id);
        let mut env = sample(&id);
        env.size = body.len() as u64;
        spool.store(&env, &body).unwrap();
        env.attempts += 1;
        env.recipients[0].state = RecipientState::Delivered;
        spool.update(&env).unwrap();
        if i.is_multiple_of(3) {
            spool.remove(&id).unwrap();
        }
        i += 1;
    }
}

/// `Incoming::edit` gives the same queue file whether the message stayed in memory or
/// went to a file: the prefix in front, the removed ranges gone, the rest as received.
#[test]
fn edited_incoming_messages_are_stored_as_edited_in_memory_and_from_a_file() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    for size in [1000usize, 3 * SPILL_AT] {
        let mut original = b"Received: x\r\nA-R: forged\r\n\tcont\r\nSubject: s\r\n\r\n".to_vec();
        original.extend((0..size).map(|i| b'a' + (i % 26) as u8));
        let mut m = Incoming::new();
        for chunk in original.chunks(7000) {
            m.push(chunk);
            if m.wants_write() {
                m.write_out(&spool);
            }
        }
        assert_eq!(m.in_memory().is_some(), size == 1000);
        let read = match m.in_memory() {
            Some(b) => b.to_vec(),
            None => m.read_back(&spool).unwrap().unwrap(),
        };
        assert_eq!(read, original);
        let start = original.windows(4).position(|w| w == b"A-R:").unwrap() as u64;
        let end = start + b"A-R: forged\r\n\tcont\r\n".len() as u64;
        m.edit(b"New: 1\r\n", std::iter::once(start..end).collect());
        let env = sample(&Spool::new_id());
        spool
            .store_incoming(std::slice::from_ref(&env), &mut m)
            .unwrap();
        let (mut file, len) = spool.open_message(&env.id).unwrap();
        let mut stored = Vec::new();
        file.read_to_end(&mut stored).unwrap();
        let mut want = b"New: 1\r\n".to_vec();
        want.extend_from_slice(&original[..start as usize]);
        want.extend_from_slice(&original[end as usize..]);
        assert_eq!(len, want.len() as u64);
        assert_eq!(stored[stored.len() - want.len()..], want[..], "size {size}");
    }
}

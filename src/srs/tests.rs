use super::*;
use proptest::prelude::*;

const NOW: u64 = 1_577_836_860; // postsrsd's test clock: TT = 2W
const DAY: u64 = 86_400;

fn classic() -> Srs {
    Srs::new(
        &["tops3cr3t"],
        Options {
            format: Format::Classic,
            ..Options::default()
        },
    )
    .unwrap()
}

fn microsoft() -> Srs {
    Srs::new(&["tops3cr3t"], Options::default()).unwrap()
}

// ---- public vectors (postsrsd's unit and black-box tests) ----

#[test]
fn vector_forward_srs0() {
    assert_eq!(
        classic()
            .forward_for_domain_at("test@otherdomain.com", "example.com", NOW)
            .unwrap(),
        "SRS0=vmyz=2W=otherdomain.com=test@example.com"
    );
    // Mail::SRS style: the alias's domain is the SRS domain.
    assert_eq!(
        classic()
            .forward_at("test@otherdomain.com", "alias@example.com", NOW)
            .unwrap(),
        "SRS0=vmyz=2W=otherdomain.com=test@example.com"
    );
}

#[test]
fn vector_reverse_srs0_any_case() {
    let srs = classic();
    for a in [
        "SRS0=XjO9=2V=otherdomain.com=test@example.com",
        "srs0=xjo9=2v=otherdomain.com=test@example.com",
        "SRS0=XJO9=2V=OTHERDOMAIN.COM=TEST@EXAMPLE.COM",
    ] {
        assert_eq!(
            srs.reverse_at(a, NOW).unwrap().to_ascii_lowercase(),
            "test@otherdomain.com",
            "{a}"
        );
    }
}

#[test]
fn vector_srs0_to_srs1() {
    assert_eq!(
        classic()
            .forward_for_domain_at("SRS0=opaque+string@otherdomain.com", "example.com", NOW)
            .unwrap(),
        "SRS1=chaI=otherdomain.com==opaque+string@example.com"
    );
}

#[test]
fn vector_srs1_to_srs1() {
    assert_eq!(
        classic()
            .forward_for_domain_at(
                "SRS1=X=thirddomain.com==opaque+string@otherdomain.com",
                "example.com",
                NOW
            )
            .unwrap(),
        "SRS1=JIBX=thirddomain.com==opaque+string@example.com"
    );
}

#[test]
fn vector_reverse_srs1_one_hop() {
    assert_eq!(
        classic()
            .reverse_at("SRS1=JIBX=thirddomain.com==opaque+string@example.com", NOW)
            .unwrap(),
        "SRS0=opaque+string@thirddomain.com"
    );
}

#[test]
fn vector_base64_and_base64url() {
    assert_eq!(
        classic()
            .forward_for_domain_at("hash234@somedomain.com", "example.com", NOW)
            .unwrap(),
        "SRS0=+3/5=2W=somedomain.com=hash234@example.com"
    );
    let url = Srs::new(
        &["tops3cr3t"],
        Options {
            format: Format::Classic,
            hash_encoding: HashEncoding::Base64Url,
            ..Options::default()
        },
    )
    .unwrap();
    let out = url
        .forward_for_domain_at("hash234@somedomain.com", "example.com", NOW)
        .unwrap();
    assert_eq!(out, "SRS0=-3_5=2W=somedomain.com=hash234@example.com");
    // Both alphabets reverse, whichever the output setting.
    for srs in [&url, &classic()] {
        assert_eq!(srs.reverse_at(&out, NOW).unwrap(), "hash234@somedomain.com");
        assert_eq!(
            srs.reverse_at("SRS0=+3/5=2W=somedomain.com=hash234@example.com", NOW)
                .unwrap(),
            "hash234@somedomain.com"
        );
    }
}

#[test]
fn vector_too_old() {
    assert!(matches!(
        classic().reverse_at("SRS0=te87=T7=otherdomain.com=test@example.com", NOW),
        Err(ReverseError::Expired { .. })
    ));
}

#[test]
fn vector_from_the_future() {
    assert!(matches!(
        classic().reverse_at("SRS0=VcIb=7N=otherdomain.com=test@example.com", NOW),
        Err(ReverseError::Expired { .. })
    ));
}

// ---- separators, errors, verification ----

#[test]
fn classic_separators() {
    for sep in ['=', '+', '-'] {
        let srs = Srs::new(
            &["tops3cr3t"],
            Options {
                format: Format::Classic,
                separator: sep,
                ..Options::default()
            },
        )
        .unwrap();
        let out = srs
            .forward_for_domain_at("test@otherdomain.com", "example.com", NOW)
            .unwrap();
        assert_eq!(
            out,
            format!("SRS0{sep}vmyz=2W=otherdomain.com=test@example.com")
        );
        // Any separator reverses under any setting.
        assert_eq!(
            classic().reverse_at(&out, NOW).unwrap(),
            "test@otherdomain.com"
        );
    }
}

#[test]
fn distinct_errors() {
    let srs = classic();
    assert_eq!(
        srs.reverse_at("bob@example.com", NOW),
        Err(ReverseError::NotSrs)
    );
    assert_eq!(srs.reverse_at("<>", NOW), Err(ReverseError::NotSrs));
    assert!(matches!(
        srs.reverse_at("SRS0=vmyz=2W@example.com", NOW),
        Err(ReverseError::Malformed(_))
    ));
    assert!(matches!(
        srs.reverse_at("SRS0=vmyz=!!=otherdomain.com=test@example.com", NOW),
        Err(ReverseError::Malformed(_))
    ));
    assert!(matches!(
        srs.reverse_at("SRS1=vmyz=@example.com", NOW),
        Err(ReverseError::Malformed(_))
    ));
    assert!(matches!(
        srs.reverse_at("john+SRS=ABCDEFGH=2W@example.com", NOW),
        Err(ReverseError::Malformed(_))
    ));
    assert_eq!(
        srs.reverse_at("SRS0=vmyy=2W=otherdomain.com=test@example.com", NOW),
        Err(ReverseError::BadHash)
    );
    assert_eq!(
        srs.reverse_at("SRS0=vmy=2W=otherdomain.com=test@example.com", NOW),
        Err(ReverseError::BadHash)
    );
    let e = srs
        .reverse_at(
            "SRS0=vmyz=2W=otherdomain.com=test@example.com",
            NOW + 22 * DAY,
        )
        .unwrap_err();
    assert_eq!(
        e,
        ReverseError::Expired {
            age_days: 22,
            max_age_days: 21
        }
    );
    assert!(e.to_string().contains("expired"));
    assert!(ReverseError::BadHash.to_string().contains("hash"));
    assert!(ReverseError::NotSrs.to_string().contains("not an SRS"));
}

#[test]
fn age_limit_is_inclusive() {
    let srs = classic();
    let a = "SRS0=vmyz=2W=otherdomain.com=test@example.com";
    assert!(srs.reverse_at(a, NOW + 21 * DAY).is_ok());
    assert!(srs.reverse_at(a, NOW + 22 * DAY).is_err());
}

#[test]
fn key_rotation_first_signs_all_verify() {
    let old = Srs::new(&["old"], Options::default()).unwrap();
    let rotated = Srs::new(&["new", "old"], Options::default()).unwrap();
    let made_by_old = old
        .forward_at("bob@example.org", "john@forward.example", NOW)
        .unwrap();
    assert_eq!(
        rotated.reverse_at(&made_by_old, NOW).unwrap(),
        "bob@example.org"
    );
    let made_by_new = rotated
        .forward_at("bob@example.org", "john@forward.example", NOW)
        .unwrap();
    assert_ne!(made_by_new, made_by_old);
    assert_eq!(
        old.reverse_at(&made_by_new, NOW),
        Err(ReverseError::BadHash)
    );
}

#[test]
fn options_are_checked() {
    let none: [&str; 0] = [];
    assert_eq!(
        Srs::new(&none, Options::default()).unwrap_err(),
        OptionsError::NoSecret
    );
    assert_eq!(
        Srs::new(&["a", ""], Options::default()).unwrap_err(),
        OptionsError::EmptySecret(2)
    );
    let bad = |o: Options| Srs::new(&["s"], o).unwrap_err();
    assert_eq!(
        bad(Options {
            hash_length: 3,
            ..Options::default()
        }),
        OptionsError::HashLength(3)
    );
    assert_eq!(
        bad(Options {
            microsoft_hash_length: 5,
            ..Options::default()
        }),
        OptionsError::MicrosoftHashLength(5)
    );
    assert_eq!(
        bad(Options {
            separator: '/',
            ..Options::default()
        }),
        OptionsError::Separator('/')
    );
    assert_eq!(
        bad(Options {
            max_age_days: 0,
            ..Options::default()
        }),
        OptionsError::MaxAge(0)
    );
}

#[test]
fn debug_never_shows_secrets() {
    let srs = Srs::new(&["very-secret-value"], Options::default()).unwrap();
    assert!(!format!("{srs:?}").contains("very-secret"));
}

// ---- Microsoft form ----

#[test]
fn microsoft_shape() {
    let out = microsoft()
        .forward_at("bob@example.org", "john@forward.example", NOW)
        .unwrap();
    let (local, domain) = out.rsplit_once('@').unwrap();
    assert_eq!(domain, "forward.example");
    let fields: Vec<&str> = local.splitn(5, '=').collect();
    assert_eq!(fields[0], "john+SRS");
    assert_eq!(fields[1].len(), 8);
    assert!(
        fields[1]
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
    );
    assert_eq!(&fields[2..], ["2W", "example.org", "bob"]);
    let relayed = microsoft()
        .forward_for_domain_at("bob@example.org", "relay.example", NOW)
        .unwrap();
    assert!(relayed.starts_with("bounces+SRS="), "{relayed}");
    assert_eq!(
        microsoft().reverse_at(&relayed, NOW).unwrap(),
        "bob@example.org"
    );
}

#[test]
fn microsoft_hash_is_bound_to_the_alias_user() {
    let srs = microsoft();
    let out = srs
        .forward_at("bob@example.org", "john@forward.example", NOW)
        .unwrap();
    let moved = out.replacen("john+", "mary+", 1);
    assert_eq!(srs.reverse_at(&moved, NOW), Err(ReverseError::BadHash));
    // The forwarding domain is not signed (receivers may rewrite it, e.g. IDN).
    let other_domain = out.replace("@forward.example", "@other.example");
    assert_eq!(
        srs.reverse_at(&other_domain, NOW).unwrap(),
        "bob@example.org"
    );
}

#[test]
fn microsoft_hash_length_configurable() {
    let srs = Srs::new(
        &["s"],
        Options {
            microsoft_hash_length: 13,
            ..Options::default()
        },
    )
    .unwrap();
    let out = srs
        .forward_at("bob@example.org", "john@forward.example", NOW)
        .unwrap();
    assert_eq!(out.split('=').nth(1).unwrap().len(), 13);
    // A codec with another length refuses it (the hash length is part of the format).
    assert_eq!(
        microsoft().reverse_at(&out, NOW),
        Err(ReverseError::BadHash)
    );
}

#[test]
fn microsoft_case_changes_in_transit() {
    let srs = microsoft();
    let out = srs
        .forward_at("Bob@Example.org", "john@forward.example", NOW)
        .unwrap();
    assert_eq!(
        srs.reverse_at(&out.to_ascii_lowercase(), NOW).unwrap(),
        "bob@example.org"
    );
    assert_eq!(
        srs.reverse_at(&out.to_ascii_uppercase(), NOW).unwrap(),
        "BOB@EXAMPLE.ORG"
    );
    assert_eq!(srs.reverse_at(&out, NOW).unwrap(), "Bob@Example.org");
}

#[test]
fn microsoft_expiry_and_future() {
    let srs = microsoft();
    let out = srs
        .forward_at("bob@example.org", "john@forward.example", NOW)
        .unwrap();
    assert!(srs.reverse_at(&out, NOW + 21 * DAY).is_ok());
    assert_eq!(
        srs.reverse_at(&out, NOW + 30 * DAY),
        Err(ReverseError::Expired {
            age_days: 30,
            max_age_days: 21
        })
    );
    // Made "tomorrow", checked today: looks 1023 days old.
    let future = srs
        .forward_at("bob@example.org", "john@forward.example", NOW + DAY)
        .unwrap();
    assert!(matches!(
        srs.reverse_at(&future, NOW),
        Err(ReverseError::Expired { age_days: 1023, .. })
    ));
}

/// Re-forwarding: a chain of two relays with different secrets reverses hop by hop; an
/// address we signed ourselves is re-signed so that one reversal reaches the first sender.
#[test]
fn microsoft_reforwarding_keeps_the_bounce_path() {
    let first = Srs::new(&["first"], Options::default()).unwrap();
    let second = Srs::new(&["second"], Options::default()).unwrap();
    let hop1 = first.forward_at("bob@ex.org", "j@f1.io", NOW).unwrap();
    let hop2 = second.forward_at(&hop1, "m@f2.io", NOW).unwrap();
    assert!(hop2.starts_with("m+SRS="));
    assert_eq!(second.reverse_at(&hop2, NOW).unwrap(), hop1);
    assert_eq!(first.reverse_at(&hop1, NOW).unwrap(), "bob@ex.org");

    // Our own address forwarded again by another of our aliases: re-signed, not nested.
    let again = first.forward_at(&hop1, "mary@f3.example", NOW).unwrap();
    assert!(
        again.starts_with("mary+SRS=") && again.ends_with("=ex.org=bob@f3.example"),
        "{again}"
    );
    assert_eq!(first.reverse_at(&again, NOW).unwrap(), "bob@ex.org");

    // A long chain through foreign forwarders stops with a typed error, never a broken address.
    let long = second.forward_at(
        &first
            .forward_at("robert@example.org", "john@forward.example", NOW)
            .unwrap(),
        "mary@second.example",
        NOW,
    );
    assert!(matches!(long, Err(ForwardError::TooLong { .. })));
}

// ---- edge cases ----

#[test]
fn special_local_parts_roundtrip() {
    for srs in [classic(), microsoft()] {
        for sender in [
            "a=b@example.org",
            "a+tag@example.org",
            "a-b@example.org",
            "first.last@example.org",
            "john..doe@example.org",
            "\"john doe\"@example.org",
            "\"a\\\"q\"@example.org",
            "\"a@b\"@example.org",
            "jöhn@example.org",
            "用户@例子.广告",
            "bob@xn--bcher-kva.example",
            "bob@bücher.example",
            "o'brien@example.org",
        ] {
            let out = srs.forward_at(sender, "j@fwd.example", NOW).unwrap();
            assert!(out.ends_with("@fwd.example"), "{out}");
            assert_eq!(srs.reverse_at(&out, NOW).unwrap(), sender, "via {out}");
        }
    }
}

#[test]
fn quoted_local_part_is_quoted_as_a_whole() {
    let out = classic()
        .forward_for_domain_at("\"john doe\"@example.org", "example.com", NOW)
        .unwrap();
    assert!(
        out.starts_with("\"SRS0=") && out.ends_with("=example.org=john doe\"@example.com"),
        "{out}"
    );
}

#[test]
fn null_and_local_senders_are_not_rewritten() {
    let srs = Srs::new(
        &["s"],
        Options {
            local_domains: vec!["mine.example".into(), ".corp.example".into()],
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(srs.forward_at("<>", "j@fwd.example", NOW).unwrap(), "<>");
    assert_eq!(srs.forward_at("", "j@fwd.example", NOW).unwrap(), "");
    assert_eq!(
        srs.forward_at("x@FWD.example", "j@fwd.example", NOW)
            .unwrap(),
        "x@FWD.example"
    );
    assert_eq!(
        srs.forward_at("<x@mine.example>", "j@fwd.example", NOW)
            .unwrap(),
        "x@mine.example"
    );
    assert_eq!(
        srs.forward_at("x@a.corp.example", "j@fwd.example", NOW)
            .unwrap(),
        "x@a.corp.example"
    );
    assert_ne!(
        srs.forward_at("x@corp.example", "j@fwd.example", NOW)
            .unwrap(),
        "x@corp.example"
    );
    assert!(srs.is_exempt("<>", "fwd.example"));
    assert!(srs.is_exempt("x@mine.example", "fwd.example"));
    assert!(!srs.is_exempt("x@other.example", "fwd.example"));
}

#[test]
fn too_long_is_a_typed_error() {
    let local = "a".repeat(40);
    let sender = format!("{local}@example.org");
    for srs in [classic(), microsoft()] {
        assert!(matches!(
            srs.forward_at(&sender, "j@fwd.example", NOW),
            Err(ForwardError::TooLong { .. })
        ));
    }
    // Exactly at the limit is fine: SRS0=HHHH=TT=d.io= is 18 octets, leaving 46.
    let fits = format!("{}@d.io", "b".repeat(46));
    let out = classic().forward_at(&fits, "j@fwd.example", NOW).unwrap();
    assert_eq!(out.split('@').next().unwrap().len(), 64);
    let over = format!("{}@d.io", "b".repeat(47));
    assert_eq!(
        classic().forward_at(&over, "j@fwd.example", NOW),
        Err(ForwardError::TooLong { length: 65 })
    );
}

#[test]
fn bad_input_is_refused() {
    let srs = microsoft();
    assert!(matches!(
        srs.forward_at("no-at-sign", "j@fwd.example", NOW),
        Err(ForwardError::InvalidSender(_))
    ));
    assert!(matches!(
        srs.forward_at("bob@example.org", "fwd.example", NOW),
        Err(ForwardError::InvalidAlias(_))
    ));
    assert!(matches!(
        srs.forward_at("bob@example.org", "j+SRS=x@fwd.example", NOW),
        Err(ForwardError::InvalidAlias(_))
    ));
}

#[test]
fn forward_never_signs_what_reverse_cannot_read() {
    // Found by the fuzz target srs_reverse (forward → reverse roundtrip).
    // An `=` in the sender's domain: reverse would end the domain there.
    for srs in [classic(), microsoft()] {
        for sender in ["bob@[tag:a=b]", "bob@=example.org"] {
            assert_eq!(
                srs.forward_at(sender, "j@fwd.example", NOW),
                Err(ForwardError::InvalidSender("'=' in the domain")),
                "{sender}"
            );
        }
    }
    // An SRS1 sender whose hop is no domain, or with nothing after the hop, is wrapped as an
    // ordinary sender: reversing gives it back, not a broken SRS0 address.
    let srs = classic();
    for sender in [
        "SRS1=ab=f>x==cd=2W=e.org=b@first.example",
        "SRS1=abcd=first.example=@x.example",
    ] {
        let out = srs.forward_at(sender, "j@fwd.example", NOW).unwrap();
        assert!(out.trim_start_matches('"').starts_with("SRS0="), "{out}");
        let back = srs.reverse_at(&out, NOW).unwrap();
        // The same mailbox; `>` in a local part is written quoted.
        assert_eq!(address::parse(&back), address::parse(sender), "{back}");
    }
    // A forwarding mailbox named like classic SRS: its Microsoft-form address would be
    // read back as classic.
    for alias in [
        "srs0+john@fwd.example",
        "SRS1=team@fwd.example",
        "srs0+@fwd.example",
        "SRS1@fwd.example",
    ] {
        assert_eq!(
            microsoft().forward_at("bob@example.org", alias, NOW),
            Err(ForwardError::InvalidAlias(
                "forwarding mailbox starts with SRS0 or SRS1"
            )),
            "{alias}"
        );
    }
}

#[test]
fn foreign_srs_passes_through() {
    // Someone else's SRS0 becomes SRS1 (classic); reversing goes one hop back to it.
    let srs = classic();
    let foreign = "SRS0=abcd=2W=origin.example=bob@first.example";
    let out = srs
        .forward_for_domain_at(foreign, "example.com", NOW)
        .unwrap();
    assert!(
        out.starts_with("SRS1=") && out.contains("=first.example==abcd=2W=origin.example=bob@"),
        "{out}"
    );
    assert_eq!(srs.reverse_at(&out, NOW).unwrap(), foreign);
}

// ---- properties ----

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-zA-Z0-9=+_-]{1,8}){0,2}",
        "[a-zé中]{1,6}",
        "[a-z ]{1,5} [a-z]{1,5}".prop_map(|s| s),
    ]
}

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,10}(\\.[a-z0-9-]{1,8}){0,2}\\.[a-z]{2,4}"
}

fn sender() -> impl Strategy<Value = String> {
    (local_part(), domain()).prop_map(|(l, d)| {
        let needs_quotes = l.contains(' ');
        if needs_quotes {
            format!("\"{l}\"@{d}")
        } else {
            format!("{l}@{d}")
        }
    })
}

fn any_format() -> impl Strategy<Value = Srs> {
    prop_oneof![Just(classic()), Just(microsoft())]
}

proptest! {
    #[test]
    fn prop_roundtrip(srs in any_format(), s in sender(), now in 1_000_000_000u64..4_000_000_000) {
        match srs.forward_at(&s, "john@fwd.example", now) {
            Ok(out) => prop_assert_eq!(srs.reverse_at(&out, now + 3 * DAY).unwrap(), s),
            Err(ForwardError::TooLong { length }) => prop_assert!(length > 64),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn prop_deterministic(srs in any_format(), s in sender(), now in 0u64..4_000_000_000) {
        prop_assert_eq!(srs.forward_at(&s, "john@fwd.example", now), srs.forward_at(&s, "john@fwd.example", now));
    }

    /// Changing any one character of the hash, timestamp, domain or local part is refused.
    #[test]
    fn prop_tamper_refused(srs in any_format(), s in "[a-z0-9.]{1,10}@[a-z]{1,8}\\.(org|net)", pos in 0usize..64, pick in 0usize..36) {
        let out = srs.forward_at(&s, "john@fwd.example", NOW).unwrap();
        let (local, dom) = out.rsplit_once('@').unwrap();
        // The signed region: everything after the tag (`SRS0=` or `john+SRS=`).
        let start = if local.starts_with("SRS0") { 5 } else { local.find('=').unwrap() + 1 };
        let signed = &local[start..];
        let i = pos % signed.len();
        let old = signed.as_bytes()[i];
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut new = alphabet[pick];
        // Case is not a change (hashes compare case-insensitively); '=' moves are.
        if new.eq_ignore_ascii_case(&old) { new = if old == b'=' { b'x' } else { b'=' }; }
        if old == b'=' && new != b'=' {
            // Replacing a separator merges fields: still a change, still refused.
        }
        let mut bytes = local.as_bytes().to_vec();
        bytes[start + i] = new;
        let tampered = format!("{}@{dom}", String::from_utf8(bytes).unwrap());
        prop_assert!(srs.reverse_at(&tampered, NOW).is_err(), "{} accepted", tampered);
    }
}

// ---- internal scanners against their plain definitions ----

proptest! {
    #[test]
    fn prop_split3(s in "[a=b]{0,16}") {
        let mut it = s.splitn(3, '=');
        let plain = (|| Some((it.next()?, it.next()?, it.next()?)))();
        prop_assert_eq!(split3(&s), plain);
        prop_assert_eq!(split_eq(&s), s.split_once('='));
    }
}

//! Arbitrary text into the SRS codec with fixed secrets and clock: `reverse_at` on it as a
//! bounce address (either form, any options), and the roundtrip property: whatever
//! `forward_at` / `forward_for_domain_at` accept must reverse to the address it stands
//! for, and must expire after `max_age_days`.
//!
//! Input: byte 0 picks the codec options; the rest is `sender` or `sender\nalias`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use srs_relay::fuzzing::mailbox;
use srs_relay::srs::{Format, HashEncoding, Options, ReverseError, Srs};

/// The fuzz secrets: the first signs, both verify. The seeds in fuzz/seeds/srs_reverse were
/// made with the first and `NOW` (`srs-relay forward --now 1577836860`).
const SECRETS: [&str; 2] = ["fuzz secret", "older fuzz secret"];
/// 2020-01-01 00:01:00 UTC, stamp `2W` (postsrsd's test clock).
const NOW: u64 = 1_577_836_860;
const DAY: u64 = 86_400;
const ALIAS: &str = "john@forward.example";

fn codecs() -> &'static [Srs] {
    static CODECS: OnceLock<Vec<Srs>> = OnceLock::new();
    CODECS.get_or_init(|| {
        let d = Options::default();
        [
            d.clone(),
            Options {
                format: Format::Classic,
                ..d.clone()
            },
            Options {
                format: Format::Classic,
                separator: '+',
                hash_encoding: HashEncoding::Base64Url,
                hash_length: 6,
                local_domains: vec![".local.example".into()],
                ..d.clone()
            },
            Options {
                microsoft_hash_length: 12,
                max_age_days: 1,
                separator: '-',
                local_domains: vec!["local.example".into()],
                ..d
            },
        ]
        .into_iter()
        .map(|o| Srs::new(&SECRETS, o).unwrap())
        .collect()
    })
}

/// `SRS0`/`SRS1` and a separator, as the codec recognises them.
fn classic_tagged(local: &str) -> Option<u8> {
    let b = local.as_bytes();
    (b.len() > 5
        && b[..3].eq_ignore_ascii_case(b"SRS")
        && matches!(b[3], b'0' | b'1')
        && matches!(b[4], b'=' | b'+' | b'-'))
    .then(|| b[3])
}

fn has_microsoft_tag(local: &str) -> bool {
    local.to_ascii_lowercase().contains("+srs=")
}

/// Forwarded `sender` is `out`: reverse must lead back to `sender`.
fn check_roundtrip(srs: &Srs, sender: &str, out: &str) {
    let back = srs
        .reverse_at(out, NOW)
        .unwrap_or_else(|e| panic!("forward gave {out:?} for {sender:?}; reverse says {e}"));
    let (local, domain) = mailbox(sender).expect("forward accepted an unparsable sender");
    let (back_local, back_domain) = mailbox(&back).expect("reverse gave an unparsable address");
    match srs.options().format {
        // A sender that is itself an SRS address may legitimately come back as another
        // (Shevek's SRS1, or the first sender of one of our own Microsoft addresses).
        Format::Microsoft if has_microsoft_tag(&local) => {}
        Format::Classic if classic_tagged(&local) == Some(b'1') => {}
        Format::Classic if classic_tagged(&local) == Some(b'0') => {
            // SRS0 comes back with its tag in upper case.
            assert!(back_local[..4].eq_ignore_ascii_case(&local[..4]));
            assert_eq!((&back_local[4..], &*back_domain), (&local[4..], &*domain));
        }
        _ => assert_eq!(
            (&back_local, &back_domain),
            (&local, &domain),
            "{sender:?} -> {out:?} -> {back:?}"
        ),
    }
    let timestamped = match srs.options().format {
        Format::Microsoft => true,
        Format::Classic => classic_tagged(&local).is_none(),
    };
    if timestamped {
        let max = u64::from(srs.options().max_age_days);
        assert!(
            srs.reverse_at(out, NOW + max * DAY).is_ok(),
            "{out:?} expired early"
        );
        assert!(
            matches!(
                srs.reverse_at(out, NOW + (max + 1) * DAY),
                Err(ReverseError::Expired { .. })
            ),
            "{out:?} did not expire"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let codecs = codecs();
    let srs = &codecs[usize::from(*pick) % codecs.len()];

    if let Ok(orig) = srs.reverse_at(&text, NOW) {
        assert!(mailbox(&orig).is_some(), "reverse gave {orig:?}");
    }

    let (sender, alias) = text.split_once('\n').unwrap_or((&text, ALIAS));
    if let Ok(out) = srs.forward_at(sender, alias, NOW) {
        let alias_domain = mailbox(alias)
            .expect("forward accepted an unparsable alias")
            .1;
        if !srs.is_exempt(sender, &alias_domain) {
            check_roundtrip(srs, sender, &out);
        }
    }
    if let Ok(out) = srs.forward_for_domain_at(sender, "forward.example", NOW)
        && !srs.is_exempt(sender, "forward.example")
    {
        check_roundtrip(srs, sender, &out);
    }
});

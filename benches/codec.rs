//! Codec speed, per address: forward, reverse, and forward followed by reverse, for the
//! classic form (Mail::SRS-compatible, HMAC-SHA1) and the Microsoft form (HMAC-SHA256).
//!
//! Each iteration handles one address, taken in turn from a fixed set of 1,000 varied
//! ones, so criterion's "time" is the cost of one address. `cargo bench --bench codec`.
//! For the comparison with Mail::SRS itself, see `benches/compare-mail-srs.sh`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use srs_relay::srs::{Format, Options, Srs};

/// A fixed clock: the codec's speed does not depend on it.
const NOW: u64 = 1_577_836_860;
const ALIAS: &str = "john@forward.example";
const SECRET: &str = "a benchmark secret of at least 256 bits, not used anywhere else";

/// 1,000 deterministic senders of the usual shapes (dots, `+tag`, `-`, mixed case).
fn senders() -> Vec<String> {
    let mut state: u64 = 0x243f_6a88_85a3_08d3;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut word = |min: u64, max: u64| -> String {
        let len = min + next(max - min + 1);
        (0..len).map(|_| (b'a' + next(26) as u8) as char).collect()
    };
    let tlds = ["org", "com", "net", "co.uk", "Example"];
    (0..1000)
        .map(|i| {
            let local = match i % 4 {
                0 => word(3, 10),
                1 => format!("{}.{}", word(2, 8), word(2, 8)),
                2 => format!("{}+{}", word(3, 8), word(2, 6)),
                _ => format!("{}-{}", word(2, 6), word(2, 6)).to_uppercase(),
            };
            format!("{local}@{}.{}", word(3, 10), tlds[i % tlds.len()])
        })
        .collect()
}

fn codec(format: Format) -> Srs {
    let options = Options {
        format,
        ..Options::default()
    };
    Srs::new(&[SECRET], options).expect("valid options")
}

fn bench_form(c: &mut Criterion, name: &str, format: Format) {
    let srs = codec(format);
    let senders = senders();
    let forwarded: Vec<String> = senders
        .iter()
        .map(|s| srs.forward_at(s, ALIAS, NOW).expect("forwards"))
        .collect();
    for (s, f) in senders.iter().zip(&forwarded) {
        assert_eq!(&srs.reverse_at(f, NOW).expect("reverses"), s);
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));

    let mut i = 0;
    group.bench_function("forward", |b| {
        b.iter(|| {
            i = (i + 1) % senders.len();
            srs.forward_at(black_box(&senders[i]), black_box(ALIAS), black_box(NOW))
        })
    });
    group.bench_function("reverse", |b| {
        b.iter(|| {
            i = (i + 1) % forwarded.len();
            srs.reverse_at(black_box(&forwarded[i]), black_box(NOW))
        })
    });
    group.bench_function("forward+reverse", |b| {
        b.iter(|| {
            i = (i + 1) % senders.len();
            let f = srs
                .forward_at(black_box(&senders[i]), black_box(ALIAS), black_box(NOW))
                .unwrap();
            srs.reverse_at(black_box(&f), black_box(NOW))
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_form(c, "classic", Format::Classic);
    bench_form(c, "microsoft", Format::Microsoft);
}

criterion_group! {
    name = codec_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(codec_benches);

//! Times srs-relay's codec over a file of addresses (one per line): forward then reverse
//! each one, classic form (Mail::SRS-compatible) and Microsoft form, with a fixed secret
//! and clock. The time is measured in here, around the loop only (reading the file and
//! checking the results are outside it); the best of `--rounds` runs is reported.
//! `benches/compare-mail-srs.sh` runs this next to the same loop over Mail::SRS.
//!
//! ```text
//! cargo run --release --example codec_throughput -- FILE [--secret S] [--now UNIX]
//!     [--alias ADDRESS] [--rounds N] [--out FORWARDED]
//! ```
//!
//! Prints `classic_ns_per_address=…` and `microsoft_ns_per_address=…` lines; `--out`
//! writes the classic forward outputs, one per line, for comparison with Mail::SRS's.

use std::error::Error;
use std::hint::black_box;
use std::time::Instant;

use srs_relay::srs::{Format, Options, Srs};

struct Args {
    file: String,
    secret: String,
    now: u64,
    alias: String,
    rounds: usize,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        file: String::new(),
        secret: "compare-mail-srs secret".to_owned(),
        now: 1_577_836_860,
        alias: "fwd@relay.example.net".to_owned(),
        rounds: 3,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--secret" => args.secret = value()?,
            "--now" => args.now = value()?.parse().map_err(|e| format!("--now: {e}"))?,
            "--alias" => args.alias = value()?,
            "--rounds" => {
                args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?;
                if args.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--out" => args.out = Some(value()?),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ if args.file.is_empty() => args.file = arg,
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    if args.file.is_empty() {
        return Err(
            "usage: codec_throughput FILE [--secret S] [--now UNIX] [--alias ADDRESS] \
                    [--rounds N] [--out FORWARDED]"
                .into(),
        );
    }
    Ok(args)
}

/// Best-of-`rounds` nanoseconds per address for forward+reverse, and the forward outputs.
fn time_form(
    format: Format,
    args: &Args,
    senders: &[&str],
) -> Result<(f64, Vec<String>), Box<dyn Error>> {
    let options = Options {
        format,
        ..Options::default()
    };
    let srs = Srs::new(&[args.secret.as_bytes()], options)?;
    let mut best = f64::INFINITY;
    let mut forwarded = Vec::with_capacity(senders.len());
    let mut reversed = Vec::with_capacity(senders.len());
    for _ in 0..args.rounds {
        forwarded.clear();
        reversed.clear();
        let start = Instant::now();
        for &sender in senders {
            let f = srs.forward_at(black_box(sender), &args.alias, args.now)?;
            let r = srs.reverse_at(black_box(&f), args.now)?;
            forwarded.push(f);
            reversed.push(r);
        }
        let elapsed = start.elapsed();
        best = best.min(elapsed.as_nanos() as f64 / senders.len() as f64);
    }
    for (sender, back) in senders.iter().zip(&reversed) {
        if sender != back {
            return Err(format!("{format}: {sender} came back as {back}").into());
        }
    }
    Ok((best, forwarded))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let text = std::fs::read_to_string(&args.file)?;
    let senders: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if senders.is_empty() {
        return Err(format!("{}: no addresses", args.file).into());
    }

    let (classic, forwarded) = time_form(Format::Classic, &args, &senders)?;
    let (microsoft, _) = time_form(Format::Microsoft, &args, &senders)?;
    if let Some(out) = &args.out {
        let mut text = forwarded.join("\n");
        text.push('\n');
        std::fs::write(out, text)?;
    }
    println!("addresses={}", senders.len());
    println!("rounds={}", args.rounds);
    println!("classic_ns_per_address={classic:.1}");
    println!("microsoft_ns_per_address={microsoft:.1}");
    Ok(())
}

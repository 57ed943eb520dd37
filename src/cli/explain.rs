//! `srs-relay explain ADDRESS`: prints what [`srs_relay::explain`] finds, as text or
//! JSON; exits as `reverse` does (1 when the relay refuses a bounce to it).

use std::path::Path;

use srs_relay::config::Config;
use srs_relay::srs::Srs;

use crate::Failure;

pub fn run(
    cfg: &Config,
    srs: &Srs,
    secret_lines: &[usize],
    secrets_path: &Path,
    address: &str,
    now: u64,
    json_out: bool,
) -> Result<(), Failure> {
    let mut stored = |token: &str| {
        crate::stored_lookup(cfg, token).map_err(|f| match f {
            Failure::Refused(m) | Failure::Usage(m) => m,
        })
    };
    let e =
        srs_relay::explain::explain(cfg, srs, address, now, &mut stored).map_err(Failure::Usage)?;
    let secret = |i: usize| {
        format!(
            "secret {} (line {} of {})",
            i + 1,
            secret_lines.get(i).copied().unwrap_or(0),
            secrets_path.display()
        )
    };
    if json_out {
        println!("{}", e.json(&secret));
    } else {
        print!("{}", e.text(&secret));
    }
    match e.refused() {
        None => Ok(()),
        Some(reason) => Err(Failure::Refused(format!("refused: {reason}"))),
    }
}

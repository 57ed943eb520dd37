//! `srs-relay reload`: the running relay reads its configuration again, as on SIGHUP,
//! asked through its control socket so that the outcome comes back.

use std::time::Duration;

use srs_relay::config::Config;
use srs_relay::control::{self, Reply, Request};

use crate::Failure;

/// How long the relay gets to read and check everything.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Prints what the reload changed; exits 1 with the reason when it was refused.
pub fn run(cfg: &Config) -> Result<(), Failure> {
    let path = control::socket_path(&cfg.resolve(&cfg.spool.dir));
    match control::request(&path, &Request::Reload, TIMEOUT) {
        Ok(Reply::Reload { message }) => {
            println!("{message}");
            Ok(())
        }
        Ok(Reply::Error { message }) => Err(Failure::Refused(format!("reload refused: {message}"))),
        Ok(_) => Err(Failure::Usage("unexpected reply from the relay".into())),
        Err(e) => Err(Failure::Usage(e.to_string())),
    }
}

//! The control socket of a running relay: `<spool.dir>/control`, a UNIX socket of mode
//! 0600 in the spool directory (0700), so only the relay's user and root reach it.
//! `srs-relay queue` and `srs-relay reload` talk to it. One request per connection: a JSON line in, a JSON
//! line back, then the relay closes the connection.

mod client;
mod protocol;
mod server;

use std::path::{Path, PathBuf};

pub use client::{ClientError, request};
pub use protocol::{Reply, Request};
pub use server::{Targets, start};

/// Where the relay with the spool at `spool_dir` listens for control requests.
pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("control")
}

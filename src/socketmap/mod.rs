//! Postfix lookup services, a drop-in for postsrsd: the socketmap protocol (postsrsd 2.x;
//! maps `forward` and `reverse` on one socket, TCP or UNIX-domain) and the tcp_table
//! protocol (postsrsd 1.x; one TCP port per map). Postfix asks with
//! `sender_canonical_maps` (forward) and `recipient_canonical_maps` (reverse).
//!
//! Both protocols share one decision ([`lookup::forward`], [`lookup::reverse`]), one
//! connection limit and the same timeouts. Listeners are async tasks; each accepted
//! connection is served by a thread of its own with blocking reads and writes, answering
//! its requests in order, as postsrsd serves each with a process. A lookup is about a
//! microsecond of work between a read and a write, and the client waits for each reply:
//! under 20 concurrent connections an event loop cost twice the CPU per lookup of a
//! blocked reader that the kernel wakes directly (measured, see README's benchmarks).
//! Connections are bounded by `socketmap.max_connections`; Postfix keeps a few per
//! process and reuses them.
//!
//! Malformed or oversized requests are answered (`PERM`, `500`) and the connection closed;
//! idle connections are closed after `socketmap.idle_timeout`, and a started request must
//! arrive whole within `socketmap.request_timeout`, so nothing hangs.
//!
//! `serve` starts the services when configured; `srs-relay socketmap` runs them alone.

mod connection;
mod dispatch;
pub mod lookup;
pub mod netstring;
mod server;
mod settings;
pub mod tcp_table;
mod users;

pub use dispatch::MAX_REQUEST;
#[cfg(feature = "fuzzing")]
pub(crate) use dispatch::answer_all;
pub use lookup::Map;
pub use server::{Handle, Services, start};
pub use settings::Settings;

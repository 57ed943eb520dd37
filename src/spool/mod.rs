//! The durable message spool: plain blocking `std::fs` code (async callers go through
//! `tokio::task::spawn_blocking`). A message counts as stored only once its files *and*
//! the directory holding them have been fsynced, so a `250` after DATA survives
//! `kill -9` and power loss.
//!
//! # On-disk format (version 2)
//!
//! This comment is the one place the format is described.
//!
//! ```text
//! <dir>/lock                 empty; flock(2)ed exclusively by the process that has the spool open
//! <dir>/queue/<id>.q         the queue file: the envelope as received, one JSON line
//!                            `{"version":2,"message_len":N,"id":...}` and "\n", then the N
//!                            message octets, exactly as they will be sent
//! <dir>/queue/<id>.state     the envelope as updated since: one JSON line `{"version":2,"id":...}`
//!                            and "\n"; when present it supersedes the queue file's
//! <dir>/queue/<id>.<n>.tmp   a queue or state file being written (<n>: a per-process counter)
//! <dir>/queue/<n>.free       the queue file of a removed message, kept to be overwritten by
//!                            a later store (<n>: a number); its contents mean nothing
//! <dir>/corrupt/<name>       files recovery could not use, moved aside for a human
//! <dir>/control              the running relay's control socket (UNIX, mode 0600):
//!                            `srs-relay queue` and `srs-relay reload` talk to it
//! ```
//!
//! * `<id>` is 1–64 characters from `[0-9A-Za-z_-]` (see [`Spool::new_id`] for the ids
//!   the relay makes). Ids are never reused, so a file name never changes meaning.
//! * The envelope objects hold every field of [`Envelope`] under its Rust name (an empty
//!   `dsn_owed` is left out) plus
//!   `"version": 2` (and `message_len` in the queue file). JSON has no raw line breaks, so
//!   the first `\n` ends the envelope. Recipient states are `"pending"`, `"delivered"`,
//!   `"failed"`; a held message has `held_since`; absent optional fields (`null` or missing) are `None`. Unknown fields
//!   are ignored, a different `version` is not understood (the file is set aside).
//! * One file per message, not two, and removed files are reused: every file created
//!   and deleted costs an inode allocation and release, which is what the spool spent
//!   most of its time on under load. At most 256 free files of up to 256 KiB are kept;
//!   when the disk is full they are deleted to make room.
//! * Files are created with mode 0600, directories with mode 0700.
//! * Version 1 (`<id>.env` holding the envelope, `<id>.msg` the message) is converted to
//!   version 2 on open, so an upgrade keeps the mail that was queued.
//!
//! ## Commit protocol
//!
//! Store: write `<id>.<n>.tmp` (O_EXCL), or overwrite a free file and cut it to length;
//! fsync it, rename it to `<id>.q` (never over an existing one), fsync `queue/`. The rename is the commit point: **a message exists if
//! and only if its `.q` exists**. The directory fsyncs are group commits: stores that
//! rename while one runs share the next one, so concurrent sessions pay one fsync between
//! them. Update writes a `<id>.<n>.tmp` the same way and renames it over `<id>.state`
//! (then fsyncs `queue/`), so a reader sees the old or the new envelope, never a mix.
//! Remove renames the `.q` to a free file or deletes it (un-commit), then deletes the
//! `.state`, and does not fsync
//! `queue/`: a crash may bring a removed message back, to be delivered again (a
//! duplicate, never a loss).
//!
//! ## Recovery (on [`Spool::open`])
//!
//! * any `*.tmp` is deleted (an unfinished store or update; what was there before stands);
//! * free files are kept for reuse (a store cut short while overwriting one leaves a free
//!   file still); those beyond the pool's size, and any that shares its inode with another
//!   name (a crash in the hard-link fallback, a file system check), are deleted;
//! * a file that cannot be read (an I/O error, not damage) fails the open: nothing is set
//!   aside for a disk's passing trouble;
//! * a `.state` without its `.q` is deleted (a remove cut short);
//! * a `.q` whose envelope line cannot be read or parsed, has another `version`, names
//!   another id, or whose length is not that line plus `message_len`, is moved with its
//!   `.state` into `corrupt/`: never dropped;
//! * a `.state` that cannot be used is moved into `corrupt/` and the queue file's own
//!   envelope is used: recipients already delivered may get the message again, none loses it;
//! * a version 1 pair is rewritten as a queue file, then deleted (if a whole queue file
//!   of its id exists, the conversion was done and only the deletion is left); a version 1 `.msg`
//!   alone is deleted (as version 1 recovery did), an unusable `.env` set aside with its `.msg`;
//! * any other file in `queue/` is moved into `corrupt/` too; sub-directories are left alone.
//!
//! A name already taken in `corrupt/` gets a `.1`, `.2`, ... suffix. `queue/` and
//! `corrupt/` are fsynced after recovery changed them.
//!
//! Callers must not run `update` or `remove` on the same id from two threads at once.

mod envelope;
mod files;
mod free;
mod group_sync;
mod id;
mod incoming;
mod reader;
mod recovery;
mod store;

pub use envelope::{ClientInfo, Envelope, OwedDsn, OwedReason, Recipient, RecipientState};
pub use incoming::{Incoming, SPILL_AT};
pub use reader::SpoolReader;
pub use recovery::Recovered;
pub use store::Spool;

#[cfg(feature = "fuzzing")]
pub(crate) use envelope::{encode_line, parse_line, split_queue_file};

#[cfg(test)]
mod tests;

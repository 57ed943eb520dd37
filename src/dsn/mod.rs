//! Delivery Status Notifications: the bytes of a bounce or delay warning (RFC 3464 in
//! a `multipart/report`, RFC 6522), sent back to the *original* sender.
//!
//! Pure: no I/O, the time is passed in. The caller decides who is reported with
//! [`recipients_to_report`] (NOTIFY, RFC 3461 §4.1), builds the message with
//! [`compose`] and spools it with `MAIL FROM:<>` (so a failing DSN never bounces again)
//! and `RCPT TO:<original_sender>`.
//!
//! # The message
//!
//! * `text/plain`: what happened, per recipient, for a person.
//! * `message/delivery-status`: the same for programs. Fields follow the RFC 3464
//!   grammar's order; `Original-Recipient` is the client's ORCPT, or else the RCPT TO it
//!   gave (the address the sender wrote, which they can recognise: Postfix does the
//!   same); `Final-Log-ID` is our queue id.
//! * the returned message: the header section as `text/rfc822-headers`; the whole message
//!   as `message/rfc822` for a failure with RET=FULL when it is at most
//!   [`MAX_RETURNED_MESSAGE`] octets and is plain lines (CRLF, no NUL, none over 998
//!   octets), else the headers after all. Delay warnings return the headers only: RET
//!   concerns failure DSNs (RFC 3461 §4.3).
//!
//! # Status codes
//!
//! From `Recipient::last_error` (formats in [`crate::delivery`]):
//!
//! * an enhanced code in the text (`"550 5.1.1 ..."`, or our own `"5.1.10 ..."`) is used
//!   as it is; if its class contradicts the reply code's, the reply code's class wins;
//! * a bare reply code gives `X.0.0`;
//! * text without any code names a connection problem at best: `X.4.1` (no answer from
//!   host) or `X.4.2` (bad connection), else the class alone (`X.0.0`).
//!
//! Then the class is made to fit the action: `delayed` is always 4; `failed` is 5,
//! except for an expiry (`"expired: ..."`), which keeps class 4 with `Action: failed`:
//! RFC 3463 defines class 4 as a persistent transient failure that caused "abandonment"
//! of delivery, RFC 3464 shows `4.4.7` with `Action: failed`, and Postfix reports expired
//! mail this way. An expiry keeps the enhanced code of its last error ("the code for the
//! actual problem ... should be returned rather than" 4.4.7, RFC 3463 §3.5) and falls
//! back to `4.4.7` (delivery time expired) when there is none.
//!
//! # Text safety
//!
//! Every line ends in CRLF and none exceeds 998 octets. Reply texts are put on one line
//! (controls become spaces), capped, and folded; inside `message/delivery-status`
//! non-ASCII becomes `?` and non-ASCII addresses use the `utf-8` address type with
//! RFC 6533 `\x{HEX}` escapes, so that part stays US-ASCII.

mod compose;
mod parts;
mod recipients;
mod returned;
mod status;
mod text;

pub use compose::{DsnRequest, compose};
pub(crate) use recipients::notify_allows;
pub use recipients::{Action, recipients_to_report};
pub use returned::{MAX_RETURNED_HEADERS, MAX_RETURNED_MESSAGE};
// Mail text helpers, shared with the queue alert's message.
pub(crate) use text::{cap, clean_address, clean_text, clean_token, id_token, push_field, wrap};

#[cfg(test)]
mod tests;

//! Result rows into [`Row`]s and [`Event`]s, the same for both stores: each store only
//! says how to read a text or an integer column ([`Columns`]).

use super::event::{Event, Kind};
use super::query::Row;
use super::store::{StoreError, Tally};

/// One result row of a store. Integers are 64-bit in both schemas.
pub(super) trait Columns {
    fn text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError>;
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.get(i)?)
    }
}

impl Columns for postgres::Row {
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(i)?)
    }
}

/// A row of `sql::SEARCH_HEAD`: the received (or refused) event and the latest outcome.
pub(super) fn search_row(r: &impl Columns) -> Result<Row, StoreError> {
    let time = r.int(0)?.unwrap_or(0);
    let refused = r.text(1)?.as_deref() == Some("refused");
    let last = r.text(12)?;
    Ok(Row {
        time,
        queue_id: r.text(2)?,
        message_id: r.text(3)?,
        sender: r.text(4)?,
        srs_sender: r.text(5)?,
        original_recipient: r.text(6)?,
        recipient: r.text(7)?,
        subject: r.text(8)?,
        size: r.int(9)?.map(|s| s.max(0) as u64),
        bounce: r.text(10)?.as_deref() == Some("bounced"),
        status: match (last, refused) {
            (Some(k), _) => k,
            (None, true) => "refused".into(),
            (None, false) => "queued".into(),
        },
        status_time: r.int(13)?.unwrap_or(time),
        remote: r.text(14)?,
        reply: if refused { r.text(11)? } else { r.text(15)? },
        attempts: r.int(16)?.map(clamp_u32),
    })
}

/// A row of `sql::SHOW`: every column of an event, in table order.
pub(super) fn event(r: &impl Columns) -> Result<Event, StoreError> {
    let kind = r.text(1)?.unwrap_or_default();
    Ok(Event {
        time: r.int(0)?.unwrap_or(0),
        kind: Kind::parse(&kind).unwrap_or(Kind::Connection),
        queue_id: r.text(2)?,
        message_id: r.text(3)?,
        sender: r.text(4)?,
        srs_sender: r.text(5)?,
        recipient: r.text(6)?,
        original_recipient: r.text(7)?,
        subject: r.text(8)?,
        remote: r.text(9)?,
        reply: r.text(10)?,
        tls: r.text(11)?,
        attempt: r.int(12)?.map(clamp_u32),
        size: r.int(13)?.map(|s| s.max(0) as u64),
        status: r.text(14)?,
        detail: r.text(15)?,
    })
}

/// A row of `sql::tally`: bucket, kind, key, count.
pub(super) fn tally(r: &impl Columns) -> Result<Tally, StoreError> {
    Ok(Tally {
        bucket: r.int(0)?.unwrap_or(0),
        kind: r.text(1)?.unwrap_or_default(),
        key: r.text(2)?,
        count: r.int(3)?.unwrap_or(0),
    })
}

fn clamp_u32(i: i64) -> u32 {
    i.clamp(0, i64::from(u32::MAX)) as u32
}

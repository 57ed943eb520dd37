//! Queue ids: making new ones and checking given ones.

use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Spool;

const MAX_ID_LEN: usize = 64;

impl Spool {
    /// A new queue id: 34 lowercase hex digits, `<time µs:14><sequence:4><pid:8><random:8>`.
    ///
    /// Ids made by one process sort in the order they were made; across processes they
    /// sort by time to the microsecond. The pid and a per-process random value keep ids
    /// from different runs apart even if the clock steps back.
    pub fn new_id() -> String {
        static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
        static TAG: OnceLock<u32> = OnceLock::new();

        let tag = *TAG.get_or_init(|| {
            let mut b = [0u8; 4];
            match getrandom::fill(&mut b) {
                Ok(()) => u32::from_le_bytes(b),
                // No randomness: the sub-second clock is still better than nothing.
                Err(_) => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0),
            }
        });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let (micros, seq) = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            if now > last.0 {
                *last = (now, 0);
            } else if last.1 < 0xffff {
                last.1 += 1;
            } else {
                *last = (last.0 + 1, 0);
            }
            *last
        };
        format!(
            "{:014x}{:04x}{:08x}{:08x}",
            micros & 0x00ff_ffff_ffff_ffff,
            seq,
            std::process::id(),
            tag
        )
    }
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn check_id(id: &str) -> io::Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        let shown: String = id.chars().take(80).collect();
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid spool id {shown:?}"),
        ))
    }
}

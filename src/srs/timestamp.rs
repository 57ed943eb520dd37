//! The two-character day stamp shared by both forms (Shevek's SRS): days since the epoch,
//! mod 1024, as two base32 characters.

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECONDS_PER_DAY: u64 = 86_400;
const SLOTS: u32 = 1024;

/// The stamp for `unix_seconds`.
#[inline]
pub(crate) fn encode(unix_seconds: u64) -> [u8; 2] {
    let day = unix_seconds / SECONDS_PER_DAY;
    // As one 16-bit value, so that it is stored at once: hashing reads it so.
    (u16::from(B32[((day >> 5) & 31) as usize]) | u16::from(B32[(day & 31) as usize]) << 8)
        .to_le_bytes()
}

/// The day slot (0..1024) a stamp names, case-insensitively; `None` if it is not one.
#[inline]
pub(crate) fn decode(stamp: &str) -> Option<u32> {
    let bytes = stamp.as_bytes();
    if bytes.len() != 2 {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => Some(u32::from(c - b'A')),
            c @ b'2'..=b'7' => Some(u32::from(c - b'2') + 26),
            _ => None,
        }
    };
    Some((value(bytes[0])? << 5) | value(bytes[1])?)
}

/// Days from the stamp's slot to today, as Mail::SRS counts them: a slot later than today's
/// is taken as ~1024 days old, so a stamp "from the future" is refused as expired.
pub(crate) fn age_days(slot: u32, unix_seconds: u64) -> u32 {
    let mut today = ((unix_seconds / SECONDS_PER_DAY) % u64::from(SLOTS)) as u32;
    while today < slot {
        today += SLOTS;
    }
    today - slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_vector_stamp() {
        // postsrsd's test clock: 1577836860 → "2W".
        assert_eq!(&encode(1_577_836_860), b"2W");
        assert_eq!(decode("2W"), decode("2w"));
    }

    #[test]
    fn rejects_bad_stamps() {
        assert_eq!(decode("2"), None);
        assert_eq!(decode("2W2"), None);
        assert_eq!(decode("1A"), None);
        assert_eq!(decode("=A"), None);
    }

    #[test]
    fn future_stamp_looks_old() {
        let now = 1_577_836_860;
        let today = decode("2W").unwrap();
        assert_eq!(age_days(today, now), 0);
        assert_eq!(age_days((today + 1) % 1024, now), 1023);
        assert_eq!(age_days(today - 3, now), 3);
    }
}

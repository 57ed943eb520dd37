//! The keyed hashes of both forms, keyed once per secret (the HMAC key schedule is done at
//! start, not per address), and their constant-time, case-insensitive check.
//!
//! HMAC is written out here on top of the `sha1`/`sha2` compression functions (which use
//! the CPU's SHA extensions when it has them) rather than taken from the `hmac` crate: a
//! pre-keyed HMAC of a short address is then exactly two compressions (the key's pad blocks
//! are compressed once, in [`Keys::new`]) with the fields lowercased straight into the
//! block, and only the few output characters a hash needs are encoded. The tests check it
//! against the `hmac` crate and `data-encoding`.

use sha1::digest::consts::U64;
use sha1::digest::generic_array::GenericArray;
use subtle::ConstantTimeEq;

/// Domain separation for the Microsoft-form hash, so it can never equal a classic one.
const MICROSOFT_TAG: &[u8] = b"srs-relay microsoft v1\0";

/// Longest classic hash (base64 of a 20-byte digest, without padding).
pub(crate) const CLASSIC_MAX: usize = 27;
/// Longest Microsoft-form hash (base32 of a 32-byte digest, without padding).
pub(crate) const MICROSOFT_MAX: usize = 52;

/// One 64-byte input block, in the type the compression functions take.
type Block = GenericArray<u8, U64>;

/// A Merkle–Damgård hash with 64-byte blocks and a `W`-word big-endian state: what HMAC
/// needs of SHA-1 (`W` = 5) and SHA-256 (`W` = 8).
pub(crate) trait Sha<const W: usize>: Clone {
    const IV: [u32; W];
    fn compress(state: &mut [u32; W], block: &Block);
}

#[derive(Clone)]
pub(crate) struct Sha1;
#[derive(Clone)]
pub(crate) struct Sha256;

impl Sha<5> for Sha1 {
    const IV: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    fn compress(state: &mut [u32; 5], block: &Block) {
        sha1::compress(state, std::slice::from_ref(block));
    }
}

impl Sha<8> for Sha256 {
    const IV: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    fn compress(state: &mut [u32; 8], block: &Block) {
        sha2::compress256(state, std::slice::from_ref(block));
    }
}

/// A hash in progress: the chaining state, the partial block and the length so far.
#[derive(Clone)]
struct Stream<H, const W: usize> {
    state: [u32; W],
    block: Block,
    used: usize,
    total: u64,
    hash: std::marker::PhantomData<H>,
}

impl<H: Sha<W>, const W: usize> Stream<H, W> {
    fn new() -> Self {
        Stream {
            state: H::IV,
            block: Block::default(),
            used: 0,
            total: 0,
            hash: std::marker::PhantomData,
        }
    }

    /// Appends `data`. With `LOWER`, every block is ASCII-lowercased whole just before it
    /// is compressed (64 bytes at once vectorize; the few bytes of each field do not), so
    /// whatever is already buffered must be lowercase: see [`KeyedHmac::with_prefix`].
    #[inline]
    fn update<const LOWER: bool>(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (64 - self.used).min(data.len());
            self.block[self.used..self.used + n].copy_from_slice(&data[..n]);
            self.used += n;
            self.total += n as u64;
            data = &data[n..];
            if self.used == 64 {
                self.compress::<LOWER>();
                self.used = 0;
            }
        }
    }

    #[inline]
    fn compress<const LOWER: bool>(&mut self) {
        if LOWER {
            self.block.make_ascii_lowercase();
        }
        H::compress(&mut self.state, &self.block);
    }

    /// Pads (0x80, zeros, bit length) and returns the final state: the digest, as words.
    #[inline]
    fn finish<const LOWER: bool>(mut self) -> [u32; W] {
        if LOWER {
            // Before the padding goes in: the length's bytes must stay as they are.
            self.block.make_ascii_lowercase();
        }
        self.block[self.used] = 0x80;
        self.block[self.used + 1..].fill(0);
        if self.used >= 56 {
            H::compress(&mut self.state, &self.block);
            self.block.fill(0);
        }
        self.block[56..].copy_from_slice(&(self.total * 8).to_be_bytes());
        H::compress(&mut self.state, &self.block);
        self.state
    }
}

/// The digest words as bytes, big-endian, in a buffer long enough for either hash.
fn digest_bytes<const W: usize>(words: &[u32; W]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (dst, w) in out.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// HMAC with the key already absorbed: the inner hash after the key's ipad block (and, for
/// the Microsoft form, the domain-separation tag), and the outer state after the opad block.
#[derive(Clone)]
pub(crate) struct KeyedHmac<H, const W: usize> {
    inner: Stream<H, W>,
    outer: [u32; W],
}

impl<H: Sha<W>, const W: usize> KeyedHmac<H, W> {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut padded = [0u8; 64];
        if key.len() > 64 {
            let mut long = Stream::<H, W>::new();
            long.update::<false>(key);
            padded[..4 * W].copy_from_slice(&digest_bytes(&long.finish::<false>())[..4 * W]);
        } else {
            padded[..key.len()].copy_from_slice(key);
        }
        let mut inner = Stream::<H, W>::new();
        inner.update::<false>(&padded.map(|b| b ^ 0x36));
        let mut outer = Stream::<H, W>::new();
        outer.update::<false>(&padded.map(|b| b ^ 0x5c));
        KeyedHmac {
            inner,
            outer: outer.state,
        }
    }

    /// Absorbs a message prefix into the key (it is hashed before every message). It must
    /// be lowercase already: it is buffered, and the buffer is lowercased when it fills.
    fn with_prefix(mut self, prefix: &[u8]) -> Self {
        assert!(!prefix.iter().any(u8::is_ascii_uppercase));
        self.inner.update::<false>(prefix);
        self
    }

    /// The MAC of `parts`, ASCII-lowercased, with `separator` between them if given.
    #[inline]
    pub(crate) fn mac_lowercase(&self, parts: &[&[u8]], separator: Option<u8>) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for (i, part) in parts.iter().enumerate() {
            if let (true, Some(sep)) = (i > 0, separator) {
                inner.update::<true>(&[sep]);
            }
            inner.update::<true>(part);
        }
        let digest = inner.finish::<true>();
        // The outer message (the inner digest) always fits one block with its padding.
        let mut block = Block::default();
        block[..4 * W].copy_from_slice(&digest_bytes(&digest)[..4 * W]);
        block[4 * W] = 0x80;
        block[56..].copy_from_slice(&((64 + 4 * W as u64) * 8).to_be_bytes());
        let mut outer = self.outer;
        H::compress(&mut outer, &block);
        digest_bytes(&outer)
    }
}

/// Mask: all ones if `a < b`, else zero (for values below 128), without a branch.
#[inline]
fn lt(a: u8, b: u8) -> u8 {
    ((i16::from(a) - i16::from(b)) >> 8) as u8
}

/// The base64 character of `v` (0..64), standard or URL alphabet, ASCII-lowercased if
/// `lower`. Arithmetic rather than a table lookup, so the time does not depend on the
/// digest.
#[inline]
fn base64_char(v: u8, url: bool, lower: bool) -> u8 {
    // A..Z, a..z, 0..9 and the two specials, each range an offset from v.
    let mut c = v.wrapping_add(b'A');
    c = c.wrapping_add(!lt(v, 26) & 6);
    c = c.wrapping_sub(!lt(v, 52) & 75);
    // 62 and 63: `+` and `/`, or `-` and `_`.
    let (to_62, to_63) = if url { (13, 49) } else { (15, 3) };
    c = c.wrapping_sub(!lt(v, 62) & to_62);
    c = c.wrapping_add(!lt(v, 63) & to_63);
    if lower {
        c = c.wrapping_add(lt(v, 26) & 32);
    }
    c
}

/// The base32 (RFC 4648) character of `v` (0..32), upper case, without a table.
#[inline]
fn base32_char(v: u8) -> u8 {
    v.wrapping_add(b'A').wrapping_sub(!lt(v, 26) & 41)
}

/// The first `out.len()` (at most 28) characters of the base64 encoding of a SHA-1
/// `digest` (standard or URL alphabet, lowercased if `lower`): what a full encoding starts
/// with, without encoding the rest.
pub(crate) fn base64_prefix(digest: &[u8; 20], url: bool, lower: bool, out: &mut [u8]) {
    let mut padded = [0u8; 21];
    padded[..20].copy_from_slice(digest);
    for (group, chars) in padded.chunks_exact(3).zip(out.chunks_mut(4)) {
        let n = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        for (j, c) in chars.iter_mut().enumerate() {
            *c = base64_char((n >> (18 - 6 * j)) as u8 & 63, url, lower);
        }
    }
}

/// The first `out.len()` (at most 56) characters of the unpadded base32 encoding of a
/// SHA-256 `digest`.
pub(crate) fn base32_prefix(digest: &[u8; 32], out: &mut [u8]) {
    let mut padded = [0u8; 35];
    padded[..32].copy_from_slice(digest);
    for (group, chars) in padded.chunks_exact(5).zip(out.chunks_mut(8)) {
        let mut n = [0u8; 8];
        n[3..].copy_from_slice(group);
        let n = u64::from_be_bytes(n);
        for (j, c) in chars.iter_mut().enumerate() {
            *c = base32_char((n >> (35 - 5 * j)) as u8 & 31);
        }
    }
}

/// The SHA-1 digest in [`KeyedHmac::mac_lowercase`]'s 32-byte output.
fn sha1_part(digest: &[u8; 32]) -> &[u8; 20] {
    digest[..20].try_into().expect("20 of 32 bytes")
}

#[derive(Clone)]
pub(crate) struct Keys {
    classic: Vec<KeyedHmac<Sha1, 5>>,
    microsoft: Vec<KeyedHmac<Sha256, 8>>,
}

impl Keys {
    pub(crate) fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let classic = secrets.iter().map(|s| KeyedHmac::new(s.as_ref())).collect();
        let microsoft = secrets
            .iter()
            .map(|s| KeyedHmac::new(s.as_ref()).with_prefix(MICROSOFT_TAG))
            .collect();
        Keys { classic, microsoft }
    }

    /// Classic hash (Mail::SRS): base64 of HMAC-SHA1 over the lowercased fields joined with
    /// nothing between them, first `len` characters, standard or URL alphabet.
    pub(crate) fn classic(&self, parts: &[&[u8]], url_alphabet: bool, len: usize) -> [u8; 28] {
        let digest = self.classic[0].mac_lowercase(parts, None);
        let mut out = [0u8; 28];
        base64_prefix(sha1_part(&digest), url_alphabet, false, &mut out[..len]);
        out
    }

    /// Whether `given` is a classic hash of `parts` under any secret: case-insensitive,
    /// either base64 alphabet, constant time per secret.
    pub(crate) fn classic_verify(&self, given: &str, parts: &[&[u8]], len: usize) -> bool {
        let given = given.as_bytes();
        if given.len() != len {
            return false;
        }
        let mut wanted = [0u8; CLASSIC_MAX];
        for (dst, &c) in wanted.iter_mut().zip(given) {
            *dst = match c {
                b'-' => b'+',
                b'_' => b'/',
                c => c.to_ascii_lowercase(),
            };
        }
        let mut ok = subtle::Choice::from(0);
        for key in &self.classic {
            let mut enc = [0u8; CLASSIC_MAX];
            let digest = key.mac_lowercase(parts, None);
            base64_prefix(sha1_part(&digest), false, true, &mut enc[..len]);
            ok |= enc[..len].ct_eq(&wanted[..len]);
        }
        ok.into()
    }

    /// Microsoft-form hash: base32 (RFC 4648, no padding) of HMAC-SHA256 over the
    /// lowercased fields separated by NUL, first `len` characters, upper case.
    pub(crate) fn microsoft(&self, parts: &[&[u8]], len: usize) -> [u8; MICROSOFT_MAX] {
        let digest = self.microsoft[0].mac_lowercase(parts, Some(0));
        let mut out = [0u8; MICROSOFT_MAX];
        base32_prefix(&digest, &mut out[..len]);
        out
    }

    pub(crate) fn microsoft_verify(&self, given: &str, parts: &[&[u8]], len: usize) -> bool {
        let given = given.as_bytes();
        if given.len() != len {
            return false;
        }
        let mut wanted = [0u8; MICROSOFT_MAX];
        for (dst, &c) in wanted.iter_mut().zip(given) {
            *dst = c.to_ascii_uppercase();
        }
        let mut ok = subtle::Choice::from(0);
        for key in &self.microsoft {
            let mut enc = [0u8; MICROSOFT_MAX];
            base32_prefix(&key.mac_lowercase(parts, Some(0)), &mut enc[..len]);
            ok |= enc[..len].ct_eq(&wanted[..len]);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL};
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;

    #[test]
    fn classic_matches_public_vector() {
        let keys = Keys::new(&["tops3cr3t"]);
        let h = keys.classic(&[b"2W", b"otherdomain.com", b"test"], false, 4);
        assert_eq!(&h[..4], b"vmyz");
        assert!(keys.classic_verify("VMYZ", &[b"2W", b"otherdomain.com", b"test"], 4));
        assert!(!keys.classic_verify("vmyy", &[b"2W", b"otherdomain.com", b"test"], 4));
        assert!(!keys.classic_verify("vmy", &[b"2W", b"otherdomain.com", b"test"], 4));
    }

    #[test]
    fn classic_url_alphabet() {
        let keys = Keys::new(&["tops3cr3t"]);
        let parts: [&[u8]; 3] = [b"2W", b"somedomain.com", b"hash234"];
        assert_eq!(&keys.classic(&parts, false, 4)[..4], b"+3/5");
        assert_eq!(&keys.classic(&parts, true, 4)[..4], b"-3_5");
        assert!(keys.classic_verify("-3_5", &parts, 4));
        assert!(keys.classic_verify("+3/5", &parts, 4));
    }

    #[test]
    fn microsoft_fields_are_separated() {
        let keys = Keys::new(&["k"]);
        let a = keys.microsoft(&[b"AA", b"ab", b"c", b"u"], MICROSOFT_MAX);
        let b = keys.microsoft(&[b"AA", b"a", b"bc", b"u"], MICROSOFT_MAX);
        assert_ne!(a, b);
    }

    #[test]
    fn every_character_value() {
        let std = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let url = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for v in 0..64u8 {
            let i = usize::from(v);
            assert_eq!(base64_char(v, false, false), std[i], "{v}");
            assert_eq!(base64_char(v, true, false), url[i], "{v}");
            assert_eq!(
                base64_char(v, false, true),
                std[i].to_ascii_lowercase(),
                "{v}"
            );
        }
        let b32 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        for v in 0..32u8 {
            assert_eq!(base32_char(v), b32[usize::from(v)], "{v}");
        }
    }

    /// The reference: the `hmac` crate over the same lowercased, separated message.
    fn reference_classic(key: &[u8], parts: &[Vec<u8>]) -> [u8; 20] {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
        for part in parts {
            mac.update(&part.to_ascii_lowercase());
        }
        mac.finalize().into_bytes().into()
    }

    fn reference_microsoft(key: &[u8], parts: &[Vec<u8>]) -> [u8; 32] {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(MICROSOFT_TAG);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(&part.to_ascii_lowercase());
        }
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn hmac_block_boundaries() {
        // Message lengths around the one- and two-block limits (55, 56, 64, 119, 120),
        // keys around the block size (64: used as is; 65: hashed first).
        for key_len in [1, 20, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8 ^ 0xa5).collect();
            for msg_len in [0, 1, 54, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300] {
                let msg: Vec<u8> = (0..msg_len).map(|i| b'A' + (i % 26) as u8).collect();
                let parts = [msg.clone()];
                let ours = KeyedHmac::<Sha1, 5>::new(&key).mac_lowercase(&[&msg], None);
                assert_eq!(
                    ours[..20],
                    reference_classic(&key, &parts),
                    "{key_len} {msg_len}"
                );
                let ours = KeyedHmac::<Sha256, 8>::new(&key)
                    .with_prefix(MICROSOFT_TAG)
                    .mac_lowercase(&[&msg], Some(0));
                assert_eq!(
                    ours,
                    reference_microsoft(&key, &parts),
                    "{key_len} {msg_len}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn prop_hmac_matches_hmac_crate(
            key in proptest::collection::vec(any::<u8>(), 1..150),
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..90), 1..5),
        ) {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let ours = KeyedHmac::<Sha1, 5>::new(&key).mac_lowercase(&refs, None);
            prop_assert_eq!(ours[..20].to_vec(), reference_classic(&key, &parts).to_vec());
            let ours = KeyedHmac::<Sha256, 8>::new(&key)
                .with_prefix(MICROSOFT_TAG)
                .mac_lowercase(&refs, Some(0));
            prop_assert_eq!(ours, reference_microsoft(&key, &parts));
        }

        /// The prefix encoders give the first characters of the full encodings.
        #[test]
        fn prop_prefix_encoders(digest in proptest::array::uniform32(any::<u8>()), len in 0usize..=52) {
            let sha1 = sha1_part(&digest);
            for (url, full) in [(false, BASE64.encode(sha1)), (true, BASE64URL.encode(sha1))] {
                let n = len.min(CLASSIC_MAX);
                let mut out = [0u8; CLASSIC_MAX];
                base64_prefix(sha1, url, false, &mut out[..n]);
                prop_assert_eq!(&out[..n], &full.as_bytes()[..n]);
                base64_prefix(sha1, url, true, &mut out[..n]);
                let lower = full.to_ascii_lowercase();
                prop_assert_eq!(&out[..n], &lower.as_bytes()[..n]);
            }
            let full = BASE32_NOPAD.encode(&digest);
            let mut out = [0u8; MICROSOFT_MAX];
            base32_prefix(&digest, &mut out[..len]);
            prop_assert_eq!(&out[..len], &full.as_bytes()[..len]);
        }
    }
}

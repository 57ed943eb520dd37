//! Pre-keyed HMAC-SHA1 and HMAC-SHA256 of lowercased fields: the codec's one use of them.
//!
//! Written out over the `sha1`/`sha2` compression functions rather than taken from the
//! `hmac` crate. As before, the key's pad blocks are compressed once per secret (in
//! [`KeyedHmac::new`]), so a short address costs two compressions; what the profile showed
//! was the work around them: buffering per `update`, lowercasing byte by byte through a
//! bounce buffer, finalization copying the digest into a padded block. Here the fields are
//! copied into the block and lowercased a block at a time; and on x86-64 CPUs with the SHA
//! extensions, the last inner block and the outer block are hashed by [`shani`] with
//! everything in registers: lowercasing and padding are applied there, and the inner
//! digest goes into the outer compression as message words instead of being stored,
//! padded in memory and loaded again (measured: 144 -> 115 ns per HMAC-SHA1 of an
//! address's fields).
//!
//! The tests check every path against the `hmac` crate.

use std::marker::PhantomData;

use sha1::digest::generic_array::GenericArray;

/// One 64-byte input block.
pub(crate) type Block = [u8; 64];

/// A Merkle–Damgård hash with 64-byte blocks and a `W`-word big-endian state: what HMAC
/// needs of SHA-1 (`W` = 5) and SHA-256 (`W` = 8).
pub(crate) trait Sha<const W: usize>: Clone {
    const IV: [u32; W];

    fn compress(state: &mut [u32; W], block: &Block);

    /// The end of an HMAC: the inner message's last, partial block (`block[..used]`,
    /// lowercased here) and its padding for `total` bytes in all are compressed into
    /// `inner`; then the outer hash of that digest, from the `outer` state.
    fn hmac_finish(
        inner: [u32; W],
        block: &Block,
        used: usize,
        total: u64,
        outer: &[u32; W],
    ) -> [u32; W] {
        hmac_finish_portable::<Self, W>(inner, block, used, total, outer)
    }
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
        sha1::compress(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }

    fn hmac_finish(
        inner: [u32; 5],
        block: &Block,
        used: usize,
        total: u64,
        outer: &[u32; 5],
    ) -> [u32; 5] {
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            // SAFETY: the CPU has the instruction sets `hmac_sha1` is compiled for.
            return unsafe { shani::hmac_sha1(&inner, block, used, total, outer) };
        }
        hmac_finish_portable::<Self, 5>(inner, block, used, total, outer)
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
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }

    fn hmac_finish(
        inner: [u32; 8],
        block: &Block,
        used: usize,
        total: u64,
        outer: &[u32; 8],
    ) -> [u32; 8] {
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            // SAFETY: the CPU has the instruction sets `hmac_sha256` is compiled for.
            return unsafe { shani::hmac_sha256(&inner, block, used, total, outer) };
        }
        hmac_finish_portable::<Self, 8>(inner, block, used, total, outer)
    }
}

/// [`Sha::hmac_finish`] through the compression function, on any CPU.
pub(crate) fn hmac_finish_portable<H: Sha<W>, const W: usize>(
    mut state: [u32; W],
    block: &Block,
    used: usize,
    total: u64,
    outer: &[u32; W],
) -> [u32; W] {
    let mut last = [[0u8; 64]; 2];
    last[0][..used].copy_from_slice(&block[..used]);
    last[0].make_ascii_lowercase();
    for block in pad(&mut last, used, total) {
        H::compress(&mut state, block);
    }
    // The outer message (the inner digest) always fits one block with its padding.
    let mut block = [0u8; 64];
    for (dst, w) in block.chunks_exact_mut(4).zip(&state) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
    block[4 * W] = 0x80;
    block[56..].copy_from_slice(&((64 + 4 * W as u64) * 8).to_be_bytes());
    let mut outer = *outer;
    H::compress(&mut outer, &block);
    outer
}

/// `dst.copy_from_slice(src)` without a call to `memcpy` for the few bytes of an address
/// field: two overlapping loads and stores of the widest size that fits. The hash cannot
/// start before its block is written, so the copies' latency is the hash's.
#[inline(always)]
fn copy(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    debug_assert_eq!(dst.len(), n);
    macro_rules! overlapping {
        ($t:ty, $w:expr) => {{
            let head = <$t>::from_le_bytes(src[..$w].try_into().expect("width"));
            let tail = <$t>::from_le_bytes(src[n - $w..].try_into().expect("width"));
            dst[..$w].copy_from_slice(&head.to_le_bytes());
            dst[n - $w..].copy_from_slice(&tail.to_le_bytes());
        }};
    }
    match n {
        0 => {}
        1 => dst[0] = src[0],
        2..=3 => overlapping!(u16, 2),
        4..=7 => overlapping!(u32, 4),
        8..=15 => overlapping!(u64, 8),
        16..=31 => overlapping!(u128, 16),
        _ => dst.copy_from_slice(src),
    }
}

/// Pads a message of `total` bytes whose last `used` bytes start `blocks`, which is zero
/// after them: the 0x80 terminator and the bit length. The one or two blocks to compress.
fn pad(blocks: &mut [Block; 2], used: usize, total: u64) -> &[Block] {
    let n = if used < 56 { 1 } else { 2 };
    let bytes = blocks.as_flattened_mut();
    bytes[used] = 0x80;
    bytes[64 * n - 8..64 * n].copy_from_slice(&(total * 8).to_be_bytes());
    &blocks[..n]
}

/// A hash in progress: the chaining state, the partial block and the length so far.
#[derive(Clone)]
struct Stream<H, const W: usize> {
    state: [u32; W],
    block: Block,
    /// Bytes of `block` in use (0..64: a full block is compressed at once).
    used: usize,
    total: u64,
    hash: PhantomData<H>,
}

impl<H: Sha<W>, const W: usize> Stream<H, W> {
    fn new() -> Self {
        Stream {
            state: H::IV,
            block: [0; 64],
            used: 0,
            total: 0,
            hash: PhantomData,
        }
    }

    /// Appends `data`. With `LOWER`, each full block is ASCII-lowercased whole before it
    /// is compressed (64 bytes at once vectorize; the few bytes of a field do not), so
    /// whatever is already buffered must be lowercase: see [`KeyedHmac::with_prefix`].
    #[inline]
    fn update<const LOWER: bool>(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (64 - self.used).min(data.len());
            copy(&mut self.block[self.used..self.used + n], &data[..n]);
            self.used += n;
            self.total += n as u64;
            data = &data[n..];
            if self.used == 64 {
                if LOWER {
                    self.block.make_ascii_lowercase();
                }
                H::compress(&mut self.state, &self.block);
                self.used = 0;
            }
        }
    }

    /// The digest, as words (no lowercasing).
    fn finish(self) -> [u32; W] {
        let mut state = self.state;
        let mut last = [[0u8; 64]; 2];
        last[0][..self.used].copy_from_slice(&self.block[..self.used]);
        for block in pad(&mut last, self.used, self.total) {
            H::compress(&mut state, block);
        }
        state
    }
}

/// A message's last block built ahead of its MAC ([`KeyedHmac::message`]).
pub(crate) struct Message {
    block: Block,
    /// The bytes of `block` in use and the message's length after the prefix; `None` if
    /// the message does not fit one block (it is then hashed from its parts).
    fits: Option<(usize, u64)>,
}

impl Message {
    pub(crate) fn new() -> Self {
        Message {
            block: [0; 64],
            fits: None,
        }
    }
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
            for (dst, w) in padded.chunks_exact_mut(4).zip(&long.finish()) {
                dst.copy_from_slice(&w.to_be_bytes());
            }
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
    /// be lowercase already: it stays buffered, and buffers are lowercased whole.
    pub(crate) fn with_prefix(mut self, prefix: &[u8]) -> Self {
        assert!(!prefix.iter().any(u8::is_ascii_uppercase));
        self.inner.update::<false>(prefix);
        self
    }

    /// Absorbs `parts`, with `separator` between them if given.
    #[inline]
    fn absorb(&self, parts: &[&[u8]], separator: Option<u8>) -> Stream<H, W> {
        let mut inner = self.inner.clone();
        for (i, part) in parts.iter().enumerate() {
            if let (true, Some(sep)) = (i > 0, separator) {
                inner.update::<true>(&[sep]);
            }
            inner.update::<true>(part);
        }
        inner
    }

    /// The whole message in its last block, when it fits there (the usual case, an
    /// address's fields after at most a short prefix): the block, the bytes of it in use
    /// and the message's length with the key block. Written field by field, with no stream
    /// to copy and no per-update bookkeeping; `hmac_finish` lowercases it.
    #[inline(always)]
    fn single_block(&self, parts: &[&[u8]], separator: Option<u8>) -> Option<(Block, usize, u64)> {
        let mut block = [0; 64];
        let (used, total) = self.single_block_into(&mut block, parts, separator)?;
        Some((block, used, total))
    }

    /// [`single_block`](Self::single_block) into `block`.
    #[inline(always)]
    fn single_block_into(
        &self,
        block: &mut Block,
        parts: &[&[u8]],
        separator: Option<u8>,
    ) -> Option<(usize, u64)> {
        let separators = match separator {
            Some(_) => parts.len().saturating_sub(1),
            None => 0,
        };
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + separators;
        if self.inner.used + len >= 64 {
            return None;
        }
        // The prefix, if any (the block past the message is not read: it need not be zero).
        if self.inner.used > 0 {
            *block = self.inner.block;
        }
        let mut at = self.inner.used;
        for (i, part) in parts.iter().enumerate() {
            if let (true, Some(sep)) = (i > 0, separator) {
                block[at] = sep;
                at += 1;
            }
            copy(&mut block[at..at + part.len()], part);
            at += part.len();
        }
        Some((at, self.inner.total + len as u64))
    }

    /// `parts` (with `separator` between them) written into their last block ahead of the
    /// MAC, for [`mac_message`](Self::mac_message) under this key or any other with the
    /// same prefix. Written there a while before the MAC reads the block, the fields'
    /// narrow stores have reached the cache by then; read at once, they could not be
    /// forwarded to the block's wide loads, which waited for them.
    /// Written in place (the caller's `message`): built in a local and returned, the block
    /// would be copied, which is a read of it at once.
    #[inline(always)]
    pub(crate) fn message(&self, message: &mut Message, parts: &[&[u8]], separator: Option<u8>) {
        message.fits = self
            .single_block_into(&mut message.block, parts, separator)
            .map(|(used, total)| (used, total - self.inner.total));
    }

    /// [`mac_lowercase`](Self::mac_lowercase) of the `parts` and `separator` that
    /// `message` was made of (by a key with the same prefix).
    #[inline(always)]
    pub(crate) fn mac_message(
        &self,
        message: &Message,
        parts: &[&[u8]],
        separator: Option<u8>,
    ) -> [u32; W] {
        match message.fits {
            Some((used, len)) => {
                let block = &message.block;
                debug_assert_eq!(
                    self.inner.block[..self.inner.used],
                    block[..self.inner.used]
                );
                let total = self.inner.total + len;
                H::hmac_finish(self.inner.state, block, used, total, &self.outer)
            }
            None => self.mac_lowercase(parts, separator),
        }
    }

    /// The MAC of `parts`, ASCII-lowercased, with `separator` between them if given: the
    /// digest as big-endian words.
    #[inline]
    pub(crate) fn mac_lowercase(&self, parts: &[&[u8]], separator: Option<u8>) -> [u32; W] {
        if let Some((block, used, total)) = self.single_block(parts, separator) {
            return H::hmac_finish(self.inner.state, &block, used, total, &self.outer);
        }
        let inner = self.absorb(parts, separator);
        H::hmac_finish(
            inner.state,
            &inner.block,
            inner.used,
            inner.total,
            &self.outer,
        )
    }

    /// [`mac_lowercase`](Self::mac_lowercase) without the SHA extensions.
    #[cfg(test)]
    pub(crate) fn mac_lowercase_portable(
        &self,
        parts: &[&[u8]],
        separator: Option<u8>,
    ) -> [u32; W] {
        if let Some((block, used, total)) = self.single_block(parts, separator) {
            return hmac_finish_portable::<H, W>(
                self.inner.state,
                &block,
                used,
                total,
                &self.outer,
            );
        }
        let inner = self.absorb(parts, separator);
        hmac_finish_portable::<H, W>(
            inner.state,
            &inner.block,
            inner.used,
            inner.total,
            &self.outer,
        )
    }
}

/// The end of an HMAC with the x86 SHA extensions. The rounds are the `sha1` and `sha2`
/// crates' x86 backends (MIT/Apache-2.0), with the state and the message in registers.
///
/// Why `unsafe`: calling a function compiled for instructions the baseline x86-64 does not
/// have; each call is guarded by [`available`](shani::available). Measured on the build
/// machine (Xeon with SHA-NI, best of 300 runs of 1,000): an HMAC-SHA1 of an address's
/// fields took 144 ns through the `sha1` crate's block interface, 115 ns here (the floor,
/// two compressions, is ~80 ns); the classic forward+reverse went from 470 to 415 ns.
/// (Under valgrind, whose CPU model lacks SHA-NI, the portable path runs instead.)
#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    use super::Block;

    /// Whether the CPU has the instructions of this module (SHA, SSSE3, SSE4.1).
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }

    /// Bytes `16 * k..16 * k + 16` of `block` as a vector, byte 0 in the low lane.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(block: &Block, k: usize) -> __m128i {
        let half = |i: usize| i64::from_le_bytes(block[i..i + 8].try_into().expect("8 bytes"));
        _mm_set_epi64x(half(16 * k + 8), half(16 * k))
    }

    /// The last inner block as four vectors (bytes in memory order): `block[..used]`
    /// ASCII-lowercased, the 0x80 terminator at `used`, zeros after it. The bit length is
    /// left to the caller, who knows the word order.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn last_block(block: &Block, used: usize) -> [__m128i; 4] {
        debug_assert!(used < 64);
        let used = _mm_set1_epi8(used as i8);
        let after_z = _mm_set1_epi8(b'Z' as i8 + 1);
        let before_a = _mm_set1_epi8(b'A' as i8 - 1);
        let case_bit = _mm_set1_epi8(0x20);
        let terminator = _mm_set1_epi8(0x80_u8 as i8);
        let first = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut lanes = [_mm_setzero_si128(); 4];
        for (k, lane) in lanes.iter_mut().enumerate() {
            let v = load(block, k);
            // Signed compares: bytes from 0x80 up are negative, never upper case.
            let upper = _mm_and_si128(_mm_cmpgt_epi8(v, before_a), _mm_cmplt_epi8(v, after_z));
            let v = _mm_or_si128(v, _mm_and_si128(upper, case_bit));
            let index = _mm_add_epi8(first, _mm_set1_epi8(16 * k as i8));
            let message = _mm_and_si128(v, _mm_cmplt_epi8(index, used));
            *lane = _mm_or_si128(
                message,
                _mm_and_si128(terminator, _mm_cmpeq_epi8(index, used)),
            );
        }
        lanes
    }

    /// One SHA-1 compression of the message words `w` (first word in the high lane) into
    /// (abcd, e).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn sha1_block(abcd: __m128i, e: __m128i, w: [__m128i; 4]) -> (__m128i, __m128i) {
        macro_rules! rounds4 {
            ($h0:ident, $h1:ident, $wk:expr, $i:expr) => {
                _mm_sha1rnds4_epu32::<$i>($h0, _mm_sha1nexte_epu32($h1, $wk))
            };
        }
        macro_rules! schedule {
            ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
                _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($v0, $v1), $v2), $v3)
            };
        }
        macro_rules! schedule_rounds4 {
            ($h0:ident, $h1:ident, $w0:expr, $w1:expr, $w2:expr, $w3:expr, $w4:expr, $i:expr) => {
                $w4 = schedule!($w0, $w1, $w2, $w3);
                $h1 = rounds4!($h0, $h1, $w4, $i);
            };
        }
        let [mut w0, mut w1, mut w2, mut w3] = w;
        let mut w4;
        let mut h0 = abcd;
        let mut h1 = _mm_add_epi32(e, w0);
        // Rounds 0..20
        h1 = _mm_sha1rnds4_epu32::<0>(h0, h1);
        h0 = rounds4!(h1, h0, w1, 0);
        h1 = rounds4!(h0, h1, w2, 0);
        h0 = rounds4!(h1, h0, w3, 0);
        schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 0);
        // Rounds 20..40
        schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 1);
        schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 1);
        schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 1);
        schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 1);
        schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 1);
        // Rounds 40..60
        schedule_rounds4!(h0, h1, w1, w2, w3, w4, w0, 2);
        schedule_rounds4!(h1, h0, w2, w3, w4, w0, w1, 2);
        schedule_rounds4!(h0, h1, w3, w4, w0, w1, w2, 2);
        schedule_rounds4!(h1, h0, w4, w0, w1, w2, w3, 2);
        schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 2);
        // Rounds 60..80
        schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 3);
        schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 3);
        schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 3);
        schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 3);
        schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 3);
        (_mm_add_epi32(abcd, h0), _mm_sha1nexte_epu32(h1, e))
    }

    /// [`Sha::hmac_finish`](super::Sha::hmac_finish) for SHA-1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn hmac_sha1(
        inner: &[u32; 5],
        block: &Block,
        used: usize,
        total: u64,
        outer: &[u32; 5],
    ) -> [u32; 5] {
        // (abcd, e): a in the high lane, e in the high lane with zeros below.
        let state = |s: &[u32; 5]| {
            let s = s.map(|w| w as i32);
            (
                _mm_set_epi32(s[0], s[1], s[2], s[3]),
                _mm_set_epi32(s[4], 0, 0, 0),
            )
        };
        // Big-endian words, the first in the high lane.
        let words = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
        let [m0, m1, m2, m3] = last_block(block, used);
        let mut w = [
            _mm_shuffle_epi8(m0, words),
            _mm_shuffle_epi8(m1, words),
            _mm_shuffle_epi8(m2, words),
            _mm_shuffle_epi8(m3, words),
        ];
        let bits = total * 8;
        // Words 14 and 15.
        let length = _mm_set_epi32(0, 0, (bits >> 32) as i32, bits as i32);
        let (mut abcd, mut e) = state(inner);
        if used < 56 {
            w[3] = _mm_or_si128(w[3], length);
            (abcd, e) = sha1_block(abcd, e, w);
        } else {
            (abcd, e) = sha1_block(abcd, e, w);
            let zero = _mm_setzero_si128();
            (abcd, e) = sha1_block(abcd, e, [zero, zero, zero, length]);
        }
        // The outer message as words: the inner digest (abcd, then e over zeros), the 0x80
        // terminator, zeros, and the bit length (64 + 20) * 8.
        let w = [
            abcd,
            _mm_or_si128(e, _mm_set_epi32(0, 0x8000_0000_u32 as i32, 0, 0)),
            _mm_setzero_si128(),
            _mm_set_epi32(0, 0, 0, (64 + 20) * 8),
        ];
        let (abcd, e) = state(outer);
        let (abcd, e) = sha1_block(abcd, e, w);
        [
            _mm_extract_epi32::<3>(abcd) as u32,
            _mm_extract_epi32::<2>(abcd) as u32,
            _mm_extract_epi32::<1>(abcd) as u32,
            _mm_extract_epi32::<0>(abcd) as u32,
            _mm_extract_epi32::<3>(e) as u32,
        ]
    }

    /// SHA-256's round constants.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// One SHA-256 compression of the message words `w` (first word in the low lane) into
    /// the state as (abef, cdgh).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn sha256_block(abef: __m128i, cdgh: __m128i, w: [__m128i; 4]) -> (__m128i, __m128i) {
        let (abef_in, cdgh_in) = (abef, cdgh);
        let (mut abef, mut cdgh) = (abef, cdgh);
        macro_rules! rounds4 {
            ($rest:expr, $i:expr) => {{
                let k = _mm_set_epi32(
                    K[4 * $i + 3] as i32,
                    K[4 * $i + 2] as i32,
                    K[4 * $i + 1] as i32,
                    K[4 * $i] as i32,
                );
                let t1 = _mm_add_epi32($rest, k);
                cdgh = _mm_sha256rnds2_epu32(cdgh, abef, t1);
                let t2 = _mm_shuffle_epi32::<0x0E>(t1);
                abef = _mm_sha256rnds2_epu32(abef, cdgh, t2);
            }};
        }
        macro_rules! schedule_rounds4 {
            ($w0:expr, $w1:expr, $w2:expr, $w3:expr, $w4:expr, $i:expr) => {{
                let t1 = _mm_sha256msg1_epu32($w0, $w1);
                let t2 = _mm_alignr_epi8::<4>($w3, $w2);
                $w4 = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), $w3);
                rounds4!($w4, $i);
            }};
        }
        let [mut w0, mut w1, mut w2, mut w3] = w;
        let mut w4;
        rounds4!(w0, 0);
        rounds4!(w1, 1);
        rounds4!(w2, 2);
        rounds4!(w3, 3);
        schedule_rounds4!(w0, w1, w2, w3, w4, 4);
        schedule_rounds4!(w1, w2, w3, w4, w0, 5);
        schedule_rounds4!(w2, w3, w4, w0, w1, 6);
        schedule_rounds4!(w3, w4, w0, w1, w2, 7);
        schedule_rounds4!(w4, w0, w1, w2, w3, 8);
        schedule_rounds4!(w0, w1, w2, w3, w4, 9);
        schedule_rounds4!(w1, w2, w3, w4, w0, 10);
        schedule_rounds4!(w2, w3, w4, w0, w1, 11);
        schedule_rounds4!(w3, w4, w0, w1, w2, 12);
        schedule_rounds4!(w4, w0, w1, w2, w3, 13);
        schedule_rounds4!(w0, w1, w2, w3, w4, 14);
        schedule_rounds4!(w1, w2, w3, w4, w0, 15);
        (_mm_add_epi32(abef, abef_in), _mm_add_epi32(cdgh, cdgh_in))
    }

    /// [`Sha::hmac_finish`](super::Sha::hmac_finish) for SHA-256.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn hmac_sha256(
        inner: &[u32; 8],
        block: &Block,
        used: usize,
        total: u64,
        outer: &[u32; 8],
    ) -> [u32; 8] {
        // The state words as the SHA-256 instructions take them: (abef, cdgh).
        let state = |s: &[u32; 8]| {
            let s = s.map(|w| w as i32);
            let dcba = _mm_set_epi32(s[3], s[2], s[1], s[0]);
            let hgfe = _mm_set_epi32(s[7], s[6], s[5], s[4]);
            let cdab = _mm_shuffle_epi32::<0xB1>(dcba);
            let efgh = _mm_shuffle_epi32::<0x1B>(hgfe);
            (
                _mm_alignr_epi8::<8>(cdab, efgh),
                _mm_blend_epi16::<0xF0>(efgh, cdab),
            )
        };
        // And back: (a, b, c, d) and (e, f, g, h), the first word in the low lane.
        let words = |abef: __m128i, cdgh: __m128i| {
            let feba = _mm_shuffle_epi32::<0x1B>(abef);
            let dchg = _mm_shuffle_epi32::<0xB1>(cdgh);
            (
                _mm_blend_epi16::<0xF0>(feba, dchg),
                _mm_alignr_epi8::<8>(dchg, feba),
            )
        };
        // Big-endian words, the first in the low lane.
        let swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let [m0, m1, m2, m3] = last_block(block, used);
        let mut w = [
            _mm_shuffle_epi8(m0, swap),
            _mm_shuffle_epi8(m1, swap),
            _mm_shuffle_epi8(m2, swap),
            _mm_shuffle_epi8(m3, swap),
        ];
        let bits = total * 8;
        // Words 14 and 15.
        let length = _mm_set_epi32(bits as i32, (bits >> 32) as i32, 0, 0);
        let (mut abef, mut cdgh) = state(inner);
        if used < 56 {
            w[3] = _mm_or_si128(w[3], length);
            (abef, cdgh) = sha256_block(abef, cdgh, w);
        } else {
            (abef, cdgh) = sha256_block(abef, cdgh, w);
            let zero = _mm_setzero_si128();
            (abef, cdgh) = sha256_block(abef, cdgh, [zero, zero, zero, length]);
        }
        // The outer message as words: the inner digest, the 0x80 terminator, zeros, and
        // the bit length (64 + 32) * 8.
        let (abcd, efgh) = words(abef, cdgh);
        let w = [
            abcd,
            efgh,
            _mm_set_epi32(0, 0, 0, 0x8000_0000_u32 as i32),
            _mm_set_epi32((64 + 32) * 8, 0, 0, 0),
        ];
        let (abef, cdgh) = state(outer);
        let (abef, cdgh) = sha256_block(abef, cdgh, w);
        let (abcd, efgh) = words(abef, cdgh);
        [
            _mm_extract_epi32::<0>(abcd) as u32,
            _mm_extract_epi32::<1>(abcd) as u32,
            _mm_extract_epi32::<2>(abcd) as u32,
            _mm_extract_epi32::<3>(abcd) as u32,
            _mm_extract_epi32::<0>(efgh) as u32,
            _mm_extract_epi32::<1>(efgh) as u32,
            _mm_extract_epi32::<2>(efgh) as u32,
            _mm_extract_epi32::<3>(efgh) as u32,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;

    /// The reference: the `hmac` crate over the same lowercased, separated message.
    fn reference<M: Mac + hmac::digest::KeyInit>(
        key: &[u8],
        prefix: &[u8],
        parts: &[&[u8]],
        separator: Option<u8>,
    ) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap();
        mac.update(prefix);
        for (i, part) in parts.iter().enumerate() {
            if let (true, Some(sep)) = (i > 0, separator) {
                mac.update(&[sep]);
            }
            mac.update(&part.to_ascii_lowercase());
        }
        mac.finalize().into_bytes().to_vec()
    }

    fn bytes<const W: usize>(words: [u32; W]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    const PREFIX: &[u8] = b"a prefix, 23 bytes long";

    /// Ours, both paths (the SHA extensions where the CPU has them, and the portable one),
    /// against the reference, for SHA-1 without a prefix and SHA-256 with one.
    fn check(key: &[u8], parts: &[&[u8]]) {
        let sha1 = KeyedHmac::<Sha1, 5>::new(key);
        let want = reference::<Hmac<sha1::Sha1>>(key, b"", parts, None);
        assert_eq!(bytes(sha1.mac_lowercase(parts, None)), want);
        assert_eq!(bytes(sha1.mac_lowercase_portable(parts, None)), want);
        let sha256 = KeyedHmac::<Sha256, 8>::new(key).with_prefix(PREFIX);
        let want = reference::<Hmac<sha2::Sha256>>(key, PREFIX, parts, Some(0));
        assert_eq!(bytes(sha256.mac_lowercase(parts, Some(0))), want);
        assert_eq!(bytes(sha256.mac_lowercase_portable(parts, Some(0))), want);
    }

    #[test]
    fn block_boundaries() {
        // Message lengths around the one- and two-block limits (55, 56, 64, 119, 120),
        // keys around the block size (64: used as is; 65: hashed first).
        for key_len in [1, 20, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8 ^ 0xa5).collect();
            for len in [
                0, 1, 31, 32, 33, 54, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300,
            ] {
                let msg: Vec<u8> = (0..len).map(|i| b'A' + (i % 58) as u8).collect();
                check(&key, &[&msg]);
                check(&key, &[&msg, b"Z", &msg]);
            }
        }
    }

    #[test]
    fn copy_any_length() {
        let src: Vec<u8> = (1..=64).collect();
        for n in 0..=64 {
            let mut dst = [0u8; 64];
            copy(&mut dst[..n], &src[..n]);
            assert_eq!(&dst[..n], &src[..n]);
            assert!(dst[n..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn lowercases_ascii_only() {
        let all: Vec<u8> = (0..=255).collect();
        check(b"k", &[&all]);
        check(b"k", &[&all[..100], &all[100..]]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sha_extensions_are_used_here() {
        // Not a requirement, a reminder: on a CPU without them, the tests above only
        // exercise the portable path.
        if !shani::available() {
            eprintln!("no SHA extensions on this CPU: only the portable HMAC was tested");
        }
    }

    proptest! {
        #[test]
        fn prop_matches_hmac_crate(
            key in proptest::collection::vec(any::<u8>(), 1..150),
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..90), 1..5),
        ) {
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            check(&key, &parts);
        }
    }
}

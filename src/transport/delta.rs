//! Delta transfer of big files (issue 19): what of a new file the remote copy
//! already has, as rsync finds it. Pure: no I/O but reading the new file.
//!
//! The remote cuts its old copy into blocks of [`block_size`] bytes (the last one
//! may be shorter) and sends a [`Signature`]: per block a weak checksum ([`weak`])
//! and a strong one ([`strong`]), [`ENTRY`] bytes in all. [`matches()`] then rolls
//! the weak checksum over every offset of the new file, as rsync does, so a block
//! found anywhere (after an insertion too) is reused; a weak hit counts only when
//! the strong checksum agrees. The result is a list of [`Op`]s: runs of old blocks
//! to copy and ranges of the new file to send as they are. The remote rebuilds the
//! file from them and checks the SHA-256 of the whole result before it renames it
//! into place, so a checksum collision can never produce a wrong file, only a
//! failed delta (which the caller follows with the whole file).
//!
//! The weak checksum is what the remote's perl computes fastest, at C speed, with
//! `unpack("%32N*")`: the sum of the block's 32-bit big-endian words, modulo
//! 2^32. It rolls by four bytes, so four sums (one per offset modulo 4) advance
//! it by one byte. Blocks are a multiple of 4 bytes long for that. (rsync's own
//! checksum, a byte sum and a weighted one, would take perl a loop per byte;
//! the byte sum alone, `%32C*`, cost more than the word sum and the SHA-256
//! together: 0.22 s of 0.88 s for 64 MiB.)
//!
//! [`aligned`] is the other way, for remotes with only `sha256sum` and `dd`: the
//! remote hashes its blocks in place and only blocks at the same offset are
//! compared, which covers changes in place, appends and truncation.

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};

/// Bytes of the strong checksum kept per block (the start of its SHA-256).
pub(crate) const STRONG: usize = 8;

/// Bytes per block in a signature: the weak checksum (4, big-endian), the strong one.
pub(crate) const ENTRY: usize = 4 + STRONG;

/// The smallest and largest block.
const MIN_BLOCK: usize = 4096;
const MAX_BLOCK: usize = 256 * 1024;

/// How much of the new file is read at a time.
const READ: usize = 1 << 20;

/// The block size for an old copy of `len` bytes: about the square root of 8 ×
/// `len` (which makes the signature and one changed block cost about the same),
/// a multiple of 64, from 4 KiB to 256 KiB. For 64 MiB: 23,168 bytes, 2,897
/// blocks, a 35 KB signature.
pub(crate) fn block_size(len: u64) -> usize {
    let root = ((len as f64) * 8.0).sqrt() as usize;
    (root / 64 * 64).clamp(MIN_BLOCK, MAX_BLOCK)
}

/// The weak checksum of one block: the sum of its big-endian 32-bit words
/// (whole words only) modulo 2^32, as perl's `unpack("%32N*")`.
pub(crate) fn weak(block: &[u8]) -> u32 {
    block
        .chunks_exact(4)
        .fold(0u32, |s, w| s.wrapping_add(word(w)))
}

/// A big-endian word from 4 bytes.
fn word(w: &[u8]) -> u32 {
    u32::from_be_bytes([w[0], w[1], w[2], w[3]])
}

/// The strong checksum of one block: the first [`STRONG`] bytes of its SHA-256.
pub(crate) fn strong(block: &[u8]) -> [u8; STRONG] {
    let d = Sha256::digest(block);
    let mut out = [0; STRONG];
    out.copy_from_slice(&d[..STRONG]);
    out
}

/// The checksums of the remote's old copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signature {
    /// The block size.
    pub(crate) block: usize,
    /// The old copy's length.
    pub(crate) len: u64,
    /// Weak checksum per block.
    weak: Vec<u32>,
    /// Strong checksum per block.
    strong: Vec<[u8; STRONG]>,
}

impl Signature {
    /// Reads a signature as the remote sends it: [`ENTRY`] bytes per block, for an
    /// old copy of `len` bytes in blocks of `block`. Fails when the count is wrong.
    pub(crate) fn parse(block: usize, len: u64, bytes: &[u8]) -> Result<Signature, String> {
        if block == 0 || !block.is_multiple_of(4) {
            return Err(format!("a block size of {block}"));
        }
        let count = len.div_ceil(block as u64);
        if bytes.len() as u64 != count * ENTRY as u64 {
            return Err(format!(
                "{} bytes of checksums for {count} blocks",
                bytes.len()
            ));
        }
        let mut sig = Signature {
            block,
            len,
            weak: Vec::with_capacity(count as usize),
            strong: Vec::with_capacity(count as usize),
        };
        for e in bytes.chunks_exact(ENTRY) {
            sig.weak.push(word(&e[..4]));
            let mut s = [0; STRONG];
            s.copy_from_slice(&e[4..]);
            sig.strong.push(s);
        }
        Ok(sig)
    }

    /// The signature of `old` in blocks of `block` (what the remote computes),
    /// for tests.
    #[cfg(test)]
    pub(crate) fn of(old: &[u8], block: usize) -> Signature {
        let bytes: Vec<u8> = old
            .chunks(block)
            .flat_map(|b| {
                let mut e = weak(b).to_be_bytes().to_vec();
                e.extend_from_slice(&strong(b));
                e
            })
            .collect();
        Signature::parse(block, old.len() as u64, &bytes).expect("consistent")
    }

    /// How many blocks the old copy has.
    pub(crate) fn blocks(&self) -> usize {
        self.weak.len()
    }

    /// The length of block `i`.
    fn block_len(&self, i: usize) -> usize {
        let start = i as u64 * self.block as u64;
        (self.len - start).min(self.block as u64) as usize
    }
}

/// One step of the rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Copy `count` old blocks from block `first` on.
    Copy { first: u64, count: u64 },
    /// Send `len` bytes of the new file from `offset`.
    Literal { offset: u64, len: u64 },
}

/// How to rebuild the new file from the old copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    /// The steps, in the order of the new file.
    pub(crate) ops: Vec<Op>,
    /// The new file's length (what was read).
    pub(crate) len: u64,
    /// Bytes to send as they are.
    pub(crate) literal: u64,
    /// Bytes copied from the old copy.
    pub(crate) reused: u64,
}

impl Delta {
    /// Appends `len` literal bytes at `offset`, joining a literal that ends there.
    fn literal(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.literal += len;
        if let Some(Op::Literal { offset: o, len: l }) = self.ops.last_mut()
            && *o + *l == offset
        {
            *l += len;
            return;
        }
        self.ops.push(Op::Literal { offset, len });
    }

    /// Appends old block `i` (`bytes` long), joining a run it continues.
    fn copy(&mut self, i: u64, bytes: u64) {
        self.reused += bytes;
        if let Some(Op::Copy { first, count }) = self.ops.last_mut()
            && *first + *count == i
        {
            *count += 1;
            return;
        }
        self.ops.push(Op::Copy { first: i, count: 1 });
    }

    /// About what the delta costs on the wire: its literal bytes plus a few bytes
    /// per step.
    pub(crate) fn wire_bytes(&self) -> u64 {
        self.literal + 24 * self.ops.len() as u64
    }
}

/// The new file as a sliding window: bytes from `base` on, read as needed.
struct Window<'r, R: Read> {
    input: &'r mut R,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    base: u64,
    /// Whether the input has ended.
    eof: bool,
}

impl<R: Read> Window<'_, R> {
    /// Makes sure bytes `from..from + want` are in the buffer (fewer at the end of
    /// the input), dropping what lies before `from`; returns how many there are.
    fn fill(&mut self, from: u64, want: usize) -> std::io::Result<usize> {
        let drop = (from - self.base) as usize;
        if drop > READ {
            self.buf.drain(..drop);
            self.base = from;
        }
        let at = (from - self.base) as usize;
        while !self.eof && self.buf.len() < at + want {
            let old = self.buf.len();
            self.buf.resize(old + READ, 0);
            let n = loop {
                match self.input.read(&mut self.buf[old..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = n.inspect_err(|_| self.buf.truncate(old))?;
            self.buf.truncate(old + n);
            self.eof = n == 0;
        }
        Ok((self.buf.len() - at).min(want))
    }

    /// The bytes at file offsets `from..from + len` (in the buffer).
    fn at(&self, from: u64, len: usize) -> &[u8] {
        let at = (from - self.base) as usize;
        &self.buf[at..at + len]
    }
}

/// Which block of `sig` the bytes `here` are, if any: `expect` first, then every
/// block with this weak checksum (`weak_sum`).
fn find(
    sig: &Signature,
    table: &HashMap<u32, Vec<u32>>,
    weak_sum: u32,
    here: &[u8],
    expect: Option<usize>,
) -> Option<usize> {
    if let Some(e) = expect.filter(|&e| e < sig.blocks() && sig.weak[e] == weak_sum)
        && strong(here) == sig.strong[e]
    {
        return Some(e);
    }
    let candidates = table.get(&weak_sum)?;
    let s = strong(here);
    candidates
        .iter()
        .map(|&i| i as usize)
        .find(|&i| sig.strong[i] == s)
}

/// The rolling checksums near one offset `p` of a window of `l` bytes: the word
/// sums at `p`, `p+1`, `p+2`, `p+3` (by offset modulo 4).
struct Rolling {
    s: [u32; 4],
}

impl Rolling {
    /// The sums at `p`, computed afresh from `data` (which starts at `p` and holds
    /// `l + 3` bytes where the file has them).
    fn at(p: u64, data: &[u8], l: usize) -> Rolling {
        let mut s = [0; 4];
        for k in 0..4 {
            if k + l <= data.len() {
                s[((p + k as u64) % 4) as usize] = weak(&data[k..k + l]);
            }
        }
        Rolling { s }
    }

    /// The weak checksum at `p`.
    fn weak(&self, p: u64) -> u32 {
        self.s[(p % 4) as usize]
    }

    /// Moves from `p` to `p + 1`; `data` starts at `p` and holds `l + 4` bytes
    /// to make the word sum at `p + 4` (fewer at the end of the file, where it
    /// is never needed).
    fn roll(&mut self, p: u64, data: &[u8], l: usize) {
        if data.len() >= l + 4 {
            let k = (p % 4) as usize;
            self.s[k] = self.s[k]
                .wrapping_sub(word(&data[..4]))
                .wrapping_add(word(&data[l..l + 4]));
        }
    }
}

/// The delta of the new file read from `input` against `sig` (see the module doc).
pub(crate) fn matches(sig: &Signature, input: &mut impl Read) -> std::io::Result<Delta> {
    let l = sig.block;
    let full = (sig.len / l as u64) as usize;
    let mut table: HashMap<u32, Vec<u32>> = HashMap::with_capacity(full);
    for i in 0..full {
        table.entry(sig.weak[i]).or_default().push(i as u32);
    }
    let mut w = Window {
        input,
        buf: Vec::new(),
        base: 0,
        eof: false,
    };
    let mut delta = Delta::default();
    let (mut p, mut lit) = (0u64, 0u64);
    let mut expect: Option<usize> = None;
    let mut rolling: Option<Rolling> = None;
    loop {
        let have = w.fill(p, l + 8)?;
        // The short last block, where it continues the run before it.
        if let Some(e) = expect.filter(|&e| e == full && e < sig.blocks()) {
            let t = sig.block_len(e);
            if have >= t
                && find(sig, &HashMap::new(), weak(w.at(p, t)), w.at(p, t), expect) == Some(e)
            {
                delta.literal(lit, p - lit);
                delta.copy(e as u64, t as u64);
                p += t as u64;
                (lit, expect, rolling) = (p, None, None);
                continue;
            }
        }
        if have < l {
            break;
        }
        let r = rolling.get_or_insert_with(|| Rolling::at(p, w.at(p, have.min(l + 3)), l));
        let weak_sum = r.weak(p);
        if let Some(i) = find(sig, &table, weak_sum, w.at(p, l), expect) {
            delta.literal(lit, p - lit);
            delta.copy(i as u64, l as u64);
            p += l as u64;
            (lit, expect, rolling) = (p, Some(i + 1), None);
            continue;
        }
        let data = w.at(p, have.min(l + 4));
        if data.len() <= l {
            break;
        }
        r.roll(p, data, l);
        p += 1;
        expect = None;
    }
    finish(sig, &mut w, p, lit, &mut delta)?;
    Ok(delta)
}

/// The end of [`matches()`]: what is left from `p` (less than a block), with the
/// short last block reused where the new file ends with it; the pending literal
/// from `lit` on.
fn finish<R: Read>(
    sig: &Signature,
    w: &mut Window<'_, R>,
    p: u64,
    mut lit: u64,
    delta: &mut Delta,
) -> std::io::Result<()> {
    let have = w.fill(p, usize::MAX / 2)? as u64;
    let end = p + have;
    let full = (sig.len / sig.block as u64) as usize;
    if let Some(e) = sig.blocks().checked_sub(1).filter(|&e| e == full) {
        let t = sig.block_len(e) as u64;
        let tail = (have >= t).then(|| w.at(end - t, t as usize));
        if let Some(tail) = tail
            && weak(tail) == sig.weak[e]
            && strong(tail) == sig.strong[e]
        {
            delta.literal(lit, end - t - lit);
            delta.copy(e as u64, t);
            lit = end;
        }
    }
    delta.literal(lit, end - lit);
    delta.len = end;
    Ok(())
}

/// The delta of the new file read from `input` against the SHA-256 (hex) of each
/// `block`-byte block of the old copy, compared only at the same offsets (see the
/// module doc): a block is copied where its hash is the same.
pub(crate) fn aligned(
    old: &[String],
    block: usize,
    input: &mut impl Read,
) -> std::io::Result<Delta> {
    let mut delta = Delta::default();
    let mut buf = vec![0u8; block];
    let mut i = 0u64;
    loop {
        let mut n = 0;
        while n < block {
            match input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        let offset = i * block as u64;
        let same = old
            .get(i as usize)
            .is_some_and(|h| *h == crate::local::hex(&Sha256::digest(&buf[..n])));
        if same {
            delta.copy(i, n as u64);
        } else {
            delta.literal(offset, n as u64);
        }
        delta.len += n as u64;
        i += 1;
        if n < block {
            break;
        }
    }
    Ok(delta)
}

/// Rebuilds the new file from `old` and `new` by `delta` (what the remote does),
/// for tests.
#[cfg(test)]
pub(crate) fn rebuild(old: &[u8], block: usize, new: &[u8], delta: &Delta) -> Vec<u8> {
    let mut out = Vec::new();
    for op in &delta.ops {
        match *op {
            Op::Copy { first, count } => {
                let from = (first as usize * block).min(old.len());
                let to = ((first + count) as usize * block).min(old.len());
                out.extend_from_slice(&old[from..to]);
            }
            Op::Literal { offset, len } => {
                out.extend_from_slice(&new[offset as usize..(offset + len) as usize]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pseudo-random bytes (xorshift), the same for the same seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn delta_of(old: &[u8], new: &[u8], block: usize) -> Delta {
        let sig = Signature::of(old, block);
        let d = matches(&sig, &mut &new[..]).unwrap();
        assert_eq!(rebuild(old, block, new, &d), new, "rebuilt byte-exact");
        assert_eq!(d.literal + d.reused, new.len() as u64);
        assert_eq!(d.len, new.len() as u64);
        d
    }

    #[test]
    fn block_sizes_grow_with_the_square_root() {
        assert_eq!(block_size(0), MIN_BLOCK);
        assert_eq!(block_size(1 << 20), MIN_BLOCK);
        assert_eq!(block_size(64 << 20), 23168);
        assert_eq!(block_size(1 << 40), MAX_BLOCK);
        assert!((0..40).all(|k| block_size(1 << k).is_multiple_of(64)));
    }

    /// The rolling sums agree with sums computed afresh at every offset.
    #[test]
    fn rolling_equals_fresh() {
        let data = noise(5000, 1);
        let l = 64;
        let mut r = Rolling::at(0, &data[..l + 3], l);
        for p in 0..(data.len() - l - 5) as u64 {
            let at = p as usize;
            assert_eq!(r.weak(p), weak(&data[at..at + l]), "at {p}");
            r.roll(p, &data[at..at + l + 5], l);
        }
    }

    /// The cases of issue 19 at a small scale: each rebuilds byte-exact and sends
    /// about what changed.
    #[test]
    fn the_issue_cases_send_little() {
        let b = 4096;
        let old = noise(1 << 20, 2);
        // One byte changed in the middle: one block goes.
        let mut one = old.clone();
        one[500_000] ^= 0xff;
        assert_eq!(delta_of(&old, &one, b).literal, b as u64);
        // 100 bytes inserted at offset 10: the first block and the insertion.
        let mut ins = old[..10].to_vec();
        ins.extend_from_slice(&noise(100, 3));
        ins.extend_from_slice(&old[10..]);
        let d = delta_of(&old, &ins, b);
        assert!(d.literal <= (b + 100) as u64, "{d:?}");
        // 1 MiB appended: only the new bytes.
        let mut app = old.clone();
        app.extend_from_slice(&noise(1 << 20, 4));
        assert_eq!(delta_of(&old, &app, b).literal, 1 << 20);
        // Truncated to half: nothing.
        let half = &old[..old.len() / 2];
        let d = delta_of(&old, half, b);
        assert_eq!((d.literal, d.ops.len()), (0, 1), "{d:?}");
        // Another file altogether: everything.
        let other = noise(1 << 20, 5);
        assert_eq!(delta_of(&old, &other, b).reused, 0);
        // A short last block is reused where it stays at the end, or is followed.
        let odd = noise(10_000, 6);
        let mut changed = odd.clone();
        changed[100] ^= 1;
        assert_eq!(delta_of(&odd, &changed, b).literal, b as u64);
        let mut longer = odd.clone();
        longer.extend_from_slice(b"more");
        assert_eq!(delta_of(&odd, &longer, b).literal, 4);
    }

    #[test]
    fn a_bad_signature_is_refused() {
        assert!(Signature::parse(4096, 5000, &[0; ENTRY]).is_err());
        assert!(Signature::parse(4096, 5000, &[0; 2 * ENTRY]).is_ok());
        assert!(Signature::parse(4095, 0, &[]).is_err());
        assert!(Signature::parse(4096, 0, &[]).is_ok());
    }

    #[test]
    fn aligned_blocks_cover_in_place_changes_appends_and_truncation() {
        let b = 4096;
        let old = noise(10 * b + 100, 7);
        let hashes: Vec<String> = old
            .chunks(b)
            .map(|c| crate::local::hex(&Sha256::digest(c)))
            .collect();
        let run = |new: &[u8]| {
            let d = aligned(&hashes, b, &mut &new[..]).unwrap();
            assert_eq!(rebuild(&old, b, new, &d), new);
            d
        };
        let mut one = old.clone();
        one[3 * b + 5] ^= 1;
        assert_eq!(run(&one).literal, b as u64);
        let mut app = old.clone();
        app.extend_from_slice(&noise(3 * b, 8));
        // The old short block is now a full one: it and the rest go.
        assert_eq!(run(&app).literal, (3 * b + 100) as u64);
        assert_eq!(run(&old[..5 * b]).literal, 0);
        assert_eq!(
            run(&old).ops,
            [Op::Copy {
                first: 0,
                count: 11
            }]
        );
    }

    proptest! {
        /// Any edit of any file rebuilds byte-exact, whatever the block size.
        #[test]
        fn every_edit_rebuilds_exactly(
            seed in 0u64..1000,
            len in 0usize..20_000,
            edits in proptest::collection::vec((0usize..20_000, 0usize..300, 0u8..3), 0..6),
            block in (1usize..40).prop_map(|k| k * 4),
        ) {
            let old = noise(len, seed);
            let mut new = old.clone();
            for (i, (at, n, kind)) in edits.into_iter().enumerate() {
                let at = at.min(new.len());
                let n = n.min(new.len() - at);
                match kind {
                    0 => new.splice(at..at, noise(n, seed + i as u64 + 1)).for_each(drop),
                    1 => new.drain(at..at + n).for_each(drop),
                    _ => new[at..at + n].iter_mut().for_each(|b| *b = b.wrapping_add(1)),
                }
            }
            let sig = Signature::of(&old, block);
            let d = matches(&sig, &mut &new[..]).unwrap();
            prop_assert_eq!(rebuild(&old, block, &new, &d), new.clone());
            prop_assert_eq!(d.literal + d.reused, new.len() as u64);
        }
    }
}

//! The agent's requests for delta transfer (issue 19): the block checksums of a
//! remote file ([`tag::SUMS`]) and a file rebuilt from its old copy
//! ([`tag::DELTA`]). What to send is decided in [`crate::transport::delta`]; the
//! agent checks the SHA-256 of what it rebuilt before the rename.

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};

use super::{Agent, CHUNK, PER_STEP, Waiting, tag};
use crate::local::FileMeta;
use crate::local::read::{Finished, Opened};
use crate::transport::delta::{Delta, ENTRY, Op};

impl Agent<'_> {
    /// Asks for the checksums of file `rel` below root `id` in blocks of `block`
    /// bytes; `len` is its size as listed. The answer is [`super::Answer::Sums`],
    /// or `Failed` (no Digest::SHA, not a regular file, unreadable, or grown to
    /// more than twice `len` meanwhile).
    pub(crate) fn sums(&mut self, id: usize, rel: &[u8], block: usize, len: u64) -> Result<()> {
        let max = (len.saturating_mul(2) + (1 << 20)).div_ceil(block as u64);
        // Each `s` frame holds 4,096 entries and 5 bytes of framing.
        self.budget
            .grow(PER_STEP + max * (ENTRY as u64 + 1) + 5 * (max / 4096 + 1));
        let (id, block, max) = (id.to_string(), block.to_string(), max.to_string());
        self.send(
            tag::SUMS,
            &[id.as_bytes(), rel, block.as_bytes(), max.as_bytes()],
        )?;
        self.waiting.push_back(Waiting::Sums(Vec::new()));
        Ok(())
    }

    /// Sends local `file` (read to its end once already, for `delta`; `before` as
    /// it was opened) as `rel` below root `id`, rebuilt by the agent from its old
    /// copy in blocks of `block` bytes: the copy steps and literal ranges of
    /// `delta`, read again from `file`. The agent keeps the result only when its
    /// SHA-256 is `sha256` and the file did not change while read; its answer
    /// confirms the step, as for [`Agent::put`] ([`Finished::Whole`]: it went as
    /// the delta says).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_delta(
        &mut self,
        id: usize,
        rel: &[u8],
        file: &Opened,
        before: &FileMeta,
        backups: u32,
        block: usize,
        delta: &Delta,
        sha256: &str,
    ) -> Result<Finished> {
        let fields = [
            id.to_string(),
            format!("{:o}", before.mode),
            before.mtime.to_string(),
            before.mtime_nsec.to_string(),
            before.size.to_string(),
            backups.to_string(),
            block.to_string(),
        ];
        let mut head: Vec<&[u8]> = vec![fields[0].as_bytes(), rel];
        head.extend(fields[1..].iter().map(String::as_bytes));
        head.push(sha256.as_bytes());
        self.request(tag::DELTA, &head)?;
        let sent = match self.steps(file, delta)? {
            Some(t) => t,
            None => match file.metadata() {
                Ok(m) if before.unchanged(&FileMeta::of(&m)) => {
                    Finished::Whole(*before, sha256.to_string())
                }
                Ok(_) => Finished::Changed,
                Err(e) => Finished::Unreadable(format!("cannot stat local file: {e}")),
            },
        };
        let keep: &[u8] = if matches!(sent, Finished::Whole(..)) {
            b"1"
        } else {
            b"0"
        };
        self.send(tag::VERDICT, &[keep])?;
        self.poll()?;
        Ok(sent)
    }

    /// The copy steps and literal ranges of `delta` (read from `file`); `Some`
    /// says why the file cannot be sent so, and the rest is not sent.
    fn steps(&mut self, file: &Opened, delta: &Delta) -> Result<Option<Finished>> {
        for op in &delta.ops {
            if self.cancel.load(Ordering::Relaxed) {
                bail!("transfer cancelled by shutdown");
            }
            match *op {
                Op::Copy { first, count } => {
                    let (first, count) = (first.to_string(), count.to_string());
                    self.send(tag::COPY, &[first.as_bytes(), count.as_bytes()])?;
                }
                Op::Literal { offset, len } => {
                    if let Some(trouble) = self.literal(file, offset, len)? {
                        return Ok(Some(trouble));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Sends `len` bytes of `file` from `offset` as data frames; `Some` says why
    /// the file cannot be sent so (it changed or cannot be read), `Err` that the
    /// channel broke.
    fn literal(&mut self, file: &Opened, mut offset: u64, len: u64) -> Result<Option<Finished>> {
        let end = offset + len;
        self.buf.resize(CHUNK, 0);
        while offset < end {
            let want = (end - offset).min(CHUNK as u64) as usize;
            let n = match file.read_at(&mut self.buf[..want], offset) {
                Ok(0) => return Ok(Some(Finished::Changed)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Ok(Some(Finished::Unreadable(format!(
                        "cannot read local file: {e}"
                    ))));
                }
            };
            let frame = [tag::DATA]
                .into_iter()
                .chain((n as u32).to_be_bytes())
                .collect::<Vec<u8>>();
            let buf = std::mem::take(&mut self.buf);
            let written = self
                .out
                .write_all(&frame)
                .and_then(|()| self.out.write_all(&buf[..n]));
            self.buf = buf;
            written?;
            offset += n as u64;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::encode;
    use super::super::tests::{b, req, run, run_perl, temporaries, verdicts};
    use super::*;
    use crate::transport::delta::{Signature, block_size, matches};

    /// Pseudo-random bytes.
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as u8
            })
            .collect()
    }

    /// A Y request for `new` against `old` as hostsync sends it, with `sha256`
    /// claimed for the result.
    fn delta_request(old: &[u8], new: &[u8], sha256: &str) -> Vec<u8> {
        let block = block_size(old.len() as u64);
        let sig = Signature::of(old, block);
        let d = matches(&sig, &mut &new[..]).unwrap();
        assert!(d.reused > 0, "the test needs a real delta");
        let size = new.len().to_string();
        let block = block.to_string();
        let mut out = req(
            tag::DELTA,
            &[
                b"0",
                b"big.img",
                b"640",
                b"1600000000",
                b"5",
                size.as_bytes(),
                b"1",
                block.as_bytes(),
                sha256.as_bytes(),
            ],
        );
        for op in &d.ops {
            match *op {
                Op::Copy { first, count } => out.extend(
                    encode(
                        tag::COPY,
                        &[first.to_string().as_bytes(), count.to_string().as_bytes()],
                    )
                    .unwrap(),
                ),
                Op::Literal { offset, len } => {
                    let bytes = &new[offset as usize..(offset + len) as usize];
                    out.push(tag::DATA);
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        out.extend(req(tag::VERDICT, &[b"1"]));
        out
    }

    fn sha(data: &[u8]) -> String {
        use sha2::Digest;
        crate::local::hex(&sha2::Sha256::digest(data))
    }

    /// The agent's block checksums are the ones delta.rs computes (perl's
    /// `unpack` sums included), also for a short last block.
    #[test]
    fn the_agents_checksums_match_the_clients() {
        let d = tempfile::tempdir().unwrap();
        let old = noise(300_001, 9);
        std::fs::write(d.path().join("f"), &old).unwrap();
        let mut input = req(tag::ROOT, &[b"0", b(d.path()), b"0"]);
        input.extend(req(tag::SUMS, &[b"0", b"f", b"4096", b"1000"]));
        input.extend(req(tag::SUMS, &[b"0", b"f", b"4096", b"10"]));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let raw: Vec<u8> = groups[2]
            .iter()
            .filter(|(t, _)| *t == tag::SUMS_DATA)
            .flat_map(|(_, f)| f.join(&0u8))
            .collect();
        let v = verdicts(&groups);
        assert_eq!(v[1], "K 300001");
        let got = Signature::parse(4096, 300_001, &raw).unwrap();
        assert_eq!(got, Signature::of(&old, 4096));
        assert_eq!(v[2], "F the remote copy grew while it was read");
    }

    /// Digest::SHA is loaded only when first needed; one that is there but does
    /// not load makes hashes come from `sha256sum` and refuses checksums and
    /// rebuilds (the client then sends the whole file), instead of ending the agent.
    #[test]
    fn a_digest_sha_that_does_not_load_falls_back() {
        let d = tempfile::tempdir().unwrap();
        let lib = d.path().join("lib");
        std::fs::create_dir_all(lib.join("Digest")).unwrap();
        std::fs::write(lib.join("Digest/SHA.pm"), "die \"broken\\n\";\n").unwrap();
        let root = d.path().join("r");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), b"hello").unwrap();
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"0"]);
        input.extend(req(tag::LIST, &[b"0", b"", b"1"]));
        input.extend(req(tag::SUMS, &[b"0", b"f", b"4096", b"10"]));
        input.extend(delta_request(
            &noise(50_000, 5),
            &noise(50_000, 5),
            &"0".repeat(64),
        ));
        input.extend(req(tag::QUIT, &[]));
        let (groups, status, stderr) = run_perl(&["-I", lib.to_str().unwrap()], &input, true);
        assert_eq!(status, 0, "{stderr}");
        // Found by its file: the greeting offers it.
        assert_eq!(groups[0][0].1[3], b"digest");
        let hash = groups[2].iter().find(|(t, _)| *t == tag::HASH);
        assert_eq!(
            hash.map(|(_, f)| String::from_utf8_lossy(&f[1]).into_owned()),
            Some(sha(b"hello")),
            "{:?}",
            groups[2]
        );
        let v = verdicts(&groups);
        assert_eq!(v[2], "F the remote has no Digest::SHA for checksums");
        assert_eq!(v[3], "F the remote has no Digest::SHA for checksums");
        assert_eq!(v[4], "K");
        assert!(temporaries(d.path()).is_empty());
    }

    /// A rebuild lands byte-exact with its mode and mtime and keeps a backup; a
    /// wrong checksum, a symlink or a FIFO at dest, or a cut-off input leave the
    /// old content and no temporary.
    #[test]
    fn rebuilds_land_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("big.img");
        let old = noise(200_000, 3);
        let mut new = old.clone();
        new[150_000] ^= 1;
        new.splice(10..10, noise(100, 4));
        std::fs::write(&dest, &old).unwrap();
        let root = req(tag::ROOT, &[b"0", b(d.path()), b"0"]);
        let mut input = root.clone();
        input.extend(delta_request(&old, &new, &"0".repeat(64)));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        assert_eq!(
            verdicts(&groups)[1],
            "F the rebuilt file differs from the local one (checksum mismatch)"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), old);
        assert!(temporaries(d.path()).is_empty());
        // Cut off in the middle: the old content stays, the temporary goes.
        let whole = delta_request(&old, &new, &sha(&new));
        let mut cut = root.clone();
        cut.extend_from_slice(&whole[..whole.len() / 2]);
        let (_, status, _) = run(&cut, true);
        assert_eq!(status, 2);
        assert_eq!(std::fs::read(&dest).unwrap(), old);
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );
        // The real thing.
        let mut input = root.clone();
        input.extend(whole.clone());
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(
            (status, verdicts(&groups)[1].as_str()),
            (0, "K placed"),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), new);
        let m = std::fs::metadata(&dest).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_600_000_000));
        assert_eq!(std::fs::read(d.path().join("big.img.1")).unwrap(), old);
        assert!(temporaries(d.path()).is_empty());
        // A symlink or a FIFO where the old copy was: refused, never followed.
        let outside = d.path().join("outside");
        std::fs::write(&outside, &old).unwrap();
        std::fs::remove_file(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, &dest).unwrap();
        let mut input = root.clone();
        input.extend(req(tag::SUMS, &[b"0", b"big.img", b"4096", b"1000"]));
        input.extend(whole.clone());
        let (groups, status, _) = run(&input, true);
        let v = verdicts(&groups);
        assert_eq!(status, 0);
        assert!(v[1].starts_with("F cannot read the remote copy"), "{v:?}");
        assert!(v[2].starts_with("F cannot read the remote copy"), "{v:?}");
        assert_eq!(std::fs::read(&outside).unwrap(), old);
        std::fs::remove_file(&dest).unwrap();
        let fifo = std::ffi::CString::new(dest.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mut input = root;
        input.extend(req(tag::SUMS, &[b"0", b"big.img", b"4096", b"1000"]));
        let (groups, _, _) = run(&input, true);
        assert_eq!(
            verdicts(&groups)[1],
            "F the remote copy is not a regular file"
        );
    }
}

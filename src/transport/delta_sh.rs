//! Delta transfer on hosts without perl (issue 19): aligned blocks, hashed by
//! `sha256sum` and copied by `dd`.
//!
//! Two remote scripts, each a file in `src/remote/`: [`SUMS`] (`delta_sums.sh`) prints the
//! SHA-256 of every block of the remote copy; hostsync compares them with its own
//! blocks at the same offsets ([`crate::transport::delta::aligned`]), and [`BUILD`]
//! (`delta_build.sh`) then rebuilds the file into the usual temporary from the
//! old blocks and the new ones, which stream on its stdin, checks the SHA-256 of
//! the result and sets mode and mtime. The commit renames it into place as any
//! other temporary. Changes in place, appends and truncation go as deltas; an
//! insertion moves every later block, so the file goes whole.
//!
//! Blocks are big ([`block_for`]): two processes run per block of the old copy.
//! These hosts refuse destinations others can write (issue 13), so the scripts
//! may work with paths.

use std::io::{Read, Write};

use anyhow::{Context, Result, anyhow};

use super::delta::{Delta, Op};
use super::ssh::Connection;
use crate::local::read::Opened;
use crate::remote::quote;

/// The script that hashes the remote copy's blocks (header: what it prints).
pub(crate) const SUMS: &str = include_str!("../remote/delta_sums.sh");

/// The script that rebuilds the file from old and new blocks.
pub(crate) const BUILD: &str = include_str!("../remote/delta_build.sh");

/// At most about this many blocks per file.
const BLOCKS: u64 = 512;

/// The smallest block.
const MIN_BLOCK: u64 = 128 * 1024;

/// The block size for a file of `len` bytes: at least 128 KiB, a multiple of 64
/// KiB, and at most about [`BLOCKS`] blocks.
pub(crate) fn block_for(len: u64) -> usize {
    let per = len.div_ceil(BLOCKS).div_ceil(64 * 1024) * 64 * 1024;
    per.max(MIN_BLOCK) as usize
}

/// What the remote said about its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sums {
    /// It has no `sha256sum` or no `dd`.
    NoTools,
    /// The copy is not a readable regular file.
    NotFile,
    /// The copy's length and the SHA-256 (hex) of each block.
    Blocks(u64, Vec<String>),
}

/// `sh -c SCRIPT sh ARGS...` with everything quoted.
fn command(script: &str, args: &[&[u8]]) -> String {
    let mut c = b"sh -c ".to_vec();
    c.extend(quote(script.as_bytes()));
    c.extend_from_slice(b" sh");
    for a in args {
        c.push(b' ');
        c.extend(quote(a));
    }
    String::from_utf8_lossy(&c).into_owned()
}

/// The command that hashes `path`'s blocks of `block` bytes.
pub(crate) fn sums_command(path: &[u8], block: usize) -> String {
    command(SUMS, &[path, block.to_string().as_bytes()])
}

/// Reads what [`SUMS`] printed.
pub(crate) fn parse_sums(out: &[u8]) -> Result<Sums, String> {
    let text = std::str::from_utf8(out).map_err(|_| "output that is not text".to_string())?;
    let mut lines = text.lines();
    let len = match lines.next() {
        Some("none") => return Ok(Sums::NoTools),
        Some("other") => return Ok(Sums::NotFile),
        Some(l) => l
            .strip_prefix("size ")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("{l:?} where the size should be"))?,
        None => return Err("no output".into()),
    };
    let mut hashes = Vec::new();
    for l in lines {
        if l == "end" {
            return Ok(Sums::Blocks(len, hashes));
        }
        let hex = l
            .get(..64)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        hashes.push(
            hex.ok_or_else(|| format!("{l:?} where a hash should be"))?
                .to_string(),
        );
    }
    Err("the output ended early".into())
}

/// The arguments of [`BUILD`]'s steps for `delta`: old blocks (`o`) and, in
/// order, the blocks of the new data on stdin (`p`).
fn steps(delta: &Delta, block: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut sent = 0u64;
    for op in &delta.ops {
        let (kind, first, count) = match *op {
            Op::Copy { first, count } => ("o", first, count),
            Op::Literal { len, .. } => {
                let count = len.div_ceil(block as u64);
                sent += count;
                ("p", sent - count, count)
            }
        };
        out.extend([kind.to_string(), first.to_string(), count.to_string()]);
    }
    out
}

/// What one rebuild is: where, from what, into what.
pub(crate) struct Build<'a> {
    /// The remote copy (the destination path).
    pub(crate) old: &'a [u8],
    /// The temporary to make.
    pub(crate) tmp: &'a [u8],
    /// The temporary that holds the new data meanwhile.
    pub(crate) patch: &'a [u8],
    /// The block size the sums were made with.
    pub(crate) block: usize,
    /// The mode to set (octal digits go on the command line).
    pub(crate) mode: u32,
    /// The mtime to set: seconds and nanoseconds.
    pub(crate) mtime: (i64, i64),
    /// The SHA-256 (hex) the result must have.
    pub(crate) sha256: &'a str,
}

/// The arguments of [`BUILD`] for `b` and `delta`.
fn build_args(b: &Build<'_>, delta: &Delta) -> Vec<Vec<u8>> {
    let fixed = [
        b.block.to_string(),
        format!("{:o}", b.mode),
        format!("{}.{:09}", b.mtime.0, b.mtime.1),
        b.sha256.to_string(),
    ];
    let mut args: Vec<Vec<u8>> = vec![b.old.to_vec(), b.tmp.to_vec(), b.patch.to_vec()];
    args.extend(
        fixed
            .into_iter()
            .chain(steps(delta, b.block))
            .map(String::into_bytes),
    );
    args
}

/// The command that runs [`BUILD`] for `b` and `delta`.
pub(crate) fn build_command(b: &Build<'_>, delta: &Delta) -> String {
    let args = build_args(b, delta);
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    command(BUILD, &args)
}

/// Runs [`BUILD`] on `conn`, streaming the literal ranges of `delta` from `file`
/// on its stdin. `Ok(Ok(()))`: the temporary is ready; `Ok(Err(why))`: the remote
/// refused (nothing is left there); `Err`: the connection or a local read failed.
pub(crate) fn build(
    conn: &Connection,
    b: &Build<'_>,
    delta: &Delta,
    file: &Opened,
) -> Result<Result<(), String>> {
    let mut ch = conn.exec(&build_command(b, delta))?;
    let mut buf = vec![0u8; 256 * 1024];
    for op in &delta.ops {
        let Op::Literal { mut offset, len } = *op else {
            continue;
        };
        let end = offset + len;
        while offset < end {
            let want = ((end - offset) as usize).min(buf.len());
            let n = file
                .read_at(&mut buf[..want], offset)
                .context("reading the local file")?;
            if n == 0 {
                return Err(anyhow!("the local file got shorter while it was read"));
            }
            ch.write_all(&buf[..n]).context("sending new blocks")?;
            offset += n as u64;
        }
    }
    ch.send_eof().context("sending new blocks")?;
    let mut budget = super::bounded::Budget::new("the remote rebuild", 4096, conn.io_timeout());
    let out = super::bounded::read_to_end(&mut ch, &mut budget)?;
    let mut stderr = Vec::new();
    let _ = ch.stderr().take(4096).read_to_end(&mut stderr);
    ch.wait_close().context("closing the remote rebuild")?;
    let line = crate::escape::first_line(&out, 300);
    Ok(match line.strip_prefix('F') {
        _ if line == "K" => Ok(()),
        Some(why) => Err(why.trim().to_string()),
        None => Err(format!(
            "the rebuild said \"{line}\" (exit status {}; {})",
            ch.exit_status().unwrap_or(-1),
            crate::escape::first_line(&stderr, 200)
        )),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use sha2::Digest;

    use super::*;
    use crate::transport::delta::aligned;

    /// Runs `script` with `args` under `shell` (`dash`, or `busybox sh`), `input`
    /// on stdin; returns stdout.
    fn sh(shell: &[&str], script: &str, args: &[&[u8]], input: &[u8]) -> Vec<u8> {
        use std::process::{Command, Stdio};
        let mut c = Command::new(shell[0]);
        c.args(&shell[1..]).arg("-c").arg(script).arg("sh");
        for a in args {
            c.arg(std::ffi::OsStr::from_bytes(a));
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out.stdout
    }

    fn hex(data: &[u8]) -> String {
        crate::local::hex(&sha2::Sha256::digest(data))
    }

    fn b(p: &Path) -> &[u8] {
        p.as_os_str().as_bytes()
    }

    /// The new data of `delta` as it goes on stdin.
    fn literal_bytes(new: &[u8], delta: &Delta) -> Vec<u8> {
        let mut out = Vec::new();
        for op in &delta.ops {
            if let Op::Literal { offset, len } = *op {
                out.extend_from_slice(&new[offset as usize..(offset + len) as usize]);
            }
        }
        out
    }

    #[test]
    fn blocks_stay_few() {
        assert_eq!(block_for(0), 128 * 1024);
        assert_eq!(block_for(64 << 20), 128 * 1024);
        assert_eq!(block_for(1 << 30), 2 << 20);
        assert!((0..45).all(|k| (1u64 << k).div_ceil(block_for(1 << k) as u64) <= BLOCKS));
    }

    #[test]
    fn sums_parse_and_refuse_garbage() {
        assert_eq!(parse_sums(b"none\n"), Ok(Sums::NoTools));
        assert_eq!(parse_sums(b"other\n"), Ok(Sums::NotFile));
        let h = "a".repeat(64);
        let ok = format!("size 5\n{h}  -\nend\n");
        assert_eq!(
            parse_sums(ok.as_bytes()),
            Ok(Sums::Blocks(5, vec![h.clone()]))
        );
        assert!(parse_sums(format!("size 5\n{h}  -\n").as_bytes()).is_err());
        assert!(parse_sums(b"size x\n").is_err());
        assert!(parse_sums(b"size 5\nzz  -\nend\n").is_err());
        assert!(parse_sums(b"").is_err());
    }

    /// Under dash and busybox sh: the sums are the blocks' SHA-256; a rebuild
    /// lands byte-exact with mode and mtime; a wrong checksum, or a temporary
    /// name that exists, leaves nothing of the rebuild behind.
    #[test]
    fn scripts_hash_and_rebuild_under_dash_and_busybox() {
        for shell in [&["dash"][..], &["busybox", "sh"][..], &["bash"][..]] {
            let d = tempfile::tempdir().unwrap();
            let old_path = d.path().join("f");
            let block = 4096;
            let old: Vec<u8> = (0..5 * block + 100).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&old_path, &old).unwrap();
            let out = sh(shell, SUMS, &[b(&old_path), b"4096"], b"");
            let Ok(Sums::Blocks(len, hashes)) = parse_sums(&out) else {
                panic!("{shell:?}: {}", String::from_utf8_lossy(&out));
            };
            assert_eq!(len, old.len() as u64);
            let expect: Vec<String> = old.chunks(block).map(hex).collect();
            assert_eq!(hashes, expect, "{shell:?}");
            let mut new = old.clone();
            new[2 * block + 1] ^= 1;
            new.extend_from_slice(&[9; 5000]);
            let delta = aligned(&hashes, block, &mut &new[..]).unwrap();
            assert!(delta.reused > 0);
            let (tmp, patch) = (d.path().join(".t"), d.path().join(".p"));
            let want = hex(&new);
            let mut job = Build {
                old: b(&old_path),
                tmp: b(&tmp),
                patch: b(&patch),
                block,
                mode: 0o640,
                mtime: (1_600_000_000, 5_000),
                sha256: &"0".repeat(64),
            };
            let run = |job: &Build<'_>| {
                let args = build_args(job, &delta);
                let a: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                String::from_utf8(sh(shell, BUILD, &a, &literal_bytes(&new, &delta))).unwrap()
            };
            let said = run(&job);
            assert!(
                said.starts_with("F the rebuilt file differs"),
                "{shell:?}: {said}"
            );
            assert!(!tmp.exists() && !patch.exists());
            job.sha256 = &want;
            std::fs::write(&tmp, "someone's").unwrap();
            assert_eq!(run(&job), "F cannot create a temporary\n", "{shell:?}");
            assert_eq!(std::fs::read(&tmp).unwrap(), b"someone's");
            std::fs::remove_file(&tmp).unwrap();
            let said = run(&job);
            assert_eq!(said, "K\n", "{shell:?}");
            assert_eq!(std::fs::read(&tmp).unwrap(), new);
            let m = std::fs::metadata(&tmp).unwrap();
            assert_eq!(
                (m.mode() & 0o7777, m.mtime()),
                (0o640, 1_600_000_000),
                "{shell:?}"
            );
            assert!(!patch.exists());
            assert_eq!(std::fs::read(&old_path).unwrap(), old);
            // Not a file: a symlink to one, or a directory.
            std::os::unix::fs::symlink(&old_path, d.path().join("l")).unwrap();
            let out = sh(shell, SUMS, &[b(&d.path().join("l")), b"4096"], b"");
            assert_eq!(parse_sums(&out), Ok(Sums::NotFile));
            assert_eq!(
                parse_sums(&sh(shell, SUMS, &[b(d.path()), b"4096"], b"")),
                Ok(Sums::NotFile)
            );
        }
    }
}

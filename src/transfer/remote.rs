//! What the remote shell is asked to do, and how its answers are read.
//!
//! Per batch a host runs two small POSIX sh scripts, fed on stdin to `sh -s`
//! (so the size is not limited by one SSH packet and the user's login shell only
//! ever parses `sh -s`):
//! - the *listing* creates missing destination roots and lists what is under
//!   each one (GNU `find -printf`, NUL-separated, so any byte in a name is safe):
//!   one round trip for the whole host, not one stat per file;
//! - the *commit* renames every uploaded temporary file over its destination and
//!   removes temporaries that earlier interrupted runs left behind.
//!
//! Every path is single-quoted byte by byte ([`quote`]); nothing the user or the
//! local file system supplies is ever interpreted by the remote shell.

use std::collections::HashMap;

/// Prefix of every temporary file hostsync writes on a remote host.
pub const TMP_PREFIX: &str = ".hostsync-tmp.";

/// Quotes bytes for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub fn quote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The temporary name used for `name` in the same directory: deterministic, so a
/// retried upload overwrites (and a later commit consumes) the leftover of an
/// interrupted one, and short, so it never exceeds NAME_MAX.
pub fn tmp_name(name: &[u8]) -> Vec<u8> {
    // FNV-1a, 64 bit: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{TMP_PREFIX}{h:016x}").into_bytes()
}

/// True for names hostsync uses for temporaries.
pub fn is_tmp_name(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX.as_bytes())
}

/// One root to list: a directory and how deep to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRoot {
    /// Absolute remote directory.
    pub dir: Vec<u8>,
    /// `Some(1)` for the parent directory of a file mapping, `None` for a whole tree.
    pub max_depth: Option<u32>,
}

const LIST_PRELUDE: &[u8] = br#"L() {
  i=$1; r=$2; shift 2
  if [ ! -e "$r" ] && [ ! -L "$r" ]; then
    if [ "$MK" = 1 ]; then
      e=$(mkdir -p -- "$r" 2>&1) || { printf 'E\0%s\0%s\0' "$i" "$e"; return; }
    else
      printf 'N\0%s\0' "$i"; return
    fi
  fi
  if [ -L "$r" ] || [ ! -d "$r" ]; then
    printf 'E\0%s\0%s\0' "$i" "exists and is not a directory"; return
  fi
  printf 'M\0%s\0' "$i"
  find "$r" -mindepth 1 "$@" -printf 'F\0%y\0%s\0%T@\0%m\0%P\0%l\0' || printf 'X\0%s\0' "$i"
}
"#;

/// The listing script. With `create`, missing roots are made (`mkdir -p`);
/// without it (dry run) nothing on the remote changes.
pub fn listing_script(roots: &[ListRoot], create: bool) -> Vec<u8> {
    let mut s = LIST_PRELUDE.to_vec();
    s.extend_from_slice(if create { b"MK=1\n" } else { b"MK=0\n" });
    for (i, root) in roots.iter().enumerate() {
        s.extend_from_slice(format!("L {i} ").as_bytes());
        s.extend_from_slice(&quote(&root.dir));
        if let Some(d) = root.max_depth {
            s.extend_from_slice(format!(" -maxdepth {d}").as_bytes());
        }
        s.push(b'\n');
    }
    s
}

/// What the listing found under one root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RootState {
    /// The root could not be used: the reason (mkdir failed, not a directory).
    pub error: Option<String>,
    /// The listing is partial (find reported errors); entries below may be missing.
    pub incomplete: bool,
    /// Entries by path relative to the root.
    pub entries: HashMap<Vec<u8>, RemoteEntry>,
}

/// One remote entry as `find` saw it (not following symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// `f` file, `d` directory, `l` symlink, others as find's `%y`.
    pub kind: u8,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// Symlink target (empty for other kinds).
    pub target: Vec<u8>,
}

/// Parses the listing's NUL-separated records into one state per root.
pub fn parse_listing(out: &[u8], roots: usize) -> Result<Vec<RootState>, String> {
    let mut states = vec![RootState::default(); roots];
    let mut fields = out.split(|&b| b == 0);
    let mut current: Option<usize> = None;
    let root_index = |f: Option<&[u8]>| -> Result<usize, String> {
        let s = std::str::from_utf8(f.unwrap_or_default()).map_err(|_| "bad root index")?;
        match s.parse::<usize>() {
            Ok(i) if i < roots => Ok(i),
            _ => Err(format!("bad root index {s:?}")),
        }
    };
    while let Some(tag) = fields.next() {
        match tag {
            b"" => continue, // the empty field after the final NUL
            b"M" => current = Some(root_index(fields.next())?),
            b"N" => {
                root_index(fields.next())?;
                current = None;
            }
            b"E" => {
                let i = root_index(fields.next())?;
                let msg = String::from_utf8_lossy(fields.next().unwrap_or_default());
                states[i].error = Some(msg.trim().to_string());
                current = None;
            }
            b"X" => states[root_index(fields.next())?].incomplete = true,
            b"F" => {
                let mut f = [&b""[..]; 6];
                for slot in &mut f {
                    *slot = fields.next().ok_or("truncated entry")?;
                }
                let i = current.ok_or("entry outside a root")?;
                let (rel, entry) = parse_entry(f)?;
                states[i].entries.insert(rel, entry);
            }
            other => {
                return Err(format!(
                    "unexpected listing record {:?}",
                    String::from_utf8_lossy(other)
                ));
            }
        }
    }
    Ok(states)
}

/// Parses `%y %s %T@ %m %P %l`.
fn parse_entry(f: [&[u8]; 6]) -> Result<(Vec<u8>, RemoteEntry), String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let kind = *f[0].first().ok_or("empty type")?;
    let size = text(f[1]).parse::<u64>().map_err(|_| "bad size")?;
    let mtime_text = text(f[2]);
    let secs = mtime_text.split('.').next().unwrap_or("");
    let mtime = secs.parse::<i64>().map_err(|_| "bad mtime")?;
    let mode = u32::from_str_radix(&text(f[3]), 8).map_err(|_| "bad mode")?;
    Ok((
        f[4].to_vec(),
        RemoteEntry {
            kind,
            size,
            mtime,
            mode,
            target: f[5].to_vec(),
        },
    ))
}

/// One step of the commit script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Rename an uploaded temporary over its final path.
    Rename { tmp: Vec<u8>, dest: Vec<u8> },
    /// Make a symlink (through a temporary, so the swap is atomic).
    Symlink {
        target: Vec<u8>,
        tmp: Vec<u8>,
        dest: Vec<u8>,
    },
    /// Remove a temporary left by an interrupted earlier run.
    RemoveStale { path: Vec<u8> },
}

const COMMIT_PRELUDE: &[u8] = br#"f() {
  if [ -d "$2" ] && [ ! -L "$2" ]; then
    rm -f -- "$1"; printf 'F\0%s\0%s\0' "$3" "remote path is a directory"; return
  fi
  [ -L "$2" ] && [ -d "$2" ] && rm -f -- "$2"
  mv -f -- "$1" "$2" || printf 'F\0%s\0%s\0' "$3" "rename into place failed"
}
s() {
  rm -f -- "$2"
  if [ -d "$3" ] && [ ! -L "$3" ]; then
    printf 'F\0%s\0%s\0' "$4" "remote path is a directory"; return
  fi
  [ -L "$3" ] && [ -d "$3" ] && rm -f -- "$3"
  { ln -s -- "$1" "$2" && mv -f -- "$2" "$3"; } || printf 'F\0%s\0%s\0' "$4" "symlink failed"
}
"#;

/// The commit script. Step `i` reports a failure as `F\0i\0reason\0`.
pub fn commit_script(steps: &[Commit]) -> Vec<u8> {
    let mut s = COMMIT_PRELUDE.to_vec();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Commit::Rename { tmp, dest } => {
                s.extend_from_slice(b"f ");
                push_args(&mut s, &[tmp, dest]);
            }
            Commit::Symlink { target, tmp, dest } => {
                s.extend_from_slice(b"s ");
                push_args(&mut s, &[target, tmp, dest]);
            }
            Commit::RemoveStale { path } => {
                s.extend_from_slice(b"rm -f -- ");
                s.extend_from_slice(&quote(path));
                s.push(b'\n');
                continue;
            }
        }
        s.extend_from_slice(format!(" {i}\n").as_bytes());
    }
    s
}

/// Appends quoted arguments separated by spaces.
fn push_args(s: &mut Vec<u8>, args: &[&Vec<u8>]) {
    for (n, a) in args.iter().enumerate() {
        if n > 0 {
            s.push(b' ');
        }
        s.extend_from_slice(&quote(a));
    }
}

/// Reads the commit script's failure records: step index and reason.
pub fn parse_failures(out: &[u8]) -> Vec<(usize, String)> {
    let mut fields = out.split(|&b| b == 0);
    let mut failures = Vec::new();
    while let Some(tag) = fields.next() {
        if tag == b"F" {
            let idx = fields
                .next()
                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok());
            let reason = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
            if let Some(idx) = idx {
                failures.push((idx, reason));
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quote_survives_the_shell() {
        let nasty: &[u8] = b"a b'c\"$(touch x)`y`;\n-z\xff";
        let mut script = b"printf '%s' ".to_vec();
        script.extend_from_slice(&quote(nasty));
        let out = Command::new("sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(&script))
            .output()
            .unwrap();
        assert_eq!(out.stdout, nasty);
    }
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn tmp_names_are_stable_and_short() {
        assert_eq!(tmp_name(b"x"), tmp_name(b"x"));
        assert_ne!(tmp_name(b"x"), tmp_name(b"y"));
        assert!(is_tmp_name(&tmp_name(&[b'a'; 255])));
        assert!(tmp_name(&[b'a'; 255]).len() < 40);
    }

    /// Runs the real scripts with the local sh and find: listing, then commit.
    #[test]
    fn listing_and_commit_scripts_run_locally() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("dest tree's");
        let rb = root.as_os_str().as_bytes().to_vec();
        let roots = [
            ListRoot {
                dir: rb.clone(),
                max_depth: None,
            },
            ListRoot {
                dir: d.path().join("nope").as_os_str().as_bytes().to_vec(),
                max_depth: Some(1),
            },
        ];
        let run = |script: Vec<u8>| {
            let mut child = Command::new("sh")
                .arg("-s")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&script).unwrap();
            child.wait_with_output().unwrap().stdout
        };
        // Dry listing creates nothing.
        let st = parse_listing(&run(listing_script(&roots, false)), 2).unwrap();
        assert!(st[0].entries.is_empty() && st[0].error.is_none());
        assert!(!root.exists());
        // Real listing creates the root, then sees a file in it.
        run(listing_script(&roots, true));
        std::fs::write(root.join("a\nb"), "12345").unwrap();
        let st = parse_listing(&run(listing_script(&roots, true)), 2).unwrap();
        let e = &st[0].entries[&b"a\nb".to_vec()];
        assert_eq!((e.kind, e.size), (b'f', 5));
        // Commit: rename a temp into place, make a symlink, fail on a directory.
        let tmp = root.join(".hostsync-tmp.1");
        std::fs::write(&tmp, "new").unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        let p = |s: &str| root.join(s).as_os_str().as_bytes().to_vec();
        let steps = vec![
            Commit::Rename {
                tmp: p(".hostsync-tmp.1"),
                dest: p("a\nb"),
            },
            Commit::Symlink {
                target: b"../t".to_vec(),
                tmp: p(".hostsync-tmp.2"),
                dest: p("ln"),
            },
            Commit::Rename {
                tmp: p(".hostsync-tmp.3"),
                dest: p("dir"),
            },
        ];
        let fails = parse_failures(&run(commit_script(&steps)));
        assert_eq!(fails, vec![(2, "remote path is a directory".to_string())]);
        assert_eq!(std::fs::read(root.join("a\nb")).unwrap(), b"new");
        assert_eq!(
            std::fs::read_link(root.join("ln")).unwrap(),
            std::path::Path::new("../t")
        );
        assert!(!tmp.exists());
    }
}

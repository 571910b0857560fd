//! What the remote shell is asked to do on a host the agent cannot serve (no
//! perl), and how its answers are read.
//!
//! Per batch such a host runs two small POSIX sh scripts, fed as the argument of
//! `sh -c` (or on stdin to `sh -s` when they are long): the listing and the commit.
//! - the *listing* applies the ancestor rule to each destination ([`TRUST`]),
//!   creates missing destination roots and lists what is under each one (GNU
//!   `find -printf`, NUL-separated, so any byte in a name is safe), with the owner
//!   and mode of the root, its parent and every directory below: one round trip
//!   for the whole host, not one stat per file; mtimes come with their fraction
//!   (`%T@`). Path listings, and whole ones for `sync --checksum`, add a
//!   `sha256sum` of each regular file (one process per file);
//! - the *commit* renames every uploaded temporary file over its destination,
//!   confirming each step with a record, and removes the temporaries of runs that
//!   are over. With `"backups": N` it first rotates the numbered backups of a
//!   destination that is a regular file (`dest.(N-1)` → `dest.N` … `dest.1` →
//!   `dest.2`, oldest dropped) and keeps the current version as `dest.1` by a
//!   hard link, so the destination never disappears: the rename that follows
//!   swaps it atomically.
//!
//! Every path is single-quoted byte by byte ([`quote`]); nothing the user or the
//! local file system supplies is ever interpreted by the remote shell.

pub(crate) mod probe;
pub(crate) mod runs;

use std::collections::HashMap;

/// Prefix of every temporary file hostsync writes on a remote host.
pub(crate) const TMP_PREFIX: &str = ".hostsync-tmp.";

/// Quotes bytes for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub(crate) fn quote(s: &[u8]) -> Vec<u8> {
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

/// 16 hex digits no other call in any process is likely to return (a per-process
/// random hash of a counter): listing end tokens and commit-record names.
pub(crate) fn fresh_hex() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = std::collections::hash_map::RandomState::new().hash_one((n, std::process::id()));
    format!("{seed:016x}")
}

/// True for names hostsync uses for temporaries.
pub(crate) fn is_tmp_name(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX.as_bytes())
}

/// One root to list: a directory and how deep to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListRoot {
    /// Absolute remote directory.
    pub(crate) dir: Vec<u8>,
    /// `Some(1)` for the parent directory of a file mapping, `None` for a whole tree.
    pub(crate) max_depth: Option<u32>,
    /// Only these paths (relative to `dir`, each with what is below it), with a
    /// content hash of each regular file among them, and their parent directories
    /// (alone), so a parent that is a symlink on the remote is seen and never
    /// written or deleted through; `None` lists the whole root.
    pub(crate) paths: Option<Vec<Vec<u8>>>,
    /// Also a content hash of every regular file (`sync --checksum`): of the whole
    /// root, or also below the directories among `paths` (whose own files are
    /// hashed in any case).
    pub(crate) checksum: bool,
}

/// The ancestor rule in sh, for hosts the agent cannot serve and for `check`
/// (issue 13): `T UID MODE` says whether a directory with that owner and mode can
/// be written by nobody but root and the login user (`$ME`); `G PATH` walks PATH
/// from / and fails, with the reason in `$g`, at a symlink in a directory others
/// can write (a sticky one counts when the link is root's or the login user's),
/// unless `$SM` is not 1 (`[ssh] strict_modes = no`). Needs GNU find for owners.
pub(crate) const TRUST: &[u8] = br#"ME=$(id -u)
T() {
  [ "$1" = 0 ] || [ "$1" = "$ME" ] || return 1
  [ $((0$2 & 022)) = 0 ]
}
G() {
  [ "$SM" = 1 ] || return 0
  gp=$1; gh=0
  while :; do
    gr=${gp#/}; ga=""; gf=0
    while [ -n "$gr" ]; do
      gc=${gr%%/*}
      case $gr in */*) gr=${gr#*/} ;; *) gr="" ;; esac
      [ -n "$gc" ] || continue
      if [ -L "$ga/$gc" ]; then
        go=$(find "${ga:-/}" -maxdepth 0 -printf '%U %m' 2>/dev/null)
        gl=$(find "$ga/$gc" -maxdepth 0 -printf '%U' 2>/dev/null)
        if ! T "${go% *}" "${go#* }"; then
          if [ $((0${go#* } & 01000)) = 0 ] || { [ "$gl" != 0 ] && [ "$gl" != "$ME" ]; }; then
            g="$ga/$gc is a symlink and its directory ${ga:-/} can be written by others than root and the login user (owner uid ${go% *}, mode ${go#* }), so it is not followed; make that directory writable only by root and the login user, or set [ssh] strict_modes = no"
            return 1
          fi
        fi
        gt=$(readlink -- "$ga/$gc")
        case $gt in /*) gp="$gt/$gr" ;; *) gp="$ga/$gt/$gr" ;; esac
        gh=$((gh + 1))
        [ "$gh" -le 40 ] || { g="too many symlinks on the way to $1"; return 1; }
        gf=1
        break
      fi
      [ -e "$ga/$gc" ] || return 0
      ga="$ga/$gc"
    done
    [ "$gf" = 1 ] || return 0
  done
}
"#;

const LIST_PRELUDE: &[u8] = br#"printf 'U\0%s\0' "$ME"
R() {
  if ! G "$2"; then printf 'E\0%s\0%s\0' "$1" "$g"; return 1; fi
  if [ ! -e "$2" ] && [ ! -L "$2" ]; then
    if [ "$MK" = 1 ]; then
      e=$(mkdir -p -- "$2" 2>&1) || { printf 'E\0%s\0%s\0' "$1" "$e"; return 1; }
    else
      printf 'N\0%s\0' "$1"; return 1
    fi
  fi
  if [ -L "$2" ] || [ ! -d "$2" ]; then
    printf 'E\0%s\0%s\0' "$1" "exists and is not a directory"; return 1
  fi
  printf 'M\0%s\0' "$1"
  find "$2" "$2/.." -maxdepth 0 -printf 'O\0%U\0%m\0%p\0' 2>/dev/null
}
H() {
  find "$@" -type f -exec sh -c 'for p in "$@"; do h=$(sha256sum < "$p" 2>/dev/null) && printf "H\0%s\0%s\0" "$p" "${h%% *}"; done' sh {} + 2>/dev/null
}
L() {
  i=$1; c=$2; r=$3; shift 3
  R "$i" "$r" || return 0
  find "$r" -mindepth 1 "$@" -printf 'F\0%y\0%s\0%T@\0%m\0%U\0%P\0%l\0' || printf 'X\0%s\0' "$i"
  [ "$c" = 1 ] || return 0
  ( cd -- "$r" || exit 0; H . -mindepth 1 "$@" )
}
P() {
  i=$1; c=$2; r=$3; shift 3
  R "$i" "$r" || return 0
  ( cd -- "$r" || exit 0
    for p in "$@"; do
      [ -e "$p" ] || [ -L "$p" ] || continue
      find "$p" -printf 'F\0%y\0%s\0%T@\0%m\0%U\0%p\0%l\0' 2>/dev/null
      if [ -f "$p" ] && [ ! -L "$p" ]; then
        h=$(sha256sum < "$p" 2>/dev/null) && printf 'H\0%s\0%s\0' "$p" "${h%% *}"
      elif [ "$c" = 1 ] && [ -d "$p" ] && [ ! -L "$p" ]; then
        H "$p" -mindepth 1
      fi
    done )
}
A() {
  i=$1; r=$2; shift 2
  R "$i" "$r" || return 0
  ( cd -- "$r" || exit 0
    for p in "$@"; do
      [ -e "$p" ] || [ -L "$p" ] || continue
      find "$p" -maxdepth 0 -printf 'F\0%y\0%s\0%T@\0%m\0%U\0%p\0%l\0' 2>/dev/null
    done )
}
"#;

/// Appended to a listing when the connection does not know yet whether the remote
/// has GNU tar or bsdtar: one `T` record, `1` or `0`, instead of an exec of its own
/// (one round trip less per connection).
const TAR_PROBE: &[u8] = br#"case "$(tar --version 2>/dev/null)" in
  *"GNU tar"* | *bsdtar*) printf 'T\000%s\000' 1 ;;
  *) printf 'T\000%s\000' 0 ;;
esac
"#;

/// The listing script. With `create`, missing roots are made (`mkdir -p`);
/// without it (dry run) nothing on the remote changes. With `probe_tar`, it also
/// says whether the remote has GNU tar or bsdtar ([`Listing::tar`]).
pub(crate) fn listing_script(
    roots: &[ListRoot],
    create: bool,
    probe_tar: bool,
    strict: bool,
) -> Vec<u8> {
    let mut s = [TRUST, LIST_PRELUDE].concat();
    s.extend_from_slice(if create { b"MK=1\n" } else { b"MK=0\n" });
    s.extend_from_slice(if strict { b"SM=1\n" } else { b"SM=0\n" });
    s.extend_from_slice(&listing_calls(roots, probe_tar));
    s
}

/// The end of a [`listing_then_tar`] listing: `Z\0TOKEN\0`, then its stderr and a NUL.
pub(crate) fn listing_end(token: &str) -> Vec<u8> {
    format!("Z\0{token}\0").into_bytes()
}

/// A listing (creating missing roots) that keeps its channel: run as
/// `sh -c SCRIPT TOKEN`, it prints the listing, then [`listing_end`] with the
/// listing's stderr, then waits for one line on stdin. `tar I` runs `tail` (see
/// [`crate::transport::tar::REMOTE`]) with root `I` of `roots` as `$1`; anything
/// else, or EOF, ends it. Reading that line with sh's `read` takes nothing more
/// from stdin, so what follows is tar's.
pub(crate) fn listing_then_tar(
    roots: &[ListRoot],
    probe_tar: bool,
    strict: bool,
    tail: &str,
) -> Vec<u8> {
    let mut s = [TRUST, LIST_PRELUDE].concat();
    s.extend_from_slice(if strict { b"SM=1\n" } else { b"SM=0\n" });
    s.extend_from_slice(b"MK=1\nexec 3>&1\ne=$( {\n");
    s.extend_from_slice(&listing_calls(roots, probe_tar));
    s.extend_from_slice(b"} 2>&1 >&3 )\nexec 3>&-\n");
    s.extend_from_slice(b"printf 'Z\\000%s\\000%s\\000' \"$0\" \"$e\"\n");
    s.extend_from_slice(
        b"IFS=' ' read -r go i || exit 0\n[ \"$go\" = tar ] || exit 0\ncase $i in\n",
    );
    for (i, root) in roots.iter().enumerate() {
        s.extend_from_slice(format!("{i}) r=").as_bytes());
        s.extend_from_slice(&quote(&root.dir));
        s.extend_from_slice(b" ;;\n");
    }
    s.extend_from_slice(b"*) exit 0 ;;\nesac\nset -- \"$r\"\n");
    s.extend_from_slice(tail.as_bytes());
    s.push(b'\n');
    s
}

/// One listing call per root, then the tar probe if asked for.
fn listing_calls(roots: &[ListRoot], probe_tar: bool) -> Vec<u8> {
    let mut s = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let f = if root.paths.is_some() { 'P' } else { 'L' };
        s.extend_from_slice(format!("{f} {i} {} ", u8::from(root.checksum)).as_bytes());
        s.extend_from_slice(&quote(&root.dir));
        match &root.paths {
            // `./` keeps a name starting with `-` from reading as a find option.
            Some(paths) => {
                for p in paths {
                    s.extend_from_slice(b" ");
                    s.extend_from_slice(&quote(&[b"./", p.as_slice()].concat()));
                }
                let parents = parents(paths);
                if !parents.is_empty() {
                    s.extend_from_slice(format!("\nA {i} ").as_bytes());
                    s.extend_from_slice(&quote(&root.dir));
                    for p in parents {
                        s.extend_from_slice(b" ");
                        s.extend_from_slice(&quote(&[b"./", p.as_slice()].concat()));
                    }
                }
            }
            None => {
                if let Some(d) = root.max_depth {
                    s.extend_from_slice(format!(" -maxdepth {d}").as_bytes());
                }
            }
        }
        s.push(b'\n');
    }
    if probe_tar {
        s.extend_from_slice(TAR_PROBE);
    }
    s
}

/// Every proper parent directory of `paths` (relative, `/`-separated), once, sorted.
fn parents(paths: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = paths
        .iter()
        .flat_map(|p| {
            p.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'/')
                .map(|(i, _)| p[..i].to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the listing found under one root.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RootState {
    /// The root could not be used: the reason (mkdir failed, not a directory).
    pub(crate) error: Option<String>,
    /// The root does not exist and was not created (a listing without `create`).
    pub(crate) missing: bool,
    /// The listing is partial (find reported errors); entries below may be missing.
    pub(crate) incomplete: bool,
    /// Who besides root and the login user can write where this root's mapping
    /// writes (the root, its parent, a directory below), when someone can: such a
    /// destination is served only by the agent (issue 13).
    pub(crate) open: Option<String>,
    /// Entries by path relative to the root.
    pub(crate) entries: HashMap<Vec<u8>, RemoteEntry>,
    /// SHA-256 (lowercase hex) of the regular files a path listing asked about.
    pub(crate) hashes: HashMap<Vec<u8>, String>,
}

/// One remote entry as `find` saw it (not following symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteEntry {
    /// `f` file, `d` directory, `l` symlink, others as find's `%y`.
    pub(crate) kind: u8,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Modification time, whole seconds.
    pub(crate) mtime: i64,
    /// Modification time, nanosecond part (0 where the remote keeps whole seconds).
    pub(crate) mtime_nsec: i64,
    /// Permission bits.
    pub(crate) mode: u32,
    /// Symlink target (empty for other kinds).
    pub(crate) target: Vec<u8>,
}

/// What one listing said.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// One state per root, in the order of the roots.
    pub(crate) states: Vec<RootState>,
    /// Whether the remote has GNU tar or bsdtar, when the listing probed for it.
    pub(crate) tar: Option<bool>,
}

/// Parses the listing's NUL-separated records into one state per root.
pub(crate) fn parse_listing(out: &[u8], roots: usize) -> Result<Listing, String> {
    let mut reader = ListingReader {
        fields: out.split(|&b| b == 0),
        roots,
        listing: Listing {
            states: vec![RootState::default(); roots],
            tar: None,
        },
        current: None,
        me: None,
    };
    while let Some(tag) = reader.fields.next() {
        reader.record(tag)?;
    }
    Ok(reader.listing)
}

/// The state of [`parse_listing`] as it reads one record after another.
struct ListingReader<'a, I: Iterator<Item = &'a [u8]>> {
    /// The NUL-separated fields still to read.
    fields: I,
    /// How many roots the listing was asked about.
    roots: usize,
    /// What the records said so far.
    listing: Listing,
    /// The root whose records follow (after its `M`), if any.
    current: Option<usize>,
    /// The login user's uid (the `U` record).
    me: Option<u32>,
}

impl<'a, I: Iterator<Item = &'a [u8]>> ListingReader<'a, I> {
    /// Reads the fields of the record tagged `tag`.
    fn record(&mut self, tag: &[u8]) -> Result<(), String> {
        match tag {
            b"" => {} // the empty field after the final NUL
            b"M" => self.current = Some(self.root_index()?),
            b"N" => {
                let i = self.root_index()?;
                self.listing.states[i].missing = true;
                self.current = None;
            }
            b"E" => {
                let i = self.root_index()?;
                let msg = String::from_utf8_lossy(self.fields.next().unwrap_or_default());
                self.listing.states[i].error = Some(msg.trim().to_string());
                self.current = None;
            }
            b"X" => {
                let i = self.root_index()?;
                self.listing.states[i].incomplete = true;
            }
            b"T" => self.listing.tar = Some(self.fields.next() == Some(b"1")),
            b"U" => {
                self.me = self
                    .fields
                    .next()
                    .and_then(|u| std::str::from_utf8(u).ok()?.parse().ok());
            }
            b"O" => self.owner()?,
            b"F" => self.entry()?,
            b"H" => self.hash()?,
            other => {
                return Err(format!(
                    "unexpected listing record {:?}",
                    String::from_utf8_lossy(other)
                ));
            }
        }
        Ok(())
    }

    /// Reads a root index (below the number of roots).
    fn root_index(&mut self) -> Result<usize, String> {
        let f = self.fields.next();
        let s = std::str::from_utf8(f.unwrap_or_default()).map_err(|_| "bad root index")?;
        match s.parse::<usize>() {
            Ok(i) if i < self.roots => Ok(i),
            _ => Err(format!("bad root index {s:?}")),
        }
    }

    /// An `O` record: owner and mode of the current root, then of its parent.
    fn owner(&mut self) -> Result<(), String> {
        let (owner, mode, at) = (self.fields.next(), self.fields.next(), self.fields.next());
        let i = self.current.ok_or("owner record outside a root")?;
        let (Some(owner), Some(mode), Some(at)) = (owner, mode, at) else {
            return Err("truncated owner record".into());
        };
        let mode =
            u32::from_str_radix(&String::from_utf8_lossy(mode), 8).map_err(|_| "bad mode")?;
        // The root, then its parent; a sticky parent (such as /tmp) does not count.
        let parent = at.ends_with(b"/..");
        let state = &mut self.listing.states[i];
        if state.open.is_none() && !(parent && mode & 0o1000 != 0) {
            state.open = open_to_others(self.me, owner, mode, at);
        }
        Ok(())
    }

    /// An `F` record: one entry below the current root.
    fn entry(&mut self) -> Result<(), String> {
        let mut f = [&b""[..]; 7];
        for slot in &mut f {
            *slot = self.fields.next().ok_or("truncated entry")?;
        }
        let i = self.current.ok_or("entry outside a root")?;
        let owner = f[4];
        let (rel, entry) = parse_entry([f[0], f[1], f[2], f[3], f[5], f[6]])?;
        let state = &mut self.listing.states[i];
        if entry.kind == b'd' && state.open.is_none() {
            state.open = open_to_others(self.me, owner, entry.mode, &rel);
        }
        state.entries.insert(strip_dot(rel), entry);
        Ok(())
    }

    /// An `H` record: the content hash of a regular file below the current root.
    fn hash(&mut self) -> Result<(), String> {
        let i = self.current.ok_or("hash outside a root")?;
        let rel = strip_dot(self.fields.next().ok_or("truncated hash")?.to_vec());
        let hash = String::from_utf8_lossy(self.fields.next().ok_or("truncated hash")?);
        self.listing.states[i].hashes.insert(rel, hash.into_owned());
        Ok(())
    }
}

/// Who besides root and the login user (`me`) can write a directory with this
/// owner and mode, if anyone can (issue 13).
fn open_to_others(me: Option<u32>, owner: &[u8], mode: u32, at: &[u8]) -> Option<String> {
    let owner: u32 = std::str::from_utf8(owner).ok()?.parse().ok()?;
    let at = crate::escape::escape(at);
    if owner != 0 && Some(owner) != me {
        Some(format!("{at} is owned by uid {owner}"))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "{at} is writable by its group or others (mode {mode:04o})"
        ))
    } else {
        None
    }
}

/// Drops the `./` that path listings put before each path.
fn strip_dot(mut rel: Vec<u8>) -> Vec<u8> {
    if rel.starts_with(b"./") {
        rel.drain(..2);
    }
    rel
}

/// Parses `%y %s %T@ %m %P %l`.
fn parse_entry(f: [&[u8]; 6]) -> Result<(Vec<u8>, RemoteEntry), String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let kind = *f[0].first().ok_or("empty type")?;
    let size = text(f[1]).parse::<u64>().map_err(|_| "bad size")?;
    let mtime_text = text(f[2]);
    let mut parts = mtime_text.splitn(2, '.');
    let mtime = parts
        .next()
        .unwrap_or("")
        .parse::<i64>()
        .map_err(|_| "bad mtime")?;
    let frac = parts.next().unwrap_or("");
    let mtime_nsec = format!("{frac:0<9}")[..9].parse::<i64>().unwrap_or(0);
    let mode = u32::from_str_radix(&text(f[3]), 8).map_err(|_| "bad mode")?;
    Ok((
        f[4].to_vec(),
        RemoteEntry {
            kind,
            size,
            mtime,
            mtime_nsec,
            mode,
            target: f[5].to_vec(),
        },
    ))
}

/// One step of the commit script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Rename an uploaded temporary over its final path, first keeping up to
    /// `backups` previous versions of a regular file there (`dest.1` newest).
    Rename {
        tmp: Vec<u8>,
        dest: Vec<u8>,
        backups: u32,
    },
    /// Make a symlink (through a temporary, so the swap is atomic); a regular file
    /// it replaces is kept as a backup like [`Commit::Rename`] does.
    Symlink {
        target: Vec<u8>,
        tmp: Vec<u8>,
        dest: Vec<u8>,
        backups: u32,
    },
    /// Remove a temporary left by an interrupted earlier run.
    RemoveStale { path: Vec<u8> },
    /// Remove `root/rel`, a file or tree that no longer exists locally (`"delete": true`),
    /// unless a parent between root and it is a symlink or not a directory, which
    /// could lead outside root.
    Remove { root: Vec<u8>, rel: Vec<u8> },
}

const COMMIT_PRELUDE: &[u8] = br#"b() {
  [ "$2" -gt 0 ] && [ -f "$1" ] && [ ! -L "$1" ] || return 0
  k=$(($2 - 1))
  while [ "$k" -ge 1 ]; do
    if [ -e "$1.$k" ] || [ -L "$1.$k" ]; then
      mv -f -T -- "$1.$k" "$1.$((k + 1))" 2>/dev/null || { e="cannot rotate $1.$k to $1.$((k + 1))"; return 1; }
    fi
    k=$((k - 1))
  done
  if [ -e "$1.1" ] || [ -L "$1.1" ]; then
    rm -f -- "$1.1" 2>/dev/null || { e="cannot drop the oldest backup $1.1"; return 1; }
  fi
  ln -- "$1" "$1.1" 2>/dev/null || mv -f -T -- "$1" "$1.1" 2>/dev/null || { e="cannot keep the previous version as $1.1"; return 1; }
}
f() {
  if [ -d "$2" ] && [ ! -L "$2" ]; then
    rm -f -- "$1"; printf 'F\0%s\0%s\0' "$4" "remote path is a directory"; return
  fi
  if ! b "$2" "$3"; then
    rm -f -- "$1"; printf 'F\0%s\0%s\0' "$4" "not replaced: $e"; return
  fi
  [ -L "$2" ] && [ -d "$2" ] && rm -f -- "$2"
  if mv -f -- "$1" "$2"; then printf 'K\0%s\0' "$4"; else rm -f -- "$1"; printf 'F\0%s\0%s\0' "$4" "rename into place failed"; fi
}
s() {
  rm -f -- "$2"
  if [ -d "$3" ] && [ ! -L "$3" ]; then
    printf 'F\0%s\0%s\0' "$5" "remote path is a directory"; return
  fi
  if ! b "$3" "$4"; then
    printf 'F\0%s\0%s\0' "$5" "not replaced: $e"; return
  fi
  [ -L "$3" ] && [ -d "$3" ] && rm -f -- "$3"
  if ln -s -- "$1" "$2" && mv -f -- "$2" "$3"; then printf 'K\0%s\0' "$5"; else rm -f -- "$2"; printf 'F\0%s\0%s\0' "$5" "symlink failed"; fi
}
d() {
  p=$1; rest=$2
  while case $rest in */*) true ;; *) false ;; esac; do
    p=$p/${rest%%/*}; rest=${rest#*/}
    [ -e "$p" ] || [ -L "$p" ] || { printf 'K\0%s\0' "$3"; return 0; }
    if [ -L "$p" ] || [ ! -d "$p" ]; then
      printf 'F\0%s\0%s\0' "$3" "not removed: a parent is a symlink or not a directory on the remote"; return
    fi
  done
  if rm -rf -- "$1/$2"; then printf 'K\0%s\0' "$3"; else printf 'F\0%s\0%s\0' "$3" "remove failed"; fi
}
"#;

/// The commit script. Step `i` reports a failure as `F\0i\0reason\0`.
pub(crate) fn commit_script(steps: &[Commit]) -> Vec<u8> {
    let mut s = COMMIT_PRELUDE.to_vec();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Commit::Rename { tmp, dest, backups } => {
                s.extend_from_slice(b"f ");
                push_args(&mut s, &[tmp, dest]);
                s.extend_from_slice(format!(" {backups}").as_bytes());
            }
            Commit::Symlink {
                target,
                tmp,
                dest,
                backups,
            } => {
                s.extend_from_slice(b"s ");
                push_args(&mut s, &[target, tmp, dest]);
                s.extend_from_slice(format!(" {backups}").as_bytes());
            }
            Commit::Remove { root, rel } => {
                s.extend_from_slice(b"d ");
                push_args(&mut s, &[root, rel]);
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
#[cfg(test)]
pub(crate) fn parse_failures(out: &[u8]) -> Vec<(usize, String)> {
    parse_commit(out).0
}

/// Reads the commit script's records: the failed steps with their reasons, and the
/// steps confirmed done. A step in neither did not happen.
pub(crate) fn parse_commit(out: &[u8]) -> (Vec<(usize, String)>, std::collections::HashSet<usize>) {
    let mut fields = out.split(|&b| b == 0);
    let mut failures = Vec::new();
    let mut done = std::collections::HashSet::new();
    let index = |b: Option<&[u8]>| b.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok());
    while let Some(tag) = fields.next() {
        match tag {
            b"F" => {
                let idx = index(fields.next());
                let reason =
                    String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
                if let Some(idx) = idx {
                    failures.push((idx, reason));
                }
            }
            b"K" => {
                if let Some(idx) = index(fields.next()) {
                    done.insert(idx);
                }
            }
            _ => {}
        }
    }
    (failures, done)
}

/// Runs `program args` locally with `input` on stdin and returns its stdout: how the
/// unit tests run the remote scripts and programs on this machine, as a remote would.
#[cfg(test)]
pub(crate) fn run_local(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().stdout
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

    /// The listing's tar probe answers with one `T` record, run by the local sh:
    /// GNU tar here (Debian has it), none with an empty PATH; none asked, no record.
    #[test]
    fn listing_probes_for_tar_only_when_asked() {
        let run = |script: Vec<u8>| parse_listing(&run_local("sh", &["-s"], &script), 0).unwrap();
        assert_eq!(run(listing_script(&[], false, true, true)).tar, Some(true));
        assert_eq!(run(listing_script(&[], false, false, true)).tar, None);
        let mut no_tar = b"PATH=/nonexistent-hostsync-test\n".to_vec();
        no_tar.extend(listing_script(&[], false, true, true));
        assert_eq!(run(no_tar).tar, Some(false));
    }

    /// Issue 13 on hosts without perl: a symlink on the way to dest is followed only
    /// in a directory nobody else can write, and a destination others can write (or
    /// one with such a directory below it) is reported, so it can be refused.
    #[test]
    fn listing_follows_only_trusted_ancestors_and_reports_open_destinations() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir_all(real.join("dest/sub")).unwrap();
        for (name, mode) in [("open", 0o777), ("trusted", 0o755)] {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::symlink(&real, p.join("l")).unwrap();
        }
        let root = |p: &str| ListRoot {
            dir: d.path().join(p).as_os_str().as_bytes().to_vec(),
            max_depth: None,
            paths: None,
            checksum: false,
        };
        let list = |roots: &[ListRoot], strict: bool| {
            let out = run_local("sh", &["-s"], &listing_script(roots, false, false, strict));
            parse_listing(&out, roots.len()).unwrap().states
        };
        let st = list(&[root("open/l/dest"), root("trusted/l/dest")], true);
        let refused = st[0].error.as_deref().unwrap_or_default();
        assert!(
            refused.contains("/open/l is a symlink and its directory")
                && refused.contains("strict_modes = no"),
            "{refused}"
        );
        assert!(
            st[1].error.is_none() && st[1].entries.contains_key(b"sub".as_slice()),
            "{st:?}"
        );
        assert_eq!(st[1].open, None);
        assert!(
            list(&[root("open/l/dest")], false)[0].error.is_none(),
            "strict_modes = no"
        );
        // Others can write below dest, then dest itself: reported either way.
        std::fs::set_permissions(
            real.join("dest/sub"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let st = list(&[root("trusted/l/dest")], true);
        assert!(
            st[0]
                .open
                .as_deref()
                .is_some_and(|o| o.contains("sub is writable by its group or others")),
            "{st:?}"
        );
        std::fs::set_permissions(real.join("dest"), std::fs::Permissions::from_mode(0o775))
            .unwrap();
        let st = list(&[root("trusted/l/dest")], true);
        assert!(
            st[0]
                .open
                .as_deref()
                .is_some_and(|o| o.contains("mode 0775")),
            "{st:?}"
        );
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
                paths: None,
                checksum: false,
            },
            ListRoot {
                dir: d.path().join("nope").as_os_str().as_bytes().to_vec(),
                max_depth: Some(1),
                paths: None,
                checksum: false,
            },
        ];
        let run = |script: Vec<u8>| run_local("sh", &["-s"], &script);
        // Dry listing creates nothing.
        let st = parse_listing(&run(listing_script(&roots, false, false, true)), 2)
            .unwrap()
            .states;
        assert!(st[0].entries.is_empty() && st[0].error.is_none());
        assert!(st[0].missing && st[1].missing);
        assert!(!root.exists());
        // Real listing creates the root, then sees a file in it.
        run(listing_script(&roots, true, false, true));
        std::fs::write(root.join("a\nb"), "12345").unwrap();
        let st = parse_listing(&run(listing_script(&roots, true, false, true)), 2)
            .unwrap()
            .states;
        let e = &st[0].entries[&b"a\nb".to_vec()];
        assert_eq!((e.kind, e.size), (b'f', 5));
        // A path listing sees only the named paths, with hashes of files.
        std::fs::create_dir_all(root.join("-d/sub")).unwrap();
        std::fs::write(root.join("-d/sub/x"), "x").unwrap();
        let only = [ListRoot {
            dir: rb.clone(),
            max_depth: None,
            paths: Some(vec![b"a\nb".to_vec(), b"-d".to_vec(), b"gone".to_vec()]),
            checksum: false,
        }];
        let st = parse_listing(&run(listing_script(&only, false, false, true)), 1)
            .unwrap()
            .states;
        let mut rels: Vec<_> = st[0].entries.keys().cloned().collect();
        rels.sort();
        assert_eq!(
            rels,
            [
                b"-d".to_vec(),
                b"-d/sub".to_vec(),
                b"-d/sub/x".to_vec(),
                b"a\nb".to_vec()
            ]
        );
        assert_eq!(
            st[0].hashes[&b"a\nb".to_vec()],
            "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
        );
        assert_eq!(st[0].hashes.len(), 1);
        // Commit, under dash (Debian's sh) and bash: rename a temp into place, make
        // a symlink, refuse to replace a directory, remove a tree, drop a stale temp.
        for shell in ["sh", "bash"] {
            let tmp = root.join(".hostsync-tmp.1");
            std::fs::write(&tmp, format!("new {shell}")).unwrap();
            std::fs::write(root.join(".hostsync-tmp.9"), "stale").unwrap();
            std::fs::create_dir_all(root.join("dir")).unwrap();
            std::fs::create_dir_all(root.join("-d/sub")).unwrap();
            // `via` leads outside the root: nothing below it may be removed.
            std::fs::create_dir_all(d.path().join("outside")).unwrap();
            std::fs::write(d.path().join("outside/x"), "keep").unwrap();
            let _ = std::os::unix::fs::symlink(d.path().join("outside"), root.join("via"));
            let p = |s: &str| root.join(s).as_os_str().as_bytes().to_vec();
            let steps = vec![
                Commit::RemoveStale {
                    path: p(".hostsync-tmp.9"),
                },
                Commit::Rename {
                    tmp: p(".hostsync-tmp.1"),
                    dest: p("a\nb"),
                    backups: 0,
                },
                Commit::Symlink {
                    target: b"../t".to_vec(),
                    tmp: p(".hostsync-tmp.2"),
                    dest: p("ln"),
                    backups: 0,
                },
                Commit::Rename {
                    tmp: p(".hostsync-tmp.3"),
                    dest: p("dir"),
                    backups: 0,
                },
                Commit::Remove {
                    root: root.as_os_str().as_bytes().to_vec(),
                    rel: b"-d".to_vec(),
                },
                Commit::Remove {
                    root: root.as_os_str().as_bytes().to_vec(),
                    rel: b"via/x".to_vec(),
                },
                // Its parent is already gone (removed earlier in the batch): nothing to do.
                Commit::Remove {
                    root: root.as_os_str().as_bytes().to_vec(),
                    rel: b"gone-parent/x".to_vec(),
                },
            ];
            let out = run_local(shell, &["-s"], &commit_script(&steps));
            let fails = parse_failures(&out);
            // Every step that happened is confirmed; the refused ones are not.
            let (_, done) = parse_commit(&out);
            for i in [1, 2, 4, 6] {
                assert!(done.contains(&i), "step {i} unconfirmed, {shell}");
            }
            assert!(!done.contains(&3) && !done.contains(&5), "{shell}");
            assert_eq!(
                fails,
                vec![
                    (3, "remote path is a directory".to_string()),
                    (
                        5,
                        "not removed: a parent is a symlink or not a directory on the remote"
                            .to_string()
                    )
                ],
                "{shell}"
            );
            assert_eq!(std::fs::read(d.path().join("outside/x")).unwrap(), b"keep");
            assert_eq!(
                std::fs::read(root.join("a\nb")).unwrap(),
                format!("new {shell}").as_bytes()
            );
            assert_eq!(
                std::fs::read_link(root.join("ln")).unwrap(),
                std::path::Path::new("../t")
            );
            assert!(!tmp.exists() && !root.join(".hostsync-tmp.9").exists());
            assert!(!root.join("-d").exists() && root.join("dir").is_dir());
        }
    }

    /// Issue 14, `sync --checksum`: a listing also hashes every regular file (any
    /// name, at any depth; only as deep as the root is listed; below a directory a
    /// path listing names), and mtimes keep their nanoseconds.
    #[test]
    fn checksum_listing_hashes_every_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("-odd\nname"), "12345").unwrap();
        std::fs::write(root.join("sub/deep"), "x").unwrap();
        std::os::unix::fs::symlink("sub/deep", root.join("link")).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(root.join("sub/deep"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5))
            .unwrap();
        let list_paths = |max_depth, paths: Option<Vec<Vec<u8>>>, checksum| {
            let roots = [ListRoot {
                dir: root.as_os_str().as_bytes().to_vec(),
                max_depth,
                paths,
                checksum,
            }];
            let out = run_local("sh", &["-s"], &listing_script(&roots, false, false, true));
            parse_listing(&out, 1).unwrap().states.remove(0)
        };
        let list = |max_depth, checksum| list_paths(max_depth, None, checksum);
        let all = list(None, true);
        let mut hashed: Vec<_> = all.hashes.keys().cloned().collect();
        hashed.sort();
        assert_eq!(hashed, [b"-odd\nname".to_vec(), b"sub/deep".to_vec()]);
        assert_eq!(
            all.hashes[&b"-odd\nname".to_vec()],
            "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
        );
        let deep = &all.entries[&b"sub/deep".to_vec()];
        assert_eq!((deep.mtime, deep.mtime_nsec), (1_700_000_000, 5));
        assert!(list(None, false).hashes.is_empty());
        let top: Vec<_> = list(Some(1), true).hashes.into_keys().collect();
        assert_eq!(top, [b"-odd\nname".to_vec()]);
        let below = |checksum| -> Vec<Vec<u8>> {
            list_paths(None, Some(vec![b"sub".to_vec()]), checksum)
                .hashes
                .into_keys()
                .collect()
        };
        assert_eq!(below(true), [b"sub/deep".to_vec()]);
        assert!(
            below(false).is_empty(),
            "a named directory's files: by mtime"
        );
    }

    /// Issue 5: `backups` rotates to exactly N numbered versions, newest in `.1`,
    /// under dash and bash; a symlink or missing dest makes no backup; a
    /// backup that cannot be kept leaves dest as it was.
    #[test]
    fn commit_rotates_numbered_backups() {
        let commit = |shell: &str, steps: &[Commit]| {
            parse_failures(&run_local(shell, &["-s"], &commit_script(steps)))
        };
        for shell in ["sh", "bash"] {
            let d = tempfile::tempdir().unwrap();
            let b = |s: &str| d.path().join(s).as_os_str().as_bytes().to_vec();
            let read = |s: &str| std::fs::read_to_string(d.path().join(s)).ok();
            let put = |v: &str, n: u32| {
                std::fs::write(d.path().join(".hostsync-tmp.1"), v).unwrap();
                let step = Commit::Rename {
                    tmp: b(".hostsync-tmp.1"),
                    dest: b("app.conf"),
                    backups: n,
                };
                commit(shell, &[step])
            };
            // No dest yet: nothing to keep.
            assert!(put("v0", 3).is_empty());
            assert_eq!(read("app.conf.1"), None);
            for v in 1..=5 {
                assert!(put(&format!("v{v}"), 3).is_empty(), "{shell}");
            }
            let got: Vec<_> = [
                "app.conf",
                "app.conf.1",
                "app.conf.2",
                "app.conf.3",
                "app.conf.4",
            ]
            .map(read)
            .to_vec();
            let want = ["v5", "v4", "v3", "v2"].map(|v| Some(v.to_string()));
            assert_eq!(got[..4], want, "{shell}");
            assert_eq!(got[4], None, "exactly N, {shell}");
            // N = 1 replaces the one backup; 0 keeps none and leaves old ones alone.
            assert!(put("v6", 1).is_empty());
            assert_eq!(
                (read("app.conf.1"), read("app.conf.2")),
                (Some("v5".into()), Some("v3".into()))
            );
            assert!(put("v7", 0).is_empty());
            assert_eq!(read("app.conf.1").as_deref(), Some("v5"));
            // A symlink dest is replaced without a backup (only regular files are kept).
            std::os::unix::fs::symlink("app.conf", d.path().join("ln")).unwrap();
            std::fs::write(d.path().join(".hostsync-tmp.2"), "file").unwrap();
            let step = Commit::Rename {
                tmp: b(".hostsync-tmp.2"),
                dest: b("ln"),
                backups: 2,
            };
            assert!(commit(shell, &[step]).is_empty());
            assert_eq!(read("ln").as_deref(), Some("file"));
            assert!(std::fs::symlink_metadata(d.path().join("ln.1")).is_err());
            // A symlink replacing a regular file keeps the file.
            let step = Commit::Symlink {
                target: b"app.conf".to_vec(),
                tmp: b(".hostsync-tmp.3"),
                dest: b("ln"),
                backups: 2,
            };
            assert!(commit(shell, &[step]).is_empty());
            assert_eq!(read("ln.1").as_deref(), Some("file"));
            // A backup slot that is a directory: the step fails, dest is untouched.
            std::fs::create_dir(d.path().join("x.1")).unwrap();
            std::fs::write(d.path().join("x.1/keep"), "k").unwrap();
            std::fs::write(d.path().join("x"), "old").unwrap();
            std::fs::write(d.path().join(".hostsync-tmp.4"), "new").unwrap();
            let step = Commit::Rename {
                tmp: b(".hostsync-tmp.4"),
                dest: b("x"),
                backups: 1,
            };
            let fails = commit(shell, &[step]);
            assert_eq!(fails.len(), 1, "{shell}");
            assert!(
                fails[0]
                    .1
                    .starts_with("not replaced: cannot drop the oldest backup"),
                "{fails:?}"
            );
            assert_eq!(read("x").as_deref(), Some("old"));
            assert!(!d.path().join(".hostsync-tmp.4").exists());
        }
    }
}

//! Walking remote trees over SFTP: the listing ([`Sftp::list`]), content hashes of
//! remote files, and removal of a tree ([`Sftp::remove_tree`]).
//!
//! The listing gives what the shell listing gives (`super::super::remote`): per
//! root the ancestor rule's verdict, missing or created, who besides root and the
//! login user can write there (`open`), and every entry below it as lstat sees it,
//! keyed by its path relative to the root. It is pipelined: up to `WINDOW`
//! requests are in flight (opendir, readdir, lstat, readlink, close), so a tree
//! costs a few round trips per level of depth, not a few per folder. READDIR's
//! attributes are lstat's on OpenSSH, but a server may follow links there, so
//! every entry named a directory is lstat-ed before the walk enters it: a link is
//! never followed below a root.

use std::collections::{HashMap, VecDeque};

use anyhow::{Result, anyhow, bail};
use sha2::Digest;

use super::wire::{Attrs, Name, Request, kind, open, status};
use super::{ListRoot, Listing, RemoteEntry, Reply, RootState, Sftp, WINDOW, show};

/// What a listing may use per root (names and link targets), as the shell's.
const LIST_CAP: u64 = 64 * 1024 * 1024;

/// The lstat of a root and of its parent folder (`None`: not there).
type Pair = (Option<Attrs>, Option<Attrs>);

/// How many symlinks the ancestor rule follows on the way to one root.
const MAX_HOPS: u32 = 40;

/// A request of a walk, by id.
enum Op {
    /// OPENDIR of the folder at this relative path.
    Open(Vec<u8>),
    /// READDIR of this folder, with its handle.
    Read(Vec<u8>, Vec<u8>),
    /// CLOSE of a folder handle.
    Close,
    /// LSTAT of an entry READDIR named a directory.
    Stat(Vec<u8>),
    /// READLINK of a symlink.
    Link(Vec<u8>),
}

/// One walk below a root.
struct Walk<'a> {
    /// The root's absolute path.
    base: &'a [u8],
    /// Folders deeper than this are not entered (`None`: all).
    max_depth: Option<u32>,
    /// The login user's uid, where known.
    me: Option<u32>,
    /// Folders (relative) still to open.
    queue: VecDeque<Vec<u8>>,
    /// Requests in flight.
    ops: HashMap<u32, Op>,
    /// Bytes of names and targets so far (against [`LIST_CAP`]).
    used: u64,
}

/// `base/rel`, or `base` for an empty `rel`.
fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        return base.to_vec();
    }
    let mut p = base.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(rel);
    p
}

/// How many components `rel` has.
fn depth(rel: &[u8]) -> u32 {
    if rel.is_empty() {
        0
    } else {
        1 + rel.iter().filter(|&&b| b == b'/').count() as u32
    }
}

/// The listing record of an entry.
fn entry_of(a: &Attrs) -> RemoteEntry {
    RemoteEntry {
        kind: a.kind(),
        size: a.size.unwrap_or(0),
        mtime: a.atime_mtime.map_or(0, |(_, m)| i64::from(m)),
        mtime_nsec: 0,
        mode: a.mode.unwrap_or(0) & 0o7777,
        target: Vec::new(),
    }
}

/// Who besides root and the login user can write a folder with these attributes,
/// if anyone can; worded as the shell listing words it. Without a known login
/// uid only the group and other write bits count.
fn open_dir(me: Option<u32>, a: &Attrs, at: &[u8]) -> Option<String> {
    let at = show(at);
    let mode = a.mode.unwrap_or(0) & 0o7777;
    match (a.uid(), me) {
        (Some(owner), Some(me)) if owner != 0 && owner != me => {
            Some(format!("{at} is owned by uid {owner}"))
        }
        _ if mode & 0o022 != 0 => Some(format!(
            "{at} is writable by its group or others (mode {mode:04o})"
        )),
        _ => None,
    }
}

/// The ancestor rule's test of a folder: only root and the login user can write
/// it (only root when the login uid is unknown).
fn trusted(a: &Attrs, me: Option<u32>) -> bool {
    let owner_ok = a.uid().is_some_and(|u| u == 0 || Some(u) == me);
    owner_ok && a.mode.is_some_and(|m| m & 0o022 == 0)
}

impl Walk<'_> {
    /// Handles the reply to one request of the walk.
    fn step(&mut self, sftp: &mut Sftp, op: Op, reply: Reply, st: &mut RootState) -> Result<()> {
        match (op, reply) {
            (Op::Open(rel), Reply::Handle(h)) => {
                let id = sftp.send(|id| Request::new(kind::READDIR, id).str(&h));
                self.ops.insert(id, Op::Read(rel, h));
            }
            (Op::Read(rel, h), Reply::Names(names)) => {
                for n in names {
                    self.found(sftp, &rel, n, st)?;
                }
                let id = sftp.send(|id| Request::new(kind::READDIR, id).str(&h));
                self.ops.insert(id, Op::Read(rel, h));
            }
            (Op::Read(_, h), Reply::Status(code, _)) => {
                st.incomplete |= code != status::EOF;
                let id = sftp.send(|id| Request::new(kind::CLOSE, id).str(&h));
                self.ops.insert(id, Op::Close);
            }
            (Op::Stat(rel), Reply::Attrs(a)) => self.confirmed(sftp, rel, &a, st),
            (Op::Stat(rel), Reply::Status(..)) => {
                st.entries.remove(&rel);
            }
            (Op::Link(rel), Reply::Names(mut n)) if !n.is_empty() => {
                self.used += n[0].name.len() as u64;
                if let Some(e) = st.entries.get_mut(&rel) {
                    e.target = n.swap_remove(0).name;
                }
            }
            (Op::Open(_) | Op::Link(_), Reply::Status(..)) => st.incomplete = true,
            (Op::Close, _) => {}
            (_, other) => bail!("unexpected SFTP reply {other:?} while listing"),
        }
        Ok(())
    }

    /// Records an entry READDIR named in folder `dir`; asks lstat about a
    /// directory and readlink about a symlink.
    fn found(&mut self, sftp: &mut Sftp, dir: &[u8], n: Name, st: &mut RootState) -> Result<()> {
        if n.name == b"." || n.name == b".." {
            return Ok(());
        }
        if n.name.is_empty() || n.name.contains(&b'/') {
            bail!("the SFTP server listed a bad name {:?}", show(&n.name));
        }
        let rel = if dir.is_empty() {
            n.name
        } else {
            join(dir, &n.name)
        };
        self.used += rel.len() as u64 + 64;
        if self.used > LIST_CAP {
            bail!("the remote listing of {} passed 64 MiB", show(self.base));
        }
        let path = join(self.base, &rel);
        match n.attrs.kind() {
            b'd' => {
                let id = sftp.send(|id| Request::new(kind::LSTAT, id).str(&path));
                self.ops.insert(id, Op::Stat(rel.clone()));
            }
            b'l' => {
                let id = sftp.send(|id| Request::new(kind::READLINK, id).str(&path));
                self.ops.insert(id, Op::Link(rel.clone()));
            }
            _ => {}
        }
        st.entries.insert(rel, entry_of(&n.attrs));
        Ok(())
    }

    /// lstat confirmed what an entry READDIR called a directory really is.
    fn confirmed(&mut self, sftp: &mut Sftp, rel: Vec<u8>, a: &Attrs, st: &mut RootState) {
        st.entries.insert(rel.clone(), entry_of(a));
        match a.kind() {
            b'd' => {
                if st.open.is_none() {
                    st.open = open_dir(self.me, a, &rel);
                }
                if self.max_depth.is_none_or(|m| depth(&rel) < m) {
                    self.queue.push_back(rel);
                }
            }
            b'l' => {
                let path = join(self.base, &rel);
                let id = sftp.send(|id| Request::new(kind::READLINK, id).str(&path));
                self.ops.insert(id, Op::Link(rel));
            }
            _ => {}
        }
    }
}

impl Sftp {
    /// Lists `roots` as the shell listing does (see the module docs): with
    /// `create`, missing roots are made (`mkdir -p`); with `strict`, the ancestor
    /// rule applies. Fails only when the session does; a root that cannot be used
    /// says why in its state.
    pub(crate) fn list(
        &mut self,
        roots: &[ListRoot],
        create: bool,
        strict: bool,
    ) -> Result<Listing> {
        let me = self.whoami()?;
        let mut states = Vec::with_capacity(roots.len());
        for root in roots {
            let started = std::time::Instant::now();
            let st = self.list_root(root, create, strict, me)?;
            log::debug!(
                "sftp listing of {}: {} entries after {} ms",
                show(&root.dir),
                st.entries.len(),
                started.elapsed().as_millis()
            );
            states.push(st);
        }
        Ok(Listing { states, tar: None })
    }

    /// One root of [`Sftp::list`].
    fn list_root(
        &mut self,
        root: &ListRoot,
        create: bool,
        strict: bool,
        me: Option<u32>,
    ) -> Result<RootState> {
        let mut st = RootState::default();
        let up = join(&root.dir, b"..");
        let (found, parent) = if strict {
            match self.ancestors(&root.dir, me)? {
                Ok(both) => both,
                Err(why) => {
                    st.error = Some(why);
                    return Ok(st);
                }
            }
        } else {
            (self.lstat(&root.dir)?, self.lstat(&up)?)
        };
        let (attrs, parent) = match found {
            Some(a) => (a, parent),
            None if !create => {
                st.missing = true;
                return Ok(st);
            }
            None => match self.mkdir_p(&root.dir).and_then(|()| self.lstat(&root.dir)) {
                Ok(Some(a)) => (a, self.lstat(&up)?),
                Ok(None) => (Attrs::default(), None),
                Err(e) => {
                    st.error = Some(format!("{e:#}"));
                    return Ok(st);
                }
            },
        };
        if attrs.kind() != b'd' {
            st.error = Some("exists and is not a directory".into());
            return Ok(st);
        }
        st.open = open_dir(me, &attrs, &root.dir);
        if st.open.is_none()
            && let Some(p) = parent
            && p.mode.is_some_and(|m| m & 0o1000 == 0)
        {
            st.open = open_dir(me, &p, &up);
        }
        match &root.paths {
            None => self.walk(&root.dir, Vec::new(), root.max_depth, me, &mut st)?,
            Some(paths) => self.walk_paths(&root.dir, paths, me, &mut st)?,
        }
        if root.checksum || root.paths.is_some() {
            self.hash_files(root, &mut st)?;
        }
        if !strict {
            // `[ssh] strict_modes = no`: the user takes that risk, as for the shell.
            st.open = None;
        }
        Ok(st)
    }

    /// Walks the folder `base/first` and everything below it into `st`.
    fn walk(
        &mut self,
        base: &[u8],
        first: Vec<u8>,
        max_depth: Option<u32>,
        me: Option<u32>,
        st: &mut RootState,
    ) -> Result<()> {
        let mut w = Walk {
            base,
            max_depth,
            me,
            queue: VecDeque::from([first]),
            ops: HashMap::new(),
            used: 0,
        };
        loop {
            while w.ops.len() < WINDOW {
                let Some(rel) = w.queue.pop_front() else {
                    break;
                };
                let path = join(base, &rel);
                let id = self.send(|id| Request::new(kind::OPENDIR, id).str(&path));
                w.ops.insert(id, Op::Open(rel));
            }
            if w.ops.is_empty() {
                return Ok(());
            }
            self.flush()?;
            let (id, reply) = self.next_reply()?;
            let op = w
                .ops
                .remove(&id)
                .ok_or_else(|| anyhow!("the SFTP server answered request {id}, not asked"))?;
            w.step(self, op, reply, st)?;
        }
    }

    /// The entries at `paths` (relative to `base`), everything below those that are
    /// folders, and their parent folders alone (so a parent that is a symlink is
    /// seen), as the shell's path listing gives them.
    fn walk_paths(
        &mut self,
        base: &[u8],
        paths: &[Vec<u8>],
        me: Option<u32>,
        st: &mut RootState,
    ) -> Result<()> {
        let mut asked: Vec<Vec<u8>> = paths
            .iter()
            .flat_map(|p| {
                let cuts = p.iter().enumerate().filter(|(_, b)| **b == b'/');
                cuts.map(|(i, _)| p[..i].to_vec()).collect::<Vec<_>>()
            })
            .chain(paths.iter().cloned())
            .collect();
        asked.sort();
        asked.dedup();
        let ids: Vec<u32> = asked
            .iter()
            .map(|rel| {
                let path = join(base, rel);
                self.send(|id| Request::new(kind::LSTAT, id).str(&path))
            })
            .collect();
        let mut dirs = Vec::new();
        for (rel, id) in asked.into_iter().zip(ids) {
            let Reply::Attrs(a) = self.reply(id)? else {
                continue;
            };
            if a.kind() == b'l' {
                let target = self.readlink(&join(base, &rel))?;
                st.entries.insert(
                    rel.clone(),
                    RemoteEntry {
                        target,
                        ..entry_of(&a)
                    },
                );
                continue;
            }
            if a.kind() == b'd' && paths.contains(&rel) {
                dirs.push(rel.clone());
            }
            st.entries.insert(rel, entry_of(&a));
        }
        for dir in dirs {
            self.walk(base, dir, None, me, st)?;
        }
        Ok(())
    }

    /// The target of symlink `path`.
    fn readlink(&mut self, path: &[u8]) -> Result<Vec<u8>> {
        let id = self.send(|id| Request::new(kind::READLINK, id).str(path));
        match self.reply(id)? {
            Reply::Names(mut n) if !n.is_empty() => Ok(n.swap_remove(0).name),
            other => bail!("readlink {}: unexpected SFTP reply {other:?}", show(path)),
        }
    }
}

impl Sftp {
    /// The ancestor rule on the way to `dir` (see `remote::TRUST`): every
    /// component from `/` is lstat-ed (all at once); a symlink is followed only
    /// where its folder is trusted, or is sticky and the link is root's or the
    /// login user's. `Ok(Err(reason))` refuses the root; a missing component ends
    /// the walk (what follows is made by `mkdir -p`). Otherwise the lstat of the
    /// root and of its parent folder come back (the real parent, once links on the
    /// way were followed), so the caller needs no more round trips for them.
    fn ancestors(&mut self, dir: &[u8], me: Option<u32>) -> Result<Result<Pair, String>> {
        let mut path = dir.to_vec();
        for _ in 0..=MAX_HOPS {
            let comps: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let prefixes: Vec<Vec<u8>> = (0..=comps.len())
                .map(|i| [b"/".as_slice(), &comps[..i].join(&b'/')].concat())
                .collect();
            let ids: Vec<u32> = prefixes
                .iter()
                .map(|p| self.send(|id| Request::new(kind::LSTAT, id).str(p)))
                .collect();
            let mut stats = Vec::new();
            for id in ids {
                stats.push(match self.reply(id)? {
                    Reply::Attrs(a) => Some(a),
                    _ => None,
                });
            }
            match self.follow(&prefixes, &stats, &comps, me)? {
                Some(Ok(next)) => path = next,
                Some(Err(why)) => return Ok(Err(why)),
                None => {
                    let n = stats.len();
                    let parent = if n >= 2 { stats[n - 2].clone() } else { None };
                    return Ok(Ok((stats[n - 1].clone(), parent)));
                }
            }
        }
        Ok(Err(format!(
            "too many symlinks on the way to {}",
            show(dir)
        )))
    }

    /// The first symlink among `stats` (lstat of `prefixes`, `/` first): the path
    /// it leads to (`Ok`), or why it is not followed (`Err`); `None` when there is
    /// none before the end or a missing component. A link as the last component
    /// is judged (refused in an open folder, as the shell does) but not followed:
    /// the root itself must be a real folder.
    fn follow(
        &mut self,
        prefixes: &[Vec<u8>],
        stats: &[Option<Attrs>],
        comps: &[&[u8]],
        me: Option<u32>,
    ) -> Result<Option<Result<Vec<u8>, String>>> {
        for i in 1..prefixes.len() {
            let (Some(a), Some(folder)) = (&stats[i], &stats[i - 1]) else {
                return Ok(None);
            };
            if a.kind() != b'l' {
                continue;
            }
            let sticky = folder.mode.is_some_and(|m| m & 0o1000 != 0);
            let link_ok = a.uid().is_some_and(|u| u == 0 || Some(u) == me);
            if !(trusted(folder, me) || sticky && link_ok) {
                let at = show(&prefixes[i - 1]);
                return Ok(Some(Err(format!(
                    "{} is a symlink and its directory {at} can be written by others than root and the login user (owner uid {}, mode {:o}), so it is not followed; make that directory writable only by root and the login user, or set [ssh] strict_modes = no",
                    show(&prefixes[i]),
                    folder.uid().map_or("?".into(), |u| u.to_string()),
                    folder.mode.unwrap_or(0) & 0o7777
                ))));
            }
            if i == prefixes.len() - 1 {
                return Ok(None);
            }
            let target = self.readlink(&prefixes[i])?;
            let rest = comps[i..].join(&b'/');
            let mut next = if target.starts_with(b"/") {
                target
            } else {
                join(&prefixes[i - 1], &target)
            };
            next = join(&next, &rest);
            return Ok(Some(Ok(next)));
        }
        Ok(None)
    }

    /// `mkdir -p dir` with the server's default mode.
    fn mkdir_p(&mut self, dir: &[u8]) -> Result<()> {
        let mut at = Vec::new();
        for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            at.push(b'/');
            at.extend_from_slice(c);
            if self.lstat(&at)?.is_none() {
                let id = self.send(|id| {
                    Request::new(kind::MKDIR, id)
                        .str(&at)
                        .attrs(&Attrs::default())
                });
                self.expect_ok(id, || format!("mkdir {}", show(&at)))?;
            }
        }
        Ok(())
    }
}

impl Sftp {
    /// SHA-256 of the regular files a listing hashes: every one with `checksum`,
    /// else those a path listing names (as the shell's `H` records).
    fn hash_files(&mut self, root: &ListRoot, st: &mut RootState) -> Result<()> {
        let wanted: Vec<Vec<u8>> = st
            .entries
            .iter()
            .filter(|(rel, e)| {
                e.kind == b'f'
                    && (root.checksum || root.paths.as_ref().is_some_and(|p| p.contains(rel)))
            })
            .map(|(rel, _)| rel.clone())
            .collect();
        for rel in wanted {
            if let Some(h) = self.sha256(&join(&root.dir, &rel))? {
                st.hashes.insert(rel, h);
            }
        }
        Ok(())
    }

    /// SHA-256 (lowercase hex) of the remote file `path`, read with pipelined
    /// reads; `None` when it cannot be opened.
    pub(crate) fn sha256(&mut self, path: &[u8]) -> Result<Option<String>> {
        const PIECE: u32 = 64 * 1024;
        let id = self.send(|id| {
            Request::new(kind::OPEN, id)
                .str(path)
                .u32(open::READ)
                .attrs(&Attrs::default())
        });
        let Reply::Handle(h) = self.reply(id)? else {
            return Ok(None);
        };
        let mut hasher = sha2::Sha256::new();
        let (mut inflight, mut next, mut ended) = (VecDeque::new(), 0u64, false);
        loop {
            while !ended && inflight.len() < WINDOW / 4 {
                let at = next;
                inflight.push_back(
                    self.send(|id| Request::new(kind::READ, id).str(&h).u64(at).u32(PIECE)),
                );
                next += u64::from(PIECE);
            }
            let Some(id) = inflight.pop_front() else {
                break;
            };
            match self.reply(id)? {
                Reply::Data(d) if !ended => {
                    hasher.update(&d);
                    ended = d.len() < PIECE as usize;
                }
                Reply::Status(status::EOF, _) => ended = true,
                Reply::Data(_) => bail!(
                    "{}: the SFTP server sent data after a short read",
                    show(path)
                ),
                other => bail!("reading {}: unexpected SFTP reply {other:?}", show(path)),
            }
        }
        // Nothing waits for the close: its reply is dropped when it comes.
        let close = self.send(|id| Request::new(kind::CLOSE, id).str(&h));
        self.forget.insert(close);
        Ok(Some(
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ))
    }
}

impl Sftp {
    /// Removes `root/rel`, a file, a symlink or a whole tree, unless a folder
    /// between `root` and it is a symlink or not a folder (which could lead outside
    /// `root`). Returns false when it was not there. Below `rel` nothing is
    /// followed: the tree is listed with lstat, files removed, then folders,
    /// deepest first, all pipelined.
    pub(crate) fn remove_tree(&mut self, root: &[u8], rel: &[u8]) -> Result<bool> {
        let mut at = root.to_vec();
        let comps: Vec<&[u8]> = rel
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            at = join(&at, c);
            match self.lstat(&at)? {
                None => return Ok(false),
                Some(a) if a.kind() != b'd' => bail!(
                    "{}: not removed: a parent is a symlink or not a directory on the remote",
                    show(&join(root, rel))
                ),
                Some(_) => {}
            }
        }
        let path = join(root, rel);
        match self.lstat(&path)? {
            None => Ok(false),
            Some(a) if a.kind() == b'd' => self.remove_dir(&path).map(|()| true),
            Some(_) => self.remove_file(&path).map(|()| true),
        }
    }

    /// Removes folder `path` and everything in it (listed first, nothing followed).
    fn remove_dir(&mut self, path: &[u8]) -> Result<()> {
        let mut st = RootState::default();
        self.walk(path, Vec::new(), None, None, &mut st)?;
        if st.incomplete {
            bail!("{}: remove failed: part of it cannot be listed", show(path));
        }
        let mut dirs: Vec<&Vec<u8>> = Vec::new();
        let mut ids = Vec::new();
        for (rel, e) in &st.entries {
            if e.kind == b'd' {
                dirs.push(rel);
            } else {
                let p = join(path, rel);
                ids.push((self.send(|id| Request::new(kind::REMOVE, id).str(&p)), p));
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(depth(d)));
        for rel in dirs {
            let p = join(path, rel);
            ids.push((self.send(|id| Request::new(kind::RMDIR, id).str(&p)), p));
        }
        let top = path.to_vec();
        ids.push((self.send(|id| Request::new(kind::RMDIR, id).str(&top)), top));
        let mut first_error = None;
        for (id, p) in ids {
            if let Err(e) = self.expect_ok(id, || format!("remove {}", show(&p))) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

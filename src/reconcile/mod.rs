//! What to change on a host, decided without I/O: each mapping's local view (a
//! [`Unit`]) and what the remote listing found under its root ([`RootState`]) go
//! in, a [`Plan`] comes out: per destination root, the directories, files and
//! symlinks to send (each with why, as `rsync -i` tells it), the removals of
//! `"delete": true`, the stale temporaries to clean up, the files skipped, and what
//! cannot be done with the reason (a remote path of the wrong type, a local name
//! hostsync cannot carry, a destination others can write on a host the agent
//! does not serve). [`compare`] is a pure function: the only outside thing it
//! touches is the hash of a local file, through the closure it is given.
//!
//! The rules, shared by every way a host is served:
//! - a file with the same size, mode and mtime (at the precision the remote
//!   keeps, with the host's record of what was last pushed where that is whole
//!   seconds) is skipped, or, where the listing hashed it (`watch`'s path pushes,
//!   `sync --checksum`), one with the same content ([`skip`]);
//! - a remote directory that is something else blocks everything below it;
//! - with `"delete": true`, what is gone locally is removed below dest, never
//!   above it, except excluded paths and the numbered backups `"backups"` keeps;
//!   after a local read error nothing is deleted (rsync's rule).
//!
//! [`render`] turns a plan into a dry run's `[+]`/`[M]`/`[-]` lines.

pub(crate) mod render;
pub(crate) mod skip;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Mapping;
use crate::failure::Failure;
use crate::local::pushed::Pushed;
use crate::local::{self, Kind, Source};
use crate::remote::{self, ListRoot, RootState};

/// Why a file cannot replace what is at its dest. No "remove it": that directory
/// may hold anything (issue 14, bug 3).
const IS_A_DIRECTORY: &str = "the remote path is a directory; change dest (a dest ending in / puts the file inside that directory)";

/// How much of one mapping to bring up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything: compare the whole tree by size, mtime and mode.
    All,
    /// Only these local paths (each with what is below it), compared by content.
    Paths(BTreeSet<PathBuf>),
}

/// One mapping ready to be compared: its source as scanned now and where it lives remotely.
pub(crate) struct Unit<'a> {
    /// The mapping.
    pub(crate) mapping: &'a Mapping,
    /// Its local side (for [`Scope::Paths`], only the changed paths).
    pub(crate) source: Arc<Result<Source, local::ScanError>>,
    /// Where its remote state is listed.
    pub(crate) root: ListRoot,
    /// Paths (relative to the root) that no longer exist locally.
    pub(crate) gone: Vec<Vec<u8>>,
}

/// Something to bring to the remote, below a destination root.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// Path below the root, `/`-separated bytes.
    pub(crate) rel: Vec<u8>,
    /// What to do.
    pub(crate) what: ItemKind,
    /// Local path, for messages and reading.
    pub(crate) local: PathBuf,
    /// Which unit (mapping of this batch) it belongs to: for backups and post_sync.
    pub(crate) unit: usize,
    /// Bytes to upload (files), for progress.
    pub(crate) size: u64,
    /// Whether something is at that path on the remote now (a dry run's `[M]` vs `[+]`).
    pub(crate) exists: bool,
    /// Why it is sent, as `rsync -i` tells it (issue 14): `new`, `type`, or what
    /// differs (`size`, `mtime`, `mode`, `content`, a symlink's `target`); empty for
    /// a removal. `sync -v` prints it, and with `-v` info.log's sent line has it.
    pub(crate) why: String,
    /// A file's attributes as the scan saw them: the file is sent only if it is
    /// still that file (same device and inode; see [`local::read::open_for_send`]).
    pub(crate) meta: Option<local::FileMeta>,
    /// Whether a symlink at `local` is followed: a file src itself (as scp does), or
    /// a mapping with `"follow_symlinks": true`.
    pub(crate) follow: bool,
    /// The file mode bits the remote copy keeps (setuid and setgid only with
    /// `"keep_special_bits": true`).
    pub(crate) mode_mask: u32,
}

impl Item {
    /// Whether this file may go as a delta where the smallest file sent so is
    /// `min` bytes (0: none is; issue 19): a file at least that big that
    /// replaces a remote regular file. Whether the delta is smaller is known only
    /// when it is computed.
    pub(crate) fn may_go_as_delta(&self, min: u64) -> bool {
        min > 0
            && matches!(self.what, ItemKind::File)
            && self.exists
            && self.size >= min
            && self.why != "new"
            && self.why != "type"
    }

    /// What to read to send this file.
    pub(crate) fn to_send(&self) -> local::read::ToSend<'_> {
        local::read::ToSend {
            path: &self.local,
            expect: self.meta.as_ref(),
            follow: self.follow,
            mode_mask: self.mode_mask,
        }
    }

    /// The item that reports on removal `r` once the remote confirms it.
    pub(crate) fn removed(r: Removal) -> Item {
        Item {
            rel: r.rel,
            what: ItemKind::Removed,
            local: r.local,
            unit: r.unit,
            size: 0,
            exists: true,
            why: String::new(),
            meta: None,
            follow: false,
            mode_mask: 0o1777,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ItemKind {
    /// Create (or set the mode of) a directory; the mode is in [`RootWork::dir_modes`].
    Dir,
    /// Upload a file.
    File,
    /// Create a symlink.
    Symlink { target: Vec<u8> },
    /// Removed on the remote (only ever a commit step, never uploaded).
    Removed,
}

/// Everything to do below one remote directory.
#[derive(Debug, Default, Clone)]
pub(crate) struct RootWork {
    /// Modes of the local directories below the root, for `D` records.
    pub(crate) dir_modes: HashMap<Vec<u8>, u32>,
    /// Items, sorted by `rel` before upload.
    pub(crate) items: Vec<Item>,
    /// Remote paths to remove (`"delete": true`), with the local path for messages,
    /// the unit, and whether the remote path is a directory.
    pub(crate) removes: Vec<Removal>,
}

/// A remote path to remove because it is gone locally (`"delete": true`).
#[derive(Debug, Clone)]
pub(crate) struct Removal {
    /// Path below the root.
    pub(crate) rel: Vec<u8>,
    /// The local path that is gone, for messages.
    pub(crate) local: PathBuf,
    /// Which unit asked for it.
    pub(crate) unit: usize,
    /// Whether the remote path is a directory (a whole tree goes).
    pub(crate) is_dir: bool,
}

/// What [`compare`] decided for one host: the work per root, the stale
/// temporaries found by the listing, and what it could not do.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Work per remote root directory.
    pub(crate) work: BTreeMap<Vec<u8>, RootWork>,
    /// Temporaries left by earlier interrupted runs.
    pub(crate) stale: HashSet<Vec<u8>>,
    /// The same, as (root, path below it), sorted.
    pub(crate) stale_at: Vec<(Vec<u8>, Vec<u8>)>,
    /// Destination roots that do not exist (listed without creating them: a dry run).
    pub(crate) missing: BTreeSet<Vec<u8>>,
    /// What cannot be done, as (kind, what, why): one failure line each.
    pub(crate) failures: Vec<(Failure, String, String)>,
    /// Entries that already match the remote.
    pub(crate) skipped: u64,
    /// Warnings for the log (without the host's address).
    pub(crate) warnings: Vec<String>,
}

/// A usable unit: its index, the unit, its scanned source (see `exec::push::usable`).
pub(crate) type Usable<'u, 'm> = (usize, &'u Unit<'m>, &'u Source);

/// Which temporaries found on a host without perl may be removed (name, entry).
pub(crate) type StaleRule<'a> = dyn Fn(&[u8], &remote::RemoteEntry) -> bool + 'a;

/// A unit covering a whole mapping; `checksum`: its listing hashes every file.
pub(crate) fn whole_unit(
    m: &Mapping,
    source: Arc<Result<Source, local::ScanError>>,
    checksum: bool,
) -> Unit<'_> {
    let is_dir = source.as_ref().as_ref().map_or(true, |s| s.is_dir);
    Unit {
        mapping: m,
        root: list_root(m, is_dir, None, checksum),
        source,
        gone: Vec::new(),
    }
}

/// A unit covering what `scoped` saw of mapping `m` ([`local::scope`]): the paths
/// named, compared by content (those below a named directory too with
/// `checksum`), or the whole mapping when a path was its src.
pub(crate) fn scoped_unit(m: &Mapping, scoped: local::scope::Scoped, checksum: bool) -> Unit<'_> {
    match scoped {
        local::scope::Scoped::Whole(source) => whole_unit(m, source, checksum),
        local::scope::Scoped::Paths {
            source,
            rels,
            gone,
            is_dir,
        } => Unit {
            mapping: m,
            root: list_root(m, is_dir, Some(rels), checksum),
            source,
            gone,
        },
    }
}

/// How [`compare`] learns a local file's SHA-256 (lowercase hex), where the
/// remote sent one to compare with: the only I/O the rules need, handed in.
pub(crate) type Hasher<'a> = dyn Fn(&Path) -> Option<String> + 'a;

/// What the remote side of a comparison is: one listed state per root, the
/// host's record, and the listing's stderr (for the warning about an
/// incomplete listing).
pub(crate) struct Listed<'a> {
    /// The roots, in the order of the usable units.
    pub(crate) roots: &'a [ListRoot],
    /// What the listing found under each root.
    pub(crate) states: &'a [RootState],
    /// What this host was last sent ([`crate::local::pushed`]).
    pub(crate) pushed: &'a Pushed,
    /// The listing's stderr, for the warning about an incomplete one.
    pub(crate) stderr: &'a str,
    /// Whether the tier carries a newline in a name (SFTP does); elsewhere such
    /// a name is refused with one line (the SCP sink's records are lines).
    pub(crate) newlines: bool,
}

/// Compares every usable unit with what the listing found under its root and
/// decides what to send, remove and clean up (pure: `hash` is its only I/O).
/// `stale_rule`: `None` for a host the agent serves, which acts relative to
/// checked directories (so a destination others can write is served) and decides
/// itself which temporaries are stale; otherwise such a destination is refused
/// (issue 13), and `stale_rule` says which temporaries found may be removed
/// ([`crate::remote::runs::removable`]).
pub(crate) fn compare(
    usable: &[Usable<'_, '_>],
    listed: &Listed<'_>,
    stale_rule: Option<&StaleRule<'_>>,
    hash: &Hasher<'_>,
) -> Plan {
    let mut plan = Plan::default();
    for (((idx, unit, source), root), state) in usable.iter().zip(listed.roots).zip(listed.states) {
        let mapping = unit.mapping;
        let served = if stale_rule.is_none() {
            Served::Agent
        } else if listed.newlines {
            Served::Sftp
        } else {
            Served::Shell
        };
        if let Some(why) = unusable_root(state, served, &root.dir) {
            let what = format!("{} -> {}", mapping.src.display(), mapping.dest);
            plan.failures.push((Failure::Refused, what, why));
            continue;
        }
        if state.missing {
            plan.missing.insert(root.dir.clone());
        }
        if state.incomplete {
            plan.warnings.push(format!(
                "listing of {} was incomplete ({}); unchanged files there may be sent again",
                show(&root.dir),
                crate::escape::first_line(listed.stderr.as_bytes(), 200)
            ));
        }
        for (path, reason) in &source.errors {
            let what = path.display().to_string();
            plan.failures.push((Failure::Local, what, reason.clone()));
        }
        plan.note_stale(&root.dir, state, stale_rule);
        let remote = Remote {
            root: &root.dir,
            state,
            pushed: listed.pushed,
            newlines: listed.newlines,
        };
        let mut w = plan.work.remove(&root.dir).unwrap_or_default();
        plan_mapping(mapping, *idx, source, &remote, &mut w, &mut plan, hash);
        if mapping.delete && !source.errors.is_empty() {
            // rsync's rule: after a local read error, delete nothing, since what could
            // not be read would look like it is gone.
            plan.warnings.push(format!(
                "{} -> {}: local read errors, so nothing is deleted on the remote this time",
                mapping.src.display(),
                mapping.dest
            ));
        } else if mapping.delete {
            plan_removals(unit, *idx, source, state, &mut w);
        }
        plan.work.insert(root.dir.clone(), w);
    }
    plan.stale_at.sort();
    plan
}

/// How the host is served, for the words of a refusal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    /// hostsync's agent: acts relative to checked directories.
    Agent,
    /// The shell's listing and commit scripts.
    Shell,
    /// The SFTP subsystem (issue 16).
    Sftp,
}

/// Why a root cannot be used at all, if it cannot: the listing could not use it,
/// or others can write there and the host is not served by the agent.
fn unusable_root(state: &RootState, served: Served, dir: &[u8]) -> Option<String> {
    if let Some(err) = &state.error {
        return Some(format!("cannot use remote directory {}: {err}", show(dir)));
    }
    match (&state.open, served) {
        (Some(_), Served::Agent) | (None, _) => None,
        (Some(why), Served::Shell) => Some(format!(
            "other users can write where this mapping writes ({why}), and this host has no perl for hostsync's agent, which is what writes safely there; install perl on the host, or set [ssh] strict_modes = no"
        )),
        (Some(why), Served::Sftp) => Some(format!(
            "other users can write where this mapping writes ({why}), and this host is served over SFTP, which acts on paths and cannot write there safely; make it writable only by root and the login user, or set [ssh] strict_modes = no"
        )),
    }
}

impl Plan {
    /// Notes the temporaries found below `root` that may be removed.
    fn note_stale(&mut self, root: &[u8], state: &RootState, rule: Option<&StaleRule<'_>>) {
        for (rel, e) in &state.entries {
            let name = basename(rel);
            if remote::is_tmp_name(name)
                && rule.is_none_or(|ok| ok(name, e))
                && self.stale.insert(join(root, rel))
            {
                self.stale_at.push((root.to_vec(), rel.clone()));
            }
        }
    }

    /// Files and bytes the plan sends.
    pub(crate) fn sends(&self) -> (u64, u64) {
        (self.work.values())
            .flat_map(|w| &w.items)
            .filter(|i| matches!(i.what, ItemKind::File))
            .fold((0, 0), |(n, b), i| (n + 1, b + i.size))
    }
}

/// Where a mapping's remote state lives: dest itself for a directory src, the
/// parent (one level deep) of [`Mapping::file_dest`] for a file src; `checksum`: a
/// whole listing hashes every file.
pub(crate) fn list_root(
    m: &Mapping,
    is_dir: bool,
    paths: Option<Vec<Vec<u8>>>,
    checksum: bool,
) -> ListRoot {
    if is_dir {
        ListRoot {
            dir: m.dest.as_bytes().to_vec(),
            max_depth: None,
            paths,
            checksum,
        }
    } else {
        let dest = m.file_dest();
        let (parent, _) = split_dest(&dest);
        ListRoot {
            dir: parent.to_vec(),
            max_depth: Some(1),
            paths,
            checksum,
        }
    }
}

/// Splits a normalised absolute dest into parent directory and file name.
pub(crate) fn split_dest(dest: &str) -> (&[u8], &[u8]) {
    let b = dest.as_bytes();
    let cut = b.iter().rposition(|&c| c == b'/').unwrap_or(0);
    let parent = if cut == 0 { &b"/"[..] } else { &b[..cut] };
    (parent, &b[cut + 1..])
}

/// What is known of one remote root when a mapping is compared with it.
struct Remote<'a> {
    /// The root directory.
    root: &'a [u8],
    /// What the listing found below it.
    state: &'a RootState,
    /// What this host was last sent ([`crate::local::pushed`]), by absolute remote path.
    pushed: &'a Pushed,
    /// Whether a newline in a name can be carried ([`Listed::newlines`]).
    newlines: bool,
}

/// Compares one mapping's local entries with the remote state; adds what differs
/// to `w`, what already matches to `plan.skipped` and what cannot be done to
/// `plan.failures`.
fn plan_mapping(
    m: &Mapping,
    unit: usize,
    source: &Source,
    remote: &Remote<'_>,
    w: &mut RootWork,
    plan: &mut Plan,
    hash: &Hasher<'_>,
) {
    let prefix: Vec<u8> = if source.is_dir {
        Vec::new()
    } else {
        split_dest(&m.file_dest()).1.to_vec()
    };
    // Remote directories that are something else: nothing below them can be written.
    let mut blocked: Vec<(Vec<u8>, String)> = Vec::new();
    for entry in &source.entries {
        let rel = if source.is_dir {
            entry.rel.as_os_str().as_bytes().to_vec()
        } else {
            prefix.clone()
        };
        let local = if entry.rel.as_os_str().is_empty() {
            m.src.clone()
        } else {
            m.src.join(&entry.rel)
        };
        let at = Local {
            m,
            unit,
            follow: !source.is_dir || m.follow_symlinks,
            rel,
            local,
        };
        let what = || {
            format!(
                "{} -> {}",
                at.local.display(),
                show(&join(remote.root, &at.rel))
            )
        };
        if let Some((kind, why)) = refused(&at, &blocked, remote.newlines) {
            if !matches!(entry.kind, Kind::Dir { .. }) {
                plan.failures.push((kind, what(), why));
            }
            continue;
        }
        if let Err(why) = plan_entry(&at, &entry.kind, remote, w, plan, hash) {
            plan.failures.push((Failure::Refused, what(), why.clone()));
            if matches!(entry.kind, Kind::Dir { .. }) {
                blocked.push((at.rel.clone(), why));
            }
        }
    }
}

/// One local entry as [`plan_mapping`] compares it.
struct Local<'a> {
    /// Its mapping.
    m: &'a Mapping,
    /// The mapping's index in the batch.
    unit: usize,
    /// Whether a symlink at `local` is followed (a file src, `follow_symlinks`).
    follow: bool,
    /// Path below the root.
    rel: Vec<u8>,
    /// The local path.
    local: PathBuf,
}

/// Why an entry cannot be sent at all, if it cannot: below a blocked remote
/// directory (the remote's doing), or a name hostsync cannot carry (a local one;
/// a newline is carried only where `newlines`).
fn refused(
    at: &Local<'_>,
    blocked: &[(Vec<u8>, String)],
    newlines: bool,
) -> Option<(Failure, String)> {
    if let Some((_, why)) = blocked.iter().find(|(b, _)| is_below(&at.rel, b)) {
        return Some((Failure::Refused, why.clone()));
    }
    if !newlines && at.rel.contains(&b'\n') {
        let why = "the name contains a newline, which the SCP protocol cannot carry; rename it";
        return Some((Failure::Local, why.into()));
    }
    // Issue 13: a local name in the temporaries' namespace would be taken for
    // one (sent in one run, removed as stale in the next).
    let name = at.local.file_name().map(|n| n.as_bytes());
    name.filter(|n| remote::is_tmp_name(n)).map(|_| {
        let why = format!(
            "the name starts with {}, which hostsync keeps for its temporaries; rename it, or exclude it",
            remote::TMP_PREFIX
        );
        (Failure::Local, why)
    })
}

/// Compares one entry with what is there; `Err(why)` when it cannot be sent (for
/// a directory, nothing below it can either).
fn plan_entry(
    at: &Local<'_>,
    kind: &Kind,
    remote: &Remote<'_>,
    w: &mut RootWork,
    plan: &mut Plan,
    hash: &Hasher<'_>,
) -> Result<(), String> {
    let state = remote.state;
    let there = state.entries.get(&at.rel);
    let item = |what| item_for(at, kind, there, state.hashes.contains_key(&at.rel), what);
    match kind {
        Kind::Dir { mode } => {
            w.dir_modes.insert(at.rel.clone(), *mode);
            match there {
                Some(r) if r.kind == b'd' && r.mode == *mode => {}
                Some(r) if r.kind != b'd' => {
                    return Err(
                        "the remote path exists and is not a directory; remove it or change dest"
                            .into(),
                    );
                }
                _ => w.items.push(item(ItemKind::Dir)),
            }
        }
        Kind::File(meta) => match there {
            Some(r) if r.kind == b'd' => return Err(IS_A_DIRECTORY.into()),
            Some(r)
                if r.kind == b'f'
                    && r.size == meta.size
                    && r.mode == at.m.file_mode(meta.mode)
                    && skip::same_content(
                        state.hashes.get(&at.rel),
                        r,
                        meta,
                        &|| hash(&at.local),
                        remote.pushed.get(&join(remote.root, &at.rel)),
                    ) =>
            {
                plan.skipped += 1;
            }
            _ => w.items.push(item(ItemKind::File)),
        },
        Kind::Symlink { target } => match there {
            Some(r) if r.kind == b'l' && r.target == target.as_bytes() => plan.skipped += 1,
            Some(r) if r.kind == b'd' => return Err(IS_A_DIRECTORY.into()),
            _ => w.items.push(item(ItemKind::Symlink {
                target: target.as_bytes().to_vec(),
            })),
        },
    }
    Ok(())
}

/// The item that sends local entry `at` (of `kind`) over `there`.
fn item_for(
    at: &Local<'_>,
    kind: &Kind,
    there: Option<&remote::RemoteEntry>,
    hashed: bool,
    what: ItemKind,
) -> Item {
    let meta = match kind {
        Kind::File(meta) => Some(*meta),
        _ => None,
    };
    Item {
        rel: at.rel.clone(),
        what,
        local: at.local.clone(),
        unit: at.unit,
        size: meta.map_or(0, |m| m.size),
        exists: there.is_some(),
        why: skip::why_sent(kind, there, hashed, at.m.file_mode(0o7777)),
        meta,
        follow: at.follow,
        mode_mask: at.m.file_mode(0o7777),
    }
}

/// Adds removals for `"delete": true` (directory src only): paths gone locally and
/// remote extras below a pushed directory (path scope, [`extras_below`]), or remote
/// entries with no local counterpart (whole scope). Only the
/// topmost path of a removed tree is listed; temporaries are left to the stale
/// cleanup. Excluded paths and the numbered backups `"backups"` keeps are never
/// removed (issue 5).
fn plan_removals(
    unit: &Unit<'_>,
    idx: usize,
    source: &Source,
    state: &RootState,
    w: &mut RootWork,
) {
    if !source.is_dir {
        return; // delete applies to directory mappings only (see config::mapping)
    }
    let mut removals = Removals {
        mapping: unit.mapping,
        unit: idx,
        removes: &mut w.removes,
    };
    match &unit.root.paths {
        Some(paths) => removals.of_paths(unit, paths, source, state),
        None => removals.of_whole(source, state),
    }
}

/// Where [`plan_removals`] adds the removals of one unit.
struct Removals<'a> {
    /// The unit's mapping: its src, exclusions and backups.
    mapping: &'a Mapping,
    /// Which unit of the batch asks for them.
    unit: usize,
    /// The root's removals, added to.
    removes: &'a mut Vec<Removal>,
}

impl Removals<'_> {
    /// Whether `rel` stays on the remote: excluded, or a backup the mapping keeps.
    fn keeps(&self, rel: &[u8], is_dir: bool) -> bool {
        let m = self.mapping;
        m.exclude.is_excluded_bytes(rel, is_dir) || (!is_dir && is_backup_name(rel, m.backups))
    }

    /// Adds the removal of `rel`.
    fn remove(&mut self, rel: &[u8], is_dir: bool) {
        self.removes.push(Removal {
            rel: rel.to_vec(),
            local: self.mapping.src.join(std::ffi::OsStr::from_bytes(rel)),
            unit: self.unit,
            is_dir,
        })
    }

    /// Path scope: what is gone locally, and the extras below pushed directories.
    fn of_paths(&mut self, unit: &Unit<'_>, paths: &[Vec<u8>], source: &Source, state: &RootState) {
        let mut gone: Vec<&Vec<u8>> = unit.gone.iter().collect();
        gone.extend(extras_below(paths, source, state));
        gone.sort();
        gone.dedup();
        let mut last: Option<&Vec<u8>> = None;
        for rel in gone {
            // Below a tree removed in this same batch: nothing left to remove.
            if last.is_some_and(|l| is_below(rel, l)) {
                continue;
            }
            let Some(r) = state.entries.get(rel).filter(|_| !rel.is_empty()) else {
                continue;
            };
            if self.keeps(rel, r.kind == b'd') {
                log::trace!("{}: kept on the remote (excluded or a backup)", show(rel));
                continue;
            }
            self.remove(rel, r.kind == b'd');
            last = Some(rel);
        }
    }

    /// Whole scope: every remote entry with no local counterpart (temporaries aside).
    fn of_whole(&mut self, source: &Source, state: &RootState) {
        let local: HashSet<&[u8]> = source
            .entries
            .iter()
            .map(|e| e.rel.as_os_str().as_bytes())
            .collect();
        let mut extra: Vec<(&Vec<u8>, bool)> = state
            .entries
            .iter()
            .filter(|(rel, _)| {
                !local.contains(rel.as_slice()) && !remote::is_tmp_name(basename(rel))
            })
            .map(|(rel, r)| (rel, r.kind == b'd'))
            .filter(|(rel, is_dir)| !self.keeps(rel, *is_dir))
            .collect();
        extra.sort();
        let mut last: Option<&Vec<u8>> = None;
        for (rel, is_dir) in extra {
            if last.is_some_and(|l| is_below(rel, l)) {
                continue;
            }
            self.remove(rel, is_dir);
            last = Some(rel);
        }
    }
}

/// Remote paths below those of `paths` that are directories here, which this side
/// does not have (temporaries aside): what `"delete": true` removes when such a
/// directory is pushed by path (`sync DIR`, or a directory event in `watch`), as a
/// whole push of the mapping would.
fn extras_below<'a>(paths: &[Vec<u8>], source: &Source, state: &'a RootState) -> Vec<&'a Vec<u8>> {
    let local: HashMap<&[u8], &Kind> = source
        .entries
        .iter()
        .map(|e| (e.rel.as_os_str().as_bytes(), &e.kind))
        .collect();
    let dirs: Vec<&Vec<u8>> = paths
        .iter()
        .filter(|p| matches!(local.get(p.as_slice()), Some(Kind::Dir { .. })))
        .collect();
    state
        .entries
        .keys()
        .filter(|rel| dirs.iter().any(|d| is_below(rel, d)))
        .filter(|rel| !local.contains_key(rel.as_slice()) && !remote::is_tmp_name(basename(rel)))
        .collect()
}

/// Whether `rel` is named like a backup `"backups": n` keeps: `NAME.k` with k from 1
/// to n (decimal, no leading zero). Such remote files are never removed by delete.
pub(crate) fn is_backup_name(rel: &[u8], n: u32) -> bool {
    let name = basename(rel);
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let suffix = &name[dot + 1..];
    dot > 0
        && !suffix.starts_with(b"0")
        && std::str::from_utf8(suffix)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|k| (1..=n).contains(&k))
}

/// `root/rel` as bytes.
pub(crate) fn join(root: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut p = root.to_vec();
    if rel.is_empty() {
        return p;
    }
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(rel);
    p
}

/// True when `rel` lies strictly below directory `dir` (both relative, `/`-separated).
pub(crate) fn is_below(rel: &[u8], dir: &[u8]) -> bool {
    rel.len() > dir.len() && rel.starts_with(dir) && rel[dir.len()] == b'/'
}

/// The last component of a `/`-separated path.
pub(crate) fn basename(p: &[u8]) -> &[u8] {
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

/// Remote path bytes for humans (lossy for non-UTF-8).
pub(crate) fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// `local -> remote` for messages.
pub(crate) fn describe(item: &Item, root: &[u8]) -> String {
    format!(
        "{} -> {}",
        item.local.display(),
        show(&join(root, &item.rel))
    )
}

/// The rules as tables (issue 15): each case is data in, a plan out.
#[cfg(test)]
mod tests;

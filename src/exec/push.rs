//! Bringing one host up to date: compare, upload, commit.
//!
//! A host with perl is served by the remote agent ([`by_agent`]): it lists,
//! writes and renames relative to checked directories and confirms each step
//! (issue 13). Every other host is served here, over one connection:
//! 1. one listing script creates missing destination roots and lists what is
//!    there ([`remote::listing_script`], which also applies the ancestor rule and
//!    says who else can write there); where a tar stream may follow, its channel
//!    then waits to become the first stream ([`tar::Reserved`]);
//! 2. each local entry is compared with the remote one by the rules both ways
//!    share ([`compare`]): a file with the same size, mtime (at the precision the
//!    remote keeps, with the host's record of what was last pushed where that is
//!    whole seconds: `push::skip`, [`crate::local::pushed`]) and mode is skipped, or with
//!    `--checksum` the same content; what is sent records why (new, size, mtime,
//!    ...), which `-v` shows; a destination others can write is refused;
//! 3. what differs is uploaded as one tar stream, or through one SCP sink per
//!    destination root, every file under a temporary name of this run in its own
//!    destination directory ([`crate::remote::runs`]); a file that changed
//!    while it was read is sent again;
//! 4. one commit script renames each complete temporary over its destination,
//!    confirming each step, and removes the temporaries of runs that are over.
//!    What the remote confirmed goes into the host's record, saved once at the end.
//!
//! A remote reader therefore sees either the old or the new file, never part of
//! one, whatever happens to the connection.
//!
//! `sync` (and the reconcile `watch` starts with) looks at every mapping whole
//! ([`Scope::All`]) and skips files by size, mtime and mode (by content with
//! `--checksum`). `watch` pushes only the paths that changed ([`Scope::Paths`]):
//! the listing then names just those paths and returns a SHA-256 of each remote
//! file, and a file whose content and mode already match is not sent. That
//! content check is what stops two daemons mapped at each other from sending the
//! same file back and forth.
//! With `"delete": true`, what is gone locally is removed below dest, never
//! above it: removal paths always come from below the mapping's root.
//!
//! Per-mapping options (issue 5): `exclude` patterns keep paths out of the scan,
//! out of removals and out of path pushes; `backups` makes the commit step keep
//! numbered previous versions of a replaced file (and `"delete": true` leaves
//! those `dest.N` files alone); `post_sync` commands run over the same session
//! after the commit, once per batch for each mapping under which something
//! changed ([`crate::exec::post_sync`]). [`dry_run_host`] plans exactly as a push does,
//! with a listing that creates nothing, and records the differences instead of
//! acting on them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow};

use crate::cmd::check;
use crate::config::{Mapping, Target};
use crate::local::pushed::{Pushed, Record};
use crate::local::{self, Entry, Kind, Source};
use crate::reconcile::render::{Change, Diff};
use crate::reconcile::skip;
use crate::remote::runs::Names;
use crate::remote::{self, Commit, ListRoot, RootState};
use crate::report::{Event, HostReport};
use crate::transport::scp::{Outcome, ScpSink};
use crate::transport::ssh::Connection;
use crate::transport::tar;

mod by_agent;

/// Why a file cannot replace what is at its dest. No "remove it": that directory
/// may hold anything (issue 14, bug 3).
const IS_A_DIRECTORY: &str = "the remote path is a directory; change dest (a dest ending in / puts the file inside that directory)";

/// How often a file that keeps changing while it is read is tried in one run.
const MAX_ATTEMPTS: usize = 3;

/// Scanned sources by src path and exclude patterns (see [`local::scan_all`]).
pub type Sources = HashMap<local::ScanKey, Arc<Result<Source, local::ScanError>>>;

/// How much of one mapping to bring up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything: compare the whole tree by size, mtime and mode.
    All,
    /// Only these local paths (each with what is below it), compared by content.
    Paths(BTreeSet<PathBuf>),
}

/// One mapping ready to be compared: its source as scanned now and where it lives remotely.
struct Unit<'a> {
    /// The mapping.
    mapping: &'a Mapping,
    /// Its local side (for [`Scope::Paths`], only the changed paths).
    source: Arc<Result<Source, local::ScanError>>,
    /// Where its remote state is listed.
    root: ListRoot,
    /// Paths (relative to the root) that no longer exist locally.
    gone: Vec<Vec<u8>>,
}

/// Something to bring to the remote, below a destination root.
#[derive(Debug, Clone)]
struct Item {
    /// Path below the root, `/`-separated bytes.
    rel: Vec<u8>,
    /// What to do.
    what: ItemKind,
    /// Local path, for messages and reading.
    local: PathBuf,
    /// Which unit (mapping of this batch) it belongs to: for backups and post_sync.
    unit: usize,
    /// Bytes to upload (files), for progress.
    size: u64,
    /// Whether something is at that path on the remote now (a dry run's `[M]` vs `[+]`).
    exists: bool,
    /// Why it is sent, as `rsync -i` tells it (issue 14): `new`, `type`, or what
    /// differs (`size`, `mtime`, `mode`, `content`, a symlink's `target`); empty for
    /// a removal. `sync -v` prints it, and with `-v` info.log's sent line has it.
    why: String,
    /// A file's attributes as the scan saw them: the file is sent only if it is
    /// still that file (same device and inode; see [`local::open_for_send`]).
    meta: Option<local::FileMeta>,
    /// Whether a symlink at `local` is followed: a file src itself (as scp does), or
    /// a mapping with `"follow_symlinks": true`.
    follow: bool,
    /// The file mode bits the remote copy keeps (setuid and setgid only with
    /// `"keep_special_bits": true`).
    mode_mask: u32,
}

impl Item {
    /// What to read to send this file.
    fn to_send(&self) -> local::ToSend<'_> {
        local::ToSend {
            path: &self.local,
            expect: self.meta.as_ref(),
            follow: self.follow,
            mode_mask: self.mode_mask,
        }
    }
}

#[derive(Debug, Clone)]
enum ItemKind {
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
struct RootWork {
    /// Modes of the local directories below the root, for `D` records.
    dir_modes: HashMap<Vec<u8>, u32>,
    /// Items, sorted by `rel` before upload.
    items: Vec<Item>,
    /// Remote paths to remove (`"delete": true`), with the local path for messages,
    /// the unit, and whether the remote path is a directory.
    removes: Vec<Removal>,
}

/// A remote path to remove because it is gone locally (`"delete": true`).
#[derive(Debug, Clone)]
struct Removal {
    /// Path below the root.
    rel: Vec<u8>,
    /// The local path that is gone, for messages.
    local: PathBuf,
    /// Which unit asked for it.
    unit: usize,
    /// Whether the remote path is a directory (a whole tree goes).
    is_dir: bool,
}

/// What [`plan`] decided for one host: the work per root, and the stale
/// temporaries found by the listing.
struct Plan {
    /// Work per remote root directory.
    work: BTreeMap<Vec<u8>, RootWork>,
    /// Temporaries left by earlier interrupted runs.
    stale: HashSet<Vec<u8>>,
    /// The same, as (root, path below it), sorted.
    stale_at: Vec<(Vec<u8>, Vec<u8>)>,
    /// Destination roots that do not exist (listed without creating them: a dry run).
    missing: BTreeSet<Vec<u8>>,
    /// The listing's channel, waiting to become the first tar stream (see [`list`]).
    reserved: Option<tar::Reserved>,
}

/// Pushes every mapping of `target` over `conn`, filling `report` (one-shot `sync`);
/// with `checksum` (`sync --checksum`) every file is compared by content.
pub fn push_host(
    conn: &Connection,
    target: &Target,
    sources: &Sources,
    checksum: bool,
    report: &mut HostReport,
) {
    let mut pushed = Pushed::open(conn.pushed_dir(), &target.host.address);
    let units = whole_units(target, sources, checksum);
    if let Err(e) = try_push(conn, units, &mut pushed, report) {
        report.fail_host(&format!("{e:#}"));
    }
    save_record(&mut pushed, report);
}

/// Saves what this run sent to the host's record ([`crate::local::pushed`]), also after a
/// failure, for what the host confirmed. A record that cannot be written is a
/// warning: nothing on the host is wrong.
fn save_record(pushed: &mut Pushed, report: &HostReport) {
    if let Err(e) = pushed.save() {
        log::warn!(
            "{}: cannot record what was pushed ({e}); a later sync may miss a same-size edit made within the same second",
            report.address
        );
    }
}

/// One whole unit per mapping of `target`, from the sources scanned before the run.
fn whole_units<'a>(target: &'a Target, sources: &Sources, checksum: bool) -> Vec<Unit<'a>> {
    target
        .mappings
        .iter()
        .map(|m| {
            let source = sources
                .get(&(
                    m.src.clone(),
                    m.exclude.patterns().to_vec(),
                    m.follow_symlinks,
                ))
                .cloned()
                .unwrap_or_else(|| Arc::new(Err("src was not scanned".to_string())));
            whole_unit(m, source, checksum)
        })
        .collect()
}

/// `sync --dry-run` for one host: lists the remote without creating anything,
/// compares as [`push_host`] would, and records each difference in `report.diffs`.
/// Nothing on the remote changes: no directory, temporary, backup or removal, and
/// no post_sync command runs.
pub fn dry_run_host(
    conn: &Connection,
    target: &Target,
    sources: &Sources,
    checksum: bool,
    report: &mut HostReport,
) {
    let units = whole_units(target, sources, checksum);
    dry_run_units(conn, &units, &target.host.user, report);
}

/// The body of [`dry_run_host`] and [`dry_run_changes`]: asks `check`'s question
/// first ([`writable_units`]), then lists what `sync` could write without creating
/// anything, through the agent where the host has perl, and records the differences
/// (consulting the host's record of what was pushed as a push does, writing nothing).
/// `user`: the login, for the reasons.
fn dry_run_units(conn: &Connection, units: &[Unit<'_>], user: &str, report: &mut HostReport) {
    let Some((usable, made_below)) = writable_units(conn, usable(units, report), user, report)
    else {
        return;
    };
    let pushed = Pushed::open(conn.pushed_dir(), &report.address);
    let planned = match by_agent::list(conn, &usable, false) {
        Ok(Some((agent, listed))) => {
            let plan = by_agent::compare(&usable, &listed, &pushed, report);
            agent.finish().map(|()| Some(plan))
        }
        Ok(None) => plan(conn, &usable, &pushed, report, false),
        Err(e) => Err(e),
    };
    match planned {
        Ok(Some(plan)) => report.diffs.extend(diffs(&plan, &made_below)),
        Ok(None) => {}
        Err(e) => report.fail_host(&format!("{e:#}")),
    }
}

/// A usable unit: its index, the unit, its scanned source (see [`usable`]).
type Usable<'u, 'm> = (usize, &'u Unit<'m>, &'u Source);

/// For each root `sync` would make, its nearest existing ancestor.
type MadeBelow = HashMap<Vec<u8>, Vec<u8>>;

/// The dry run's share of `check` (issue 14, bug 5): asks the host, in one script,
/// whether the login `user` can write (or make) the directory each unit writes into.
/// A unit that cannot be written is failed here, with `check`'s reason and one
/// `[!]` line per directory, and is not compared: `sync` would fail it. Returns the
/// others, and for each root that `sync` would make, its nearest existing ancestor.
/// `None` when the check could not run (the host is failed).
fn writable_units<'u, 'm>(
    conn: &Connection,
    usable: Vec<Usable<'u, 'm>>,
    user: &str,
    report: &mut HostReport,
) -> Option<(Vec<Usable<'u, 'm>>, MadeBelow)> {
    let probes: Vec<check::Probe> = usable
        .iter()
        .map(|(_, u, src)| check::Probe::of(u.mapping, src.is_dir))
        .collect();
    let states = if probes.is_empty() {
        Vec::new()
    } else {
        match check::probe_dirs(conn, &probes, user) {
            Ok(states) => states,
            Err(e) => {
                report.fail_host(&format!("cannot run the remote check: {e:#}"));
                return None;
            }
        }
    };
    let mut writable = Vec::new();
    let mut made_below = HashMap::new();
    let mut refused = BTreeSet::new();
    for ((unit, probe), state) in usable.into_iter().zip(&probes).zip(states) {
        let root = unit.1.root.dir.clone();
        match state.problem {
            Some(why) => {
                report.fail(probe.label(), &why);
                if refused.insert(root.clone()) {
                    report.diffs.push(Diff {
                        path: root,
                        change: Change::Unwritable,
                        is_dir: true,
                        reason: why,
                    });
                }
            }
            None => {
                if let Some(existing) = state.made_below {
                    made_below.insert(root, existing.into_bytes());
                }
                writable.push(unit);
            }
        }
    }
    Some((writable, made_below))
}

/// The differences a plan would make, as absolute remote paths. A missing root is
/// made (`mkdir -p`) by the real run's listing: every directory from below its
/// nearest existing ancestor (`made_below`, where known) down to it is added.
fn diffs(plan: &Plan, made_below: &MadeBelow) -> Vec<Diff> {
    let mut out: Vec<Diff> = plan
        .missing
        .iter()
        .flat_map(|root| match made_below.get(root) {
            Some(existing) => crate::reconcile::render::made_dirs(root, existing),
            None => vec![root.clone()],
        })
        .map(|path| Diff {
            path,
            change: Change::Added,
            is_dir: true,
            reason: String::new(),
        })
        .collect();
    for (root, w) in &plan.work {
        for item in &w.items {
            let (change, is_dir) = match item.what {
                ItemKind::Dir => (added_or_updated(item.exists), true),
                ItemKind::File | ItemKind::Symlink { .. } => (added_or_updated(item.exists), false),
                ItemKind::Removed => (Change::Deleted, false),
            };
            out.push(Diff {
                path: join(root, &item.rel),
                change,
                is_dir,
                reason: String::new(),
            });
        }
        for r in &w.removes {
            out.push(Diff {
                path: join(root, &r.rel),
                change: Change::Deleted,
                is_dir: r.is_dir,
                reason: String::new(),
            });
        }
    }
    out
}

/// `[M]` when something is there already, `[+]` when not.
fn added_or_updated(exists: bool) -> Change {
    if exists {
        Change::Updated
    } else {
        Change::Added
    }
}

/// Pushes what `work` names (mapping index and scope) over `conn`, scanning the local
/// side now, so the latest content is what is sent. An `Err` means the connection or
/// the remote shell failed and the whole batch should be retried; per-file failures
/// are in `report`.
pub fn push_changes(
    conn: &Connection,
    target: &Target,
    work: &[(usize, Scope)],
    checksum: bool,
    report: &mut HostReport,
) -> Result<()> {
    let mut pushed = Pushed::open(conn.pushed_dir(), &target.host.address);
    let pushing = try_push(
        conn,
        scoped_units(target, work, checksum),
        &mut pushed,
        report,
    );
    save_record(&mut pushed, report);
    pushing
}

/// `sync --dry-run PATH...` for one host: [`dry_run_host`] for what `work` names,
/// scanned now (see [`push_changes`]).
pub fn dry_run_changes(
    conn: &Connection,
    target: &Target,
    work: &[(usize, Scope)],
    checksum: bool,
    report: &mut HostReport,
) {
    let units = scoped_units(target, work, checksum);
    dry_run_units(conn, &units, &target.host.user, report);
}

/// One unit per entry of `work` (mapping index and scope), scanning the local side
/// now; `checksum` for whole mappings that are compared by content.
fn scoped_units<'a>(target: &'a Target, work: &[(usize, Scope)], checksum: bool) -> Vec<Unit<'a>> {
    work.iter()
        .filter_map(|(i, scope)| {
            let m = target.mappings.get(*i)?;
            Some(match scope {
                Scope::All => whole_unit(
                    m,
                    Arc::new(local::scan(&m.src, &m.exclude, m.follow_symlinks)),
                    checksum,
                ),
                Scope::Paths(paths) => paths_unit(m, paths, checksum),
            })
        })
        .collect()
}

/// A unit covering a whole mapping; `checksum`: its listing hashes every file.
fn whole_unit(
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

/// A unit covering only `paths` (local paths below, or equal to, the mapping's src):
/// the files named compared by content, those below a named directory too with
/// `checksum`; the whole mapping when a path is its src.
fn paths_unit<'a>(m: &'a Mapping, paths: &BTreeSet<PathBuf>, checksum: bool) -> Unit<'a> {
    let src_is_dir = std::fs::metadata(&m.src).map(|md| md.is_dir());
    let mut entries: Vec<Entry> = Vec::new();
    let mut errors = Vec::new();
    let mut gone = Vec::new();
    let mut rels = Vec::new();
    match src_is_dir {
        Ok(false) => {
            // A file mapping: the only path is src itself.
            let dest = m.file_dest();
            let (_, name) = split_dest(&dest);
            rels.push(name.to_vec());
            match local::scan(&m.src, &m.exclude, m.follow_symlinks) {
                Ok(s) => entries = s.entries,
                Err(_) => gone.push(name.to_vec()),
            }
        }
        Ok(true) => {
            for p in paths {
                let Ok(rel) = p.strip_prefix(&m.src) else {
                    continue;
                };
                if rel.as_os_str().is_empty() {
                    // The root itself changed: look at all of it.
                    return whole_unit(
                        m,
                        Arc::new(local::scan(&m.src, &m.exclude, m.follow_symlinks)),
                        checksum,
                    );
                }
                // An excluded path is never pushed (issue 5). One that is gone is
                // judged by plan_removals, which knows what the remote has there.
                let is_dir = std::fs::symlink_metadata(p).map(|md| md.is_dir());
                if match is_dir {
                    Ok(d) => m.exclude.is_excluded(rel, d),
                    Err(_) => m.exclude.surely_excluded(rel),
                } {
                    log::trace!("{}: excluded, not pushed", p.display());
                    continue;
                }
                let rel_bytes = rel.as_os_str().as_bytes().to_vec();
                add_ancestors(m, rel, &mut entries);
                match local::scan_below(&m.src, rel, &m.exclude, m.follow_symlinks) {
                    Ok(found) => entries.extend(found),
                    Err(local::Below::Missing) => gone.push(rel_bytes.clone()),
                    Err(local::Below::Unreadable(msg)) => errors.push((p.clone(), msg)),
                }
                rels.push(rel_bytes);
            }
        }
        Err(ref e) => errors.push((m.src.clone(), format!("cannot read src: {e}"))),
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    entries.dedup_by(|a, b| a.rel == b.rel);
    let is_dir = src_is_dir.as_ref().copied().unwrap_or(true);
    let source = if let (true, Some((p, reason))) =
        (entries.is_empty() && gone.is_empty(), errors.first())
    {
        Err(format!("{}: {reason}", p.display()))
    } else {
        Ok(Source {
            is_dir,
            entries,
            errors,
        })
    };
    Unit {
        mapping: m,
        root: list_root(m, is_dir, Some(rels), checksum),
        source: Arc::new(source),
        gone,
    }
}

/// Adds a `Dir` entry for each directory between the mapping's src and `rel`.
fn add_ancestors(m: &Mapping, rel: &Path, entries: &mut Vec<Entry>) {
    let mut anc = rel.parent();
    while let Some(a) = anc.filter(|a| !a.as_os_str().is_empty()) {
        if let Ok(md) = std::fs::symlink_metadata(m.src.join(a))
            && md.is_dir()
        {
            use std::os::unix::fs::MetadataExt;
            entries.push(Entry {
                rel: a.to_path_buf(),
                kind: Kind::Dir {
                    mode: md.mode() & 0o7777,
                },
            });
        }
        anc = a.parent();
    }
}

/// The body of [`push_host`] and [`push_changes`]; an `Err` means the connection or
/// remote shell failed.
fn try_push(
    conn: &Connection,
    units: Vec<Unit<'_>>,
    pushed: &mut Pushed,
    report: &mut HostReport,
) -> Result<()> {
    let usable = usable(&units, report);
    if let Some((agent, listed)) = by_agent::list(conn, &usable, true)? {
        let plan = by_agent::compare(&usable, &listed, pushed, report);
        return by_agent::apply(conn, agent, plan, &listed, &units, pushed, report);
    }
    let Some(Plan {
        work,
        stale,
        mut reserved,
        ..
    }) = plan(conn, &usable, pushed, report, true)?
    else {
        return Ok(());
    };
    let planned = work.values().flat_map(|w| &w.items);
    let (files, bytes) = planned
        .filter(|i| matches!(i.what, ItemKind::File))
        .fold((0, 0), |(n, b), i| (n + 1, b + i.size));
    report.event(Event::Planned { files, bytes });

    // What each unit changed in this batch (files, links, removals, directories).
    let mut changed = vec![0u64; units.len()];
    // Stale temporaries, until a commit has removed them.
    let mut stale = Some(stale);
    // Commit steps not run yet, in order.
    let mut pending = Steps::default();
    let mut work = work;
    for (root, w) in work.iter_mut() {
        for r in std::mem::take(&mut w.removes) {
            let path = join(root, &r.rel);
            if let Some(stale) = &mut stale {
                stale.retain(|s| !is_below(s, &path));
            }
            let item = Item {
                rel: r.rel.clone(),
                what: ItemKind::Removed,
                local: r.local,
                unit: r.unit,
                size: 0,
                exists: true,
                why: String::new(),
                meta: None,
                follow: false,
                mode_mask: 0o1777,
            };
            pending.push(
                Commit::Remove {
                    root: root.clone(),
                    rel: r.rel,
                },
                Some(Reported::plain(item)),
            );
        }
        for item in w.items.iter().filter(|i| matches!(i.what, ItemKind::Dir)) {
            // A directory is created (or its mode set) by the upload; counted here,
            // before the upload, since a refused one fails its contents anyway.
            changed[item.unit] += 1;
        }
    }
    let mut to_send: BTreeMap<Vec<u8>, RootWork> = work;
    for attempt in 1..=MAX_ATTEMPTS {
        let mut retry: BTreeMap<Vec<u8>, RootWork> = BTreeMap::new();
        for (root, mut w) in std::mem::take(&mut to_send) {
            w.items.sort_by(|a, b| a.rel.cmp(&b.rel));
            let links = symlink_steps(conn.names(), &root, &w, &units);
            let results = upload(conn, &root, &w, report, &mut reserved)?;
            pending.extend(rename_steps(conn.names(), &root, &results, &units));
            pending.extend(links);
            for (item, outcome) in results {
                match outcome {
                    Outcome::Stored { .. } => {
                        if let Some(stale) = &mut stale {
                            stale.remove(&conn.names().for_path(&join(&root, &item.rel)));
                        }
                    }
                    Outcome::Changed if attempt < MAX_ATTEMPTS => {
                        log::info!(
                            "{}: {} changed while it was read; sending it again",
                            report.address,
                            item.local.display()
                        );
                        // As it is now: a file is sent if it is still that file, a
                        // symlink as a symlink (issue 13); gone, nothing is sent.
                        if let Some(now) = by_agent::rescan(&item) {
                            let r = retry.entry(root.clone()).or_default();
                            r.dir_modes.clone_from(&w.dir_modes);
                            r.items.push(now);
                        }
                    }
                    Outcome::Changed => report.fail(
                        &describe(&item, &root),
                        "the local file kept changing while it was read; it will be sent on the next run",
                    ),
                    Outcome::Failed(reason) => report.fail(&describe(&item, &root), &reason),
                    Outcome::Vanished => log::debug!(
                        "{}: {} is gone; nothing to send",
                        report.address,
                        item.local.display()
                    ),
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        // Symlinks were already queued; only files are retried.
        to_send = retry;
    }

    if let Some(r) = reserved.take() {
        r.release();
    }
    // What no stream committed: stale temporaries first, so nothing this run commits
    // is removed.
    let mut all = stale_steps(stale.as_ref(), &HashSet::new());
    all.extend(pending);
    if !all.steps.is_empty() {
        let out = commit(conn, &all.steps)?;
        settle(&all, &out, report, pushed, &mut changed);
    }
    // post_sync: once per batch for each mapping under which something landed.
    for (unit, n) in units.iter().zip(changed) {
        if n > 0 && !unit.mapping.post_sync.is_empty() {
            crate::exec::post_sync::run(conn, unit.mapping, report);
        }
    }
    Ok(())
}

/// Commit steps in order, each with what it reports on (`None` for the removal of a
/// stale temporary, which reports nothing).
#[derive(Default, Clone)]
struct Steps {
    /// The steps, as the commit runs them.
    steps: Vec<Commit>,
    /// One per step.
    items: Vec<Option<Reported>>,
}

/// What a commit step reports once the remote confirms it.
#[derive(Clone)]
struct Reported {
    /// The item.
    item: Item,
    /// Bytes of content it carried (0 but for files).
    bytes: u64,
    /// For a file, what the host's record keeps of it ([`crate::local::pushed`]).
    record: Option<Record>,
}

impl Reported {
    /// A step that carries no content: a removal, a symlink.
    fn plain(item: Item) -> Reported {
        Reported {
            item,
            bytes: 0,
            record: None,
        }
    }
}

impl Steps {
    fn push(&mut self, step: Commit, item: Option<Reported>) {
        self.steps.push(step);
        self.items.push(item);
    }

    fn extend(&mut self, other: Steps) {
        self.steps.extend(other.steps);
        self.items.extend(other.items);
    }
}

/// Removals of the stale temporaries, except those in `written` (being rewritten now).
fn stale_steps(stale: Option<&HashSet<Vec<u8>>>, written: &HashSet<Vec<u8>>) -> Steps {
    let mut out = Steps::default();
    let mut paths: Vec<&Vec<u8>> = stale
        .into_iter()
        .flatten()
        .filter(|p| !written.contains(*p))
        .collect();
    paths.sort();
    for path in paths {
        out.push(Commit::RemoveStale { path: path.clone() }, None);
    }
    out
}

/// A rename into place for every file of `results` that arrived whole.
fn rename_steps(
    names: &Names,
    root: &[u8],
    results: &[(Item, Outcome)],
    units: &[Unit<'_>],
) -> Steps {
    let mut out = Steps::default();
    for (item, outcome) in results {
        if let Outcome::Stored { meta, sha256 } = outcome {
            let dest = join(root, &item.rel);
            let tmp = names.for_path(&dest);
            let backups = units[item.unit].mapping.backups;
            let reported = Reported {
                item: item.clone(),
                bytes: meta.size,
                record: Some(Record::sent(meta, sha256)),
            };
            out.push(Commit::Rename { tmp, dest, backups }, Some(reported));
        }
    }
    out
}

/// The symlinks to make below `root`.
fn symlink_steps(names: &Names, root: &[u8], w: &RootWork, units: &[Unit<'_>]) -> Steps {
    let mut out = Steps::default();
    for item in &w.items {
        if let ItemKind::Symlink { target } = &item.what {
            let dest = join(root, &item.rel);
            out.push(
                Commit::Symlink {
                    target: target.clone(),
                    tmp: names.for_path(&dest),
                    dest,
                    backups: units[item.unit].mapping.backups,
                },
                Some(Reported::plain(item.clone())),
            );
        }
    }
    out
}

/// Reports what a commit of `all` did, per item; counts what changed per unit and
/// notes it in the host's record. A step is done only where the commit confirmed
/// it; one it neither confirmed nor refused did not happen (the commit died: issue
/// 13, finding 6).
fn settle(
    all: &Steps,
    out: &crate::transport::ssh::ScriptOutput,
    report: &mut HostReport,
    pushed: &mut Pushed,
    changed: &mut [u64],
) {
    let (failures, done) = remote::parse_commit(&out.stdout);
    let mut failed: HashMap<usize, String> = failures.into_iter().collect();
    let stderr = crate::escape::first_line(out.stderr.as_bytes(), 200);
    for (i, (step, reported)) in all.steps.iter().zip(&all.items).enumerate() {
        let Some(Reported {
            item,
            bytes,
            record,
        }) = reported
        else {
            continue;
        };
        let remote = match step {
            Commit::Rename { dest, .. } | Commit::Symlink { dest, .. } => dest.clone(),
            Commit::Remove { root, rel } => join(root, rel),
            Commit::RemoveStale { path } => path.clone(),
        };
        let remote_path = show(&remote);
        let local = item.local.display().to_string();
        let refused = failed.remove(&i).map(|reason| {
            if stderr.is_empty() {
                reason
            } else {
                format!("{reason} ({stderr})")
            }
        });
        match refused {
            Some(reason) => report.fail(&format!("{local} -> {remote_path}"), &reason),
            None if !done.contains(&i) => report.fail(
                &format!("{local} -> {remote_path}"),
                &format!(
                    "not confirmed by the remote: the commit stopped (exit status {}{})",
                    out.status,
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                ),
            ),
            None if matches!(item.what, ItemKind::Removed) => {
                changed[item.unit] += 1;
                report.removed_path(&local, &remote_path);
                pushed.forget(remote);
            }
            None => {
                changed[item.unit] += 1;
                report.sent_file(&local, &remote_path, *bytes, &item.why);
                match record {
                    Some(r) => pushed.set(remote, r.clone()),
                    None => pushed.forget(remote),
                }
            }
        }
    }
}

/// The units whose local side could be scanned, with their index and source; the
/// others are reported as failed here, once, whichever way the host is served.
fn usable<'u, 'm>(
    units: &'u [Unit<'m>],
    report: &mut HostReport,
) -> Vec<(usize, &'u Unit<'m>, &'u Source)> {
    let mut usable = Vec::new();
    for (i, u) in units.iter().enumerate() {
        match u.source.as_ref() {
            Ok(src) => usable.push((i, u, src)),
            Err(reason) => report.fail(&u.mapping.src.display().to_string(), reason),
        }
    }
    usable
}

/// Lists the remote side of every usable unit over the listing script (hosts the
/// agent cannot serve) and compares it with the local side. `create`: the listing
/// makes missing destination roots (false for a dry run, which changes nothing).
/// `Ok(None)` when no unit is usable; an `Err` means the connection or remote shell
/// failed.
fn plan(
    conn: &Connection,
    usable: &[(usize, &Unit<'_>, &Source)],
    pushed: &Pushed,
    report: &mut HostReport,
    create: bool,
) -> Result<Option<Plan>> {
    let roots: Vec<ListRoot> = usable.iter().map(|(_, u, _)| u.root.clone()).collect();
    if roots.is_empty() {
        return Ok(None);
    }
    let probe_tar = conn.tar_unknown();
    let (listing, mut reserved) = list(conn, &roots, create, probe_tar)?;
    let parsed = remote::parse_listing(&listing.stdout, roots.len()).map_err(|e| {
        anyhow!(
            "cannot read the remote listing: {e} (does the remote login shell print text, e.g. from ~/.bashrc? it must not, as for rsync; does the remote have GNU find?); stderr: {}",
            crate::escape::first_line(listing.stderr.as_bytes(), 200)
        )
    })?;
    if let Some(found) = parsed.tar {
        conn.set_tar_probed(found);
    }
    if !conn.tar_maybe()
        && let Some(r) = reserved.take()
    {
        r.release();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let runs = conn.runs_dir();
    let client = conn.client_id();
    let removable = |name: &[u8], e: &remote::RemoteEntry| {
        e.kind != b'd'
            && crate::remote::runs::removable(name, e.mtime, now, client, &|run| {
                crate::remote::runs::alive(runs, run)
            })
    };
    let mut plan = compare(
        usable,
        &roots,
        &parsed.states,
        pushed,
        report,
        &listing.stderr,
        Some(&removable),
    );
    plan.reserved = reserved;
    Ok(Some(plan))
}

/// Which temporaries found on a host without perl may be removed (name, entry).
type StaleRule<'a> = dyn Fn(&[u8], &remote::RemoteEntry) -> bool + 'a;

/// Compares every usable unit with what the listing found under its root (pure:
/// no I/O, apart from hashing local files where the remote sent a hash), and
/// decides what to send, remove and clean up. `stderr` is the listing's, for the
/// warning about an incomplete one. `stale_rule`: `None` for a host the agent
/// serves, which acts relative to checked directories (so a destination others can
/// write is served) and decides itself which temporaries are stale; otherwise such
/// a destination is refused (issue 13), and `stale_rule` says which temporaries
/// found may be removed ([`crate::remote::runs::removable`]).
fn compare(
    usable: &[(usize, &Unit<'_>, &Source)],
    roots: &[ListRoot],
    states: &[RootState],
    pushed: &Pushed,
    report: &mut HostReport,
    stderr: &str,
    stale_rule: Option<&StaleRule<'_>>,
) -> Plan {
    let agent = stale_rule.is_none();
    let mut work: BTreeMap<Vec<u8>, RootWork> = BTreeMap::new();
    let mut stale: HashSet<Vec<u8>> = HashSet::new();
    let mut stale_at = Vec::new();
    let mut missing = BTreeSet::new();
    for (((idx, unit, source), root), state) in usable.iter().zip(roots).zip(states) {
        let mapping = unit.mapping;
        if let Some(err) = &state.error {
            report.fail(
                &format!("{} -> {}", mapping.src.display(), mapping.dest),
                &format!("cannot use remote directory {}: {err}", show(&root.dir)),
            );
            continue;
        }
        if !agent && let Some(why) = &state.open {
            report.fail(
                &format!("{} -> {}", mapping.src.display(), mapping.dest),
                &format!(
                    "other users can write where this mapping writes ({why}), and this host has no perl for hostsync's agent, which is what writes safely there; install perl on the host, or set [ssh] strict_modes = no"
                ),
            );
            continue;
        }
        if state.missing {
            missing.insert(root.dir.clone());
        }
        if state.incomplete {
            log::warn!(
                "{}: listing of {} was incomplete ({}); unchanged files there may be sent again",
                report.address,
                show(&root.dir),
                crate::escape::first_line(stderr.as_bytes(), 200)
            );
        }
        for (path, reason) in &source.errors {
            report.fail(&path.display().to_string(), reason);
        }
        for (rel, _) in state.entries.iter().filter(|(rel, e)| {
            remote::is_tmp_name(basename(rel)) && stale_rule.is_none_or(|ok| ok(basename(rel), e))
        }) {
            if stale.insert(join(&root.dir, rel)) {
                stale_at.push((root.dir.clone(), rel.clone()));
            }
        }
        let w = work.entry(root.dir.clone()).or_default();
        let remote = Remote {
            root: &root.dir,
            state,
            pushed,
        };
        plan_mapping(mapping, *idx, source, &remote, w, report);
        if mapping.delete && !source.errors.is_empty() {
            // rsync's rule: after a local read error, delete nothing, since what could
            // not be read would look like it is gone.
            log::warn!(
                "{}: {} -> {}: local read errors, so nothing is deleted on the remote this time",
                report.address,
                mapping.src.display(),
                mapping.dest
            );
        } else if mapping.delete {
            plan_removals(unit, *idx, source, state, w);
        }
    }
    stale_at.sort();
    Plan {
        work,
        stale,
        stale_at,
        missing,
        reserved: None,
    }
}

/// The longest listing command that goes inline (`sh -c SCRIPT`, one argument, which
/// Linux caps at 128 KiB); a longer one is fed on stdin and keeps no channel.
const MAX_INLINE_COMMAND: usize = 96 * 1024;

/// The most a listing of `roots` may print: a generous allowance per root, plus
/// one per path a path listing asks about (issue 13, "Bounded").
fn listing_cap(roots: &[ListRoot]) -> u64 {
    roots
        .iter()
        .map(|r| (64 << 20) + 64 * 1024 * r.paths.as_ref().map_or(0, Vec::len) as u64)
        .sum()
}

/// Runs the listing. Where a tar stream may follow (a real run, tar not known to be
/// missing) and the script is short enough to go inline, the listing keeps its
/// channel for the batch's first stream ([`tar::Reserved`]): two round trips less.
fn list(
    conn: &Connection,
    roots: &[ListRoot],
    create: bool,
    probe_tar: bool,
) -> Result<(crate::transport::ssh::ScriptOutput, Option<tar::Reserved>)> {
    if create && conn.tar_maybe() {
        // No listing record can match a fresh token by chance.
        let token = remote::fresh_hex();
        let script = remote::listing_then_tar(roots, probe_tar, conn.strict_modes(), tar::REMOTE);
        let command = format!(
            "sh -c {} {token}",
            String::from_utf8_lossy(&remote::quote(&script))
        );
        if command.len() <= MAX_INLINE_COMMAND {
            let (channel, out) =
                conn.run_until(&command, &remote::listing_end(&token), listing_cap(roots))?;
            let roots = roots.iter().map(|r| r.dir.clone()).collect();
            return Ok((out, Some(tar::Reserved { channel, roots })));
        }
    }
    let out = conn.run_script(
        &remote::listing_script(roots, create, probe_tar, conn.strict_modes()),
        listing_cap(roots),
    )?;
    Ok((out, None))
}

/// Runs the commit steps with sh and `mv` (see [`remote::commit_script`]).
fn commit(conn: &Connection, steps: &[Commit]) -> Result<crate::transport::ssh::ScriptOutput> {
    // Each step answers with one short record; its reason is at most a path long.
    let cap = 64 * 1024 + 8 * 1024 * steps.len() as u64;
    conn.run_script(&remote::commit_script(steps), cap)
}

/// Where a mapping's remote state lives: dest itself for a directory src, the
/// parent (one level deep) of [`Mapping::file_dest`] for a file src; `checksum`: a
/// whole listing hashes every file.
fn list_root(m: &Mapping, is_dir: bool, paths: Option<Vec<Vec<u8>>>, checksum: bool) -> ListRoot {
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
fn split_dest(dest: &str) -> (&[u8], &[u8]) {
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
}

/// Compares one mapping's local entries with the remote state; adds what differs to `w`.
fn plan_mapping(
    m: &Mapping,
    unit: usize,
    source: &Source,
    remote: &Remote<'_>,
    w: &mut RootWork,
    report: &mut HostReport,
) {
    let Remote { root, state, .. } = *remote;
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
        let there = state.entries.get(&rel);
        let remote_path = || format!("{} -> {}", local.display(), show(&join(root, &rel)));
        let item = |what| {
            let why = skip::why_sent(
                &entry.kind,
                there,
                state.hashes.contains_key(&rel),
                m.file_mode(0o7777),
            );
            Item {
                rel: rel.clone(),
                what,
                local: local.clone(),
                unit,
                size: match &entry.kind {
                    Kind::File(meta) => meta.size,
                    _ => 0,
                },
                exists: there.is_some(),
                why,
                meta: match &entry.kind {
                    Kind::File(meta) => Some(*meta),
                    _ => None,
                },
                follow: !source.is_dir || m.follow_symlinks,
                mode_mask: m.file_mode(0o7777),
            }
        };
        if let Some((_, why)) = blocked.iter().find(|(b, _)| is_below(&rel, b)) {
            if !matches!(entry.kind, Kind::Dir { .. }) {
                report.fail(&remote_path(), why);
            }
            continue;
        }
        if rel.contains(&b'\n') {
            report.fail(
                &remote_path(),
                "the name contains a newline, which the SCP protocol cannot carry; rename it",
            );
            continue;
        }
        // Issue 13: a local name in the temporaries' namespace would be taken for
        // one (sent in one run, removed as stale in the next).
        if local
            .file_name()
            .is_some_and(|n| remote::is_tmp_name(n.as_bytes()))
        {
            report.fail(
                &remote_path(),
                &format!(
                    "the name starts with {}, which hostsync keeps for its temporaries; rename it, or exclude it",
                    remote::TMP_PREFIX
                ),
            );
            continue;
        }
        match &entry.kind {
            Kind::Dir { mode } => {
                w.dir_modes.insert(rel.clone(), *mode);
                match there {
                    Some(r) if r.kind == b'd' && r.mode == *mode => {}
                    Some(r) if r.kind == b'd' => w.items.push(item(ItemKind::Dir)),
                    None => w.items.push(item(ItemKind::Dir)),
                    Some(_) => {
                        let why = "the remote path exists and is not a directory; remove it or change dest".to_string();
                        report.fail(&remote_path(), &why);
                        blocked.push((rel.clone(), why));
                    }
                }
            }
            Kind::File(meta) => match there {
                Some(r) if r.kind == b'd' => report.fail(&remote_path(), IS_A_DIRECTORY),
                Some(r)
                    if r.kind == b'f'
                        && r.size == meta.size
                        && r.mode == m.file_mode(meta.mode)
                        && skip::same_content(
                            state.hashes.get(&rel),
                            r,
                            meta,
                            &local,
                            remote.pushed.get(&join(root, &rel)),
                        ) =>
                {
                    report.skipped += 1;
                }
                _ => w.items.push(item(ItemKind::File)),
            },
            Kind::Symlink { target } => match there {
                Some(r) if r.kind == b'l' && r.target == target.as_bytes() => report.skipped += 1,
                Some(r) if r.kind == b'd' => report.fail(&remote_path(), IS_A_DIRECTORY),
                _ => w.items.push(item(ItemKind::Symlink {
                    target: target.as_bytes().to_vec(),
                })),
            },
        }
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
    let m = unit.mapping;
    let keep = |rel: &[u8], is_dir: bool| {
        m.exclude.is_excluded_bytes(rel, is_dir) || (!is_dir && is_backup_name(rel, m.backups))
    };
    let mut remove = |rel: &Vec<u8>, is_dir: bool| {
        w.removes.push(Removal {
            rel: rel.clone(),
            local: m.src.join(std::ffi::OsStr::from_bytes(rel)),
            unit: idx,
            is_dir,
        })
    };
    if let Some(paths) = &unit.root.paths {
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
            if keep(rel, r.kind == b'd') {
                log::trace!("{}: kept on the remote (excluded or a backup)", show(rel));
                continue;
            }
            remove(rel, r.kind == b'd');
            last = Some(rel);
        }
        return;
    }
    let local: HashSet<&[u8]> = source
        .entries
        .iter()
        .map(|e| e.rel.as_os_str().as_bytes())
        .collect();
    let mut extra: Vec<(&Vec<u8>, bool)> = state
        .entries
        .iter()
        .filter(|(rel, _)| !local.contains(rel.as_slice()) && !remote::is_tmp_name(basename(rel)))
        .map(|(rel, r)| (rel, r.kind == b'd'))
        .filter(|(rel, is_dir)| !keep(rel, *is_dir))
        .collect();
    extra.sort();
    let mut last: Option<&Vec<u8>> = None;
    for (rel, is_dir) in extra {
        if last.is_some_and(|l| is_below(rel, l)) {
            continue;
        }
        remove(rel, is_dir);
        last = Some(rel);
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
fn is_backup_name(rel: &[u8], n: u32) -> bool {
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

/// Uploads the directories and files of one root: one tar stream where the remote
/// has tar; otherwise (or when the remote tar fails) one SCP sink. Neither commits:
/// each file item comes back with its outcome.
/// When the upload breaks off (connection lost, shutdown), the temporaries it may have
/// written are removed, best effort, before the error is returned.
fn upload(
    conn: &Connection,
    root: &[u8],
    w: &RootWork,
    report: &mut HostReport,
    reserved: &mut Option<tar::Reserved>,
) -> Result<Vec<(Item, Outcome)>> {
    let files = w.items.iter().filter(|i| matches!(i.what, ItemKind::File));
    let files = files.count();
    // Named in README, "Logs": the way each batch goes.
    let way = |how: &str| {
        if files > 0 {
            let root = crate::escape::escape(root);
            log::debug!(
                "{}: {files} item(s) under {root} over {how}",
                report.address
            );
        }
    };
    if conn.has_tar() {
        way("tar");
        let tick = |bytes| report.event(Event::Uploaded { bytes });
        let why = match upload_tar(conn, root, w, reserved, &tick)
            .inspect_err(|_| cleanup(conn, root, w))?
        {
            Ok(uploaded) => return Ok(uploaded),
            Err(why) => why,
        };
        log::info!(
            "{}: the remote tar failed under {} ({why}); sending this batch over scp",
            report.address,
            crate::escape::escape(root)
        );
        conn.disable_tar();
    }
    way("scp");
    upload_all(conn, root, w, report).inspect_err(|_| cleanup(conn, root, w))
}

/// Removes, best effort, the temporaries an interrupted upload under `root` may have left.
fn cleanup(conn: &Connection, root: &[u8], w: &RootWork) {
    let steps: Vec<Commit> = w
        .items
        .iter()
        .filter(|i| matches!(i.what, ItemKind::File))
        .map(|i| Commit::RemoveStale {
            path: conn.names().for_path(&join(root, &i.rel)),
        })
        .collect();
    let _ = commit(conn, &steps);
}

/// Sends the directories and files of one root as one tar stream (see
/// [`crate::transport::tar`]). `Ok(Err(why))`: the remote tar failed, nothing may
/// be committed.
fn upload_tar(
    conn: &Connection,
    root: &[u8],
    w: &RootWork,
    reserved: &mut Option<tar::Reserved>,
    tick: &dyn Fn(u64),
) -> Result<Result<Vec<(Item, Outcome)>, tar::TarFailed>> {
    let mut members = Vec::new();
    let mut files = Vec::new();
    for item in &w.items {
        match item.what {
            ItemKind::Dir => members.push(tar::Member::Dir {
                rel: &item.rel,
                mode: w.dir_modes.get(&item.rel).copied().unwrap_or(0o755),
            }),
            ItemKind::File => {
                members.push(tar::Member::File {
                    rel: conn.names().for_path(&item.rel),
                    local: item.to_send(),
                });
                files.push(item.clone());
            }
            ItemKind::Symlink { .. } | ItemKind::Removed => {}
        }
    }
    let zip = |outcomes: &[Outcome]| -> Vec<(Item, Outcome)> {
        files
            .iter()
            .cloned()
            .zip(outcomes.iter().cloned())
            .collect()
    };
    if members.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let streamed = tar::upload(conn, root, &members, reserved, &|k| tick(files[k].size))?;
    Ok(streamed.map(|outcomes| zip(&outcomes)))
}

/// The body of [`upload`].
fn upload_all(
    conn: &Connection,
    root: &[u8],
    w: &RootWork,
    report: &mut HostReport,
) -> Result<Vec<(Item, Outcome)>> {
    let uploads = w
        .items
        .iter()
        .any(|i| !matches!(i.what, ItemKind::Symlink { .. }));
    if !uploads {
        return Ok(Vec::new());
    }
    let mut sink = ScpSink::open(conn, root)?;
    let mut stack: Vec<Vec<u8>> = Vec::new(); // components entered below root
    let mut refused: Vec<(Vec<u8>, String)> = Vec::new();
    let mut sent: Vec<(Item, usize)> = Vec::new();
    let mut results = Vec::new();
    for item in &w.items {
        let parts: Vec<&[u8]> = item.rel.split(|&b| b == b'/').collect();
        let (dirs, name): (&[&[u8]], Option<&[u8]>) = match item.what {
            ItemKind::Dir => (&parts[..], None),
            ItemKind::File => (&parts[..parts.len() - 1], parts.last().copied()),
            ItemKind::Symlink { .. } | ItemKind::Removed => (&parts[..parts.len() - 1], None),
        };
        if let Some((_, why)) = refused
            .iter()
            .find(|(p, _)| is_below(&item.rel, p) || item.rel == *p)
        {
            if matches!(item.what, ItemKind::File) {
                report.event(Event::Uploaded { bytes: item.size });
            }
            if !matches!(item.what, ItemKind::Dir) {
                results.push((item.clone(), Outcome::Failed(why.clone())));
            }
            continue;
        }
        // Navigate: leave what is not shared, enter what is missing.
        let common = stack
            .iter()
            .zip(dirs)
            .take_while(|(a, b)| a.as_slice() == **b)
            .count();
        while stack.len() > common {
            sink.leave()?;
            stack.pop();
        }
        let mut ok = true;
        for d in &dirs[common..] {
            let mut path = stack.join(&b'/');
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(d);
            let mode = w.dir_modes.get(&path).copied().unwrap_or(0o755);
            if let Err(why) = sink.enter(d, mode)? {
                let why = format!(
                    "cannot create remote directory {}: {why}",
                    show(&join(root, &path))
                );
                if matches!(item.what, ItemKind::Dir) && path == item.rel {
                    report.fail(&describe(item, root), &why);
                }
                refused.push((path, why.clone()));
                if matches!(item.what, ItemKind::File) {
                    report.event(Event::Uploaded { bytes: item.size });
                }
                if !matches!(item.what, ItemKind::Dir) {
                    results.push((item.clone(), Outcome::Failed(why)));
                }
                ok = false;
                break;
            }
            stack.push(d.to_vec());
        }
        if let (true, Some(name)) = (ok, name) {
            // OpenSSH's scp sink drops setuid and setgid: an option this way cannot
            // honour fails the file instead of being skipped in silence.
            let special = item.meta.map_or(0, |m| m.mode) & item.mode_mask & 0o6000;
            if special != 0 {
                report.event(Event::Uploaded { bytes: item.size });
                results.push((
                    item.clone(),
                    Outcome::Failed(
                        "keep_special_bits: the remote scp cannot keep setuid or setgid; this host needs perl or tar for that"
                            .into(),
                    ),
                ));
                continue;
            }
            let id = sink.send(&conn.names().for_name(name), item.to_send())?;
            report.event(Event::Uploaded { bytes: item.size });
            sent.push((item.clone(), id));
        }
    }
    debug_assert_eq!(sink.depth(), stack.len());
    let outcomes = sink.finish()?;
    for (item, id) in sent {
        results.push((item, outcomes[id].clone()));
    }
    Ok(results)
}

/// `root/rel` as bytes.
fn join(root: &[u8], rel: &[u8]) -> Vec<u8> {
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
fn is_below(rel: &[u8], dir: &[u8]) -> bool {
    rel.len() > dir.len() && rel.starts_with(dir) && rel[dir.len()] == b'/'
}

/// The last component of a `/`-separated path.
fn basename(p: &[u8]) -> &[u8] {
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

/// `local -> remote` for messages.
fn describe(item: &Item, root: &[u8]) -> String {
    format!(
        "{} -> {}",
        item.local.display(),
        show(&join(root, &item.rel))
    )
}

/// Remote path bytes for humans (lossy for non-UTF-8).
fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The local side of every mapping (src, its excludes, whether links below it are
/// followed), for `local::scan_all`.
pub fn srcs(
    targets: &[Target],
) -> impl Iterator<Item = (&Path, &crate::local::exclude::Excludes, bool)> {
    targets.iter().flat_map(|t| {
        t.mappings
            .iter()
            .map(|m| (m.src.as_path(), &m.exclude, m.follow_symlinks))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_paths() {
        assert_eq!(
            split_dest("/etc/app/app.conf"),
            (&b"/etc/app"[..], &b"app.conf"[..])
        );
        assert_eq!(split_dest("/top"), (&b"/"[..], &b"top"[..]));
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b""), b"/a");
        assert_eq!(basename(b"a/b/c"), b"c");
        assert!(is_backup_name(b"etc/app.conf.1", 6) && is_backup_name(b"x.6", 6));
        for (name, n) in [
            (&b"x.7"[..], 6),
            (b"x.0", 6),
            (b"x.01", 6),
            (b"x.1", 0),
            (b".1", 6),
        ] {
            assert!(!is_backup_name(name, n), "{}", show(name));
        }
        assert!(!is_backup_name(b"x.1a", 6) && !is_backup_name(b"noext", 6));
    }
}

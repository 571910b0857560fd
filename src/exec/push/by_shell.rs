//! Serving a host without perl (or with `[ssh] transfer = posix`) over its
//! shell, as README's "How a push works" tells it:
//! 1. one listing script creates missing destination roots and lists what is
//!    there ([`remote::listing_script`], which also applies the ancestor rule and
//!    says who else can write there); where a tar stream may follow, its channel
//!    then waits to become the first stream ([`tar::Reserved`]);
//! 2. [`crate::reconcile::compare`] decides what to send, remove and clean up;
//! 3. what differs is uploaded as one tar stream, or through one SCP sink per
//!    destination root, every file under a temporary name of this run in its own
//!    destination directory ([`crate::remote::runs`]); a file that changed while
//!    it was read is sent again;
//! 4. one commit script renames each complete temporary over its destination,
//!    confirming each step, and removes the temporaries of runs that are over.
//!    What the remote confirmed goes into the host's record.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Result, anyhow};

use super::{MAX_ATTEMPTS, by_agent};
use crate::failure::Failure;
use crate::local::pushed::{Pushed, Record};
use crate::reconcile::{
    self, Item, ItemKind, Listed, Plan, RootWork, Unit, Usable, describe, is_below, join, show,
};
use crate::remote::runs::Names;
use crate::remote::{self, Commit, ListRoot};
use crate::report::{Event, HostReport};
use crate::transport::scp::{Outcome, ScpSink};
use crate::transport::ssh::Connection;
use crate::transport::tar;

pub(super) mod delta;

/// Pushes the usable units over the host's shell (see the module doc); an `Err`
/// means the connection or the remote shell failed.
pub(super) fn push(
    conn: &Connection,
    usable: &[Usable<'_, '_>],
    units: &[Unit<'_>],
    pushed: &mut Pushed,
    report: &mut HostReport,
) -> Result<()> {
    let Some((plan, reserved)) = plan(conn, usable, pushed, report, true)? else {
        return Ok(());
    };
    super::report_planned(&plan, report);
    let mut batch = Batch {
        conn,
        units,
        report,
        pending: Steps::default(),
        stale: plan.stale,
        changed: vec![0; units.len()],
        reserved,
    };
    let work = batch.queue_removals(plan.work);
    batch.upload_rounds(work)?;
    batch.commit(pushed)?;
    let Batch {
        changed, report, ..
    } = batch;
    super::run_post_sync(conn, units, &changed, report);
    Ok(())
}

/// One batch on a host served over its shell, while it runs.
struct Batch<'a, 'u> {
    conn: &'a Connection,
    units: &'a [Unit<'u>],
    report: &'a mut HostReport,
    /// Commit steps not run yet, in order.
    pending: Steps,
    /// Stale temporaries found by the listing, to remove in the commit.
    stale: HashSet<Vec<u8>>,
    /// What each unit changed (files, links, removals, directories): for post_sync.
    changed: Vec<u64>,
    /// The listing's channel, waiting to become the first tar stream.
    reserved: Option<tar::Reserved>,
}

impl Batch<'_, '_> {
    /// Queues the removals of `"delete": true` and counts the directories the
    /// upload makes (a refused one fails its contents anyway); returns the work.
    fn queue_removals(
        &mut self,
        mut work: BTreeMap<Vec<u8>, RootWork>,
    ) -> BTreeMap<Vec<u8>, RootWork> {
        for (root, w) in work.iter_mut() {
            for r in std::mem::take(&mut w.removes) {
                let path = join(root, &r.rel);
                self.stale.retain(|s| !is_below(s, &path));
                let rel = r.rel.clone();
                let item = Item::removed(r);
                let step = Commit::Remove {
                    root: root.clone(),
                    rel,
                };
                self.pending.push(step, Some(Reported::plain(item)));
            }
            for item in w.items.iter().filter(|i| matches!(i.what, ItemKind::Dir)) {
                self.changed[item.unit] += 1;
            }
        }
        work
    }

    /// Uploads every root's items; a file that changed while it was read goes
    /// again, up to [`MAX_ATTEMPTS`] rounds. Queues the commit steps.
    fn upload_rounds(&mut self, mut to_send: BTreeMap<Vec<u8>, RootWork>) -> Result<()> {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut retry: BTreeMap<Vec<u8>, RootWork> = BTreeMap::new();
            for (root, mut w) in std::mem::take(&mut to_send) {
                w.items.sort_by(|a, b| a.rel.cmp(&b.rel));
                let deltas = delta::send(self.conn, &root, &mut w, self.units, self.report)?;
                self.pending.extend(deltas);
                let names = self.conn.names();
                let links = symlink_steps(names, &root, &w, self.units);
                let results = upload(self.conn, &root, &w, self.report, &mut self.reserved)?;
                self.pending
                    .extend(rename_steps(names, &root, &results, self.units));
                self.pending.extend(links);
                for (item, outcome) in results {
                    if let Some(again) = self.outcome(&root, item, outcome, attempt) {
                        let r = retry.entry(root.clone()).or_default();
                        r.dir_modes.clone_from(&w.dir_modes);
                        r.items.push(again);
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            // Symlinks were already queued; only files are retried.
            to_send = retry;
        }
        Ok(())
    }

    /// Takes one upload outcome; returns the item to send again, as it is now, when
    /// it changed while it was read and another round is allowed.
    fn outcome(
        &mut self,
        root: &[u8],
        item: Item,
        outcome: Outcome,
        attempt: usize,
    ) -> Option<Item> {
        // A file that did not arrive whole may have left part of itself under its
        // temporary name (a full disk, a sink that died): the commit removes it
        // (issue 17); a file stored is renamed instead.
        let tmp = self.conn.names().for_path(&join(root, &item.rel));
        if matches!(outcome, Outcome::Stored { .. }) {
            self.stale.remove(&tmp);
        } else {
            self.stale.insert(tmp);
        }
        match outcome {
            Outcome::Stored { .. } => {}
            Outcome::Changed if attempt < MAX_ATTEMPTS => {
                log::info!(
                    "{}: {} changed while it was read; sending it again",
                    self.report.address,
                    item.local.display()
                );
                // As it is now: a file is sent if it is still that file, a
                // symlink as a symlink (issue 13); gone, nothing is sent.
                return by_agent::rescan(&item);
            }
            Outcome::Changed => self.report.fail(
                Failure::Local,
                &describe(&item, root),
                "the local file kept changing while it was read; it will be sent on the next run",
            ),
            Outcome::Failed(reason) => {
                self.report
                    .fail(Failure::Refused, &describe(&item, root), &reason)
            }
            Outcome::Unreadable(reason) => {
                self.report
                    .fail(Failure::Local, &describe(&item, root), &reason)
            }
            Outcome::Vanished => log::debug!(
                "{}: {} is gone; nothing to send",
                self.report.address,
                item.local.display()
            ),
        }
        None
    }

    /// Runs the commit: stale temporaries first, so nothing this run commits is
    /// removed; then what the uploads queued. Notes what the remote confirmed.
    fn commit(&mut self, pushed: &mut Pushed) -> Result<()> {
        if let Some(r) = self.reserved.take() {
            r.release();
        }
        let mut all = stale_steps(&self.stale);
        all.extend(std::mem::take(&mut self.pending));
        if !all.steps.is_empty() {
            let out = commit(self.conn, &all.steps)?;
            settle(&all, &out, self.report, pushed, &mut self.changed);
        }
        Ok(())
    }
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
    /// Bytes of content it carried (0 but for files; for a delta, the new bytes).
    bytes: u64,
    /// For a delta (issue 19), the bytes that came from the remote's old copy.
    reused: u64,
    /// For a file, what the host's record keeps of it ([`crate::local::pushed`]).
    record: Option<Record>,
}

impl Reported {
    /// A step that carries no content: a removal, a symlink.
    fn plain(item: Item) -> Reported {
        Reported {
            item,
            bytes: 0,
            reused: 0,
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

/// Removals of the stale temporaries, in path order.
fn stale_steps(stale: &HashSet<Vec<u8>>) -> Steps {
    let mut out = Steps::default();
    let mut paths: Vec<&Vec<u8>> = stale.iter().collect();
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
                reused: 0,
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
    let mut answer = CommitAnswer::of(out);
    let mut books = Books {
        report,
        pushed,
        changed,
    };
    for (i, (step, reported)) in all.steps.iter().zip(&all.items).enumerate() {
        let Some(reported) = reported else {
            continue;
        };
        let remote = step_path(step);
        let remote_path = show(&remote);
        let local = reported.item.local.display().to_string();
        match answer.verdict(i) {
            Some((failure, reason)) => {
                books
                    .report
                    .fail(failure, &format!("{local} -> {remote_path}"), &reason)
            }
            None => books.done(reported, remote, &local, &remote_path),
        }
    }
}

/// The remote path a commit step changes.
fn step_path(step: &Commit) -> Vec<u8> {
    match step {
        Commit::Rename { dest, .. } | Commit::Symlink { dest, .. } => dest.clone(),
        Commit::Remove { root, rel } => join(root, rel),
        Commit::RemoveStale { path } => path.clone(),
    }
}

/// What the remote said of a commit: the steps it refused (with why), those it
/// confirmed, and how the script ended.
struct CommitAnswer {
    /// Refused steps by index, with the reason; each is taken once.
    failed: HashMap<usize, String>,
    /// Confirmed steps by index.
    done: HashSet<usize>,
    /// The script's stderr, folded onto one line (empty if none).
    stderr: String,
    /// The script's exit status.
    status: i32,
}

impl CommitAnswer {
    /// Reads the commit's records and how it ended.
    fn of(out: &crate::transport::ssh::ScriptOutput) -> CommitAnswer {
        let (failures, done) = remote::parse_commit(&out.stdout);
        CommitAnswer {
            failed: failures.into_iter().collect(),
            done,
            stderr: crate::escape::fold(out.stderr.as_bytes(), 300),
            status: out.status,
        }
    }

    /// Why step `i` did not happen, if it did not: refused, or not confirmed.
    fn verdict(&mut self, i: usize) -> Option<(Failure, String)> {
        if let Some(reason) = self.failed.remove(&i) {
            let reason = if self.stderr.is_empty() {
                reason
            } else {
                format!("{reason} ({})", self.stderr)
            };
            return Some((Failure::Refused, reason));
        }
        if self.done.contains(&i) {
            return None;
        }
        let reason = format!(
            "not confirmed by the remote: the commit stopped (exit status {}{})",
            self.status,
            if self.stderr.is_empty() {
                String::new()
            } else {
                format!(": {}", self.stderr)
            }
        );
        Some((Failure::Connection, reason))
    }
}

/// Where a settled commit goes: the host's report, its record, the counts per unit.
struct Books<'a> {
    /// The host's report.
    report: &'a mut HostReport,
    /// The host's record of what was pushed.
    pushed: &'a mut Pushed,
    /// Changes per unit.
    changed: &'a mut [u64],
}

impl Books<'_> {
    /// A confirmed step: counted, reported, and noted in (or dropped from) the record.
    fn done(&mut self, reported: &Reported, remote: Vec<u8>, local: &str, remote_path: &str) {
        let item = &reported.item;
        self.changed[item.unit] += 1;
        if matches!(item.what, ItemKind::Removed) {
            self.report.removed_path(local, remote_path);
            self.pushed.forget(remote);
            return;
        }
        let (bytes, reused) = (reported.bytes, reported.reused);
        (self.report).sent_delta(local, remote_path, bytes, reused, &item.why);
        match &reported.record {
            Some(r) => self.pushed.set(remote, r.clone()),
            None => self.pushed.forget(remote),
        }
    }
}

/// Lists the remote side of every usable unit over the listing script and
/// compares it with the local side (what could not be done goes into `report`).
/// `create`: the listing makes missing destination roots (false for a dry run,
/// which changes nothing). `Ok(None)` when no unit is usable; with the plan comes
/// the listing's channel, kept for the first tar stream. An `Err` means the
/// connection or remote shell failed.
pub(super) fn plan(
    conn: &Connection,
    usable: &[Usable<'_, '_>],
    pushed: &Pushed,
    report: &mut HostReport,
    create: bool,
) -> Result<Option<(Plan, Option<tar::Reserved>)>> {
    let roots: Vec<ListRoot> = usable.iter().map(|(_, u, _)| u.root.clone()).collect();
    if roots.is_empty() {
        return Ok(None);
    }
    let probe_tar = conn.tar_unknown();
    let (listing, mut reserved) = list(conn, &roots, create, probe_tar)?;
    let parsed = remote::parse_listing(&listing.stdout, roots.len()).map_err(|e| {
        anyhow!(
            "cannot read the remote listing: {e} (does the remote login shell print text, e.g. from ~/.bashrc? it must not, as for rsync; does the remote have find and stat -c?); stderr: {}",
            crate::escape::fold(listing.stderr.as_bytes(), 300)
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
    let removable = super::leftover(conn);
    let listed = Listed {
        roots: &roots,
        states: &parsed.states,
        pushed,
        stderr: &listing.stderr,
        newlines: false,
    };
    let plan = reconcile::compare(usable, &listed, Some(&removable), &super::hash_local);
    super::take_findings(&plan, report);
    Ok(Some((plan, reserved)))
}

/// The longest listing command that goes inline (`sh -c SCRIPT`): what any server
/// takes ([`remote::MAX_EXEC_COMMAND`]); a longer one is fed on stdin and keeps no
/// channel.
const MAX_INLINE_COMMAND: usize = remote::MAX_EXEC_COMMAND;

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

/// The body of [`upload`] over SCP: one sink for the root, walking the sorted
/// items; each file item comes back with its outcome.
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
    let mut walk = ScpWalk {
        sink: ScpSink::open(conn, root)?,
        conn,
        root,
        w,
        report,
        stack: Vec::new(),
        refused: Vec::new(),
        sent: Vec::new(),
        results: Vec::new(),
    };
    for item in &w.items {
        walk.item(item)?;
    }
    walk.finish()
}

/// One SCP sink walking the sorted items of a root: it enters and leaves the
/// remote directories as the items need them ([`upload_all`]).
struct ScpWalk<'a> {
    /// The `scp -t` of this root.
    sink: ScpSink,
    /// Its connection, for the names of this run's temporaries.
    conn: &'a Connection,
    /// The destination root.
    root: &'a [u8],
    /// What goes below it.
    w: &'a RootWork,
    /// Where failures and progress go.
    report: &'a mut HostReport,
    /// The components entered below the root, as the sink stands.
    stack: Vec<Vec<u8>>,
    /// Directories (relative to the root) the remote refused to create, with why:
    /// everything at or below them fails with that reason.
    refused: Vec<(Vec<u8>, String)>,
    /// Files handed to the sink, with their index in its outcomes.
    sent: Vec<(Item, usize)>,
    /// Outcomes decided here, without the sink's answer.
    results: Vec<(Item, Outcome)>,
}

impl ScpWalk<'_> {
    /// Takes one item: fails it below a refused directory; otherwise moves the
    /// sink to its directory (creating what is missing) and, for a file, sends it.
    fn item(&mut self, item: &Item) -> Result<()> {
        let parts: Vec<&[u8]> = item.rel.split(|&b| b == b'/').collect();
        let (dirs, name): (&[&[u8]], Option<&[u8]>) = match item.what {
            ItemKind::Dir => (&parts[..], None),
            ItemKind::File => (&parts[..parts.len() - 1], parts.last().copied()),
            ItemKind::Symlink { .. } | ItemKind::Removed => (&parts[..parts.len() - 1], None),
        };
        if let Some(why) = self.refused_at(&item.rel) {
            self.refuse(item, why);
            return Ok(());
        }
        let common = self.leave_unshared(dirs)?;
        if let Err(why) = self.enter(item, &dirs[common..])? {
            self.refuse(item, why);
            return Ok(());
        }
        match name {
            Some(name) => self.send(item, name),
            None => Ok(()),
        }
    }

    /// Why `rel` cannot be written, when it is or lies below a refused directory.
    fn refused_at(&self, rel: &[u8]) -> Option<String> {
        self.refused
            .iter()
            .find(|(p, _)| is_below(rel, p) || rel == p.as_slice())
            .map(|(_, why)| why.clone())
    }

    /// Fails an item whose directory the remote refused: a file still counts as
    /// uploaded for the progress, and every item but a directory gets the outcome
    /// (a refused directory itself is reported where it was refused).
    fn refuse(&mut self, item: &Item, why: String) {
        if matches!(item.what, ItemKind::File) {
            self.report.event(Event::Uploaded { bytes: item.size });
        }
        if !matches!(item.what, ItemKind::Dir) {
            self.results.push((item.clone(), Outcome::Failed(why)));
        }
    }

    /// Leaves the directories the sink stands in that `dirs` does not share;
    /// returns how many it shares.
    fn leave_unshared(&mut self, dirs: &[&[u8]]) -> Result<usize> {
        let common = self
            .stack
            .iter()
            .zip(dirs)
            .take_while(|(a, b)| a.as_slice() == **b)
            .count();
        while self.stack.len() > common {
            self.sink.leave()?;
            self.stack.pop();
        }
        Ok(common)
    }

    /// Enters (creating where missing) the directories `missing`, in order, for
    /// `item`. `Ok(Err(why))`: the remote refused one, which is noted (and
    /// reported, when it is the item itself); the sink stays above it.
    fn enter(&mut self, item: &Item, missing: &[&[u8]]) -> Result<Result<(), String>> {
        for d in missing {
            let mut path = self.stack.join(&b'/');
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(d);
            let mode = self.w.dir_modes.get(&path).copied().unwrap_or(0o755);
            if let Err(why) = self.sink.enter(d, mode)? {
                let why = format!(
                    "cannot create remote directory {}: {why}",
                    show(&join(self.root, &path))
                );
                if matches!(item.what, ItemKind::Dir) && path == item.rel {
                    self.report
                        .fail(Failure::Refused, &describe(item, self.root), &why);
                }
                self.refused.push((path, why.clone()));
                return Ok(Err(why));
            }
            self.stack.push(d.to_vec());
        }
        Ok(Ok(()))
    }

    /// Sends one file under its temporary name in the directory the sink stands in.
    fn send(&mut self, item: &Item, name: &[u8]) -> Result<()> {
        // OpenSSH's scp sink drops setuid and setgid: an option this way cannot
        // honour fails the file instead of being skipped in silence.
        let special = item.meta.map_or(0, |m| m.mode) & item.mode_mask & 0o6000;
        if special != 0 {
            self.report.event(Event::Uploaded { bytes: item.size });
            self.results.push((
                item.clone(),
                Outcome::Failed(
                    "keep_special_bits: the remote scp cannot keep setuid or setgid; this host needs perl or tar for that"
                        .into(),
                ),
            ));
            return Ok(());
        }
        let id = self
            .sink
            .send(&self.conn.names().for_name(name), item.to_send())?;
        self.report.event(Event::Uploaded { bytes: item.size });
        self.sent.push((item.clone(), id));
        Ok(())
    }

    /// Closes the sink and returns every item's outcome: those decided here first,
    /// then the sent files with the sink's answers, in the order they were sent.
    fn finish(self) -> Result<Vec<(Item, Outcome)>> {
        debug_assert_eq!(self.sink.depth(), self.stack.len());
        let outcomes = self.sink.finish()?;
        let mut results = self.results;
        for (item, id) in self.sent {
            results.push((item, outcomes[id].clone()));
        }
        Ok(results)
    }
}

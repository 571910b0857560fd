//! Serving a host over its SFTP subsystem (issue 16's sftp tier): an SFTP-only
//! account (`ForceCommand internal-sftp`), or any host with `[ssh] transfer = sftp`.
//!
//! 1. the session's SFTP client ([`crate::transport::sftp`], kept open on the
//!    connection, so a watched change starts no remote process) lists every
//!    root: the ancestor rule, missing roots made, who else can write there,
//!    entries by lstat, pipelined; a path listing (watch) reads back each named
//!    remote file for its SHA-256, so two daemons mapped at each other do not
//!    send a file back and forth;
//! 2. [`crate::reconcile::compare`] decides, as for every tier; a destination
//!    others can write is refused there, with one line: SFTP acts on paths,
//!    never relative to a checked folder (issue 13);
//! 3. removals (`"delete": true`, nothing followed below the root), then each
//!    directory, file and symlink in path order: a file goes to this run's
//!    temporary (`.hostsync-tmp.CLIENT.RUN.N`, created exclusively), gets its
//!    mode and mtime by fsetstat, and only once the local file proved unchanged
//!    is swapped in by `posix-rename@openssh.com` (with `backups`, `dest.1` is a
//!    hard link to `dest` first, so `dest` never disappears). Runs of small
//!    files (at most 64 KiB, no backups) between two other items go pipelined
//!    ([`Sftp::put_many`]): many files in flight, each with the same steps, so
//!    a folder of small files costs a few round trips, not three per file;
//!    a directory is made before the run of its files starts;
//! 4. temporaries of runs that are over are removed. Each step counts only once
//!    the server confirmed it.
//!
//! At shutdown (the connection's cancel flag) a file being sent stops between two
//! chunks and its temporary is removed: the batch ends with an error.
//!
//! `post_sync` needs a shell: on a host without one it fails its mapping, with
//! one line, and nothing of that mapping is sent.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{MAX_ATTEMPTS, by_agent};
use crate::failure::Failure;
use crate::local::pushed::{Pushed, Record};
use crate::local::read::{Finished, Reading, Unsendable};
use crate::reconcile::{
    self, Item, ItemKind, Listed, Plan, RootWork, Unit, Usable, describe, join, show,
};
use crate::remote::{self, ListRoot};
use crate::report::{Event, HostReport};
use crate::transport::sftp::{Feed, Put, Refused, Sftp, Source, Target};
use crate::transport::ssh::Connection;

/// Pushes the usable units over SFTP (see the module doc); an `Err` means the
/// session failed.
pub(super) fn push(
    conn: &Connection,
    usable: &[Usable<'_, '_>],
    units: &[Unit<'_>],
    pushed: &mut Pushed,
    report: &mut HostReport,
) -> Result<()> {
    let usable = honoured(conn, usable, report);
    let Some(plan) = plan(conn, &usable, pushed, report, true)? else {
        return Ok(());
    };
    super::report_planned(&plan, report);
    let mut batch = Batch {
        report,
        pushed,
        units,
        changed: vec![0; units.len()],
        names: conn.names().clone(),
        cancel: conn.cancel_flag(),
    };
    conn.with_sftp(|sftp| batch.apply(sftp, plan))?;
    let Batch {
        changed, report, ..
    } = batch;
    if conn.no_shell().is_none() {
        super::run_post_sync(conn, units, &changed, report);
    }
    Ok(())
}

/// The usable units this tier can honour: on a host without a shell, one with
/// `post_sync` fails here, with one line.
fn honoured<'u, 'm>(
    conn: &Connection,
    usable: &[Usable<'u, 'm>],
    report: &mut HostReport,
) -> Vec<Usable<'u, 'm>> {
    let Some(why) = conn.no_shell() else {
        return usable.to_vec();
    };
    let mut out = Vec::new();
    for u in usable {
        if u.1.mapping.post_sync.is_empty() {
            out.push(*u);
        } else {
            let what = format!("{} -> {}", u.1.mapping.src.display(), show(&u.1.root.dir));
            report.fail(
                Failure::Refused,
                &what,
                &format!("post_sync needs a shell, and this host serves only SFTP ({why}); remove post_sync from this mapping"),
            );
        }
    }
    out
}

/// Lists the roots over SFTP and compares (see [`super::by_shell::plan`]);
/// `create` makes missing roots. `Ok(None)` when no unit is usable.
pub(super) fn plan(
    conn: &Connection,
    usable: &[Usable<'_, '_>],
    pushed: &Pushed,
    report: &mut HostReport,
    create: bool,
) -> Result<Option<Plan>> {
    let roots: Vec<ListRoot> = usable.iter().map(|(_, u, _)| u.root.clone()).collect();
    if roots.is_empty() {
        return Ok(None);
    }
    let strict = conn.strict_modes();
    let listing = conn.with_sftp(|sftp| sftp.list(&roots, create, strict))?;
    let removable = super::leftover(conn);
    let listed = Listed {
        roots: &roots,
        states: &listing.states,
        pushed,
        stderr: "",
        newlines: true,
    };
    let plan = reconcile::compare(usable, &listed, Some(&removable), &super::hash_local);
    super::take_findings(&plan, report);
    Ok(Some(plan))
}

/// One batch over SFTP, while it runs.
struct Batch<'a, 'u> {
    /// Where outcomes go.
    report: &'a mut HostReport,
    /// The host's record of what was pushed.
    pushed: &'a mut Pushed,
    /// The units, for backups.
    units: &'a [Unit<'u>],
    /// What each unit changed: for post_sync.
    changed: Vec<u64>,
    /// This session's temporary names.
    names: remote::runs::Names,
    /// Set at shutdown: a file being sent stops between two chunks.
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Batch<'_, '_> {
    /// Applies `plan`: stale temporaries, removals, then every root's items.
    fn apply(&mut self, sftp: &mut Sftp, plan: Plan) -> Result<()> {
        let mut stale: Vec<&Vec<u8>> = plan.stale.iter().collect();
        stale.sort();
        for path in stale {
            let _ = refusal(sftp.remove_file(path))?;
        }
        for (root, mut w) in plan.work {
            self.removals(sftp, &root, &mut w)?;
            w.items.sort_by(|a, b| a.rel.cmp(&b.rel));
            self.upload_rounds(sftp, &root, w)?;
        }
        Ok(())
    }

    /// The removals of `"delete": true` under `root`.
    fn removals(&mut self, sftp: &mut Sftp, root: &[u8], w: &mut RootWork) -> Result<()> {
        for r in std::mem::take(&mut w.removes) {
            let remote = join(root, &r.rel);
            let local = r.local.display().to_string();
            let unit = r.unit;
            match refusal(sftp.remove_tree(root, &r.rel).map(|_| ()))? {
                Ok(()) => {
                    self.changed[unit] += 1;
                    self.report.removed_path(&local, &show(&remote));
                    self.pushed.forget(remote);
                }
                Err(why) => {
                    let what = format!("{local} -> {}", show(&remote));
                    self.report.fail(Failure::Refused, &what, &why);
                }
            }
        }
        Ok(())
    }

    /// Sends every item of one root; a file that changed while it was read goes
    /// again, up to [`MAX_ATTEMPTS`] rounds.
    fn upload_rounds(&mut self, sftp: &mut Sftp, root: &[u8], mut w: RootWork) -> Result<()> {
        let files = w.items.iter().filter(|i| matches!(i.what, ItemKind::File));
        let files = files.count();
        if files > 0 {
            // Named in README, "Logs": the way each batch goes.
            log::debug!(
                "{}: {files} item(s) under {} over sftp",
                self.report.address,
                crate::escape::escape(root)
            );
        }
        for attempt in 1..=MAX_ATTEMPTS {
            let mut again = Vec::new();
            let mut items = std::mem::take(&mut w.items).into_iter().peekable();
            loop {
                let mut small = Vec::new();
                while let Some(i) = items.next_if(|i| self.pipelined(i)) {
                    small.push(i);
                }
                if !small.is_empty() {
                    self.small_files(sftp, root, small, attempt, &mut again)?;
                }
                let Some(item) = items.next() else { break };
                if let Some(retry) = self.item(sftp, root, &w, item, attempt)? {
                    again.push(retry);
                }
            }
            if again.is_empty() {
                break;
            }
            w.items = again;
        }
        Ok(())
    }

    /// Whether `item` goes in a pipelined run of small files: a file of at most
    /// [`SMALL`] bytes, with no backups to keep (those go one at a time).
    fn pipelined(&self, item: &Item) -> bool {
        matches!(item.what, ItemKind::File)
            && item.size <= SMALL
            && self.units[item.unit].mapping.backups == 0
    }

    /// Sends a run of small file items pipelined ([`Sftp::put_many`]); those that
    /// changed while read go into `again`. Ends the batch at shutdown.
    fn small_files(
        &mut self,
        sftp: &mut Sftp,
        root: &[u8],
        items: Vec<Item>,
        attempt: usize,
        again: &mut Vec<Item>,
    ) -> Result<()> {
        let mut feed = Small {
            batch: self,
            root,
            items: items.into_iter(),
            attempt,
            again,
            cancelled: false,
        };
        sftp.put_many(&mut feed)?;
        if feed.cancelled || feed.items.len() > 0 {
            // Every temporary made was removed before its outcome was told.
            anyhow::bail!("transfer cancelled by shutdown");
        }
        Ok(())
    }

    /// Does one item; returns it, as it is now, when it changed while it was read
    /// and another round is allowed.
    fn item(
        &mut self,
        sftp: &mut Sftp,
        root: &[u8],
        w: &RootWork,
        item: Item,
        attempt: usize,
    ) -> Result<Option<Item>> {
        let dest = join(root, &item.rel);
        let backups = self.units[item.unit].mapping.backups;
        let done = match &item.what {
            ItemKind::Dir => {
                // Counted for post_sync, but not reported as sent (as on every tier).
                let mode = w.dir_modes.get(&item.rel).copied().unwrap_or(0o755);
                match refusal(make_dir(sftp, &dest, mode))? {
                    Ok(()) => self.changed[item.unit] += 1,
                    Err(why) => (self.report).fail(Failure::Refused, &describe(&item, root), &why),
                }
                return Ok(None);
            }
            ItemKind::Symlink { target } => {
                let tmp = self.names.for_path(&dest);
                refusal(sftp.symlink(target, &dest, &tmp, backups))?.map(|()| None)
            }
            ItemKind::File => {
                let tmp = self.names.for_path(&dest);
                let p = Put {
                    dest: &dest,
                    tmp: &tmp,
                    mode: 0,
                    mtime: 0,
                    backups,
                };
                return self.file(sftp, root, p, item, attempt);
            }
            ItemKind::Removed => Ok(None),
        };
        match done {
            Ok(record) => self.done(&item, dest, 0, record),
            Err(why) => self
                .report
                .fail(Failure::Refused, &describe(&item, root), &why),
        }
        Ok(None)
    }

    /// Uploads one file item (see [`Sftp::put`]).
    fn file(
        &mut self,
        sftp: &mut Sftp,
        root: &[u8],
        mut p: Put<'_>,
        item: Item,
        attempt: usize,
    ) -> Result<Option<Item>> {
        let mut again = Vec::new();
        let Some((item, reading)) = self.open(root, item, attempt, &mut again) else {
            return Ok(again.pop());
        };
        let meta = *reading.meta();
        p.mode = meta.mode;
        p.mtime = u32::try_from(meta.mtime.max(0)).unwrap_or(u32::MAX);
        let cancel = self.cancel.clone();
        let mut src = Sending::new(reading, cancel, Some(&mut *self.report));
        let put = refusal(sftp.put(&p, &mut src))?;
        if src.cancelled {
            // put() dropped the temporary: nothing half-written stays.
            anyhow::bail!("transfer cancelled by shutdown");
        }
        let end = src.end.take();
        Ok(self.settle(root, item, p.dest.to_vec(), put, end, attempt))
    }

    /// Opens the local file of a file item; `None` when it is not sent now: it
    /// vanished (nothing to do), changed (the item to send again goes into
    /// `again`, if another round is allowed), or cannot be read (failed here).
    fn open(
        &mut self,
        root: &[u8],
        item: Item,
        attempt: usize,
        again: &mut Vec<Item>,
    ) -> Option<(Item, Reading)> {
        match Reading::open(&item.to_send()) {
            Ok(r) => Some((item, r)),
            Err(Unsendable::Vanished) => None,
            Err(Unsendable::Changed) => {
                again.extend(self.changed_file(root, item, attempt));
                None
            }
            Err(Unsendable::Unreadable(why)) => {
                let what = describe(&item, root);
                self.report.fail(Failure::Local, &what, &why);
                None
            }
        }
    }

    /// Records how one file upload to `dest` ended: `put` is the server's side
    /// (bytes swapped in, `None` when not whole, or a refusal), `end` how reading
    /// the local file ended. Returns the item to send again, if it changed.
    fn settle(
        &mut self,
        root: &[u8],
        item: Item,
        dest: Vec<u8>,
        put: Result<Option<u64>, String>,
        end: Option<Finished>,
        attempt: usize,
    ) -> Option<Item> {
        match (put, end) {
            (Err(why), _) => {
                let what = describe(&item, root);
                self.report.fail(Failure::Refused, &what, &why);
            }
            (Ok(Some(bytes)), Some(Finished::Whole(meta, sha))) => {
                let record = Some(Record::sent(&meta, &sha));
                self.done(&item, dest, bytes, record);
            }
            (_, Some(Finished::Unreadable(why))) => {
                let what = describe(&item, root);
                self.report.fail(Failure::Local, &what, &why);
            }
            _ => return self.changed_file(root, item, attempt),
        }
        None
    }

    /// A file that changed while it was read: sent again as it is now, or, after
    /// the last round, failed for this run.
    fn changed_file(&mut self, root: &[u8], item: Item, attempt: usize) -> Option<Item> {
        if attempt < MAX_ATTEMPTS {
            log::info!(
                "{}: {} changed while it was read; sending it again",
                self.report.address,
                item.local.display()
            );
            return by_agent::rescan(&item);
        }
        self.report.fail(
            Failure::Local,
            &describe(&item, root),
            "the local file kept changing while it was read; it will be sent on the next run",
        );
        None
    }

    /// A confirmed item: counted, reported, and noted in (or dropped from) the record.
    fn done(&mut self, item: &Item, remote: Vec<u8>, bytes: u64, record: Option<Record>) {
        self.changed[item.unit] += 1;
        let local = item.local.display().to_string();
        (self.report).sent_delta(&local, &show(&remote), bytes, 0, &item.why);
        match record {
            Some(r) => self.pushed.set(remote, r),
            None => self.pushed.forget(remote),
        }
    }
}

/// Makes directory `path` with `mode`; one already there as a directory gets the
/// mode.
fn make_dir(sftp: &mut Sftp, path: &[u8], mode: u32) -> Result<()> {
    match sftp.lstat(path)? {
        Some(a) if a.kind() == b'd' => sftp.chmod(path, mode),
        _ => sftp.mkdir(path, mode),
    }
}

/// Splits a step's result: a step the server refused is `Ok(Err(why))` (that item
/// fails), any other error ends the batch.
fn refusal<T>(r: Result<T>) -> Result<Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.is::<Refused>() => Ok(Err(format!("{e:#}"))),
        Err(e) => Err(e),
    }
}

/// Files of at most this many bytes go in pipelined runs ([`Sftp::put_many`]);
/// bigger ones one at a time ([`Sftp::put`], their writes pipelined).
const SMALL: u64 = 64 * 1024;

/// A run of small file items being fed to [`Sftp::put_many`].
struct Small<'s, 'a, 'u> {
    /// The batch, for outcomes.
    batch: &'s mut Batch<'a, 'u>,
    /// The root the items are under.
    root: &'s [u8],
    /// The items not started yet.
    items: std::vec::IntoIter<Item>,
    /// Which round this is.
    attempt: usize,
    /// Items that changed while read, for the next round.
    again: &'s mut Vec<Item>,
    /// Whether an upload stopped at shutdown.
    cancelled: bool,
}

impl Feed for Small<'_, '_, '_> {
    type Src = Queued;

    fn next(&mut self) -> Option<(Target, Queued)> {
        use std::sync::atomic::Ordering;
        while !self.cancelled && !self.batch.cancel.load(Ordering::Relaxed) {
            let item = self.items.next()?;
            let opened = self.batch.open(self.root, item, self.attempt, self.again);
            let Some((item, reading)) = opened else {
                continue;
            };
            let dest = join(self.root, &item.rel);
            let meta = *reading.meta();
            let target = Target {
                tmp: self.batch.names.for_path(&dest),
                dest,
                mode: meta.mode,
                mtime: u32::try_from(meta.mtime.max(0)).unwrap_or(u32::MAX),
            };
            let sending = Sending::new(reading, self.batch.cancel.clone(), None);
            return Some((target, Queued { item, sending }));
        }
        None
    }

    fn done(&mut self, target: Target, src: Queued, outcome: Result<Option<u64>>) {
        let Queued { item, mut sending } = src;
        if sending.sent > 0 {
            let bytes = sending.sent;
            self.batch.report.event(Event::Uploaded { bytes });
        }
        if sending.cancelled {
            self.cancelled = true;
            return;
        }
        let put = outcome.map_err(|e| format!("{e:#}"));
        let end = sending.end.take();
        let (root, attempt) = (self.root, self.attempt);
        let retry = self
            .batch
            .settle(root, item, target.dest, put, end, attempt);
        self.again.extend(retry);
    }
}

/// One upload of a pipelined run: the item and its bytes.
struct Queued {
    item: Item,
    sending: Sending<'static>,
}

impl Source for Queued {
    fn chunk(&mut self, buf: &mut [u8]) -> usize {
        self.sending.chunk(buf)
    }

    fn whole(&mut self) -> bool {
        self.sending.whole()
    }
}

/// A local file being sent over SFTP: its bytes, then whether they were whole.
struct Sending<'r> {
    /// The file, until [`Source::whole`] finishes it.
    reading: Option<Reading>,
    /// How reading it ended.
    end: Option<Finished>,
    /// For progress as it goes (a pipelined upload tells it at its end).
    report: Option<&'r mut HostReport>,
    /// Bytes given so far.
    sent: u64,
    /// The connection's shutdown flag.
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether reading stopped because of it (the file is then not whole).
    cancelled: bool,
}

impl<'r> Sending<'r> {
    fn new(
        reading: Reading,
        cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
        report: Option<&'r mut HostReport>,
    ) -> Sending<'r> {
        Sending {
            reading: Some(reading),
            end: None,
            report,
            sent: 0,
            cancel,
            cancelled: false,
        }
    }
}

impl Source for Sending<'_> {
    fn chunk(&mut self, buf: &mut [u8]) -> usize {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            self.cancelled = true;
            return 0;
        }
        let n = self.reading.as_mut().map_or(0, |r| r.chunk(buf));
        self.sent += n as u64;
        if n > 0
            && let Some(report) = self.report.as_mut()
        {
            report.event(Event::Uploaded { bytes: n as u64 });
        }
        n
    }

    fn whole(&mut self) -> bool {
        self.end = self.reading.take().map(Reading::finish);
        !self.cancelled && matches!(self.end, Some(Finished::Whole(..)))
    }
}

/// `sync --dry-run` over SFTP: the listing creates nothing; the plan's
/// differences go into `report.diffs`.
pub(super) fn dry_run(conn: &Connection, usable: &[Usable<'_, '_>], report: &mut HostReport) {
    let usable = honoured(conn, usable, report);
    let pushed = Pushed::open(conn.pushed_dir(), &report.address);
    match plan(conn, &usable, &pushed, report, false) {
        Ok(Some(plan)) => {
            let none = BTreeMap::new().into_iter().collect();
            report
                .diffs
                .extend(crate::reconcile::render::diffs(&plan, &none, 0));
        }
        Ok(None) => {}
        Err(e) => report.fail_host(&format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step the server refused fails that item with its words; any other
    /// error (the session) ends the batch.
    #[test]
    fn a_refusal_fails_the_item_and_anything_else_the_batch() {
        let refused = anyhow::Error::new(Refused {
            what: "create /srv/x".into(),
            code: crate::transport::sftp::wire::status::PERMISSION_DENIED,
            message: String::new(),
        });
        assert_eq!(
            refusal::<()>(Err(refused)).unwrap(),
            Err("create /srv/x: permission denied on the remote".to_string())
        );
        let gone = anyhow::anyhow!("the SFTP session ended");
        assert!(refusal::<()>(Err(gone)).is_err());
        assert_eq!(refusal(Ok(7)).unwrap(), Ok(7));
    }
}

//! Bringing one host up to date through the remote agent (issue 13): every remote
//! step happens relative to a directory the agent checked, and counts only when
//! the agent confirms it.
//!
//! One exec per batch starts the agent (a `watch` session keeps it between
//! rounds, so a round starts no process: [`Agent::resume`]); its requests go out
//! pipelined:
//! 1. per mapping, resolve the destination root (made where missing, except in a
//!    dry run; a symlink on the way only as the ancestor rule allows) and list it;
//! 2. the listing is compared with the local side by the same rules as for every
//!    other host ([`crate::reconcile::compare`]);
//! 3. stale temporaries are offered for removal (the agent removes one only when
//!    the run that made it is dead), then removals, directories, files (with their
//!    data, each renamed into place by the agent as soon as it arrived whole) and
//!    symlinks, then the final modes of directories their owner cannot write;
//! 4. each answer is reported as it arrives: a file is "sent" only on the agent's
//!    confirmation. If the agent stops or the connection breaks, every step not
//!    confirmed yet is failed, and the error is returned (the host is retried).
//!
//! A file that changed while it was read, or that is no longer the file the scan
//! saw, is looked at again and sent again, up to [`super::MAX_ATTEMPTS`] times. A
//! file that vanished before it was read has nothing to send: one debug line.

use std::collections::{BTreeMap, HashMap, VecDeque};

use anyhow::{Result, bail};

use super::MAX_ATTEMPTS;
use crate::failure::Failure;
use crate::local::pushed::{Pushed, Record};
use crate::local::read::{Finished, Reading, Unsendable};
use crate::local::{FileMeta, Source};
use crate::reconcile::{
    self, Item, ItemKind, Plan, RootWork, Unit, Usable, basename, describe, join, show,
};
use crate::remote::{ListRoot, RemoteEntry, RootState};
use crate::report::{Event, HostReport};
use crate::transport::agent::{Agent, Answer, NoAgent};
use crate::transport::ssh::Connection;

pub(super) mod ahead;
pub(super) mod delta;

/// What the listing phase learned: the roots in unit order, their states, and the
/// agent's id for each root directory.
pub(super) struct AgentListing {
    /// One root per usable unit.
    roots: Vec<ListRoot>,
    /// One state per usable unit.
    states: Vec<RootState>,
    /// The agent's root id per root directory.
    ids: HashMap<Vec<u8>, usize>,
    /// The small files sent with the listing ([`ahead`]), answered.
    ahead: Vec<ahead::Ahead>,
    /// The batch was ended with them: the roots must be resolved again before
    /// anything else is asked.
    ended: bool,
}

/// Starts the agent (or takes back the one the session kept, see
/// [`Agent::resume`]) and lists every usable unit's root through it (`create`:
/// make missing roots). `Ok(None)` when the agent cannot serve this host (no
/// perl, or forced off): the caller uses the listing script instead. A kept agent
/// that does not answer (it died between two batches) is replaced, once, by a
/// fresh one. A push (`create`) on a kept agent sends small changed files with
/// the listing ([`ahead`]).
pub(super) fn list<'c>(
    conn: &'c Connection,
    usable: &[(usize, &Unit<'_>, &Source)],
    create: bool,
) -> Result<Option<(Agent<'c>, AgentListing)>> {
    if usable.is_empty() || !conn.agent_maybe() {
        return Ok(None);
    }
    let roots: Vec<ListRoot> = usable.iter().map(|(_, u, _)| u.root.clone()).collect();
    if let Some(mut agent) = Agent::resume(conn) {
        match ask_resumed(conn, &mut agent, usable, &roots, create) {
            Ok((first, ahead, ended)) => {
                return listed(conn, agent, roots, Some(first), (ahead, ended));
            }
            Err(e) => log::debug!("the session's agent did not answer ({e:#}); starting a new one"),
        }
    }
    let run = crate::remote::fresh_hex();
    let mut agent = Agent::start(conn, conn.client_id(), &run, conn.strict_modes())?;
    ask(&mut agent, &roots, create)?;
    listed(conn, agent, roots, None, (Vec::new(), false))
}

/// [`ask`] on a resumed agent, with the small files of a push sent ahead and,
/// where they are all of the work ([`ahead::covers`]), the end of the batch;
/// returns the first answer, those files, and whether the batch was ended.
fn ask_resumed(
    conn: &Connection,
    agent: &mut Agent<'_>,
    usable: &[(usize, &Unit<'_>, &Source)],
    roots: &[ListRoot],
    create: bool,
) -> Result<(Answer, Vec<ahead::Ahead>, bool)> {
    ask(agent, roots, create)?;
    let ahead = if create {
        let delta_min = delta::threshold(conn, agent);
        ahead::send(agent, usable, delta_min)?
    } else {
        Vec::new()
    };
    let ended = ahead::covers(usable, &ahead);
    if ended {
        agent.end_batch()?;
    }
    Ok((agent.answer()?, ahead, ended))
}

/// Sends, per root, its resolution and its listing.
fn ask(agent: &mut Agent<'_>, roots: &[ListRoot], create: bool) -> Result<()> {
    for (id, root) in roots.iter().enumerate() {
        agent.root(id, &root.dir, create)?;
        agent.list(id, root.max_depth, root.paths.as_deref(), root.checksum)?;
    }
    Ok(())
}

/// Takes in the answers to [`ask`] (`first`: the first, read already), then
/// those to the files sent `ahead` and to the end of the batch if it was sent
/// with them (`ended`).
fn listed<'c>(
    conn: &'c Connection,
    mut agent: Agent<'c>,
    roots: Vec<ListRoot>,
    mut first: Option<Answer>,
    (mut ahead, ended): (Vec<ahead::Ahead>, bool),
) -> Result<Option<(Agent<'c>, AgentListing)>> {
    let mut ids = HashMap::new();
    for (id, root) in roots.iter().enumerate() {
        ids.entry(root.dir.clone()).or_insert(id);
    }
    let mut states = Vec::with_capacity(roots.len());
    for root in &roots {
        let resolved = match first.take().map_or_else(|| agent.answer(), Ok) {
            Err(e) if e.is::<NoAgent>() => {
                log::debug!("no perl on the remote; using the listing script, tar and scp");
                conn.set_agent(false);
                return Ok(None);
            }
            // The first exec ended before anything answered: no shell runs
            // commands here (an SFTP-only account); the tier probe asks for SFTP.
            Err(e) if conn.agent_unknown() && agent.hello().is_none() => {
                log::debug!("no shell answered the agent's start ({e:#}); trying SFTP");
                conn.set_agent(false);
                conn.set_no_shell(format!("{e:#}"));
                return Ok(None);
            }
            other => other?,
        };
        if conn.agent_unknown() {
            served_by(agent.hello());
        }
        conn.set_agent(true);
        let listing = agent.answer()?;
        let uid = agent.hello().map_or(u32::MAX, |h| h.uid);
        states.push(state(root, resolved, listing, uid));
    }
    ahead::answers(&mut agent, &mut ahead)?;
    if ended && !matches!(agent.answer()?, Answer::Done(_)) {
        bail!("the remote agent did not end its batch");
    }
    Ok(Some((
        agent,
        AgentListing {
            roots,
            states,
            ids,
            ahead,
            ended,
        },
    )))
}

/// The debug line of the first agent start on a session.
fn served_by(hello: Option<&crate::transport::agent::Hello>) {
    log::debug!(
        "served by hostsync's agent ({})",
        hello.map_or_else(String::new, |h| format!(
            "uid {}, mtimes to the {}, {}",
            h.uid,
            if h.hires { "nanosecond" } else { "second" },
            if h.hashes {
                "content hashes"
            } else {
                "no content hashes"
            }
        ))
    );
}

/// A root's state from the agent's answers to its resolution and its listing.
fn state(root: &ListRoot, resolved: Answer, listing: Answer, uid: u32) -> RootState {
    let mut state = RootState::default();
    match resolved {
        Answer::Failed(reason) => {
            state.error = Some(reason);
            return state;
        }
        Answer::Done(f) if f.first().is_some_and(|f| f == b"missing") => {
            state.missing = true;
            return state;
        }
        Answer::Done(f) => {
            state.open = f
                .get(3)
                .filter(|o| !o.is_empty())
                .map(|o| String::from_utf8_lossy(o).into_owned());
        }
        Answer::Listing(_) | Answer::Sums(..) => {
            state.error = Some("the remote agent answered out of order".into());
            return state;
        }
    }
    match listing {
        Answer::Listing(l) => {
            state.incomplete = !l.notes.is_empty();
            for note in &l.notes {
                log::debug!("listing of {}: {note}", show(&root.dir));
            }
            for e in l.entries {
                if state.open.is_none() && e.entry.kind == b'd' {
                    state.open = open_below(&root.dir, &e.rel, &e.entry, e.uid, uid);
                }
                state.entries.insert(e.rel, e.entry);
            }
            state.hashes = l.hashes.into_iter().collect();
        }
        Answer::Failed(reason) => state.error = Some(reason),
        Answer::Done(_) | Answer::Sums(..) => {
            state.error = Some("the remote agent sent no listing".into())
        }
    }
    state
}

/// Why others can write directory `rel` below `root`, if they can.
fn open_below(root: &[u8], rel: &[u8], e: &RemoteEntry, owner: u32, me: u32) -> Option<String> {
    let at = show(&join(root, rel));
    if owner != 0 && owner != me {
        Some(format!("{at} is owned by uid {owner}"))
    } else if e.mode & 0o022 != 0 {
        Some(format!(
            "{at} is writable by its group or others (mode {:04o})",
            e.mode
        ))
    } else {
        None
    }
}

/// [`reconcile::compare`] for a host the agent serves; what it could not do
/// goes into `report`.
pub(super) fn compare(
    usable: &[Usable<'_, '_>],
    listed: &AgentListing,
    pushed: &Pushed,
    report: &mut HostReport,
) -> Plan {
    let remote = reconcile::Listed {
        roots: &listed.roots,
        states: &listed.states,
        pushed,
        stderr: "",
        // The agent's requests and listing are NUL-separated and length-framed.
        newlines: true,
    };
    let plan = reconcile::compare(usable, &remote, None, &super::hash_local);
    super::take_findings(&plan, report);
    plan
}

/// Whether `plan` asks for anything of the remote.
fn has_work(plan: &Plan) -> bool {
    !plan.stale_at.is_empty()
        || (plan.work.values()).any(|w| !w.items.is_empty() || !w.removes.is_empty())
}

/// What one request, once answered, reports.
enum Step {
    /// A root resolved again in a new batch (after [`ahead::covers`] ended the
    /// listing's batch), as the listing resolved it.
    Reopen(Vec<u8>),
    /// A stale temporary offered for removal.
    Stale(Vec<u8>),
    /// A removal for `"delete": true`.
    Remove(Item, Vec<u8>),
    /// A directory made (or its mode set).
    Dir(Item, Vec<u8>),
    /// A directory's final mode, set after what is below it.
    Mode(Item, Vec<u8>),
    /// A file, with how its data went.
    File(Item, Vec<u8>, Finished),
    /// A file sent as a delta (issue 19), with how its data went and what it carried.
    Delta(Item, Vec<u8>, Finished, delta::Carried),
    /// A symlink.
    Link(Item, Vec<u8>),
    /// The start or the end of the lanes.
    Lanes,
}

/// One batch's execution: the agent, the steps it has not answered, the counts.
struct Run<'a, 'c, 'u> {
    agent: Agent<'c>,
    /// Steps sent and not answered yet, in request order.
    steps: VecDeque<Step>,
    report: &'a mut HostReport,
    /// What the host's record notes of each confirmed step ([`crate::local::pushed`]).
    pushed: &'a mut Pushed,
    units: &'a [Unit<'u>],
    /// What each unit changed (for post_sync).
    changed: Vec<u64>,
    /// Files to look at again (they changed while read), per root.
    again: BTreeMap<Vec<u8>, RootWork>,
    /// Which round this is (1 to [`MAX_ATTEMPTS`]).
    attempt: usize,
    /// `[sync] split`: a big batch may go in two lanes.
    split: bool,
    /// The smallest file sent as a delta (issue 19); 0: none is.
    delta_min: u64,
    /// The size of each remote regular file a delta may start from, by absolute
    /// path (filled only when deltas are on).
    remote_files: HashMap<Vec<u8>, u64>,
    /// Files whose delta failed in this run: they go whole.
    whole: std::collections::HashSet<Vec<u8>>,
}

/// Applies `plan` through `agent` (see the module doc), noting each confirmed
/// file, symlink and removal in `pushed`, then runs post_sync. The files the
/// listing's round placed ahead ([`ahead`]) count as the plan's sends of them.
pub(super) fn apply(
    conn: &Connection,
    agent: Agent<'_>,
    mut plan: Plan,
    listed: &mut AgentListing,
    units: &[Unit<'_>],
    pushed: &mut Pushed,
    report: &mut HostReport,
) -> Result<()> {
    super::report_planned(&plan, report);
    let delta_min = delta::threshold(conn, &agent);
    let mut run = Run {
        remote_files: delta::remote_files(listed, delta_min),
        delta_min,
        whole: Default::default(),
        agent,
        steps: VecDeque::new(),
        report,
        pushed,
        units,
        changed: vec![0; units.len()],
        again: BTreeMap::new(),
        attempt: 1,
        split: conn.may_split(),
    };
    run.settle_ahead(&mut plan, std::mem::take(&mut listed.ahead));
    let reopened = if listed.ended && has_work(&plan) {
        run.reopen(&listed.roots)
    } else {
        Ok(())
    };
    if let Err(e) = reopened.and_then(|()| run.all(plan, &listed.ids)) {
        run.unconfirmed(&e);
        return Err(e);
    }
    let Run {
        agent,
        changed,
        report,
        ..
    } = run;
    agent.finish()?;
    for (unit, n) in units.iter().zip(changed) {
        if n > 0 && !unit.mapping.post_sync.is_empty() {
            crate::exec::post_sync::run(conn, unit.mapping, report);
        }
    }
    Ok(())
}

impl Run<'_, '_, '_> {
    /// Resolves every root again, as [`ask`] did (the same ids), for the rest of
    /// a plan whose listing's batch was ended with the files sent ahead: the
    /// ancestor rule is checked again, and a root refused now fails the steps
    /// below it, each with its own line.
    fn reopen(&mut self, roots: &[ListRoot]) -> Result<()> {
        for (id, root) in roots.iter().enumerate() {
            self.agent.root(id, &root.dir, true)?;
            self.steps.push_back(Step::Reopen(root.dir.clone()));
        }
        Ok(())
    }

    /// Every step of the plan, round after round for files that changed while read.
    fn all(&mut self, plan: Plan, ids: &HashMap<Vec<u8>, usize>) -> Result<()> {
        let id = |root: &[u8]| ids.get(root).copied().unwrap_or(0);
        // Run locks last: a dead run's temporaries go before its lock does.
        let mut stale = plan.stale_at;
        stale.sort_by_key(|(_, rel)| basename(rel).ends_with(b".lock"));
        for (root, rel) in stale {
            self.agent.stale(id(&root), &rel)?;
            self.steps.push_back(Step::Stale(join(&root, &rel)));
        }
        let mut work = plan.work;
        for (root, w) in &mut work {
            for r in std::mem::take(&mut w.removes) {
                self.agent.remove(id(root), &r.rel)?;
                let item = Item {
                    rel: r.rel.clone(),
                    what: ItemKind::Removed,
                    local: r.local,
                    unit: r.unit,
                    size: 0,
                    exists: true,
                    meta: None,
                    follow: false,
                    mode_mask: 0o1777,
                    why: String::new(),
                };
                self.steps.push_back(Step::Remove(item, root.clone()));
            }
        }
        loop {
            for (root, w) in &mut work {
                self.root(id(root), root, w)?;
            }
            while !self.steps.is_empty() {
                let answer = self.agent.answer()?;
                self.settle(answer);
            }
            work = std::mem::take(&mut self.again);
            if work.is_empty() {
                return Ok(());
            }
            self.attempt += 1;
        }
    }

    /// The directories below one root first (in path order, so parents come
    /// first), then its files and symlinks. A big batch makes them in two lanes
    /// (see [`Agent::lanes`]): the first half of the work in path order in lane 0,
    /// the rest in lane 1, so each process mostly works in directories of its own
    /// (two processes creating files in one directory contend for it), and the
    /// stream takes the next item from whichever lane is behind, so both stay busy.
    fn root(&mut self, id: usize, root: &[u8], w: &mut RootWork) -> Result<()> {
        w.items.sort_by(|a, b| a.rel.cmp(&b.rel));
        let (dirs, sent): (Vec<Item>, Vec<Item>) = std::mem::take(&mut w.items)
            .into_iter()
            .filter(|i| !matches!(i.what, ItemKind::Removed))
            .partition(|i| matches!(i.what, ItemKind::Dir));
        let mut later = Vec::new();
        for item in dirs {
            let mode = w.dir_modes.get(&item.rel).copied().unwrap_or(0o755);
            // A directory its owner cannot write gets its mode once its contents are in.
            let first = if mode & 0o700 == 0o700 {
                mode
            } else {
                later.push((item.clone(), mode));
                mode | 0o700
            };
            self.agent.mkdir(id, &item.rel, first)?;
            self.steps.push_back(Step::Dir(item, root.to_vec()));
        }
        let lanes = self.split && worth_two_lanes(&sent);
        if !sent.is_empty() {
            // Named in README, "Logs": the way each batch goes.
            log::debug!(
                "{}: {} item(s) under {} over {}",
                self.report.address,
                sent.len(),
                show(root),
                if lanes { "agent in 2 lanes" } else { "agent" }
            );
        }
        if lanes {
            self.agent.lanes()?;
            self.steps.push_back(Step::Lanes);
        }
        for (item, lane) in in_lanes(sent, lanes) {
            match &item.what {
                ItemKind::Symlink { target } => {
                    let backups = self.units[item.unit].mapping.backups;
                    self.agent.link(id, &item.rel, target, backups, lane)?;
                    self.steps.push_back(Step::Link(item, root.to_vec()));
                }
                _ => self.file(id, root, item, &w.dir_modes, lane)?,
            }
            self.agent.poll()?;
            while let Some(answer) = self.agent.try_answer() {
                self.settle(answer);
            }
        }
        if lanes {
            self.agent.join()?;
            self.steps.push_back(Step::Lanes);
        }
        for (item, mode) in later {
            self.agent.mkdir(id, &item.rel, mode)?;
            self.steps.push_back(Step::Mode(item, root.to_vec()));
        }
        Ok(())
    }

    /// Sends one file, if it is still the file the scan saw.
    fn file(
        &mut self,
        id: usize,
        root: &[u8],
        item: Item,
        dir_modes: &HashMap<Vec<u8>, u32>,
        lane: u8,
    ) -> Result<()> {
        let Some(item) = self.delta(id, root, item)? else {
            return Ok(());
        };
        let mapping = self.units[item.unit].mapping;
        match Reading::open(&item.to_send()) {
            Ok(file) => {
                let sent = self.agent.put(id, &item.rel, file, mapping.backups, lane)?;
                self.report.event(Event::Uploaded { bytes: item.size });
                self.steps.push_back(Step::File(item, root.to_vec(), sent));
            }
            Err(Unsendable::Vanished) => {
                log::debug!(
                    "{}: {} is gone; nothing to send",
                    self.report.address,
                    item.local.display()
                );
                self.report.event(Event::Uploaded { bytes: item.size });
            }
            Err(Unsendable::Changed) => {
                self.report.event(Event::Uploaded { bytes: item.size });
                self.look_again(root, item, dir_modes);
            }
            Err(Unsendable::Unreadable(why)) => {
                self.report.event(Event::Uploaded { bytes: item.size });
                self.report
                    .fail(Failure::Local, &describe(&item, root), &why);
            }
        }
        Ok(())
    }

    /// Queues a file that changed while it was read (or is another file now) for the
    /// next round, as what it is now; fails it after the last round.
    fn look_again(&mut self, root: &[u8], item: Item, dir_modes: &HashMap<Vec<u8>, u32>) {
        if self.attempt >= MAX_ATTEMPTS {
            self.report.fail(
                Failure::Local,
                &describe(&item, root),
                "the local file kept changing while it was read; it will be sent on the next run",
            );
            return;
        }
        log::info!(
            "{}: {} changed while it was read; sending it again",
            self.report.address,
            item.local.display()
        );
        let Some(now) = rescan(&item) else {
            log::debug!("{}: {} is gone", self.report.address, item.local.display());
            return;
        };
        let w = self.again.entry(root.to_vec()).or_default();
        w.dir_modes.clone_from(dir_modes);
        w.items.push(now);
    }

    /// Reports one answer for the oldest unanswered step.
    fn settle(&mut self, answer: Answer) {
        let Some(step) = self.steps.pop_front() else {
            return;
        };
        match answer {
            Answer::Failed(why) => self.refused(step, why),
            _ => self.confirmed(step),
        }
    }

    /// The agent confirmed `step`: counted, reported, noted in the host's record.
    fn confirmed(&mut self, step: Step) {
        match step {
            Step::Lanes | Step::Reopen(_) => {}
            Step::Stale(path) => log::debug!("stale temporary {}: done", show(&path)),
            Step::Remove(item, root) => {
                self.changed[item.unit] += 1;
                let local = item.local.display().to_string();
                let remote = join(&root, &item.rel);
                self.report.removed_path(&local, &show(&remote));
                self.pushed.forget(remote);
            }
            Step::Dir(item, _) | Step::Mode(item, _) => self.changed[item.unit] += 1,
            Step::File(item, root, sent) => self.file_done(item, &root, sent),
            Step::Delta(item, root, sent, carried) => self.delta_done(item, &root, sent, carried),
            Step::Link(item, root) => {
                self.changed[item.unit] += 1;
                let local = item.local.display().to_string();
                let remote = join(&root, &item.rel);
                self.report.sent_file(&local, &show(&remote), 0, &item.why);
                self.pushed.forget(remote);
            }
        }
    }

    /// A file the agent confirmed, by how its data went: whole, changed while it
    /// was read (sent again), or unreadable here.
    fn file_done(&mut self, item: Item, root: &[u8], sent: Finished) {
        match sent {
            Finished::Whole(meta, sha256) => {
                self.changed[item.unit] += 1;
                let local = item.local.display().to_string();
                let remote = join(root, &item.rel);
                self.report
                    .sent_file(&local, &show(&remote), meta.size, &item.why);
                self.pushed.set(remote, Record::sent(&meta, &sha256));
            }
            Finished::Changed => {
                let modes = HashMap::new();
                self.look_again(root, item, &modes);
            }
            Finished::Unreadable(why) => {
                self.report
                    .fail(Failure::Local, &describe(&item, root), &why)
            }
        }
    }

    /// The agent refused `step`, saying `why`.
    fn refused(&mut self, step: Step, why: String) {
        match step {
            Step::Lanes => log::debug!("one lane only: {why}"),
            Step::Reopen(root) => log::debug!("{} resolved again: {why}", show(&root)),
            Step::Stale(path) => log::debug!("stale temporary {}: {why}", show(&path)),
            Step::Dir(item, root) => self.report.fail(
                Failure::Refused,
                &describe(&item, &root),
                &format!(
                    "cannot create remote directory {}: {why}",
                    show(&join(&root, &item.rel))
                ),
            ),
            Step::Delta(item, root, ..) => self.delta_failed(&root, item, &why),
            Step::Remove(item, root)
            | Step::Mode(item, root)
            | Step::File(item, root, _)
            | Step::Link(item, root) => {
                self.report
                    .fail(Failure::Refused, &describe(&item, &root), &why)
            }
        }
    }

    /// The agent stopped or the connection broke: every step not confirmed failed.
    fn unconfirmed(&mut self, e: &anyhow::Error) {
        let why = format!("not confirmed by the remote: {e:#}");
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Stale(_) | Step::Lanes | Step::Reopen(_) => {}
                Step::Remove(item, root)
                | Step::Dir(item, root)
                | Step::Mode(item, root)
                | Step::File(item, root, _)
                | Step::Delta(item, root, ..)
                | Step::Link(item, root) => {
                    self.report
                        .fail(Failure::Connection, &describe(&item, &root), &why)
                }
            }
        }
    }
}

/// The least work ([`cost`]) a batch below one root is made in two lanes for: about
/// 160 small files. Below, starting the helper costs more than it saves. Measured
/// on this project's ext4 VM (BENCHMARKS.md): two processes creating files took
/// about half the time of one, on tmpfs about the same.
const TWO_LANES_FROM: u64 = 2 << 20;

/// Whether `items` are worth two lanes: at least two files or links, and
/// [`TWO_LANES_FROM`] of work.
fn worth_two_lanes(items: &[Item]) -> bool {
    let sent = items
        .iter()
        .filter(|i| matches!(i.what, ItemKind::File | ItemKind::Symlink { .. }));
    sent.clone().count() >= 2 && sent.map(cost).sum::<u64>() >= TWO_LANES_FROM
}

/// The order `items` (files and symlinks, in path order) go in, with their lane:
/// with `lanes`, the first half of the work is lane 0 and the rest lane 1, and the
/// next item is taken from the lane with less work sent so far; else all lane 0.
fn in_lanes(items: Vec<Item>, lanes: bool) -> Vec<(Item, u8)> {
    if !lanes {
        return items.into_iter().map(|i| (i, 0)).collect();
    }
    let total: u64 = items.iter().map(cost).sum();
    let mut halves: [std::collections::VecDeque<Item>; 2] = Default::default();
    let mut so_far = 0;
    for item in items {
        let lane = usize::from(so_far > 0 && so_far * 2 >= total);
        so_far += cost(&item);
        halves[lane].push_back(item);
    }
    let mut sent = [0u64; 2];
    let mut out = Vec::new();
    while let Some(lane) = (0..2)
        .filter(|&l| !halves[l].is_empty())
        .min_by_key(|&l| sent[l])
    {
        let item = halves[lane].pop_front().expect("not empty");
        sent[lane] += cost(&item);
        out.push((item, lane as u8));
    }
    out
}

/// About what an item costs the remote: its bytes plus a fixed price for creating
/// a file (about as much as writing 8 KiB into one).
fn cost(item: &Item) -> u64 {
    match item.what {
        ItemKind::File => item.size + 8192,
        ItemKind::Symlink { .. } => 8192,
        ItemKind::Dir | ItemKind::Removed => 0,
    }
}

/// What `item`'s local path is now, as an item to send (a file or a symlink), or
/// `None` when it is gone or neither.
pub(super) fn rescan(item: &Item) -> Option<Item> {
    let md = if item.follow {
        std::fs::metadata(&item.local)
    } else {
        std::fs::symlink_metadata(&item.local)
    }
    .ok()?;
    let mut now = item.clone();
    if md.is_file() {
        let meta = FileMeta::of(&md);
        now.what = ItemKind::File;
        now.size = meta.size;
        now.meta = Some(meta);
    } else if md.file_type().is_symlink() {
        let target = std::fs::read_link(&item.local).ok()?;
        now.what = ItemKind::Symlink {
            target: std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec(),
        };
        now.size = 0;
        now.meta = None;
    } else {
        return None;
    }
    Some(now)
}

//! The long-lived connection workers of `watch`.
//!
//! At most `number_of_connections` named threads (`xfer-<n>`); host `h` always
//! goes to worker `h % n`, so the changes of one host and path are handled by
//! one thread, in order. Each worker keeps at most one SSH session open (to the
//! host it served last) between changes, so the usual case, hosts ≤ workers,
//! pays no handshake per change.
//!
//! Coalescing: a worker drains its whole queue before each round and keeps, per
//! host, one pending set of paths (and a "full reconcile" flag). Everything that
//! arrives while a transfer runs collapses into one follow-up round, which reads
//! the files as they are then: a burst of 1,000 writes becomes a few transfers
//! and the last content always arrives. A pending full reconcile runs first and
//! the pending paths follow in their own round, compared by content.
//!
//! A host that cannot be reached keeps its pending set (latest per path) and is
//! retried with exponential backoff capped at `[sync] retry_max_s`, while the
//! worker serves its other hosts. It logs one error line when the host goes
//! down and one info line when it comes back, not one per retry. A session that
//! died while idle is reopened once right away before the host counts as down.
//! A host whose failure is deterministic (authentication, a host key, a login
//! shell that prints) is retried at the cap from the start, not hammered.
//!
//! A round that reached the host but had paths refused (a full disk, permission
//! denied) keeps its work in [`Refusals`] and retries it on the same backoff
//! (issue 17). A round cut off mid-way is followed by a full reconcile, whose
//! listing finds the temporaries of the dead session and removes them.
//!
//! After every change of a host's state the worker puts its row on the status
//! board ([`super::status`]), which `hostsync status` reads from status.json.
//!
//! A reloaded configuration (SIGHUP, issue 17) reaches every worker through its
//! queue, in order with the jobs ([`retarget`]): host numbers stay stable across
//! reloads, so the hosts that did not change keep their worker, session and
//! pending work.
//!
//! An idle session is probed every `[ssh] keepalive_s` and replaced when it
//! stops answering ([`keepalive`]).

mod keepalive;
mod retarget;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use retarget::Retarget;

use super::pending::Refusals;
use super::pool::{Panicked, Workers};
use super::status::{Board, HostStatus};
use crate::config::{SshSettings, Target};
use crate::exec::push;
use crate::failure::Failure;
use crate::reconcile::Scope;
use crate::report::{Event, HostReport, Observer};
use crate::transport::ssh::Connection;
use crate::watch::Change;
use crate::watch::route::{Dispatch, Job};

/// First retry delay after a host went down; doubles up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The live workers: one queue each, on the threads of [`super::pool`].
pub(crate) struct Pool {
    /// One queue per worker.
    senders: Vec<Sender<Msg>>,
    /// Final reports, one per host, sent by workers when they stop.
    reports: Receiver<HostReport>,
    /// Number of hosts in force, to know when every report is in.
    hosts: usize,
    /// The threads.
    workers: Workers,
}

/// What a worker's queue carries.
enum Msg {
    /// A job for a host of this worker.
    Job(usize, Job),
    /// A reloaded configuration (boxed: it is big and rare).
    Retarget(Box<Retarget>),
}

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Shared {
    /// All targets, indexed by host number (a host a reload removed keeps its
    /// entry, unread: numbers are never reused).
    pub(crate) targets: Arc<Vec<Target>>,
    /// SSH settings.
    pub(crate) ssh: SshSettings,
    /// Cap of the retry backoff.
    pub(crate) retry_max: Duration,
    /// Set at shutdown: stop between chunks and rounds.
    pub(crate) cancel: Arc<AtomicBool>,
    /// Hears every round's events (the lines `watch` prints on a terminal).
    pub(crate) observer: Observer,
    /// Where a worker that panics sends [`Change::Stop`], so the daemon stops,
    /// joins it and exits non-zero instead of running on without it.
    pub(crate) stop: Option<Sender<Change>>,
    /// Where each host's state goes for status.json, if anywhere.
    pub(crate) status: Option<Arc<Board>>,
}

/// Sends [`Change::Stop`] when dropped while its thread panics.
struct StopOnPanic(Option<Sender<Change>>);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(tx) = &self.0
        {
            let _ = tx.send(Change::Stop);
        }
    }
}

/// How the pool ended: the reports that came in before the deadline, and how many
/// workers were still busy then.
pub(crate) struct Stopped {
    /// One total per host whose worker stopped in time.
    pub(crate) reports: Vec<HostReport>,
    /// Hosts whose worker was still busy at the deadline.
    pub(crate) abandoned: usize,
}

impl Pool {
    /// Starts `workers` (at least 1) worker threads; hosts a reload adds go to
    /// them too, so there may be more workers than hosts at first.
    pub(crate) fn start(shared: Shared, workers: usize) -> Pool {
        let hosts = shared.targets.len();
        let n = workers.max(1);
        let (report_tx, reports) = crossbeam_channel::unbounded();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
        let workers = Workers::start(n, move |w| {
            let _stop = StopOnPanic(shared.stop.clone());
            let mine: Vec<usize> = (0..hosts).filter(|h| h % n == w).collect();
            let worker = Worker::new(shared.clone(), &mine);
            for r in worker.run(receivers[w].clone()) {
                let _ = report_tx.send(r);
            }
        });
        Pool {
            senders,
            reports,
            hosts,
            workers,
        }
    }

    /// Queues a job for its host's worker.
    pub(crate) fn send(&self, d: Dispatch) {
        let w = d.host % self.senders.len();
        // A worker only stops after the pool is shut down, so this cannot fail before.
        let _ = self.senders[w].send(Msg::Job(d.host, d.job));
    }

    /// Stops accepting jobs, lets workers finish (or abort, via the cancel flag),
    /// collects the reports that arrive before `deadline` and joins every worker
    /// that stopped by then; a worker's panic is [`Panicked`].
    pub(crate) fn shutdown(self, deadline: Instant) -> Result<Stopped, Panicked> {
        drop(self.senders);
        let mut reports = Vec::new();
        while reports.len() < self.hosts {
            match self.reports.recv_deadline(deadline) {
                Ok(r) => reports.push(r),
                Err(_) => break,
            }
        }
        self.workers.join(Some(deadline))?;
        let abandoned = self.hosts.saturating_sub(reports.len());
        Ok(Stopped { reports, abandoned })
    }
}

/// Why a host is not being served right now.
struct Down {
    /// When it went down.
    since: Instant,
    /// Current retry delay.
    backoff: Duration,
    /// When to try again.
    next_try: Instant,
}

/// One host's pending work and history, inside its worker.
struct HostState {
    /// Host number.
    idx: usize,
    /// A full reconcile is pending.
    full: bool,
    /// Pending paths per mapping index.
    paths: BTreeMap<usize, BTreeSet<PathBuf>>,
    /// Set while the host is unreachable.
    down: Option<Down>,
    /// Everything done for this host since start.
    total: HostReport,
    /// Work the host refused in part, to retry (issue 17).
    refused: Refusals,
    /// When a round last reached the host and ended (for status.json).
    last_ok: Option<String>,
}

impl HostState {
    /// Host `idx` (whose address is `address`) with nothing pending.
    fn new(idx: usize, address: &str) -> HostState {
        HostState {
            idx,
            full: false,
            paths: BTreeMap::new(),
            down: None,
            total: HostReport::new(address),
            refused: Refusals::default(),
            last_ok: None,
        }
    }

    /// Whether there is anything to do.
    fn pending(&self) -> bool {
        self.full || !self.paths.is_empty()
    }

    /// Whether it may be tried at `now`.
    fn ready(&self, now: Instant) -> bool {
        self.pending() && self.down.as_ref().is_none_or(|d| d.next_try <= now)
    }

    /// Takes the pending work as push scopes. A pending full reconcile goes first and
    /// leaves the pending paths for the next round: the full pass compares by size and
    /// mtime, which cannot always tell a same-size change within the same second (on
    /// a remote that keeps whole seconds and has no record of the path, see
    /// `crate::local::pushed`), so those paths go again, compared by content (as any path
    /// push is).
    fn take(&mut self, mappings: usize) -> Vec<(usize, Scope)> {
        if std::mem::take(&mut self.full) {
            return (0..mappings).map(|m| (m, Scope::All)).collect();
        }
        std::mem::take(&mut self.paths)
            .into_iter()
            .map(|(m, p)| (m, Scope::Paths(p)))
            .collect()
    }

    /// The host's row for status.json.
    fn row(&self, address: &str) -> HostStatus {
        let paths: usize = self.paths.values().map(BTreeSet::len).sum();
        let pending = (usize::from(self.full) + paths + self.refused.kept()) as u64;
        let failing = self.refused.failing();
        let state = if self.down.is_some() {
            "down"
        } else if !failing.is_empty() {
            "failing"
        } else if pending > 0 {
            "catching-up"
        } else {
            "ok"
        };
        HostStatus {
            host: address.to_string(),
            state: state.to_string(),
            pending,
            failing: (failing.iter())
                .map(|(path, reason)| super::status::Failing {
                    path: path.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            last_ok: self.last_ok.clone(),
            bytes: self.total.bytes,
        }
    }

    /// Puts work back after a failed round, merged with what arrived meanwhile.
    fn put_back(&mut self, work: Vec<(usize, Scope)>) {
        for (m, scope) in work {
            match scope {
                Scope::All => self.full = true,
                Scope::Paths(p) => self.paths.entry(m).or_default().extend(p),
            }
        }
    }
}

/// One worker thread's state.
struct Worker {
    /// What every worker shares.
    shared: Shared,
    /// Its hosts by number.
    hosts: BTreeMap<usize, HostState>,
    /// The open session, and which host it is to.
    conn: Option<(usize, Connection)>,
}

impl Worker {
    fn new(shared: Shared, hosts: &[usize]) -> Worker {
        let hosts = hosts
            .iter()
            .map(|&h| (h, HostState::new(h, &shared.targets[h].host.address)))
            .collect();
        Worker {
            shared,
            hosts,
            conn: None,
        }
    }

    /// Serves jobs until the queue closes or shutdown is asked; returns the reports.
    fn run(mut self, rx: Receiver<Msg>) -> Vec<HostReport> {
        loop {
            let wake = match (self.next_retry(), self.keepalive_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wake {
                Some(t) => match rx.recv_deadline(t) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            first
                .into_iter()
                .chain(rx.try_iter())
                .for_each(|m| self.add(m));
            if self.cancelled() {
                break;
            }
            self.keep_alive();
            let now = Instant::now();
            self.take_due_refusals(now);
            let ready: Vec<usize> = self
                .hosts
                .values()
                .filter(|h| h.ready(now))
                .map(|h| h.idx)
                .collect();
            for h in ready {
                if self.cancelled() {
                    break;
                }
                self.publish(h);
                self.serve(h);
                self.publish(h);
            }
            self.hosts.keys().for_each(|&h| self.publish(h));
        }
        self.log_pending();
        self.hosts.into_values().map(|h| h.total).collect()
    }

    /// At shutdown: how many changes each host still had pending (issue 17).
    fn log_pending(&self) {
        for (&h, state) in &self.hosts {
            let row = state.row(&self.shared.targets[h].host.address);
            if row.pending > 0 {
                log::info!(
                    "{}: {} change(s) still pending at shutdown; the next start's reconcile delivers them",
                    row.host,
                    row.pending
                );
            }
        }
    }

    /// Adds one job to its host's pending set, or puts a reload in force.
    fn add(&mut self, msg: Msg) {
        let (host, job) = match msg {
            Msg::Job(host, job) => (host, job),
            Msg::Retarget(r) => return self.retarget(*r),
        };
        let Some(h) = self.hosts.get_mut(&host) else {
            return;
        };
        match job {
            Job::Full => h.full = true,
            Job::Path { mapping, path } => {
                h.paths.entry(mapping).or_default().insert(path);
            }
        }
    }

    /// When the worker must act without a new job: now for a host that is up and
    /// still has work (the paths a full round left for their own round), else the
    /// earliest retry time of a down host with pending work or of refused work.
    fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        let pending = (self.hosts.values())
            .filter(|h| h.pending())
            .map(|h| h.down.as_ref().map_or(now, |d| d.next_try));
        let refused = self.hosts.values().filter_map(|h| h.refused.next_try());
        pending.chain(refused).min()
    }

    /// Moves the refused work that is due into the pending work of its host, unless
    /// the host is down (then it waits for the host).
    fn take_due_refusals(&mut self, now: Instant) {
        for h in self.hosts.values_mut() {
            if h.down.is_none() && h.refused.due(now) {
                let (full, paths) = h.refused.take();
                h.full |= full;
                h.put_back(
                    paths
                        .into_iter()
                        .map(|(m, p)| (m, Scope::Paths(p)))
                        .collect(),
                );
            }
        }
    }

    /// Puts host `h`'s state on the status board.
    fn publish(&self, h: usize) {
        if let Some(board) = &self.shared.status {
            let state = &self.hosts[&h];
            board.set(h, state.row(&self.shared.targets[h].host.address));
        }
    }

    fn cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::Relaxed)
    }

    /// One round for host `h`: connect if needed, push its pending work.
    fn serve(&mut self, h: usize) {
        let target = &self.shared.targets[h];
        let state = self.hosts.get_mut(&h).expect("host of this worker");
        let work = state.take(target.mappings.len());
        self.check_session(h);
        let result = self.push_round(h, &work);
        self.session_used();
        match result {
            Ok(round) => self.host_served(h, &work, &round),
            Err(e) => self.host_failed(h, work, &e),
        }
    }

    /// Pushes `work` to host `h`, on the open session if it is to `h`, else on
    /// a new one; a failure on a reused (idle) session is tried once more on a
    /// fresh session, since the idle one may simply have died.
    /// (No error value is made unless one happens: with `RUST_BACKTRACE` set,
    /// making one captures a backtrace, which every round paid for.)
    fn push_round(&mut self, h: usize, work: &[(usize, Scope)]) -> anyhow::Result<HostReport> {
        let mut retried = false;
        loop {
            let reused = matches!(&self.conn, Some((c, _)) if *c == h);
            if !reused {
                self.connect(h)?;
            }
            let target = &self.shared.targets[h];
            let (_, conn) = self.conn.as_ref().expect("connected above");
            let mut round =
                HostReport::observed(&target.host.address, self.shared.observer.clone());
            round.defer = true;
            let result = push::push_changes(conn, target, work, false, &mut round).map(|()| round);
            if result.is_ok() || !reused || retried || self.cancelled() {
                return result;
            }
            // The idle session may simply have died: reopen once before calling the host down.
            self.conn = None;
            retried = true;
        }
    }

    /// Replaces the worker's session (at most one per worker) with a new one to
    /// host `h`, which stops between chunks once shutdown is asked and keeps its
    /// agent running between rounds (no remote process start per change).
    fn connect(&mut self, h: usize) -> anyhow::Result<()> {
        self.conn = None; // at most one session per worker
        let mut c = Connection::open(&self.shared.targets[h].host, &self.shared.ssh)?;
        c.set_cancel(self.shared.cancel.clone());
        c.set_keep_agent();
        self.conn = Some((h, c));
        Ok(())
    }

    /// After a round that reached the host: logs that a down host is back, keeps
    /// what it refused to retry ([`Refusals::settle`]) and adds the round to the
    /// host's total.
    fn host_served(&mut self, h: usize, work: &[(usize, Scope)], round: &HostReport) {
        let address = &self.shared.targets[h].host.address;
        let state = self.hosts.get_mut(&h).expect("host of this worker");
        if let Some(d) = state.down.take() {
            log::info!(
                "{}: host is back after {}s; pending changes delivered",
                address,
                d.since.elapsed().as_secs()
            );
        }
        let retry_max = self.shared.retry_max;
        (state.refused).settle(address, work, round, retry_max, Instant::now());
        state.last_ok = Some(super::status::now_rfc3339());
        add_up(&mut state.total, round);
    }

    /// After a round that failed: drops the session, keeps the work pending and
    /// (unless shutting down) marks the host down or backs its retry off.
    fn host_failed(&mut self, h: usize, work: Vec<(usize, Scope)>, e: &anyhow::Error) {
        // Cut off after connecting: the dead session's temporaries are found and
        // removed by the full listing of the next round (issue 17).
        let cut = self.conn.take().is_some();
        let address = &self.shared.targets[h].host.address;
        let state = self.hosts.get_mut(&h).expect("host of this worker");
        let n = work.len();
        state.put_back(work);
        state.full |= cut;
        let for_good = Failure::of_host(&format!("{e:#}")) == Failure::Host;
        if self.shared.cancel.load(Ordering::Relaxed) {
            return;
        }
        let retry_max = self.shared.retry_max;
        match &mut state.down {
            None => {
                log::error!(
                    "{}: host down: {e:#}; keeping its pending changes ({n} mapping(s)) and retrying with backoff up to {}s",
                    address,
                    retry_max.as_secs()
                );
                let reason = format!("host down: {e:#}; retrying");
                HostReport::observed(address, self.shared.observer.clone())
                    .event(Event::HostFailed { reason: &reason });
                // Deterministic: retried at the cap, not hammered.
                let backoff = if for_good { retry_max } else { FIRST_RETRY };
                state.down = Some(Down {
                    since: Instant::now(),
                    backoff,
                    next_try: Instant::now() + backoff,
                });
            }
            Some(d) => {
                log::debug!("{}: still down: {e:#}", address);
                d.backoff = (d.backoff * 2).min(retry_max);
                d.next_try = Instant::now() + d.backoff;
            }
        }
    }
}

/// Adds one round's counts to the running total. A failure already in the total
/// (a refused path retried, issue 17) is counted and kept once, so the summary
/// does not grow with every retry.
fn add_up(total: &mut HostReport, round: &HostReport) {
    total.sent += round.sent;
    total.skipped += round.skipped;
    total.removed += round.removed;
    total.bytes += round.bytes;
    for e in &round.errors {
        if !total.errors.contains(e) {
            total.failed += 1;
            total.errors.push(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that panics tells the daemon to stop; one that ends normally does not.
    #[test]
    fn a_panicking_worker_stops_the_daemon() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let guard = StopOnPanic(Some(tx.clone()));
        drop(guard);
        assert!(rx.try_recv().is_err());
        let t = std::thread::spawn(move || {
            let _guard = StopOnPanic(Some(tx));
            panic!("boom");
        });
        assert!(t.join().is_err());
        assert!(matches!(rx.try_recv(), Ok(Change::Stop)));
    }

    /// A failure retried in many rounds counts once in the total.
    #[test]
    fn a_retried_failure_counts_once_in_the_total() {
        let mut total = HostReport::new("h");
        let mut round = HostReport::new("h");
        round.defer = true;
        round.fail(Failure::Refused, "/a -> /b", "no space left on device");
        round.bytes = 3;
        for _ in 0..3 {
            add_up(&mut total, &round);
        }
        assert_eq!((total.failed, total.errors.len(), total.bytes), (1, 1, 9));
    }

    #[test]
    fn pending_work_merges_and_full_goes_first() {
        let mut h = HostState {
            idx: 0,
            full: false,
            paths: BTreeMap::new(),
            down: None,
            total: HostReport::new("h"),
            refused: Refusals::default(),
            last_ok: None,
        };
        h.paths.entry(1).or_default().insert("/a".into());
        h.paths.entry(1).or_default().insert("/a".into());
        let work = h.take(3);
        assert_eq!(work, [(1, Scope::Paths(["/a".into()].into()))]);
        assert!(!h.pending());
        h.paths.entry(1).or_default().insert("/b".into());
        h.put_back(work);
        assert_eq!(h.paths[&1].len(), 2);
        h.full = true;
        assert_eq!(h.take(2), [(0, Scope::All), (1, Scope::All)]);
        // The paths stay for a content-checked round after the full one.
        assert!(h.pending());
        assert_eq!(
            h.take(2),
            [(1, Scope::Paths(["/a".into(), "/b".into()].into()))]
        );
        assert!(!h.pending());
    }
}

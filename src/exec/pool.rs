//! The one worker pool: every connection worker of `sync`, `check` and `watch`
//! is a thread started here.
//!
//! [`Workers::start`] starts `n` named threads (`xfer-<i>`), each running the
//! caller's body with its index; [`Workers::join`] joins every one that ends by a
//! deadline (or all of them), and a worker that panicked (logged with its
//! message by the panic hook of `crate::log::panic` when it happened) is
//! reported as [`Panicked`], which the command turns into exit 1 once the logs
//! are flushed: a panic is a bug, never a silent stop. On top of
//! it, [`for_each`] serves a list of items from one shared queue (the first free
//! worker takes the next item, so one slow host holds up nobody else), which is
//! what `sync`, its dry run and `check` do; the live workers of `watch`
//! ([`super::live`]) give each worker its own queue instead.
//!
//! [`run`] is `for_each` over hosts: each worker opens one SSH session to its
//! host and runs the caller's job on it (a push, a dry run), then logs the
//! host's `done in` line.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::config::{SshSettings, Target};
use crate::report::{Event, HostReport, Observer};
use crate::transport::ssh::Connection;

/// A worker thread panicked: a bug. The panic hook logged it when it happened.
#[derive(Debug)]
pub(crate) struct Panicked {
    /// `THREAD: MESSAGE` of each worker that panicked.
    pub(crate) workers: Vec<String>,
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a worker thread panicked, which is a bug in hostsync: {}",
            self.workers.join("; ")
        )
    }
}

impl std::error::Error for Panicked {}

/// Running worker threads.
pub(crate) struct Workers {
    /// Each worker's name and handle.
    handles: Vec<(String, JoinHandle<()>)>,
    /// The index of each worker that ended, however it ended.
    ended: Receiver<usize>,
}

/// Sends its worker's index on `ended` when dropped: at the end of the worker,
/// also when it unwinds.
struct Ended(crossbeam_channel::Sender<usize>, usize);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

impl Workers {
    /// Starts `n` worker threads named `xfer-<i>`, each running `body(i)`.
    pub(crate) fn start(n: usize, body: impl Fn(usize) + Send + Sync + 'static) -> Workers {
        let body = Arc::new(body);
        let (tx, ended) = crossbeam_channel::unbounded();
        let handles = (0..n)
            .map(|i| {
                let (body, ended) = (body.clone(), Ended(tx.clone(), i));
                let name = format!("xfer-{i}");
                let handle = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        let _ended = ended;
                        body(i)
                    })
                    .expect("cannot start a worker thread");
                (name, handle)
            })
            .collect();
        Workers { handles, ended }
    }

    /// Joins every worker that has ended by `deadline` (`None`: waits for all).
    /// Returns how many were still running then (abandoned: the process exits
    /// without them), or [`Panicked`] when any worker panicked.
    pub(crate) fn join(self, deadline: Option<Instant>) -> Result<usize, Panicked> {
        let mut ended = vec![false; self.handles.len()];
        for _ in 0..self.handles.len() {
            let got = match deadline {
                Some(d) => self.ended.recv_deadline(d).ok(),
                None => self.ended.recv().ok(),
            };
            match got {
                Some(i) => ended[i] = true,
                None => break,
            }
        }
        let mut panicked = Vec::new();
        let mut abandoned = 0;
        for ((name, handle), ended) in self.handles.into_iter().zip(ended) {
            if !ended {
                abandoned += 1;
                continue;
            }
            if let Err(payload) = handle.join() {
                // Already in error.log, from the panic hook, with where it happened.
                panicked.push(format!("{name}: {}", panic_message(payload.as_ref())));
            }
        }
        if panicked.is_empty() {
            Ok(abandoned)
        } else {
            Err(Panicked { workers: panicked })
        }
    }
}

/// The text a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `each(i, &items[i])` for every item on at most `workers` threads, from one
/// shared queue; the results come back in the order of `items`.
pub(crate) fn for_each<T, R>(
    items: Arc<Vec<T>>,
    workers: usize,
    each: impl Fn(usize, &T) -> R + Send + Sync + 'static,
) -> Result<Vec<R>, Panicked>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
{
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<usize>();
    for i in 0..items.len() {
        job_tx.send(i).expect("receiver is alive");
    }
    drop(job_tx);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, R)>();
    let n = workers.min(items.len());
    let pool = Workers::start(n, move |_| {
        for i in job_rx.iter() {
            if done_tx.send((i, each(i, &items[i]))).is_err() {
                break;
            }
        }
    });
    pool.join(None)?;
    let mut results: Vec<(usize, R)> = done_rx.try_iter().collect();
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// What a worker does with a connected host: fill the report.
pub(crate) type Job = dyn Fn(&Connection, &Target, &mut HostReport) + Send + Sync;

/// Runs `job` on every target with at most `workers` sessions at once; each host's
/// events go to its observer (`observers[i]` for `targets[i]`, none if missing).
/// Reports come back in the order of `targets`.
pub(crate) fn run(
    targets: Vec<Target>,
    ssh: &SshSettings,
    workers: usize,
    observers: Vec<Observer>,
    job: Arc<Job>,
) -> Result<Vec<HostReport>, Panicked> {
    let ssh = ssh.clone();
    for_each(Arc::new(targets), workers, move |i, target| {
        let observer = observers.get(i).cloned().unwrap_or_default();
        serve(target, &ssh, observer, job.as_ref())
    })
}

/// Connects to one host and runs `job` on it.
fn serve(target: &Target, ssh: &SshSettings, observer: Observer, job: &Job) -> HostReport {
    let host = &target.host;
    let mut report = HostReport::observed(&host.address, observer);
    let started = std::time::Instant::now();
    match Connection::open(host, ssh) {
        Ok(conn) => job(&conn, target, &mut report),
        Err(e) => report.fail_host(&format!("{e:#}")),
    }
    log::info!(
        "{}: done in {} ms: {} sent, {} skipped, {} removed, {} failed, {} bytes",
        host.address,
        started.elapsed().as_millis(),
        report.sent,
        report.skipped,
        report.removed,
        report.failed,
        report.bytes
    );
    report.event(Event::Finished { report: &report });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item is served once, results in order, on named worker threads.
    #[test]
    fn for_each_serves_every_item_in_order() {
        let items: Vec<u32> = (0..50).collect();
        let got = for_each(Arc::new(items), 4, |i, x| {
            let name = std::thread::current().name().unwrap().to_string();
            assert!(name.starts_with("xfer-"), "{name}");
            (i, x * 2)
        })
        .unwrap();
        assert_eq!(
            got,
            (0..50).map(|i| (i as usize, i * 2)).collect::<Vec<_>>()
        );
    }

    /// A worker's panic is joined, named with its message, and returned; the
    /// other workers still finish their items.
    #[test]
    fn a_worker_panic_is_joined_and_returned() {
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        let err = for_each(Arc::new((0..20).collect::<Vec<u32>>()), 3, move |_, x| {
            if *x == 7 {
                panic!("item seven");
            }
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap_err();
        assert_eq!(err.workers.len(), 1, "{err}");
        assert!(err.workers[0].starts_with("xfer-"), "{err}");
        assert!(err.workers[0].ends_with(": item seven"), "{err}");
        assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 19);
    }

    /// A worker still running at the deadline is counted as abandoned, not waited for.
    #[test]
    fn join_stops_waiting_at_the_deadline() {
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        let pool = Workers::start(2, move |i| {
            if i == 1 {
                let _ = wait.recv();
            }
        });
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        assert_eq!(pool.join(Some(deadline)).unwrap(), 1);
        drop(release);
    }
}

//! Serving many hosts at once: a pool of connection workers.
//!
//! At most `number_of_connections` named worker threads (`xfer-<n>`) take hosts
//! from a crossbeam channel; each opens one SSH session to its host and pushes
//! every mapping of that host over it (no handshake per file). A slow or dead
//! host occupies one worker for at most the connect timeout; the others carry
//! on. Shutdown is by dropping the sender: workers end when the channel is empty.
//! What a worker does with a host once connected is the caller's `job`: a push
//! ([`push::push_host`]) or a dry run ([`push::dry_run_host`]).

pub mod agent;
pub mod bounded;
pub mod jump;
pub mod live;
pub mod pace;
mod quickack;
pub mod remote;
pub mod runs;
pub mod scp;
pub mod ssh;
pub mod tar;

use std::thread;

use crate::config::{SshSettings, Target};
#[cfg(doc)]
use crate::push;
use crate::report::{Event, HostReport, Observer};

/// What a worker does with a connected host: fill the report.
pub type Job<'a> = dyn Fn(&ssh::Connection, &Target, &mut HostReport) + Sync + 'a;

/// Runs `job` on every target with at most `workers` sessions at once; each host's
/// events go to its observer (`observers[i]` for `targets[i]`, none if missing).
/// Reports come back in the order of `targets`.
pub fn run(
    targets: &[&Target],
    ssh: &SshSettings,
    workers: usize,
    observers: &[Observer],
    job: &Job<'_>,
) -> Vec<HostReport> {
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<usize>();
    for i in 0..targets.len() {
        job_tx.send(i).expect("receiver is alive");
    }
    drop(job_tx);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, HostReport)>();
    thread::scope(|scope| {
        for n in 0..workers.min(targets.len()) {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            thread::Builder::new()
                .name(format!("xfer-{n}"))
                .spawn_scoped(scope, move || {
                    for i in job_rx {
                        let observer = observers.get(i).cloned().unwrap_or_default();
                        let report = serve(targets[i], ssh, observer, job);
                        if done_tx.send((i, report)).is_err() {
                            break;
                        }
                    }
                })
                .expect("cannot start a worker thread");
        }
    });
    drop(done_tx);
    let mut reports: Vec<(usize, HostReport)> = done_rx.into_iter().collect();
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Connects to one host and runs `job` on it.
fn serve(target: &Target, ssh: &SshSettings, observer: Observer, job: &Job<'_>) -> HostReport {
    let host = &target.host;
    let mut report = HostReport::observed(&host.address, observer);
    let started = std::time::Instant::now();
    match ssh::Connection::open(host, ssh) {
        Ok(conn) => {
            job(&conn, target, &mut report);
        }
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

//! `hostsync watch`: the live replication daemon.
//!
//! Start-up order matters (lsyncd misses changes made while it syncs at start):
//! the watcher starts first, then every host is given a full reconcile, so a
//! change made during the reconcile is queued as an event and pushed after it.
//! Then: watcher thread → [`Change`] on a bounded channel → the planner (this
//! thread: debounce and mapping lookup) → per-host jobs → the connection
//! workers of [`crate::exec::live`]. Idle, every thread blocks on a channel or on a signal:
//! no polling loop, no CPU.
//!
//! One daemon per config.ini ([`super::instance`]); it keeps
//! `<log_path>/status.json` current for `hostsync status` ([`crate::exec::status`]).
//!
//! `--host` narrows the run to the named hosts; a host without a mapping file is
//! warned about on stderr and shown as skipped in the closing table. On a
//! terminal (unless `--quiet`) every file sent or removed, failure and post_sync
//! command of every round is one plain line on stdout, as `sync -v` prints them.
//!
//! SIGHUP: read config.ini, connection_info.json and the mappings again and put
//! them in force without a restart ([`reload`], issue 17).
//!
//! SIGINT/SIGTERM: stop taking changes, abort the transfer in flight between two
//! chunks (its temporary is removed on the remote), log how many changes each
//! host still had pending and a summary per host, and exit 0, within
//! [`SHUTDOWN_GRACE`]. A second signal exits at once.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::cli::WatchArgs;
use crate::config::{Config, Target};
use crate::exec::live::{Pool, Shared, Stopped};
use crate::exec::status::{self, Board};
use crate::exit::ExitCode;
use crate::watch::route::{Planner, Route};
use crate::watch::{self, Change};

mod reload;

use reload::{Fleet, Live};

/// How long shutdown waits for workers before exiting anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(4_000);

/// Runs the daemon until a signal. `Err` is a setup problem (exit 2).
pub(crate) fn run(config: &Config, args: &WatchArgs, verbose: bool) -> Result<ExitCode> {
    config.check_log_dir_outside_sources()?;
    let all = super::select_hosts(config, &args.hosts)?;
    let _instance = super::instance::acquire(&config.log_dir, &config.path)?;
    let _logs = super::start_logs(config, verbose)?;
    let skipped = super::skip_unmapped(config, &all);
    let fleet = Fleet::new(
        all.into_iter()
            .filter(|t| t.mapping_file.is_some())
            .cloned()
            .collect::<Vec<Target>>(),
    );
    let hosts = fleet.hosts().len();
    let routes = fleet.routes();

    let (tx, rx) = crossbeam_channel::bounded(watch::CHANNEL_CAPACITY);
    let watcher = start_watcher(&routes, tx.clone())?;
    let cancel = Arc::new(AtomicBool::new(false));
    let signals = spawn_signal_thread(tx.clone())?;

    let board = status_board(config, &fleet.targets());
    let writer = (board.start_writer(&config.log_dir)).context("cannot start the status thread")?;
    let mut pool = start_pool(config, args, fleet.targets(), &cancel, &tx, &board);
    let mut planner = Planner::new(routes, hosts, config.debounce);
    planner.full().into_iter().for_each(|d| pool.send(d));
    log::info!(
        "watching {} source(s) for {hosts} host(s); started with a full reconcile",
        watcher.watched
    );
    println!(
        "hostsync: watching {} source(s) for {hosts} host(s)",
        watcher.watched
    );

    let (only, tx) = (args.hosts.clone(), tx.clone());
    let mut live = Live::new(config.clone(), only, fleet, watcher, tx, skipped, board);
    relay_changes(&mut planner, &rx, &mut pool, &mut live);

    shut_down(live, pool, &cancel, writer)?;
    // Last: a second signal during the shutdown still exits at once.
    signals.stop();
    log::info!("stopped");
    Ok(ExitCode::Success)
}

/// Stops the pool within [`SHUTDOWN_GRACE`] (the transfers in flight aborted
/// between chunks), writes status.json a last time, and logs and prints the
/// summary per host.
fn shut_down(live: Live, pool: Pool, cancel: &AtomicBool, writer: status::Writer) -> Result<()> {
    log::info!("shutting down: no more changes are taken");
    let Live {
        config, skipped, ..
    } = live;
    cancel.store(true, Ordering::Relaxed);
    let stopped = pool.shutdown(Instant::now() + SHUTDOWN_GRACE)?;
    writer.stop();
    log_stopped(&stopped);
    let reports = super::in_config_order(
        &config,
        stopped.reports.into_iter().chain(skipped).collect(),
    );
    let human = std::io::stdout().is_terminal();
    print!("{}", crate::report::summary(&reports, human));
    Ok(())
}

/// Starts the watcher on every distinct source of `routes`; a source that
/// cannot be watched is logged as an error and the others are watched anyway.
fn start_watcher(routes: &[Route], tx: Sender<Change>) -> Result<watch::Watcher> {
    let watcher = watch::start(&reload::sources(routes), tx)?;
    for (src, reason) in &watcher.failed {
        log::error!("{}: not watched: {reason}", src.display());
    }
    Ok(watcher)
}

/// Starts the connection workers for `targets`; a worker that must stop the
/// daemon sends [`Change::Stop`] on `stop`.
fn start_pool(
    config: &Config,
    args: &WatchArgs,
    targets: Arc<Vec<Target>>,
    cancel: &Arc<AtomicBool>,
    stop: &Sender<Change>,
    status: &Arc<Board>,
) -> Pool {
    Pool::start(
        Shared {
            targets,
            ssh: config.ssh.clone(),
            retry_max: config.retry_max,
            cancel: cancel.clone(),
            observer: push_lines(args),
            stop: Some(stop.clone()),
            status: Some(status.clone()),
        },
        config.connections,
    )
}

/// The board status.json is written from: one row per target, this daemon's line.
fn status_board(config: &Config, targets: &[Target]) -> Arc<Board> {
    let hosts: Vec<String> = targets.iter().map(|t| t.host.address.clone()).collect();
    let daemon = status::Daemon {
        pid: std::process::id(),
        started: status::now_rfc3339(),
        config: super::instance::canonical(&config.path)
            .display()
            .to_string(),
    };
    Board::new(&hosts, daemon)
}

/// The planner loop: takes changes (or wakes when a debounce is due) and sends
/// the resulting jobs to the pool, until [`Change::Stop`] or every sender is gone;
/// [`Change::Reload`] reloads the configuration.
fn relay_changes(planner: &mut Planner, rx: &Receiver<Change>, pool: &mut Pool, live: &mut Live) {
    loop {
        let next = match planner.next_due() {
            Some(due) => rx.recv_deadline(due),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        let dispatches = match next {
            Ok(Change::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Change::Reload) => {
                live.reload(planner, pool);
                Vec::new()
            }
            Ok(Change::Rescan(reason)) => {
                log::error!("events may have been lost: {reason}; reconciling every host in full");
                planner.change(Change::Rescan(reason), now)
            }
            Ok(change) => {
                log::debug!("change: {change:?}");
                planner.change(change, now)
            }
            Err(RecvTimeoutError::Timeout) => planner.due(now),
        };
        dispatches.into_iter().for_each(|d| pool.send(d));
    }
}

/// Logs the per-host summaries of a stopped pool, and how many hosts were
/// abandoned at the shutdown deadline.
fn log_stopped(stopped: &Stopped) {
    for r in &stopped.reports {
        log::info!(
            "{}: summary since start: {} sent, {} removed, {} failed, {} bytes",
            r.address,
            r.sent,
            r.removed,
            r.failed,
            r.bytes
        );
    }
    if stopped.abandoned > 0 {
        log::warn!(
            "{} host(s) were still busy after {}s and were abandoned; their temporaries are removed by the next run",
            stopped.abandoned,
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// On a terminal (unless `--quiet`), one plain line per file sent or removed,
/// failure and post_sync command, as `sync -v` prints them (issue 14); piped,
/// nothing (info.log has every line).
fn push_lines(args: &WatchArgs) -> crate::report::Observer {
    if std::io::stdout().is_terminal() && !args.quiet {
        crate::output::plain_lines()
    } else {
        crate::report::Observer::default()
    }
}

/// The signal thread, to be stopped and joined at shutdown.
struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalThread {
    /// Closes the signal iterator and joins the thread.
    fn stop(self) {
        self.handle.close();
        if self.thread.join().is_err() {
            log::error!("the signal thread panicked; this is a bug in hostsync");
        }
    }
}

/// A thread that turns the first SIGINT/SIGTERM into [`Change::Stop`] (a second
/// one exits) and each SIGHUP into [`Change::Reload`].
fn spawn_signal_thread(tx: Sender<Change>) -> Result<SignalThread> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    let _ = tx.send(Change::Reload);
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    log::warn!("second signal {sig}: exiting now");
                    log::logger().flush();
                    std::process::exit(130);
                }
                log::info!("signal {sig} received");
                let _ = tx.send(Change::Stop);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(SignalThread { handle, thread })
}

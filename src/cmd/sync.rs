//! `hostsync sync`: one push of every mapping to every (or every named) host, or
//! with `--dry-run` a comparison that changes nothing; `sync PATH...` pushes only
//! what lies under those paths ([`super::narrow`]).
//!
//! The local scan runs on a thread of its own ([`Scanning`]) while the workers
//! connect and log in; each worker waits for it only once it has a session.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::narrow;
use crate::cli::SyncArgs;
use crate::config::exclude::Excludes;
use crate::config::{Config, Target};
use crate::exec::push;
use crate::exit::ExitCode;
use crate::local::Sources;
use crate::output::{Output, Style};
use crate::reconcile::Scope;
use crate::reconcile::render::{self, Diff};
use crate::report::{self, HostReport};
use crate::transport::ssh::Connection;

/// The local scan of every src ([`crate::local::scan_all`]) on a thread of its
/// own; the first [`Scanning::get`] waits for it, later ones share its result.
struct Scanning {
    /// The scan, until someone waits for it.
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<Sources>>>,
    /// Its result.
    done: std::sync::OnceLock<Sources>,
}

impl Scanning {
    fn start<'a>(srcs: impl Iterator<Item = (&'a Path, &'a Excludes, bool)>) -> Scanning {
        let owned: Vec<(PathBuf, Excludes, bool)> = srcs
            .map(|(p, e, f)| (p.to_path_buf(), e.clone(), f))
            .collect();
        let thread = std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || {
                crate::local::scan_all(owned.iter().map(|(p, e, f)| (p.as_path(), e, *f)))
            })
            .expect("cannot start the scan thread");
        Scanning {
            thread: std::sync::Mutex::new(Some(thread)),
            done: std::sync::OnceLock::new(),
        }
    }

    /// The scanned sources, waiting for the scan if it is still running. A panic
    /// of the scan is propagated (see [`crate::exec::pool`]).
    fn get(&self) -> &Sources {
        self.done.get_or_init(|| {
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .expect("the scan is joined once");
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// What one `sync` run works on: the hosts, and with `sync PATH...` the paths.
struct Work {
    /// Hosts to contact, in connection_info.json's order.
    targets: Vec<Target>,
    /// Hosts without a mapping file: shown as skipped, never contacted.
    skipped: Vec<HostReport>,
    /// `sync PATH...`: the absolute paths (empty: everything).
    paths: Vec<PathBuf>,
}

/// `hostsync sync`. An `Err` is a usage or setup problem (exit 2); host
/// failures are in the exit code.
pub(crate) fn run(config: &Config, args: &SyncArgs, verbose: bool) -> Result<ExitCode> {
    let (work, _logs) = prepare(config, args, verbose)?;
    // Narrowed to paths, each host scans what it pushes when it pushes it.
    let scan: Vec<_> = if work.paths.is_empty() {
        push::srcs(&config.targets).collect()
    } else {
        Vec::new()
    };
    let sources = Arc::new(Scanning::start(scan.into_iter()));
    let output = output_for(args, verbose);
    let observers: Vec<_> = (work.targets.iter())
        .map(|t| output.observer(&t.host.address))
        .collect();
    let (shared, paths) = (Arc::new(args.clone()), Arc::new(work.paths));
    let job = move |conn: &Connection, t: &Target, r: &mut HostReport| {
        serve(conn, t, r, &shared, &paths, &sources)
    };
    let reports = crate::exec::pool::run(
        work.targets,
        &config.ssh,
        config.connections,
        observers,
        Arc::new(job),
    )?;
    let reports = if args.dry_run {
        reports
    } else {
        if args.json {
            for r in &work.skipped {
                println!("{}", report::json_summary(r));
            }
        }
        super::in_config_order(config, reports.into_iter().chain(work.skipped).collect())
    };
    print!("{}", output.finish(&reports));
    Ok(finish(&reports, args, verbose))
}

/// Picks the hosts and paths, starts the logs, warns about what will not be
/// pushed, and logs the start line.
fn prepare(config: &Config, args: &SyncArgs, verbose: bool) -> Result<(Work, crate::log::Logs)> {
    let selected = super::select_hosts(config, &args.hosts)?;
    let mapped: Vec<&Target> = (selected.iter().copied())
        .filter(|t| t.mapping_file.is_some())
        .collect();
    let paths = if args.paths.is_empty() {
        Vec::new()
    } else {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        narrow::resolve(&args.paths, &cwd)
    };
    narrow::check_covered(&mapped, &args.paths, &paths)?;
    let targets: Vec<Target> = (mapped.into_iter())
        .filter(|t| paths.is_empty() || !narrow::work(t, &paths).is_empty())
        .cloned()
        .collect();
    let logs = super::start_logs(config, verbose)?;
    let skipped = super::skip_unmapped(config, &selected);
    warn_missing_paths(&args.paths, &paths);
    ::log::info!(
        "{} started: {} host(s), {} connection(s) at most, config {}",
        if args.dry_run { "dry run" } else { "sync" },
        targets.len(),
        config.connections,
        config.path.display()
    );
    let work = Work {
        targets,
        skipped,
        paths,
    };
    Ok((work, logs))
}

/// A warning for each `sync PATH` that does not exist here: only its removal is
/// pushed.
fn warn_missing_paths(given: &[PathBuf], paths: &[PathBuf]) {
    for (given, p) in given.iter().zip(paths) {
        if std::fs::symlink_metadata(p).is_err() {
            let w = format!(
                "sync {}: no such file or directory here; only its removal is pushed, to mappings with \"delete\": true",
                given.display()
            );
            ::log::warn!("{w}");
            eprintln!("hostsync: warning: {w}");
        }
    }
}

/// How progress is shown. A dry run's stdout is its differences: no bars, no
/// per-file lines there.
fn output_for(args: &SyncArgs, verbose: bool) -> Output {
    let tty = std::io::stdout().is_terminal();
    let style = if args.dry_run {
        Style::choose(args.json, true, false, false)
    } else {
        Style::choose(args.json, args.quiet, verbose, tty)
    };
    Output::new(style, args.dry_run, tty && !args.json)
}

/// What a worker does with one connected host.
fn serve(
    conn: &Connection,
    t: &Target,
    r: &mut HostReport,
    args: &SyncArgs,
    paths: &[PathBuf],
    sources: &Scanning,
) {
    if !paths.is_empty() {
        let work: Vec<(usize, Scope)> = narrow::work(t, paths);
        if args.dry_run {
            push::dry_run_changes(conn, t, &work, args.checksum, r);
        } else if let Err(e) = push::push_changes(conn, t, &work, args.checksum, r) {
            r.fail_host(&format!("{e:#}"));
        }
        return;
    }
    let sources = sources.get();
    if args.dry_run {
        push::dry_run_host(conn, t, sources, args.checksum, r)
    } else {
        push::push_host(conn, t, sources, args.checksum, r)
    }
}

/// The closing lines (a dry run's differences, the finished line) and the exit code.
/// `verbose`: a dry run's lines say how each file would go.
fn finish(reports: &[HostReport], args: &SyncArgs, verbose: bool) -> ExitCode {
    let ok = reports.iter().all(HostReport::ok);
    let differences: usize = reports.iter().map(|r| r.diffs.len()).sum();
    if args.dry_run {
        show_dry_run(reports, args.json, verbose, differences);
    } else {
        ::log::info!(
            "sync finished: {}",
            if ok {
                "all hosts ok"
            } else {
                "some hosts or files failed"
            }
        );
    }
    if !ok {
        ExitCode::Failure
    } else if args.exit_code && differences > 0 {
        ExitCode::Differences
    } else {
        ExitCode::Success
    }
}

/// A dry run's differences on stdout, its errors and closing line on stderr.
fn show_dry_run(reports: &[HostReport], json: bool, verbose: bool, differences: usize) {
    let by_host: Vec<(&str, &[Diff])> = reports
        .iter()
        .map(|r| (r.address.as_str(), r.diffs.as_slice()))
        .collect();
    print!("{}", render::render(&by_host, json, verbose));
    if !json {
        for r in reports {
            if let Some(reason) = &r.fatal {
                eprintln!("error: {}: {}", r.address, crate::escape::controls(reason));
            }
            for e in &r.errors {
                eprintln!("error: {}: {}", r.address, crate::escape::controls(e));
            }
        }
        let with = reports.iter().filter(|r| !r.diffs.is_empty()).count();
        eprintln!(
            "hostsync: dry run: {differences} difference(s) on {with} of {} host(s); nothing was changed",
            reports.len()
        );
    }
    ::log::info!("dry run finished: {differences} difference(s); nothing was changed");
}

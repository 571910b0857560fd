//! hostsync: push files and folder trees from this machine to many hosts over
//! plain SSH, a destination per host, atomically, with an audit trail.
//!
//! Data flow of `sync`: [`config`] loads and validates config.ini,
//! connection_info.json and the mapping files → [`local`] scans every src once →
//! [`transfer`] runs a pool of workers, one SSH session per host → [`push`]
//! compares each host with its sources and uploads the differences (through the
//! remote agent where the host has perl, else as a tar stream or over SCP) →
//! [`report`] sums up and [`output`] shows it (progress bars, plain lines or
//! JSON); [`log`] writes info.log and error.log throughout. Per-mapping options:
//! [`exclude`], backups (in the commit step of [`transfer::remote`]) and
//! [`post_sync`]; `sync --dry-run` ([`dry_run`]) compares without changing
//! anything; `sync PATH...` ([`narrow`]) pushes only what lies under those paths.
//! `check` ([`check`]) loads the same config, then logs in to every host and tests
//! its destinations without sending anything; `check --offline` ([`offline`]) only
//! validates the files. `init` ([`init`]) writes the [`example`] configuration, and
//! `man` ([`man`]) prints the manual page.

pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dry_run;
pub mod escape;
pub mod example;
pub mod exclude;
pub mod exit;
pub mod init;
pub mod local;
pub mod log;
pub mod man;
pub mod narrow;
pub mod offline;
pub mod output;
pub mod plan;
pub mod post_sync;
pub mod push;
pub mod report;
pub mod transfer;
pub mod watch;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::CommandFactory as _;

use crate::cli::{Cli, Command, SyncArgs};
use crate::config::Config;
use crate::exit::ExitCode;
use crate::output::{Output, Style};

/// Runs one command to completion and says how it ended. Errors are printed here.
pub fn run(cli: Cli) -> ExitCode {
    if let Some(code) = run_without_config(&cli.command) {
        return code;
    }
    // `check --offline` checks the files, not the calling shell's variables.
    let unset = match cli.command {
        Command::Check { offline: true, .. } => config::UnsetVars::Warn,
        _ => config::UnsetVars::Refuse,
    };
    let config = match config::load_with(&cli.config, unset) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostsync: {}", escape::controls(&format!("{e:#}")));
            return ExitCode::Usage;
        }
    };
    let result = match &cli.command {
        Command::Sync(args) => sync(&config, args, cli.verbose),
        Command::Check { offline: true, .. } => Ok(offline::run(&config, cli.verbose)),
        Command::Check { json, hosts, .. } => check(&config, *json, hosts, cli.verbose),
        Command::Watch(args) => daemon::run(&config, args, cli.verbose),
        Command::Completions { .. } | Command::Init { .. } | Command::Man => {
            unreachable!("handled by run_without_config")
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostsync: {}", escape::controls(&format!("{e:#}")));
            ExitCode::Usage
        }
    }
}

/// Runs the commands that need no configuration (`completions`, `init`, `man`);
/// `None` for the others.
fn run_without_config(command: &Command) -> Option<ExitCode> {
    match command {
        Command::Completions { shell } => {
            // It only describes the command line. Generated into memory first:
            // clap_complete panics on a write error such as `| head`.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "hostsync", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &script);
            Some(ExitCode::Success)
        }
        Command::Init { dir } => Some(init::run(dir)),
        Command::Man => Some(man::print()),
        _ => None,
    }
}

/// The local scan of every src ([`local::scan_all`]) on a thread of its own; the first
/// [`Scanning::get`] waits for it, later ones share its result.
struct Scanning {
    /// The scan, until someone waits for it.
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<push::Sources>>>,
    /// Its result.
    done: std::sync::OnceLock<push::Sources>,
}

impl Scanning {
    fn start<'a>(srcs: impl Iterator<Item = (&'a Path, &'a exclude::Excludes, bool)>) -> Scanning {
        let owned: Vec<(PathBuf, exclude::Excludes, bool)> = srcs
            .map(|(p, e, f)| (p.to_path_buf(), e.clone(), f))
            .collect();
        let thread = std::thread::spawn(move || {
            local::scan_all(owned.iter().map(|(p, e, f)| (p.as_path(), e, *f)))
        });
        Scanning {
            thread: std::sync::Mutex::new(Some(thread)),
            done: std::sync::OnceLock::new(),
        }
    }

    /// The scanned sources, waiting for the scan if it is still running.
    fn get(&self) -> &push::Sources {
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

/// `hostsync sync`: one push of every mapping to every (or every named) host, or with
/// `--dry-run` a comparison that changes nothing. An `Err` is a usage or setup
/// problem (exit 2); host failures are in the exit code.
fn sync(config: &Config, args: &SyncArgs, verbose: bool) -> Result<ExitCode> {
    let selected = select_hosts(config, &args.hosts)?;
    let mapped: Vec<&config::Target> = selected
        .iter()
        .copied()
        .filter(|t| t.mapping_file.is_some())
        .collect();
    // `sync PATH...`: per host, the mappings (and parts of them) the paths name.
    let paths = if args.paths.is_empty() {
        Vec::new()
    } else {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        narrow::resolve(&args.paths, &cwd)
    };
    narrow::check_covered(&mapped, &args.paths, &paths)?;
    let works: Vec<Vec<(usize, push::Scope)>> =
        mapped.iter().map(|t| narrow::work(t, &paths)).collect();
    let targets: Vec<&config::Target> = mapped
        .iter()
        .zip(&works)
        .filter(|(_, w)| paths.is_empty() || !w.is_empty())
        .map(|(t, _)| *t)
        .collect();
    let _logs = start_logs(config, verbose)?;
    let skipped = skip_unmapped(config, &selected);
    for (given, p) in args.paths.iter().zip(&paths) {
        if std::fs::symlink_metadata(p).is_err() {
            let w = format!(
                "sync {}: no such file or directory here; only its removal is pushed, to mappings with \"delete\": true",
                given.display()
            );
            ::log::warn!("{w}");
            eprintln!("hostsync: warning: {w}");
        }
    }
    let what = if args.dry_run { "dry run" } else { "sync" };
    ::log::info!(
        "{what} started: {} host(s), {} connection(s) at most, config {}",
        targets.len(),
        config.connections,
        config.path.display()
    );
    // The local scan runs while the workers connect and log in (several round trips
    // per host), and each worker waits for it only once it has a session.
    // Narrowed to paths, each host scans what it pushes when it pushes it.
    let scan: Vec<_> = if paths.is_empty() {
        push::srcs(&config.targets).collect()
    } else {
        Vec::new()
    };
    let sources = Scanning::start(scan.into_iter());
    let tty = std::io::stdout().is_terminal();
    // A dry run's stdout is its differences: no bars, no per-file lines there.
    let style = if args.dry_run {
        Style::choose(args.json, true, false, false)
    } else {
        Style::choose(args.json, args.quiet, verbose, tty)
    };
    let output = Output::new(style, args.dry_run, tty && !args.json);
    let observers: Vec<_> = targets
        .iter()
        .map(|t| output.observer(&t.host.address))
        .collect();
    let job = |conn: &transfer::ssh::Connection, t: &config::Target, r: &mut report::HostReport| {
        if !paths.is_empty() {
            let work = narrow::work(t, &paths);
            if args.dry_run {
                push::dry_run_changes(conn, t, &work, r);
            } else if let Err(e) = push::push_changes(conn, t, &work, r) {
                r.fail_host(&format!("{e:#}"));
            }
            return;
        }
        let sources = sources.get();
        if args.dry_run {
            push::dry_run_host(conn, t, sources, r)
        } else {
            push::push_host(conn, t, sources, r)
        }
    };
    let reports = transfer::run(&targets, &config.ssh, config.connections, &observers, &job);
    let reports = if args.dry_run {
        reports
    } else {
        if args.json {
            for r in &skipped {
                println!("{}", report::json_summary(r));
            }
        }
        in_config_order(config, reports.into_iter().chain(skipped).collect())
    };
    print!("{}", output.finish(&reports));
    let ok = reports.iter().all(report::HostReport::ok);
    let differences: usize = reports.iter().map(|r| r.diffs.len()).sum();
    if args.dry_run {
        let by_host: Vec<(&str, &[dry_run::Diff])> = reports
            .iter()
            .map(|r| (r.address.as_str(), r.diffs.as_slice()))
            .collect();
        print!("{}", dry_run::render(&by_host, args.json));
        if !args.json {
            for r in &reports {
                if let Some(reason) = &r.fatal {
                    eprintln!("error: {}: {}", r.address, escape::controls(reason));
                }
                for e in &r.errors {
                    eprintln!("error: {}: {}", r.address, escape::controls(e));
                }
            }
            let with = reports.iter().filter(|r| !r.diffs.is_empty()).count();
            eprintln!(
                "hostsync: dry run: {differences} difference(s) on {with} of {} host(s); nothing was changed",
                reports.len()
            );
        }
        ::log::info!("dry run finished: {differences} difference(s); nothing was changed");
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
    Ok(if !ok {
        ExitCode::Failure
    } else if args.exit_code && differences > 0 {
        ExitCode::Differences
    } else {
        ExitCode::Success
    })
}

/// The hosts `--host` names (all when none), in connection_info.json's order. An
/// `Err` (exit 2) names a `--host` that is not configured.
pub(crate) fn select_hosts<'a>(
    config: &'a Config,
    only: &[String],
) -> Result<Vec<&'a config::Target>> {
    for name in only {
        if config.disabled.iter().any(|t| &t.host.address == name) {
            bail!(
                "--host {name}: this host is disabled in connection_info.json (\"disabled\": true); remove that field to use it"
            );
        }
        if !config.targets.iter().any(|t| &t.host.address == name) {
            bail!(
                "--host {name}: no such host in connection_info.json; use an ip_address listed there"
            );
        }
    }
    Ok(config
        .targets
        .iter()
        .filter(|t| only.is_empty() || only.contains(&t.host.address))
        .collect())
}

/// A skipped report for each of `targets` without a mapping file, with a warning
/// in error.log and on stderr for each: such a host is shown, never silently left
/// out (issue 14, bug 6). A bastion without one is just a bastion (issue 18):
/// neither warned about nor shown.
pub(crate) fn skip_unmapped(
    config: &Config,
    targets: &[&config::Target],
) -> Vec<report::HostReport> {
    let mut out = Vec::new();
    for t in targets
        .iter()
        .filter(|t| t.mapping_file.is_none() && t.bastion_for == 0)
    {
        let address = &t.host.address;
        let why = format!("no mapping file {}", config.mapping_file_shown(address));
        let warning =
            format!("{address}: {why}; skipping this host (create that file to push to it)");
        ::log::warn!("{warning}");
        eprintln!("hostsync: warning: {warning}");
        out.push(report::HostReport {
            skip: Some(why),
            ..report::HostReport::new(address)
        });
    }
    out
}

/// `reports` sorted as their hosts are in connection_info.json.
pub(crate) fn in_config_order(
    config: &Config,
    mut reports: Vec<report::HostReport>,
) -> Vec<report::HostReport> {
    let index = |r: &report::HostReport| {
        config
            .targets
            .iter()
            .position(|t| t.host.address == r.address)
    };
    reports.sort_by_key(index);
    reports
}

/// `hostsync check`: log in to every host and test its destinations; sends nothing.
/// An `Err` is a setup problem (exit 2); host failures are in the exit code.
fn check(config: &Config, json: bool, hosts: &[String], verbose: bool) -> Result<ExitCode> {
    let targets: Vec<config::Target> = select_hosts(config, hosts)?.into_iter().cloned().collect();
    let _logs = start_logs(config, verbose)?;
    ::log::info!("config {}", config.path.display());
    let how = check::Show { json, verbose };
    Ok(check::run(&targets, &config.ssh, config.connections, how))
}

/// Starts info.log and error.log, then records the configuration's warnings
/// (e.g. a hosts file with passwords that others can read) in error.log and on
/// stderr, what it skipped on purpose (ssh_config keywords) as debug lines, and
/// each disabled host in info.log. A warning never stops the run.
pub(crate) fn start_logs(config: &Config, verbose: bool) -> Result<log::Logs> {
    let logs = log::start(&config.log_dir, verbose)?;
    for d in &config.debug_notes {
        ::log::debug!("{d}");
    }
    for w in &config.warnings {
        ::log::warn!("{w}");
        eprintln!("hostsync: warning: {}", escape::controls(w));
    }
    for t in &config.disabled {
        ::log::info!(
            "{}: disabled in connection_info.json; not contacted",
            t.host.address
        );
    }
    if config.targets.is_empty() && !config.disabled.is_empty() {
        eprintln!(
            "hostsync: every host in connection_info.json is disabled; nothing to do (remove \"disabled\": true from a host to use it)"
        );
    }
    Ok(logs)
}

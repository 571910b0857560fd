//! hostsync: push files and folder trees from this machine to many hosts over
//! plain SSH, a destination per host, atomically, with an audit trail.
//!
//! Data flow of `sync`: [`config`] loads and validates config.ini,
//! connection_info.json and the mapping files → [`local`] scans every src once →
//! [`transfer`] runs a pool of workers, one SSH session per host → [`push`]
//! compares each host with its sources and uploads the differences over SCP →
//! [`report`] sums up; [`log`] writes info.log and error.log throughout.
//! `check` ([`check`]) loads the same config, then logs in to every host and
//! tests its destinations without sending anything.

pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod local;
pub mod log;
pub mod plan;
pub mod push;
pub mod report;
pub mod transfer;
pub mod watch;

use anyhow::{Result, bail};

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::exit::ExitCode;

/// Runs one command to completion and says how it ended. Errors are printed here.
pub fn run(cli: Cli) -> ExitCode {
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostsync: {e:#}");
            return ExitCode::Usage;
        }
    };
    let result = match &cli.command {
        Command::Sync { hosts } => sync(&config, hosts, cli.verbose),
        Command::Check => check(&config, cli.verbose),
        Command::Watch => daemon::run(&config, cli.verbose),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostsync: {e:#}");
            ExitCode::Usage
        }
    }
}

/// `hostsync sync`: one push of every mapping to every (or every named) host.
/// An `Err` is a usage or setup problem (exit 2); host failures are in the exit code.
fn sync(config: &Config, only: &[String], verbose: bool) -> Result<ExitCode> {
    for name in only {
        if !config.targets.iter().any(|t| &t.host.address == name) {
            bail!(
                "--host {name}: no such host in connection_info.json; use an ip_address listed there"
            );
        }
    }
    let _logs = start_logs(config, verbose)?;
    let targets: Vec<&config::Target> = config
        .targets
        .iter()
        .filter(|t| only.is_empty() || only.contains(&t.host.address))
        .filter(|t| {
            if t.mapping_file.is_none() {
                ::log::warn!(
                    "{}: no mapping file; skipping this host (create {}.json in the mappings folder)",
                    t.host.address,
                    t.host.address
                );
            }
            t.mapping_file.is_some()
        })
        .collect();
    ::log::info!(
        "sync started: {} host(s), {} connection(s) at most, config {}",
        targets.len(),
        config.connections,
        config.path.display()
    );
    let sources = local::scan_all(push::srcs(&config.targets));
    let reports = transfer::run(&targets, &sources, &config.ssh, config.connections);
    print!("{}", report::summary(&reports));
    let ok = reports.iter().all(report::HostReport::ok);
    ::log::info!(
        "sync finished: {}",
        if ok {
            "all hosts ok"
        } else {
            "some hosts or files failed"
        }
    );
    Ok(if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// `hostsync check`: log in to every host and test its destinations; sends nothing.
/// An `Err` is a setup problem (exit 2); host failures are in the exit code.
fn check(config: &Config, verbose: bool) -> Result<ExitCode> {
    let _logs = start_logs(config, verbose)?;
    ::log::info!("config {}", config.path.display());
    Ok(check::run(&config.targets, &config.ssh, config.connections))
}

/// Starts info.log and error.log, then records the configuration's warnings
/// (e.g. a hosts file with passwords that others can read) in error.log and on
/// stderr. A warning never stops the run.
pub(crate) fn start_logs(config: &Config, verbose: bool) -> Result<log::Logs> {
    let logs = log::start(&config.log_dir, verbose)?;
    for w in &config.warnings {
        ::log::warn!("{w}");
        eprintln!("hostsync: warning: {w}");
    }
    Ok(logs)
}

//! hostsync: push files and folder trees from this machine to many hosts over
//! plain SSH, a destination per host, atomically, with an audit trail.
//!
//! Data flow of `sync`: [`config`] loads and validates config.ini,
//! connection_info.json and the mapping files → [`local`] scans every src once →
//! [`transfer`] runs a pool of workers, one SSH session per host → [`push`]
//! compares each host with its sources and uploads the differences over SCP →
//! [`report`] sums up; [`log`] writes info.log and error.log throughout.

pub mod cli;
pub mod config;
pub mod exit;
pub mod local;
pub mod log;
pub mod push;
pub mod report;
pub mod transfer;

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
    let _logs = log::start(&config.log_dir, verbose)?;
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

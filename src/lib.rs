//! hostsync: push files and folder trees from this machine to many hosts over
//! plain SSH, a destination per host, atomically, with an audit trail.
//!
//! The folders read as the data flow, and each depends only on those listed
//! before it (`tests/layout.rs` checks it; README, "Architecture", walks one
//! change through them):
//! - [`escape`], [`exit`], [`cli`], [`log`], [`failure`]: leaves every layer may use;
//! - [`config`]: config.ini, connection_info.json and the mapping files, read and
//!   validated into one `Config` (the example configuration too);
//! - [`local`]: the local side: scanning a src, excludes, reading a file to send,
//!   the host records of what was pushed;
//! - [`remote`]: what runs on a remote host and the grammar of its answers:
//!   temporaries' names, quoting, the listing and commit scripts, the agent;
//! - [`transport`]: one SSH session and the ways bytes travel over it (SCP sink,
//!   tar stream, the agent's channel), paced and bounded;
//! - [`reconcile`]: pure: a local view and a remote listing in, a plan out (what
//!   to send, remove, keep), and a dry run's rendering of it;
//! - [`watch`]: inotify events to changes, and changes routed to hosts;
//! - [`report`], [`output`]: what happened per host, and how it is shown;
//! - [`exec`]: a plan applied to one host over one connection, the one worker
//!   pool, the live workers of `watch`, post_sync;
//! - [`cmd`]: one thin module per subcommand.

pub mod cli;
pub mod cmd;
pub(crate) mod config;
pub(crate) mod escape;
pub(crate) mod exec;
pub mod exit;
pub(crate) mod failure;
pub(crate) mod local;
pub(crate) mod log;
pub(crate) mod output;
pub(crate) mod reconcile;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod transport;
pub(crate) mod watch;

use clap::CommandFactory as _;

use crate::cli::{Cli, Command};
use crate::exit::ExitCode;

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
        Err(e) => return usage_error(&e),
    };
    let result = match &cli.command {
        Command::Sync(args) => cmd::sync::run(&config, args, cli.verbose),
        Command::Check { offline: true, .. } => Ok(cmd::offline::run(&config, cli.verbose)),
        Command::Check { json, hosts, .. } => cmd::check::run(&config, *json, hosts, cli.verbose),
        Command::Watch(args) => cmd::watch::run(&config, args, cli.verbose),
        Command::Status { json } => cmd::status::run(&config, *json),
        Command::Completions { .. } | Command::Init { .. } | Command::Man => {
            unreachable!("handled by run_without_config")
        }
    };
    result.unwrap_or_else(|e| usage_error(&e))
}

/// Prints a usage or setup error as one line: exit 2. A worker's panic (a bug,
/// already in error.log) is exit 1.
fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("hostsync: {}", escape::controls(&format!("{e:#}")));
    if e.is::<exec::pool::Panicked>() {
        ExitCode::Failure
    } else {
        ExitCode::Usage
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
        Command::Init { dir } => Some(cmd::init::run(dir)),
        Command::Man => Some(cmd::man::print()),
        _ => None,
    }
}

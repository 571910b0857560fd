//! The command line: `hostsync [-c|--config PATH] COMMAND`. Only clap structs live here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Push files and folder trees to many hosts over SSH, with a destination per host.
#[derive(Debug, Parser)]
#[command(name = "hostsync", version, about, long_about = None)]
pub struct Cli {
    /// The config.ini to use, or a directory holding one; paths inside it are
    /// relative to its directory.
    #[arg(
        short,
        long,
        global = true,
        value_name = "PATH",
        default_value = "config.ini"
    )]
    pub(crate) config: PathBuf,

    /// Also write debug lines to info.log; `sync` prints a plain line per file.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Push every mapping to every host once, then print a summary per host.
    Sync(SyncArgs),
    /// Push everything once, then push every change to the mapped hosts as it
    /// happens, until SIGINT/SIGTERM.
    Watch(WatchArgs),
    /// Validate the configuration, then log in to every host and test that each
    /// destination directory is writable, without transferring anything.
    Check {
        /// Print one JSON object per host instead of the table.
        #[arg(long)]
        json: bool,
        /// Only validate the files, as `sync` would, and contact no host; an unset
        /// passkey_env/passphrase_env variable or a missing src is a warning.
        #[arg(long, conflicts_with = "json")]
        offline: bool,

        /// Only these hosts (as written in connection_info.json); repeatable.
        #[arg(long = "host", value_name = "IP")]
        hosts: Vec<String>,
    },
    /// Show what the running `watch` daemon of this config is doing: per host its
    /// state, pending and failing paths, last push and bytes; exit 0 when all are
    /// ok or catching up, 1 when one is down or failing, 3 when no daemon runs.
    Status {
        /// One JSON object per host, then one for the daemon.
        #[arg(long)]
        json: bool,
    },
    /// Write an example configuration (config.ini, connection_info.json,
    /// mappings/, logs/) into DIR, then say what to edit; never overwrites.
    Init {
        /// The folder to write into (created if missing).
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Print the hostsync(1) manual page (roff) on stdout, e.g. for `man -l -`.
    Man,
    /// Print a shell completion script for hostsync on stdout.
    Completions {
        /// The shell: bash, zsh or fish (also elvish, powershell).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The flags of `hostsync sync`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SyncArgs {
    /// Push only the mappings and files under these local paths (relative to the
    /// current directory); each must lie inside, or contain, a mapping's src.
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,

    /// Only these hosts (as written in connection_info.json); repeatable.
    #[arg(long = "host", value_name = "IP")]
    pub(crate) hosts: Vec<String>,

    /// Compare local and remote and print one line per difference; change nothing.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,

    /// With --dry-run: exit 3 when there are differences (0 when there are none).
    #[arg(long, requires = "dry_run")]
    pub(crate) exit_code: bool,

    /// Compare every file by content (SHA-256 on both sides), not by size and
    /// mtime, as rsync -c does; slower, since every file is read (-c is --config).
    #[arg(long)]
    pub(crate) checksum: bool,

    /// Print one JSON object per result line (files, errors, post_sync, hosts).
    #[arg(long)]
    pub(crate) json: bool,

    /// No progress bars: only the summary table and errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// The flags of `hostsync watch`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct WatchArgs {
    /// Only these hosts (as written in connection_info.json); repeatable.
    #[arg(long = "host", value_name = "IP")]
    pub(crate) hosts: Vec<String>,

    /// No line per push on a terminal; only the summary table when it stops.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

//! The command line: `hostsync [-c|--config PATH] COMMAND`. Only clap structs live here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Push files and folder trees to many hosts over SSH, with a destination per host.
#[derive(Debug, Parser)]
#[command(name = "hostsync", version, about, long_about = None)]
pub struct Cli {
    /// The config.ini to use; paths inside it are relative to its directory.
    #[arg(
        short,
        long,
        global = true,
        value_name = "PATH",
        default_value = "config.ini"
    )]
    pub config: PathBuf,

    /// Also write debug lines to info.log.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Push every mapping to every host once, then print a summary per host.
    Sync {
        /// Only these hosts (as written in connection_info.json); repeatable.
        #[arg(long = "host", value_name = "IP")]
        hosts: Vec<String>,
    },
    /// Push everything once, then push every change to the mapped hosts as it
    /// happens, until SIGINT/SIGTERM.
    Watch,
    /// Validate the configuration, then log in to every host and test that each
    /// destination directory is writable, without transferring anything.
    Check,
}

//! One module per subcommand, each thin: it picks the hosts, starts the logs and
//! hands the work to the layers below.

pub(crate) mod check;
pub(crate) mod init;
pub(crate) mod instance;
pub(crate) mod man;
pub(crate) mod narrow;
pub(crate) mod offline;
pub(crate) mod status;
pub(crate) mod sync;
pub mod watch;

use anyhow::{Result, bail};

use crate::config::{self, Config};
use crate::report;

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

/// Starts info.log and error.log, then records the configuration's warnings
/// (e.g. a hosts file with passwords that others can read) in error.log and on
/// stderr, what it skipped on purpose (ssh_config keywords) as debug lines, and
/// each disabled host in info.log. A warning never stops the run. From here on
/// a panic on any thread is one error.log line and a non-zero exit
/// ([`crate::log::panic`], issue 17).
pub(crate) fn start_logs(config: &Config, verbose: bool) -> Result<crate::log::Logs> {
    let logs = crate::log::start(&config.log_dir, verbose)?;
    crate::log::panic::install();
    for d in &config.debug_notes {
        ::log::debug!("{d}");
    }
    for w in &config.warnings {
        ::log::warn!("{w}");
        eprintln!("hostsync: warning: {}", crate::escape::controls(w));
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

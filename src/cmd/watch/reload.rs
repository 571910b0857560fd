//! SIGHUP in `hostsync watch` (issue 17): config.ini, connection_info.json and
//! the mappings are read again and put in force without a restart.
//!
//! The new configuration is loaded and checked exactly as a start checks it
//! (the same loader, `--host` and the log folder rule), so a reload that fails
//! logs the one line `sync` would exit 2 with, and the configuration in force
//! stays. One that loads is compared with it host by host, by `ip_address`
//! ([`Fleet::update`]): an added host and a changed one (its entry or its
//! mappings) get the full reconcile a start gives, a removed one gets no more
//! pushes, and an unchanged one keeps its pending work and session (the workers'
//! side is `crate::exec::live`'s retarget). The watcher follows the sources: it
//! is replaced by one on the new set when the set changed, the new one started
//! before the old one stops, so no event falls between them.
//!
//! Two settings stay as they were at start, with a warning: `log_path` (the logs,
//! run locks and push records are open there) and `number_of_connections` (the
//! worker threads).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use crossbeam_channel::Sender;

use crate::config::{self, Config, Target};
use crate::exec::live::Pool;
use crate::exec::status::Board;
use crate::report::HostReport;
use crate::watch::route::{Dispatch, Job, Planner, Route};
use crate::watch::{self, Change};

/// Every host the daemon has served, numbered for good: a host keeps its number
/// while it stays configured, a new one gets the next, and a removed one's
/// number is not used again.
pub(super) struct Fleet {
    /// Each host number's entry (a removed host's as it last was).
    targets: Vec<Target>,
    /// Whether each host number is in the configuration in force.
    live: Vec<bool>,
}

/// What a reload changed, as host numbers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Delta {
    /// New hosts.
    pub(super) added: Vec<usize>,
    /// Hosts whose entry or mappings changed.
    pub(super) changed: Vec<usize>,
    /// Hosts no longer configured.
    pub(super) removed: Vec<usize>,
}

impl Fleet {
    /// Hosts `0..targets.len()`, all in force.
    pub(super) fn new(targets: Vec<Target>) -> Fleet {
        let live = vec![true; targets.len()];
        Fleet { targets, live }
    }

    /// Puts `new` in force, matching hosts by address; says what changed.
    pub(super) fn update(&mut self, new: Vec<Target>) -> Delta {
        let mut delta = Delta::default();
        let mut seen = vec![false; self.targets.len()];
        for t in new {
            let known = (0..self.targets.len())
                .find(|&h| self.live[h] && self.targets[h].host.address == t.host.address);
            match known {
                Some(h) => {
                    seen[h] = true;
                    if self.targets[h] != t {
                        self.targets[h] = t;
                        delta.changed.push(h);
                    }
                }
                None => {
                    delta.added.push(self.targets.len());
                    self.targets.push(t);
                    self.live.push(true);
                }
            }
        }
        for (h, seen) in seen.into_iter().enumerate() {
            if self.live[h] && !seen {
                self.live[h] = false;
                delta.removed.push(h);
            }
        }
        delta
    }

    /// Every host number's entry, for the workers.
    pub(super) fn targets(&self) -> Arc<Vec<Target>> {
        Arc::new(self.targets.clone())
    }

    /// The host numbers in force.
    pub(super) fn hosts(&self) -> Vec<usize> {
        (0..self.targets.len()).filter(|&h| self.live[h]).collect()
    }

    /// The hosts in force by number, with their addresses (status.json's rows).
    pub(super) fn rows(&self) -> Vec<(usize, String)> {
        (self.hosts().into_iter())
            .map(|h| (h, self.targets[h].host.address.clone()))
            .collect()
    }

    /// One route per (host in force, mapping).
    pub(super) fn routes(&self) -> Vec<Route> {
        self.hosts()
            .into_iter()
            .flat_map(|h| {
                self.targets[h]
                    .mappings
                    .iter()
                    .enumerate()
                    .map(move |(m, mapping)| {
                        Route::new(h, m, &mapping.src, !mapping.src.is_file())
                            .with_exclude(mapping.exclude.clone())
                    })
            })
            .collect()
    }

    /// The addresses of `hosts`, comma-separated.
    fn names(&self, hosts: &[usize]) -> String {
        let names: Vec<&str> = hosts
            .iter()
            .map(|&h| self.targets[h].host.address.as_str())
            .collect();
        names.join(", ")
    }
}

/// The distinct sources of `routes`, sorted.
pub(super) fn sources(routes: &[Route]) -> Vec<PathBuf> {
    let mut srcs: Vec<PathBuf> = routes.iter().map(|r| r.src.clone()).collect();
    srcs.sort();
    srcs.dedup();
    srcs
}

/// What a reload may replace, owned by the daemon's planner loop.
pub(super) struct Live {
    /// The configuration in force.
    pub(super) config: Config,
    /// `--host`: the hosts this daemon serves (all when empty).
    only: Vec<String>,
    /// Every host served so far, numbered.
    fleet: Fleet,
    /// The watcher on the sources in force.
    pub(super) watcher: watch::Watcher,
    /// The sources it was started on.
    watched: Vec<PathBuf>,
    /// Where a new watcher sends its changes.
    tx: Sender<Change>,
    /// Hosts without a mapping file, for the closing table.
    pub(super) skipped: Vec<HostReport>,
    /// status.json's rows, which follow the hosts in force.
    board: Arc<Board>,
}

impl Live {
    /// The daemon as started.
    pub(super) fn new(
        config: Config,
        only: Vec<String>,
        fleet: Fleet,
        watcher: watch::Watcher,
        tx: Sender<Change>,
        skipped: Vec<HostReport>,
        board: Arc<Board>,
    ) -> Live {
        let watched = sources(&fleet.routes());
        Live {
            config,
            only,
            fleet,
            watcher,
            watched,
            tx,
            skipped,
            board,
        }
    }

    /// Reads the configuration again and puts it in force (see the module
    /// docs); a configuration that does not load is logged and changes nothing.
    pub(super) fn reload(&mut self, planner: &mut Planner, pool: &mut Pool) {
        let path = self.config.path.display().to_string();
        log::info!("SIGHUP: reloading the configuration from {path}");
        let (new, targets, skipped) = match self.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                log::error!("configuration not reloaded, the one in force stays: {e:#}");
                return;
            }
        };
        let delta = self.fleet.update(targets);
        pool.retarget(
            self.fleet.targets(),
            &new.ssh,
            new.retry_max,
            &delta.added,
            &delta.removed,
        );
        self.board.follow(&self.fleet.rows());
        let routes = self.fleet.routes();
        self.follow_sources(&routes);
        planner.replace(routes, self.fleet.hosts(), new.debounce);
        for &host in delta.added.iter().chain(&delta.changed) {
            pool.send(Dispatch {
                host,
                job: Job::Full,
            });
        }
        log::info!(
            "reloaded {path}: {} host(s) in force; added: [{}]; changed: [{}]; removed: [{}]; watching {} source(s)",
            self.fleet.hosts().len(),
            self.fleet.names(&delta.added),
            self.fleet.names(&delta.changed),
            self.fleet.names(&delta.removed),
            self.watcher.watched
        );
        self.config = new;
        self.skipped = skipped;
    }

    /// Loads and checks the configuration as a start does: the new one, the
    /// hosts to serve (with a mapping file) and the skipped ones. What must
    /// stay as it was at start is put back, with a warning.
    fn load(&self) -> Result<(Config, Vec<Target>, Vec<HostReport>)> {
        let mut new = config::load_with(&self.config.path, config::UnsetVars::Refuse)?;
        self.keep_fixed(&mut new);
        new.check_log_dir_outside_sources()?;
        let all = super::super::select_hosts(&new, &self.only)?;
        for w in &new.warnings {
            log::warn!("{w}");
        }
        let skipped = super::super::skip_unmapped(&new, &all);
        let targets = all
            .into_iter()
            .filter(|t| t.mapping_file.is_some())
            .cloned()
            .collect();
        Ok((new, targets, skipped))
    }

    /// Puts back in `new` what a reload cannot change: `log_path` (and what
    /// lives below it) and `number_of_connections`, with a warning for each.
    fn keep_fixed(&self, new: &mut Config) {
        let old = &self.config;
        if new.log_dir != old.log_dir {
            log::warn!(
                "{}: log_path changed to {}; that takes effect at the next start, the logs stay in {}",
                old.path.display(),
                new.log_dir.display(),
                old.log_dir.display()
            );
            new.log_dir = old.log_dir.clone();
            new.ssh.runs_dir = old.ssh.runs_dir.clone();
            new.ssh.pushed_dir = old.ssh.pushed_dir.clone();
        }
        if new.connections != old.connections {
            log::warn!(
                "{}: number_of_connections changed to {}; that takes effect at the next start, {} stay in force",
                old.path.display(),
                new.connections,
                old.connections
            );
            new.connections = old.connections;
        }
    }

    /// Replaces the watcher by one on the sources of `routes` when they are not
    /// the ones watched; the new one starts before the old one stops. A watcher
    /// that cannot start is logged and the old one stays.
    fn follow_sources(&mut self, routes: &[Route]) {
        let srcs = sources(routes);
        if srcs == self.watched {
            return;
        }
        match super::start_watcher(routes, self.tx.clone()) {
            Ok(w) => {
                self.watcher = w;
                self.watched = srcs;
            }
            Err(e) => log::error!("{e:#}; the sources watched before the reload stay watched"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Host;

    fn target(address: &str, user: &str) -> Target {
        Target {
            host: Host {
                address: address.into(),
                user: user.into(),
                ..Host::default()
            },
            mapping_file: Some(format!("/m/{address}.json").into()),
            mappings: Vec::new(),
            bastion_for: 0,
        }
    }

    /// Hosts keep their numbers; a new one gets the next; a removed one's number
    /// is not used again, even when the same address comes back.
    #[test]
    fn hosts_keep_their_numbers_across_reloads() {
        let mut f = Fleet::new(vec![target("a", "u"), target("b", "u")]);
        assert_eq!(f.hosts(), [0, 1]);
        let d = f.update(vec![target("b", "u"), target("c", "u")]);
        assert_eq!(
            d,
            Delta {
                added: vec![2],
                changed: vec![],
                removed: vec![0]
            }
        );
        assert_eq!(f.hosts(), [1, 2]);
        let d = f.update(vec![target("a", "u"), target("b", "v"), target("c", "u")]);
        assert_eq!(
            d,
            Delta {
                added: vec![3],
                changed: vec![1],
                removed: vec![]
            }
        );
        assert_eq!(f.names(&f.hosts()), "b, c, a");
        assert_eq!(f.targets()[1].host.user, "v");
        assert_eq!(f.update(f.targets[1..].to_vec()), Delta::default());
    }
}

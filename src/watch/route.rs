//! The planner: turns [`Change`]s into per-host [`Job`]s. Pure logic, no I/O;
//! the clock is passed in, so debouncing is tested without sleeping.
//!
//! A path that is [`Change::Ready`] or [`Change::Gone`] is dispatched at once
//! (latency is the point); a path that is [`Change::Writing`] waits until no
//! write was seen for the debounce period, unless it becomes ready first.
//! Each dispatch names the local path; the worker looks at the path when it
//! runs, so however many changes pile up meanwhile, the latest content is what
//! is sent, once. Coalescing of repeated jobs happens in the worker queue
//! (`exec::live`), which dedups everything that arrived while it was busy.
//! A change to a path the mapping excludes (`"exclude"`, issue 5) is dropped
//! here; one that only a directory pattern might exclude (`cache/` when the path
//! is gone and its kind unknown) goes on, and the worker, which looks, drops it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::exclude::Excludes;
use crate::watch::Change;

/// Which host and mapping a local path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// Index of the host (target).
    pub(crate) host: usize,
    /// Index of the mapping within that host's mappings.
    pub(crate) mapping: usize,
    /// The mapping's src, normalised.
    pub(crate) src: PathBuf,
    /// Whether src is a directory (a tree) or a single file.
    pub(crate) is_dir: bool,
    /// The mapping's exclude patterns (relative to src).
    pub(crate) exclude: Excludes,
}

impl Route {
    /// A route for `src` (trailing slashes and `.` parts removed).
    pub(crate) fn new(host: usize, mapping: usize, src: &Path, is_dir: bool) -> Route {
        let src: PathBuf = src
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        Route {
            host,
            mapping,
            src,
            is_dir,
            exclude: Excludes::default(),
        }
    }

    /// The same route with the mapping's exclude patterns.
    pub(crate) fn with_exclude(mut self, exclude: Excludes) -> Route {
        self.exclude = exclude;
        self
    }

    /// Whether a change at `path` concerns this route (and is not excluded).
    fn covers(&self, path: &Path) -> bool {
        if !self.is_dir {
            return path == self.src;
        }
        match path.strip_prefix(&self.src) {
            Ok(rel) => !self.exclude.surely_excluded(rel),
            Err(_) => false,
        }
    }
}

/// Work for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Job {
    /// Compare and push every mapping (startup, lost events).
    Full,
    /// Push this local path of this mapping (and what is below it).
    Path { mapping: usize, path: PathBuf },
}

/// A job for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dispatch {
    /// Index of the host.
    pub(crate) host: usize,
    /// What to do.
    pub(crate) job: Job,
}

/// The planner's state.
pub(crate) struct Planner {
    /// Every (host, mapping) with its src.
    routes: Vec<Route>,
    /// The hosts in force, for full reconciles.
    hosts: Vec<usize>,
    /// Quiet period for writes that never close.
    debounce: Duration,
    /// Paths being written, with the time they become due.
    writing: HashMap<PathBuf, Instant>,
}

impl Planner {
    /// A planner over `routes` for `hosts` hosts.
    pub(crate) fn new(routes: Vec<Route>, hosts: usize, debounce: Duration) -> Planner {
        Planner {
            routes,
            hosts: (0..hosts).collect(),
            debounce,
            writing: HashMap::new(),
        }
    }

    /// Puts a reloaded configuration in force (issue 17): its routes, the
    /// hosts a full reconcile is for, and its debounce. A path being written
    /// stays due; when it is, it goes where the new routes say.
    pub(crate) fn replace(&mut self, routes: Vec<Route>, hosts: Vec<usize>, debounce: Duration) {
        self.routes = routes;
        self.hosts = hosts;
        self.debounce = debounce;
    }

    /// Takes one change at time `now`; returns what to dispatch right away.
    pub(crate) fn change(&mut self, change: Change, now: Instant) -> Vec<Dispatch> {
        match change {
            Change::Ready(p) | Change::Gone(p) => {
                self.writing.remove(&p);
                self.route(p)
            }
            Change::Writing(p) => {
                if self.routes.iter().any(|r| r.covers(&p)) {
                    self.writing.insert(p, now + self.debounce);
                } else {
                    log::trace!("{}: not under any mapping, ignored", p.display());
                }
                self.due(now)
            }
            Change::Rescan(_) => self.full(),
            Change::Stop | Change::Reload => Vec::new(),
        }
    }

    /// Paths whose quiet period ended by `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Dispatch> {
        let mut ready: Vec<PathBuf> = self
            .writing
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(p, _)| p.clone())
            .collect();
        ready.sort();
        let mut out = Vec::new();
        for p in ready {
            self.writing.remove(&p);
            out.extend(self.route(p));
        }
        out
    }

    /// When the next quiet period ends, if any path is being written.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.writing.values().min().copied()
    }

    /// A full reconcile for every host.
    pub(crate) fn full(&self) -> Vec<Dispatch> {
        self.hosts
            .iter()
            .map(|&host| Dispatch {
                host,
                job: Job::Full,
            })
            .collect()
    }

    /// One job per (host, mapping) that covers `path`.
    fn route(&self, path: PathBuf) -> Vec<Dispatch> {
        let out: Vec<Dispatch> = self
            .routes
            .iter()
            .filter(|r| r.covers(&path))
            .map(|r| Dispatch {
                host: r.host,
                job: Job::Path {
                    mapping: r.mapping,
                    path: path.clone(),
                },
            })
            .collect();
        if out.is_empty() {
            log::trace!("{}: not under any mapping, ignored", path.display());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner() -> Planner {
        Planner::new(
            vec![
                Route::new(0, 0, Path::new("/src/site/"), true),
                Route::new(1, 2, Path::new("/src/site"), true),
                Route::new(1, 0, Path::new("/etc/app.conf"), false),
            ],
            2,
            Duration::from_millis(50),
        )
    }

    fn path_job(host: usize, mapping: usize, p: &str) -> Dispatch {
        Dispatch {
            host,
            job: Job::Path {
                mapping,
                path: p.into(),
            },
        }
    }

    #[test]
    fn ready_routes_to_every_covering_mapping_at_once() {
        let mut p = planner();
        let t = Instant::now();
        let d = p.change(Change::Ready("/src/site/a/b.html".into()), t);
        assert_eq!(
            d,
            [
                path_job(0, 0, "/src/site/a/b.html"),
                path_job(1, 2, "/src/site/a/b.html")
            ]
        );
        assert_eq!(
            p.change(Change::Ready("/etc/app.conf".into()), t),
            [path_job(1, 0, "/etc/app.conf")]
        );
        assert!(p.change(Change::Ready("/etc/other".into()), t).is_empty());
        assert!(p.change(Change::Ready("/src/sitemap".into()), t).is_empty());
    }

    #[test]
    fn writing_waits_for_quiet_period_and_ready_cuts_it_short() {
        let mut p = planner();
        let t0 = Instant::now();
        let f = PathBuf::from("/etc/app.conf");
        assert!(p.change(Change::Writing(f.clone()), t0).is_empty());
        // Another write 30 ms later pushes the deadline out.
        assert!(
            p.change(Change::Writing(f.clone()), t0 + Duration::from_millis(30))
                .is_empty()
        );
        assert!(p.due(t0 + Duration::from_millis(60)).is_empty());
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(80)));
        assert_eq!(
            p.due(t0 + Duration::from_millis(80)),
            [path_job(1, 0, "/etc/app.conf")]
        );
        assert_eq!(p.next_due(), None);
        // A close during the quiet period dispatches at once, and only once.
        assert!(p.change(Change::Writing(f.clone()), t0).is_empty());
        assert_eq!(p.change(Change::Ready(f), t0).len(), 1);
        assert!(p.due(t0 + Duration::from_secs(1)).is_empty());
    }

    /// Issue 5: changes to excluded paths are never dispatched, for any change kind.
    #[test]
    fn excluded_paths_are_dropped() {
        let ex = Excludes::new(&["*.swp".into(), "cache/".into(), "errors/**".into()]).unwrap();
        let mut p = Planner::new(
            vec![
                Route::new(0, 0, Path::new("/src/site"), true).with_exclude(ex),
                Route::new(1, 0, Path::new("/src/site"), true),
            ],
            2,
            Duration::from_millis(50),
        );
        let t = Instant::now();
        for excluded in [
            "/src/site/a/.x.swp",
            "/src/site/cache/f",
            "/src/site/errors/e",
        ] {
            for c in [
                Change::Ready(excluded.into()),
                Change::Gone(excluded.into()),
                Change::Writing(excluded.into()),
            ] {
                let d = p.change(c, t);
                assert!(d.iter().all(|d| d.host == 1), "{excluded}: {d:?}");
            }
        }
        assert!(
            p.due(t + Duration::from_secs(1))
                .iter()
                .all(|d| d.host == 1)
        );
        // Not excluded: both hosts. `cache` itself may be a file: left to the worker.
        assert_eq!(
            p.change(Change::Ready("/src/site/a.txt".into()), t).len(),
            2
        );
        assert_eq!(p.change(Change::Gone("/src/site/cache".into()), t).len(), 2);
    }

    #[test]
    fn rescan_means_full_for_every_host_and_unmapped_writes_are_ignored() {
        let mut p = planner();
        let t = Instant::now();
        let full = p.change(Change::Rescan("overflow".into()), t);
        assert_eq!(full.len(), 2);
        assert!(full.iter().all(|d| d.job == Job::Full));
        p.change(Change::Writing("/elsewhere".into()), t);
        assert_eq!(p.next_due(), None);
        assert_eq!(p.change(Change::Gone("/src/site/x".into()), t).len(), 2);
    }
}

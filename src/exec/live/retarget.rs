//! A reloaded configuration put in force in the live workers (SIGHUP, issue 17).
//!
//! Host numbers are stable across reloads: a host keeps its number (and so its
//! worker, `h % n`) while it stays in the configuration, a new host gets the
//! next number, and a removed host's number is never used again (its entry in
//! [`super::Shared::targets`] stays, unread). [`Pool::retarget`] sends every worker the
//! new targets and settings, the hosts it gains and the hosts that are gone;
//! the worker takes the message in order with its jobs and then:
//! - drops a removed host: its session, its pending work (no mapping covers it
//!   any more), with one info line that sums up what it did and what it dropped;
//! - takes on an added host with nothing pending (the daemon sends it the same
//!   full reconcile a start gives, right after this message);
//! - for a host whose entry or mappings changed: closes its session, so the next
//!   round logs in as the new entry says, retries it at once if it was down,
//!   and forgets its pending and refused paths if its mappings changed (they are
//!   numbered by mapping; the full reconcile the daemon sends covers them);
//! - closes its session when the `[ssh]` settings changed.
//!
//! A host that did not change keeps its pending work, its backoff and its session.

use std::sync::Arc;
use std::time::Duration;

use super::{HostState, Msg, Pool, Worker};
use crate::config::{SshSettings, Target};

/// A reloaded configuration, as one worker needs it.
pub(crate) struct Retarget {
    /// Every host number ever used, with its entry (removed ones as they were).
    targets: Arc<Vec<Target>>,
    /// The new `[ssh]` settings.
    ssh: SshSettings,
    /// The new cap of the retry backoff.
    retry_max: Duration,
    /// Host numbers this worker takes on.
    added: Vec<usize>,
    /// Host numbers that left the configuration.
    removed: Vec<usize>,
}

impl Pool {
    /// Puts a reloaded configuration in force: `targets` holds every host number
    /// used so far; `added` and `removed` are host numbers. Returns at once: each
    /// worker takes it in after the round it is in.
    pub(crate) fn retarget(
        &mut self,
        targets: Arc<Vec<Target>>,
        ssh: &SshSettings,
        retry_max: Duration,
        added: &[usize],
        removed: &[usize],
    ) {
        let n = self.senders.len();
        for (w, tx) in self.senders.iter().enumerate() {
            let r = Retarget {
                targets: targets.clone(),
                ssh: ssh.clone(),
                retry_max,
                added: added.iter().copied().filter(|h| h % n == w).collect(),
                removed: removed.to_vec(),
            };
            // A worker only stops after the pool is shut down, so this cannot fail before.
            let _ = tx.send(Msg::Retarget(Box::new(r)));
        }
        self.hosts = (self.hosts + added.len()).saturating_sub(removed.len());
    }
}

impl Worker {
    /// Takes a reloaded configuration in (see the module docs).
    pub(super) fn retarget(&mut self, r: Retarget) {
        let old = std::mem::replace(&mut self.shared.targets, r.targets);
        if self.shared.ssh != r.ssh {
            self.conn = None;
        }
        self.shared.ssh = r.ssh;
        self.shared.retry_max = r.retry_max;
        for h in r.removed {
            if let Some(state) = self.hosts.remove(&h) {
                self.close_session_to(h);
                log_removed(&state);
            }
        }
        let changed: Vec<usize> = self
            .hosts
            .keys()
            .copied()
            .filter(|&h| old[h] != self.shared.targets[h])
            .collect();
        for h in changed {
            self.close_session_to(h);
            let state = self.hosts.get_mut(&h).expect("host of this worker");
            state.down = None;
            if old[h].mappings != self.shared.targets[h].mappings {
                state.paths.clear();
                state.refused = super::Refusals::default();
            }
        }
        for h in r.added {
            let address = &self.shared.targets[h].host.address;
            self.hosts.insert(h, HostState::new(h, address));
        }
    }

    /// Closes the worker's session if it is to host `h`.
    fn close_session_to(&mut self, h: usize) {
        if matches!(&self.conn, Some((c, _)) if *c == h) {
            self.conn = None;
        }
    }
}

/// The info line of a host that left the configuration.
fn log_removed(state: &HostState) {
    let t = &state.total;
    let pending: usize = state.paths.values().map(|p| p.len()).sum();
    log::info!(
        "{}: removed from the configuration; no more pushes to it; summary since start: {} sent, {} removed, {} failed, {} bytes; {pending} pending path(s){} dropped",
        t.address,
        t.sent,
        t.removed,
        t.failed,
        t.bytes,
        if state.full {
            " and a full reconcile"
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicBool;

    use super::super::Shared;
    use super::*;
    use crate::config::{Host, mapping};

    fn target(address: &str, user: &str, mappings: &str) -> Target {
        Target {
            host: Host {
                address: address.into(),
                user: user.into(),
                ..Host::default()
            },
            mapping_file: Some(format!("/m/{address}.json").into()),
            mappings: mapping::parse(Path::new("/m/x.json"), Path::new("/c"), mappings).unwrap(),
            bastion_for: 0,
        }
    }

    fn pending(w: &Worker, h: usize) -> Vec<PathBuf> {
        w.hosts[&h].paths.values().flatten().cloned().collect()
    }

    /// Unchanged hosts keep their pending paths and backoff; a host whose
    /// mappings changed forgets its paths (numbered by mapping), one whose entry
    /// changed is retried at once; a removed host is dropped, an added one taken on.
    #[test]
    fn a_reload_keeps_what_did_not_change() {
        let one = r#"[{"src": "a", "dest": "/a"}]"#;
        let two = r#"[{"src": "b", "dest": "/b"}, {"src": "a", "dest": "/a"}]"#;
        let old = vec![
            target("h0", "u", one),
            target("h1", "u", one),
            target("h2", "u", one),
        ];
        let shared = Shared {
            targets: Arc::new(old.clone()),
            ssh: SshSettings::for_tests(),
            retry_max: Duration::from_secs(30),
            cancel: Arc::new(AtomicBool::new(false)),
            observer: crate::report::Observer::default(),
            stop: None,
            status: None,
        };
        let mut w = Worker::new(shared, &[0, 1, 2]);
        for h in 0..3 {
            let state = w.hosts.get_mut(&h).unwrap();
            state.paths.entry(0).or_default().insert("/c/a".into());
            state.down = Some(super::super::Down {
                since: std::time::Instant::now(),
                backoff: Duration::from_secs(8),
                next_try: std::time::Instant::now() + Duration::from_secs(8),
            });
        }
        let mut new = old.clone();
        new[1] = target("h1", "u", two);
        new[2] = target("h2", "other", one);
        new.push(target("h3", "u", one));
        w.retarget(Retarget {
            targets: Arc::new(new),
            ssh: SshSettings::for_tests(),
            retry_max: Duration::from_secs(5),
            added: vec![3],
            removed: vec![0],
        });
        assert_eq!(w.hosts.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(pending(&w, 1).is_empty() && w.hosts[&1].down.is_none());
        assert_eq!(pending(&w, 2), [PathBuf::from("/c/a")]);
        assert!(w.hosts[&2].down.is_none());
        assert!(!w.hosts[&3].pending());
        assert_eq!(w.shared.retry_max, Duration::from_secs(5));
        // Nothing changed: everything stays, the backoff too.
        let same = w.shared.targets.clone();
        w.hosts.get_mut(&2).unwrap().down = Some(super::super::Down {
            since: std::time::Instant::now(),
            backoff: Duration::from_secs(8),
            next_try: std::time::Instant::now(),
        });
        w.retarget(Retarget {
            targets: same,
            ssh: SshSettings::for_tests(),
            retry_max: Duration::from_secs(5),
            added: vec![],
            removed: vec![],
        });
        assert_eq!(pending(&w, 2), [PathBuf::from("/c/a")]);
        assert!(w.hosts[&2].down.is_some());
    }
}

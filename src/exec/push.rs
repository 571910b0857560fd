//! Bringing one host up to date over one connection: the units to compare, the
//! listing, [`crate::reconcile::compare`], then the changes applied and
//! confirmed, by whichever way serves the host:
//! - a host with perl is served by hostsync's agent ([`by_agent`]): it lists,
//!   writes and renames relative to checked directories and confirms each step
//!   (issue 13);
//! - every other host over its shell ([`by_shell`]): a listing script, a tar
//!   stream or an SCP sink, then a commit script;
//! - a host without a shell (or with `[ssh] transfer = sftp`) over its SFTP
//!   subsystem ([`by_sftp`]).
//!
//! Which one serves a host is settled once per session ([`crate::exec::tier`]).
//!
//! Either way a remote reader sees the old or the new file, never part of one,
//! whatever happens to the connection; what the remote confirmed goes into the
//! host's record ([`crate::local::pushed`]), saved once at the end.
//!
//! `sync` (and the reconcile `watch` starts with) looks at every mapping whole
//! ([`Scope::All`]) and skips files by size, mtime and mode (by content with
//! `--checksum`). `watch` pushes only the paths that changed ([`Scope::Paths`]):
//! the listing then names just those paths and returns a SHA-256 of each remote
//! file, and a file whose content and mode already match is not sent. That
//! content check is what stops two daemons mapped at each other from sending the
//! same file back and forth.
//!
//! `post_sync` commands run over the same session after the commit, once per
//! batch for each mapping under which something changed
//! ([`crate::exec::post_sync`]). [`dry_run_host`] plans exactly as a push does,
//! with a listing that creates nothing (after `check`'s writability probe), and
//! records the differences instead of acting on them.

mod by_agent;
mod by_sftp;
mod by_shell;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::config::Target;
use crate::exec::tier;
use crate::failure::Failure;
use crate::local::pushed::Pushed;
use crate::local::{self, Source, Sources};
use crate::reconcile::render::{self, Change, Diff, MadeBelow};
use crate::reconcile::{self, Plan, Scope, Unit, Usable};
use crate::report::{Event, HostReport};
use crate::transport::ssh::{Connection, Tier};

/// How often a file that keeps changing while it is read is tried in one run.
const MAX_ATTEMPTS: usize = 3;

/// Pushes every mapping of `target` over `conn`, filling `report` (one-shot `sync`);
/// with `checksum` (`sync --checksum`) every file is compared by content.
pub(crate) fn push_host(
    conn: &Connection,
    target: &Target,
    sources: &Sources,
    checksum: bool,
    report: &mut HostReport,
) {
    let mut pushed = Pushed::open(conn.pushed_dir(), &target.host.address);
    let units = whole_units(target, sources, checksum);
    if let Err(e) = try_push(conn, units, &mut pushed, report) {
        report.fail_host(&format!("{e:#}"));
    }
    save_record(&mut pushed, report);
}

/// Saves what this run sent to the host's record ([`crate::local::pushed`]), also after a
/// failure, for what the host confirmed. A record that cannot be written is a
/// warning: nothing on the host is wrong.
fn save_record(pushed: &mut Pushed, report: &HostReport) {
    if let Err(e) = pushed.save() {
        log::warn!(
            "{}: cannot record what was pushed ({e}); a later sync may miss a same-size edit made within the same second",
            report.address
        );
    }
}

/// One whole unit per mapping of `target`, from the sources scanned before the run.
fn whole_units<'a>(target: &'a Target, sources: &Sources, checksum: bool) -> Vec<Unit<'a>> {
    target
        .mappings
        .iter()
        .map(|m| {
            let source = sources
                .get(&(
                    m.src.clone(),
                    m.exclude.patterns().to_vec(),
                    m.follow_symlinks,
                ))
                .cloned()
                .unwrap_or_else(|| Arc::new(Err("src was not scanned".to_string())));
            reconcile::whole_unit(m, source, checksum)
        })
        .collect()
}

/// `sync --dry-run` for one host: lists the remote without creating anything,
/// compares as [`push_host`] would, and records each difference in `report.diffs`.
/// Nothing on the remote changes: no directory, temporary, backup or removal, and
/// no post_sync command runs.
pub(crate) fn dry_run_host(
    conn: &Connection,
    target: &Target,
    sources: &Sources,
    checksum: bool,
    report: &mut HostReport,
) {
    let units = whole_units(target, sources, checksum);
    dry_run_units(conn, &units, &target.host.user, report);
}

/// The body of [`dry_run_host`] and [`dry_run_changes`]: asks `check`'s question
/// first ([`writable_units`]), then lists what `sync` could write without creating
/// anything, through the agent where the host has perl, and records the differences
/// (consulting the host's record of what was pushed as a push does, writing nothing).
/// `user`: the login, for the reasons.
fn dry_run_units(conn: &Connection, units: &[Unit<'_>], user: &str, report: &mut HostReport) {
    let Some((usable, made_below)) = writable_units(conn, usable(units, report), user, report)
    else {
        return;
    };
    if conn.tier() == Some(Tier::Sftp) || !tier::may_exec(conn) {
        return match tier::without_agent(conn) {
            Ok(_) => by_sftp::dry_run(conn, &usable, report),
            Err(e) => report.fail_host(&format!("{e:#}")),
        };
    }
    let pushed = Pushed::open(conn.pushed_dir(), &report.address);
    let planned = match by_agent::list(conn, &usable, false) {
        Ok(Some((agent, listed))) => {
            let plan = by_agent::compare(&usable, &listed, &pushed, report);
            let min = by_agent::delta::threshold(conn, &agent);
            agent.finish().map(|()| Some((plan, min)))
        }
        Ok(None) => by_shell::plan(conn, &usable, &pushed, report, false).map(|p| {
            p.map(|(plan, _)| {
                let min = by_shell::delta::dry_threshold(conn, &plan);
                (plan, min)
            })
        }),
        Err(e) => Err(e),
    };
    match planned {
        Ok(Some((plan, min))) => report.diffs.extend(render::diffs(&plan, &made_below, min)),
        Ok(None) => {}
        Err(e) => report.fail_host(&format!("{e:#}")),
    }
}

/// The dry run's share of `check` (issue 14, bug 5): asks the host, in one script,
/// whether the login `user` can write (or make) the directory each unit writes into.
/// A unit that cannot be written is failed here, with `check`'s reason and one
/// `[!]` line per directory, and is not compared: `sync` would fail it. Returns the
/// others, and for each root that `sync` would make, its nearest existing ancestor.
/// `None` when the check could not run (the host is failed).
fn writable_units<'u, 'm>(
    conn: &Connection,
    usable: Vec<Usable<'u, 'm>>,
    user: &str,
    report: &mut HostReport,
) -> Option<(Vec<Usable<'u, 'm>>, MadeBelow)> {
    let probes: Vec<crate::remote::probe::Probe> = usable
        .iter()
        .map(|(_, u, src)| crate::remote::probe::Probe::of(u.mapping, src.is_dir))
        .collect();
    if !tier::may_exec(conn) {
        return Some((usable, HashMap::new()));
    }
    let states = match crate::exec::probe::probe_tier(conn, &probes, user) {
        Ok(Some(states)) => states,
        // No shell, served over SFTP: its listing says what cannot be used.
        Ok(None) => return Some((usable, HashMap::new())),
        Err(e) => {
            report.fail_host(&format!("cannot run the remote check: {e:#}"));
            return None;
        }
    };
    let mut writable = Vec::new();
    let mut made_below = HashMap::new();
    let mut refused = BTreeSet::new();
    for ((unit, probe), state) in usable.into_iter().zip(&probes).zip(states) {
        let root = unit.1.root.dir.clone();
        match state.problem {
            Some(why) => {
                report.fail(Failure::Refused, probe.label(), &why);
                if refused.insert(root.clone()) {
                    report.diffs.push(Diff {
                        path: root,
                        change: Change::Unwritable,
                        is_dir: true,
                        reason: why,
                        delta: None,
                    });
                }
            }
            None => {
                if let Some(existing) = state.made_below {
                    made_below.insert(root, existing.into_bytes());
                }
                writable.push(unit);
            }
        }
    }
    Some((writable, made_below))
}

/// Pushes what `work` names (mapping index and scope) over `conn`, scanning the local
/// side now, so the latest content is what is sent. An `Err` means the connection or
/// the remote shell failed and the whole batch should be retried; per-file failures
/// are in `report`.
pub(crate) fn push_changes(
    conn: &Connection,
    target: &Target,
    work: &[(usize, Scope)],
    checksum: bool,
    report: &mut HostReport,
) -> Result<()> {
    let mut pushed = Pushed::open(conn.pushed_dir(), &target.host.address);
    let pushing = try_push(
        conn,
        scoped_units(target, work, checksum),
        &mut pushed,
        report,
    );
    save_record(&mut pushed, report);
    pushing
}

/// `sync --dry-run PATH...` for one host: [`dry_run_host`] for what `work` names,
/// scanned now (see [`push_changes`]).
pub(crate) fn dry_run_changes(
    conn: &Connection,
    target: &Target,
    work: &[(usize, Scope)],
    checksum: bool,
    report: &mut HostReport,
) {
    let units = scoped_units(target, work, checksum);
    dry_run_units(conn, &units, &target.host.user, report);
}

/// One unit per entry of `work` (mapping index and scope), scanning the local side
/// now; `checksum` for whole mappings that are compared by content.
fn scoped_units<'a>(target: &'a Target, work: &[(usize, Scope)], checksum: bool) -> Vec<Unit<'a>> {
    work.iter()
        .filter_map(|(i, scope)| {
            let m = target.mappings.get(*i)?;
            Some(match scope {
                Scope::All => {
                    let source = local::scan(&m.src, &m.exclude, m.follow_symlinks);
                    reconcile::whole_unit(m, Arc::new(source), checksum)
                }
                Scope::Paths(paths) => {
                    reconcile::scoped_unit(m, local::scope::scan_paths(m, paths), checksum)
                }
            })
        })
        .collect()
}

/// The body of [`push_host`] and [`push_changes`]; an `Err` means the connection or
/// remote shell failed.
fn try_push(
    conn: &Connection,
    units: Vec<Unit<'_>>,
    pushed: &mut Pushed,
    report: &mut HostReport,
) -> Result<()> {
    let usable = usable(&units, report);
    if usable.is_empty() {
        return Ok(());
    }
    if tier::may_exec(conn)
        && let Some((agent, mut listed)) = by_agent::list(conn, &usable, true)?
    {
        conn.set_tier(Tier::Gnu);
        let plan = by_agent::compare(&usable, &listed, pushed, report);
        return by_agent::apply(conn, agent, plan, &mut listed, &units, pushed, report);
    }
    match tier::without_agent(conn)? {
        Tier::Sftp => by_sftp::push(conn, &usable, &units, pushed, report),
        _ => by_shell::push(conn, &usable, &units, pushed, report),
    }
}

/// The units whose local side could be scanned, with their index and source; the
/// others are reported as failed here, once, whichever way the host is served.
fn usable<'u, 'm>(
    units: &'u [Unit<'m>],
    report: &mut HostReport,
) -> Vec<(usize, &'u Unit<'m>, &'u Source)> {
    let mut usable = Vec::new();
    for (i, u) in units.iter().enumerate() {
        match u.source.as_ref() {
            Ok(src) => usable.push((i, u, src)),
            Err(reason) => {
                report.fail(Failure::Local, &u.mapping.src.display().to_string(), reason)
            }
        }
    }
    usable
}

/// Which remote entries of a listing are temporaries a later run may remove, for
/// [`reconcile::compare`]: this client's of runs that are over, and anyone's
/// once stale ([`crate::remote::runs::removable`]; directories never).
fn leftover(conn: &Connection) -> impl Fn(&[u8], &crate::remote::RemoteEntry) -> bool + '_ {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (runs, client) = (conn.runs_dir(), conn.client_id());
    move |name, e| {
        e.kind != b'd'
            && crate::remote::runs::removable(name, e.mtime, now, client, &|run| {
                crate::remote::runs::alive(runs, run)
            })
    }
}

/// A local file's SHA-256, for [`reconcile::compare`]; `None` when it cannot be read.
fn hash_local(path: &Path) -> Option<String> {
    local::sha256_hex(path).ok()
}

/// Reports what a plan could not do (one failure line each), what it skipped,
/// and its warnings.
fn take_findings(plan: &Plan, report: &mut HostReport) {
    for (kind, what, why) in &plan.failures {
        report.fail(*kind, what, why);
    }
    report.skipped += plan.skipped;
    for w in &plan.warnings {
        log::warn!("{}: {w}", report.address);
    }
}

/// Tells the observers (progress bar) what a plan sends.
fn report_planned(plan: &Plan, report: &mut HostReport) {
    let (files, bytes) = plan.sends();
    report.event(Event::Planned { files, bytes });
}

/// post_sync: once per batch for each mapping under which something landed
/// (`changed[i]` for `units[i]`).
fn run_post_sync(conn: &Connection, units: &[Unit<'_>], changed: &[u64], report: &mut HostReport) {
    for (unit, n) in units.iter().zip(changed) {
        if *n > 0 && !unit.mapping.post_sync.is_empty() {
            crate::exec::post_sync::run(conn, unit.mapping, report);
        }
    }
}

/// The local side of every mapping (src, its excludes, whether links below it are
/// followed), for `local::scan_all`.
pub(crate) fn srcs(
    targets: &[Target],
) -> impl Iterator<Item = (&Path, &crate::config::exclude::Excludes, bool)> {
    targets.iter().flat_map(|t| {
        t.mappings
            .iter()
            .map(|m| (m.src.as_path(), &m.exclude, m.follow_symlinks))
    })
}

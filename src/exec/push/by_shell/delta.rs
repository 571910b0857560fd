//! Sending big files as deltas to a host without perl (issue 19): before a
//! root's upload, each file that may go as a delta is compared block by block
//! with its remote copy ([`crate::transport::delta_sh`]); what goes so is rebuilt
//! into its temporary by the remote and leaves the upload, and its rename joins
//! the commit steps like any uploaded file's. Everything that cannot go as a delta
//! stays in the upload, whole.

use anyhow::Result;

use super::{Reported, Steps};
use crate::local::FileMeta;
use crate::local::pushed::Record;
use crate::local::read::Opened;
use crate::reconcile::{Item, Plan, RootWork, Unit, join, show};
use crate::remote::Commit;
use crate::report::{Event, HostReport};
use crate::transport::delta::{Delta, aligned};
use crate::transport::delta_sh::{
    Build, Sums, block_for, build, build_command, parse_sums, sums_command,
};
use crate::transport::ssh::Connection;

/// The dry run's delta threshold on a host without perl: `[sync] delta_min_kib`
/// when `plan` has a file that may go as a delta and the remote has `sha256sum`
/// and `dd` (asked once, with one command that changes nothing), else 0.
pub(in crate::exec::push) fn dry_threshold(conn: &Connection, plan: &Plan) -> u64 {
    let min = conn.delta_min();
    let any = (plan.work.values())
        .flat_map(|w| &w.items)
        .any(|i| i.may_go_as_delta(min));
    if !any {
        return min;
    }
    if conn.sh_sums().is_none() {
        let probe = "command -v sha256sum >/dev/null 2>&1 && command -v dd >/dev/null 2>&1";
        match conn.run_command(probe, b"", 4096) {
            Ok(out) => conn.set_sh_sums(out.status == 0),
            Err(e) => log::debug!("cannot ask the remote about sha256sum: {e:#}"),
        }
    }
    if conn.sh_sums() == Some(true) { min } else { 0 }
}

/// Sends what of `w`'s files goes as a delta below `root`, taking them out of
/// `w`; returns the commit steps that put them in place. An `Err` is the
/// connection's.
pub(super) fn send(
    conn: &Connection,
    root: &[u8],
    w: &mut RootWork,
    units: &[Unit<'_>],
    report: &mut HostReport,
) -> Result<Steps> {
    let mut steps = Steps::default();
    let min = conn.delta_min();
    if min == 0 || conn.sh_sums() == Some(false) || !w.items.iter().any(|i| i.may_go_as_delta(min))
    {
        return Ok(steps);
    }
    let (tried, rest): (Vec<Item>, Vec<Item>) = std::mem::take(&mut w.items)
        .into_iter()
        .partition(|i| i.may_go_as_delta(min));
    w.items = rest;
    for item in tried {
        if conn.sh_sums() == Some(false) {
            w.items.push(item);
            continue;
        }
        let backups = units[item.unit].mapping.backups;
        match one(conn, root, &item, report)? {
            Some((tmp, reported)) => {
                let dest = join(root, &item.rel);
                steps.push(Commit::Rename { tmp, dest, backups }, Some(reported));
            }
            None => w.items.push(item),
        }
    }
    w.items.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(steps)
}

/// The SHA-256 of each block of `item`'s remote copy at `dest`, in blocks of
/// `block`; `None` when the remote cannot tell (which it remembers when it has
/// no tools for it).
fn remote_blocks(
    conn: &Connection,
    dest: &[u8],
    item: &Item,
    block: usize,
    report: &HostReport,
) -> Result<Option<Vec<String>>> {
    // A sha256sum line per block of a copy up to twice the local size, and a bit.
    let cap = 4096 + 80 * (2 * item.size).div_ceil(block as u64);
    let out = conn.run_command(&sums_command(dest, block), b"", cap)?;
    Ok(match parse_sums(&out.stdout) {
        Ok(Sums::Blocks(_, hashes)) => {
            conn.set_sh_sums(true);
            Some(hashes)
        }
        Ok(Sums::NoTools) => {
            log::debug!(
                "{}: no sha256sum or dd on the remote: no deltas",
                report.address
            );
            conn.set_sh_sums(false);
            None
        }
        other => {
            log::debug!("{}: {}: no delta ({other:?})", report.address, show(dest));
            None
        }
    })
}

/// Rebuilds `item` on the remote as `job` says; `false` (logged) when it is to go
/// whole instead: the remote refused, or the command would be longer than any
/// server takes ([`crate::remote::MAX_EXEC_COMMAND`]; Dropbear's limit).
fn rebuilt(
    conn: &Connection,
    job: &Build<'_>,
    delta: &Delta,
    file: &Opened,
    item: &Item,
    report: &HostReport,
) -> Result<bool> {
    if build_command(job, delta).len() > crate::remote::MAX_EXEC_COMMAND {
        log::debug!(
            "{}: {}: the delta has too many steps for one command; sending the whole file",
            report.address,
            show(job.old)
        );
        return Ok(false);
    }
    if let Err(why) = build(conn, job, delta, file)? {
        log::info!(
            "{}: {}: the delta failed ({why}); sending the whole file",
            report.address,
            item.local.display()
        );
        return Ok(false);
    }
    Ok(true)
}

/// One file: its temporary and what its commit reports once it was rebuilt on
/// the remote; `None` when it is to go whole.
fn one(
    conn: &Connection,
    root: &[u8],
    item: &Item,
    report: &mut HostReport,
) -> Result<Option<(Vec<u8>, Reported)>> {
    let dest = join(root, &item.rel);
    let block = block_for(item.size);
    let Some(hashes) = remote_blocks(conn, &dest, item, block, report)? else {
        return Ok(None);
    };
    let Ok((mut file, now)) = item.to_send().open() else {
        return Ok(None);
    };
    let delta: Delta = match aligned(&hashes, block, &mut file) {
        Ok(d) if d.len == now.size && d.wire_bytes() < now.size => d,
        _ => {
            log::debug!(
                "{}: {}: no delta smaller than the file",
                report.address,
                show(&dest)
            );
            return Ok(None);
        }
    };
    let mut patch = dest.clone();
    patch.extend_from_slice(b"\0patch");
    let (tmp, patch) = (conn.names().for_path(&dest), conn.names().for_path(&patch));
    let sha256 = file.sha256();
    let job = Build {
        old: &dest,
        tmp: &tmp,
        patch: &patch,
        block,
        mode: now.mode,
        mtime: (now.mtime, now.mtime_nsec),
        sha256: &sha256,
    };
    if !rebuilt(conn, &job, &delta, &file, item, report)? {
        return Ok(None);
    }
    // Changed while read: the whole file goes, over the same temporary.
    if !(file.metadata()).is_ok_and(|m| now.unchanged(&FileMeta::of(&m))) {
        return Ok(None);
    }
    report.event(Event::Uploaded { bytes: item.size });
    let reported = Reported {
        item: item.clone(),
        bytes: delta.literal,
        reused: delta.reused,
        record: Some(Record::sent(&now, &sha256)),
    };
    Ok(Some((tmp, reported)))
}

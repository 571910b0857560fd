//! Sending a big file as a delta through the agent (issue 19).
//!
//! A file of at least `[sync] delta_min_kib` whose remote copy is a regular file
//! that differs is offered as a delta: the agent sends the checksums of its old
//! copy's blocks, hostsync finds what the local file has of them
//! ([`crate::transport::delta::matches`]) and, when that is smaller than the file,
//! sends only the steps and the new bytes; the agent rebuilds the file into a
//! fresh temporary, checks its SHA-256 and renames it into place as it does a
//! whole file. Waiting for the checksums costs one round trip per such file: the
//! steps sent before are settled first, since answers come in request order.
//!
//! Every way a delta cannot be done falls back to the whole file, as before: no
//! Digest::SHA on the remote, a copy that cannot be read, a delta that would not
//! be smaller, or a rebuild that failed (a checksum mismatch included: the next
//! round sends that file whole).

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};

use super::{AgentListing, Run, Step};
use crate::failure::Failure;
use crate::local::pushed::Record;
use crate::local::read::Finished;
use crate::reconcile::{Item, describe, join, show};
use crate::report::Event;
use crate::transport::agent::{Agent, Answer};
use crate::transport::delta::{Signature, block_size, matches};
use crate::transport::ssh::Connection;

/// What a delta carried: `bytes` over the link, `reused` from the old copy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Carried {
    /// Bytes of the new file sent as they are.
    pub(super) bytes: u64,
    /// Bytes the remote copied from its old copy.
    pub(super) reused: u64,
}

/// The smallest file sent as a delta on this host: `[sync] delta_min_kib`, or 0
/// (none) when the agent cannot compute checksums.
pub(in crate::exec::push) fn threshold(conn: &Connection, agent: &Agent<'_>) -> u64 {
    match agent.hello() {
        Some(h) if h.delta => conn.delta_min(),
        _ => 0,
    }
}

/// The remote regular files a delta may start from (absolute path, size), when
/// deltas are on (`delta_min` > 0).
pub(super) fn remote_files(listed: &AgentListing, delta_min: u64) -> HashMap<Vec<u8>, u64> {
    if delta_min == 0 {
        return HashMap::new();
    }
    (listed.roots.iter())
        .zip(&listed.states)
        .flat_map(|(root, state)| {
            (state.entries.iter())
                .filter(|(_, e)| e.kind == b'f' && e.size > 0)
                .map(|(rel, e)| (join(&root.dir, rel), e.size))
        })
        .collect()
}

impl Run<'_, '_, '_> {
    /// Sends `item` as a delta below root `id` (`root`) when that is worth trying
    /// and smaller; `Some(item)` back when it is to go whole instead.
    pub(super) fn delta(&mut self, id: usize, root: &[u8], item: Item) -> Result<Option<Item>> {
        let path = join(root, &item.rel);
        let Some(&old_len) = self.remote_files.get(&path) else {
            return Ok(Some(item));
        };
        if self.delta_min == 0 || item.size < self.delta_min || self.whole.contains(&path) {
            return Ok(Some(item));
        }
        let block = block_size(old_len);
        let started = std::time::Instant::now();
        let Some(sig) = self.signature(id, &item, &path, block, old_len)? else {
            return Ok(Some(item));
        };
        // What cannot be opened or read now is for the whole-file way to report.
        let Ok((mut file, now)) = item.to_send().open() else {
            return Ok(Some(item));
        };
        let summed = started.elapsed();
        let delta = match matches(&sig, &mut file) {
            Ok(d) if d.len == now.size => d,
            _ => return Ok(Some(item)),
        };
        log::debug!(
            "{}: {}: {} checksums after {} ms, matched in {} ms: {} bytes new, {} reused",
            self.report.address,
            show(&path),
            sig.blocks(),
            summed.as_millis(),
            (started.elapsed() - summed).as_millis(),
            delta.literal,
            delta.reused
        );
        if delta.wire_bytes() >= now.size {
            log::debug!(
                "{}: {}: a delta would not be smaller ({} of {} bytes new); sending the whole file",
                self.report.address,
                show(&path),
                delta.literal,
                now.size
            );
            return Ok(Some(item));
        }
        let backups = self.units[item.unit].mapping.backups;
        let sha256 = file.sha256();
        let sent =
            (self.agent).put_delta(id, &item.rel, &file, &now, backups, block, &delta, &sha256)?;
        self.report.event(Event::Uploaded { bytes: item.size });
        let carried = Carried {
            bytes: delta.literal,
            reused: delta.reused,
        };
        (self.steps).push_back(Step::Delta(item, root.to_vec(), sent, carried));
        Ok(None)
    }

    /// Asks the agent for the checksums of `item`'s remote copy (`old_len` bytes
    /// at `path`, in blocks of `block`), once every step before is settled;
    /// `None` when the agent cannot give them.
    fn signature(
        &mut self,
        id: usize,
        item: &Item,
        path: &[u8],
        block: usize,
        old_len: u64,
    ) -> Result<Option<Signature>> {
        self.agent.sums(id, &item.rel, block, old_len)?;
        while !self.steps.is_empty() {
            let answer = self.agent.answer()?;
            self.settle(answer);
        }
        match self.agent.answer()? {
            Answer::Sums(bytes, len) => Signature::parse(block, len, &bytes)
                .map(Some)
                .map_err(|e| anyhow!("the remote agent sent bad checksums: {e}")),
            Answer::Failed(why) => {
                log::debug!("{}: {}: no delta: {why}", self.report.address, show(path));
                Ok(None)
            }
            _ => bail!("the remote agent answered out of order"),
        }
    }

    /// A delta the agent confirmed, by how its data went (as
    /// [`Run::file_done`] for a whole file).
    pub(super) fn delta_done(&mut self, item: Item, root: &[u8], sent: Finished, c: Carried) {
        match sent {
            Finished::Whole(meta, sha256) => {
                self.changed[item.unit] += 1;
                let local = item.local.display().to_string();
                let remote = join(root, &item.rel);
                (self.report).sent_delta(&local, &show(&remote), c.bytes, c.reused, &item.why);
                self.pushed.set(remote, Record::sent(&meta, &sha256));
            }
            other => self.file_done(item, root, other),
        }
    }

    /// A delta the agent refused (`why`): the file goes whole in the next round,
    /// as it is now; after the last round it fails.
    pub(super) fn delta_failed(&mut self, root: &[u8], item: Item, why: &str) {
        if self.attempt >= super::MAX_ATTEMPTS {
            (self.report).fail(Failure::Refused, &describe(&item, root), why);
            return;
        }
        log::info!(
            "{}: {}: the delta failed ({why}); sending the whole file",
            self.report.address,
            item.local.display()
        );
        self.whole.insert(join(root, &item.rel));
        if let Some(now) = super::rescan(&item) {
            self.again.entry(root.to_vec()).or_default().items.push(now);
        }
    }
}

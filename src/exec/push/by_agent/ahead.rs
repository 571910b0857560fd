//! Small watched files sent with their listing (issue 16): one round trip per
//! watch round instead of two.
//!
//! A `watch` round for a few changed paths lists them (with the remote files'
//! SHA-256), compares, and then sends what differs. For a changed path that is a
//! small regular file (at most [`MAX_SIZE`]), the resumed agent of a watch
//! session gets the file's data in the same write as the listing request
//! ([`tag::AHEAD`](crate::transport::agent::tag::AHEAD)). The agent puts it in
//! place only where [`crate::reconcile::compare`] is sure to send it: nothing is
//! at that path, or a regular file whose content or mode differs (the SHA-256 is
//! compared on the remote, so two daemons mapped at each other still do not
//! ping-pong: the same content is dropped there). Anything else (a directory or
//! symlink there, a parent missing or refused, a full disk) is *deferred*: the
//! data is dropped and the client's comparison decides as it always does, the
//! file going the usual way with the usual one-line refusal (and issue 17's
//! retry) if it is sent.
//!
//! Where the files sent ahead are all of a round's work, the end of the batch
//! goes in the same write ([`covers`]): the agent releases the run's lock right
//! after placing them, and a round that needs nothing more is over in one round
//! trip. If the comparison still finds work (a parent's mode, a file deferred),
//! the roots are resolved and checked again in a new batch before it is done.
//!
//! So the comparison still decides: a file placed ahead is taken out of the
//! plan's sends and reported as sent, as if the plan's own step had been
//! confirmed. Only a race with a concurrent writer (the local file rewritten
//! between this read and the comparison's hash) can place a file the
//! comparison would have skipped; that write already made an event, and its own
//! round sends the newest content.
//!
//! Not sent ahead: files of a mapping that keeps backups (the agent's place
//! would rotate them, and a deferred file's second attempt would rotate them
//! again), files a delta could serve, names in the temporaries' namespace,
//! whole-mapping reconciles, dry runs, and the first round of a new agent (its
//! greeting, which says whether it can hash, has not come yet).

use std::os::unix::ffi::OsStrExt;

use anyhow::{Result, bail};

use crate::local::read::{Finished, Reading};
use crate::local::{FileMeta, Kind};
use crate::reconcile::{Item, ItemKind, Plan, Usable, basename, show, split_dest};
use crate::report::Event;
use crate::transport::agent::{Agent, Answer};

use super::Run;

/// The largest file sent ahead of the comparison: it is read into memory whole.
pub(super) const MAX_SIZE: u64 = 64 * 1024;

/// The most files one batch sends ahead (a burst's round goes the usual way).
const MAX_FILES: usize = 8;

/// One file sent ahead: what the comparison would send, and how it went.
pub(in crate::exec::push) struct Ahead {
    /// Its destination root.
    root: Vec<u8>,
    /// The item as the comparison would make it (its `why` until the plan's).
    item: Item,
    /// What was read and sent: its attributes when opened, its SHA-256.
    meta: FileMeta,
    sha256: String,
    /// What the agent did: `Ok` placed, `Err(why)` deferred.
    placed: Result<(), String>,
}

/// Sends every changed small file of `usable` ahead (see the module doc) on
/// `agent`, a resumed agent whose greeting said it hashes; `delta_min`: the
/// smallest file a delta serves (0: none). Root ids are the units' positions,
/// as [`super::list`] asks for them.
pub(super) fn send(
    agent: &mut Agent<'_>,
    usable: &[Usable<'_, '_>],
    delta_min: u64,
) -> Result<Vec<Ahead>> {
    if !agent.hello().is_some_and(|h| h.hashes) {
        return Ok(Vec::new());
    }
    let mut sent = Vec::new();
    for (id, item) in candidates(usable, delta_min) {
        if sent.len() == MAX_FILES {
            break;
        }
        let Some((data, meta, sha256)) = read_whole(&item) else {
            continue;
        };
        agent.ahead(id, &item.rel, &meta, &sha256, &data)?;
        let root = usable[id].1.root.dir.clone();
        sent.push(Ahead {
            root,
            item,
            meta,
            sha256,
            placed: Err("not answered".into()),
        });
    }
    Ok(sent)
}

/// Whether the files sent `ahead` are all of `usable`'s work: every unit is
/// scoped to paths, none gone locally, and each path went ahead. Then the round
/// ends its batch in the same write ([`Agent::end_batch`]): when every file is
/// placed and the comparison finds nothing else (the usual watch round), the
/// round is over in one round trip.
pub(super) fn covers(usable: &[Usable<'_, '_>], ahead: &[Ahead]) -> bool {
    !ahead.is_empty()
        && usable.iter().all(|(idx, unit, _)| {
            let Some(paths) = &unit.root.paths else {
                return false;
            };
            unit.gone.is_empty()
                && (paths.iter())
                    .all(|p| (ahead.iter()).any(|a| a.item.unit == *idx && &a.item.rel == p))
        })
}

/// The changed paths of the path-scoped units that may go ahead: regular files
/// of at most [`MAX_SIZE`] bytes (below `delta_min`, if set), with their unit's
/// position (the agent's root id).
fn candidates(usable: &[Usable<'_, '_>], delta_min: u64) -> Vec<(usize, Item)> {
    let mut out = Vec::new();
    for (id, (unit_idx, unit, source)) in usable.iter().enumerate() {
        let m = unit.mapping;
        let Some(paths) = &unit.root.paths else {
            continue;
        };
        if m.backups > 0 {
            continue;
        }
        for entry in &source.entries {
            let Kind::File(meta) = &entry.kind else {
                continue;
            };
            let rel = if source.is_dir {
                entry.rel.as_os_str().as_bytes().to_vec()
            } else {
                split_dest(&m.file_dest()).1.to_vec()
            };
            let small = meta.size <= MAX_SIZE && (delta_min == 0 || meta.size < delta_min);
            let local = if entry.rel.as_os_str().is_empty() {
                m.src.clone()
            } else {
                m.src.join(&entry.rel)
            };
            if !small || !paths.contains(&rel) || crate::remote::is_tmp_name(basename(&rel)) {
                continue;
            }
            let item = Item {
                rel,
                what: ItemKind::File,
                local,
                unit: *unit_idx,
                size: meta.size,
                exists: true,
                why: "content".into(),
                meta: Some(*meta),
                follow: !source.is_dir || m.follow_symlinks,
                mode_mask: m.file_mode(0o7777),
            };
            out.push((id, item));
        }
    }
    out
}

/// The whole of `item`'s local file, if it is still the file the scan saw, no
/// bigger than [`MAX_SIZE`], and did not change while it was read: its bytes,
/// its attributes when opened and its SHA-256. `None`: the usual way handles it.
fn read_whole(item: &Item) -> Option<(Vec<u8>, FileMeta, String)> {
    let mut file = Reading::open(&item.to_send()).ok()?;
    if file.owed() > MAX_SIZE {
        return None;
    }
    let mut data = vec![0; usize::try_from(file.owed()).ok()?];
    let mut at = 0;
    while at < data.len() {
        match file.chunk(&mut data[at..]) {
            0 => break,
            n => at += n,
        }
    }
    match file.finish() {
        Finished::Whole(meta, sha256) if at == data.len() => Some((data, meta, sha256)),
        _ => None,
    }
}

/// Takes the agent's answer to each file sent ahead, in request order.
pub(super) fn answers(agent: &mut Agent<'_>, ahead: &mut [Ahead]) -> Result<()> {
    for a in ahead {
        a.placed = match agent.answer()? {
            Answer::Done(f) if f.first().is_some_and(|f| f == b"placed") => Ok(()),
            Answer::Done(f) if f.first().is_some_and(|f| f == b"deferred") => Err(f
                .get(1)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .unwrap_or_default()),
            Answer::Failed(why) => Err(why),
            _ => bail!("the remote agent answered a file sent ahead out of order"),
        };
    }
    Ok(())
}

impl Run<'_, '_, '_> {
    /// Reports the files the agent placed ahead as sent, taking them out of
    /// `plan`'s sends (see the module doc); the deferred ones stay in the plan.
    pub(super) fn settle_ahead(&mut self, plan: &mut Plan, ahead: Vec<Ahead>) {
        for a in ahead {
            let what = a.item.local.display().to_string();
            if let Err(why) = &a.placed {
                log::debug!("{}: {what} not placed ahead: {why}", self.report.address);
                continue;
            }
            let planned = plan.work.get_mut(&a.root).and_then(|w| {
                let at = w.items.iter().position(|i| {
                    i.rel == a.item.rel && i.unit == a.item.unit && matches!(i.what, ItemKind::File)
                })?;
                Some(w.items.remove(at))
            });
            let item = planned.unwrap_or_else(|| {
                log::debug!(
                    "{}: {what} was placed ahead at {} though the comparison did not send it (it changed meanwhile; its own round follows)",
                    self.report.address,
                    show(&a.root)
                );
                a.item
            });
            self.report.event(Event::Uploaded { bytes: item.size });
            let root = a.root;
            self.file_done(item, &root, Finished::Whole(a.meta, a.sha256));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::Mapping;
    use crate::reconcile::{Unit, list_root};

    /// The mapping of `src/` (a directory) to /srv/www, with extra JSON fields.
    fn mapping(src: &Path, options: &str) -> Mapping {
        let json = format!(
            r#"[{{"src": "{}/", "dest": "/srv/www"{options}}}]"#,
            src.display()
        );
        crate::config::mapping::parse(Path::new("m.json"), Path::new("/"), &json)
            .unwrap()
            .remove(0)
    }

    /// A unit of `m` scoped to `paths` (`None`: the whole mapping), scanned now.
    fn unit<'m>(m: &'m Mapping, paths: Option<&[&str]>) -> Unit<'m> {
        let source = crate::local::scan(&m.src, &m.exclude, false);
        let paths = paths.map(|p| p.iter().map(|s| s.as_bytes().to_vec()).collect());
        Unit {
            mapping: m,
            source: Arc::new(source),
            root: list_root(m, true, paths, false),
            gone: Vec::new(),
        }
    }

    fn ahead_of(u: &Unit<'_>, delta_min: u64) -> Vec<String> {
        let source = u.source.as_ref().as_ref().unwrap();
        let usable = [(0, u, source)];
        (candidates(&usable, delta_min).into_iter())
            .map(|(_, i)| String::from_utf8(i.rel).unwrap())
            .collect()
    }

    /// Only the changed paths that are small regular files go ahead: not a file
    /// below a changed directory, a big one, one a delta serves, a name in the
    /// temporaries' namespace, a whole reconcile, or a mapping with backups.
    #[test]
    fn only_small_changed_files_go_ahead() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("site");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("small.txt"), "small").unwrap();
        std::fs::write(src.join("sub/inner"), "in").unwrap();
        std::fs::write(src.join("big.bin"), vec![7; MAX_SIZE as usize + 1]).unwrap();
        std::fs::write(src.join(".hostsync-tmp.x"), "t").unwrap();
        let changed = ["small.txt", "big.bin", ".hostsync-tmp.x", "sub"];
        let m = mapping(&src, "");
        assert_eq!(ahead_of(&unit(&m, Some(&changed)), 0), ["small.txt"]);
        assert!(
            ahead_of(&unit(&m, Some(&changed)), 4).is_empty(),
            "a delta's"
        );
        assert!(ahead_of(&unit(&m, None), 0).is_empty(), "a whole reconcile");
        let kept = mapping(&src, r#", "backups": 2"#);
        assert!(ahead_of(&unit(&kept, Some(&changed)), 0).is_empty());
    }

    /// A file is read whole, with its SHA-256, only while it is still the file
    /// the scan saw and no bigger than [`MAX_SIZE`]; anything else goes the usual way.
    #[test]
    fn a_file_goes_ahead_only_as_the_scan_saw_it() {
        use sha2::Digest;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("site");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "body").unwrap();
        let m = mapping(&src, "");
        let u = unit(&m, Some(&["f"]));
        let source = u.source.as_ref().as_ref().unwrap();
        let (_, item) = candidates(&[(0, &u, source)], 0).remove(0);
        let (data, meta, sha) = read_whole(&item).unwrap();
        assert_eq!((data.as_slice(), meta.size), (&b"body"[..], 4));
        assert_eq!(sha, crate::local::hex(&sha2::Sha256::digest(b"body")));
        // Grown past the limit since the scan: not sent ahead.
        std::fs::write(src.join("f"), vec![1; MAX_SIZE as usize + 1]).unwrap();
        assert!(read_whole(&item).is_none());
        // Another file now (an editor's rename): not the one the scan saw.
        std::fs::write(src.join("g"), "other").unwrap();
        std::fs::rename(src.join("g"), src.join("f")).unwrap();
        assert!(read_whole(&item).is_none());
    }
}

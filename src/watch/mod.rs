//! Watching the local sources: notify (inotify on Linux) events become our own
//! [`Change`]s on a bounded crossbeam channel.
//!
//! What each kernel event means for a sync tool:
//! - close-after-write and the arrival half of a rename (an editor's atomic save,
//!   `mv` into the tree) mean the writer is done: [`Change::Ready`], sent at once;
//! - data and attribute changes without a close (a file held open and written
//!   continuously, `chmod`, a new symlink) are [`Change::Writing`]: the planner
//!   waits for a quiet period (`[sync] debounce_ms`) unless a close comes first;
//! - deletes and the departure half of a rename are [`Change::Gone`];
//! - a kernel queue overflow or the inotify watch limit means events were lost:
//!   [`Change::Rescan`], which makes every host reconcile in full.
//!
//! Directory sources are watched recursively (notify adds a watch for each new
//! subdirectory). A new directory is [`Change::Writing`]: after the quiet period
//! the planner pushes it whole, so files written into it (or into subdirectories
//! made with it, `mkdir -p`) before their watch existed are not missed. Pushed at
//! once, its scan could run before such a file was written, and nothing would
//! ever report that file. A file source is watched through
//! its parent directory, so an editor replacing the file by a rename is seen.
//! Our own temporaries (`.hostsync-tmp.*`) are ignored: in two-way setups they
//! are another daemon's uploads in progress.
//!
//! The channel is bounded and the callback blocks when it is full: a sync tool
//! must not drop changes. If that stalls notify's thread long enough for the
//! kernel queue to overflow, the overflow turns into a full reconcile.

pub(crate) mod route;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};

use crate::remote::TMP_PREFIX;

/// Capacity of the change channel between the watcher and the planner.
pub(crate) const CHANNEL_CAPACITY: usize = 65_536;

/// What happened to a local path, as far as pushing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The writer is done with it (closed after writing, renamed into place, a new directory).
    Ready(PathBuf),
    /// It is being written or its attributes changed; wait for a quiet period.
    Writing(PathBuf),
    /// It is gone (deleted or renamed away).
    Gone(PathBuf),
    /// Events were lost; everything must be compared again. The reason, for the log.
    Rescan(String),
    /// Shut down (sent by the signal handler).
    Stop,
    /// Read the configuration again (SIGHUP, issue 17).
    Reload,
}

/// The running watcher; dropping it stops watching.
pub(crate) struct Watcher {
    /// notify's watcher, kept alive.
    _inner: notify::RecommendedWatcher,
    /// How many sources are watched.
    pub(crate) watched: usize,
    /// Sources that could not be watched, with the reason.
    pub(crate) failed: Vec<(PathBuf, String)>,
}

/// Starts watching every src; changes go to `tx`.
pub(crate) fn start(srcs: &[PathBuf], tx: Sender<Change>) -> Result<Watcher> {
    let handler_tx = tx.clone();
    let mut inner = notify::recommended_watcher(move |res: notify::Result<Event>| {
        for change in translate(res) {
            // Blocks when the planner is behind; see the module docs.
            if handler_tx.send(change).is_err() {
                return;
            }
        }
    })
    .context("cannot start the file watcher (inotify)")?;
    let mut watched = 0;
    let mut failed = Vec::new();
    for src in srcs {
        let (path, mode) = if src.is_dir() {
            (src.clone(), RecursiveMode::Recursive)
        } else {
            let parent = src.parent().unwrap_or(Path::new("/")).to_path_buf();
            (parent, RecursiveMode::NonRecursive)
        };
        match inner.watch(&path, mode) {
            Ok(()) => watched += 1,
            Err(e) => {
                let reason = describe_error(&e);
                if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    let _ = tx.send(Change::Rescan(reason.clone()));
                }
                failed.push((src.clone(), reason));
            }
        }
    }
    Ok(Watcher {
        _inner: inner,
        watched,
        failed,
    })
}

/// Turns one notify result into zero or more changes.
fn translate(res: notify::Result<Event>) -> Vec<Change> {
    let event = match res {
        Ok(e) => e,
        Err(e) => return vec![Change::Rescan(describe_error(&e))],
    };
    if event.need_rescan() {
        return vec![Change::Rescan(
            "the kernel's inotify event queue overflowed, events were lost; raise fs.inotify.max_queued_events".into(),
        )];
    }
    let make: fn(PathBuf) -> Change = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Ready,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Change::Ready,
        // A new folder waits out the quiet period before it is pushed whole: by
        // then notify watches it and its subfolders, and whatever was written into
        // them before those watches existed is on disk for the push's scan.
        EventKind::Create(CreateKind::Folder) => Change::Writing,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Change::Gone,
        EventKind::Remove(_) => Change::Gone,
        // `Both` repeats a From and a To that were already reported.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return Vec::new(),
        EventKind::Create(_) | EventKind::Modify(_) => Change::Writing,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => return Vec::new(),
    };
    event
        .paths
        .into_iter()
        .filter(|p| !is_ours(p))
        .map(make)
        .collect()
}

/// True for hostsync temporaries, which never count as changes.
fn is_ours(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.as_bytes().starts_with(TMP_PREFIX.as_bytes()))
}

/// A notify error as one line, with the remedy for the inotify limits.
fn describe_error(e: &notify::Error) -> String {
    let paths = e
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "the inotify watch limit was reached{}; raise it (sysctl fs.inotify.max_user_watches=1048576, and in /etc/sysctl.d to keep it); until then changes there are found by full reconciles",
            if paths.is_empty() {
                String::new()
            } else {
                format!(" at {paths}")
            }
        ),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            "too many inotify instances; raise fs.inotify.max_user_instances".to_string()
        }
        _ => format!(
            "{e}{}",
            if paths.is_empty() {
                String::new()
            } else {
                format!(" ({paths})")
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, RemoveKind};

    fn ev(kind: EventKind, p: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(PathBuf::from(p)))
    }

    #[test]
    fn events_become_changes() {
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(translate(ev(close, "/s/a")), [Change::Ready("/s/a".into())]);
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(
            translate(ev(data, "/s/a")),
            [Change::Writing("/s/a".into())]
        );
        let rm = EventKind::Remove(RemoveKind::File);
        assert_eq!(translate(ev(rm, "/s/a")), [Change::Gone("/s/a".into())]);
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(translate(ev(to, "/s/b")), [Change::Ready("/s/b".into())]);
        let open = EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any));
        assert!(translate(ev(open, "/s/a")).is_empty());
        assert!(translate(ev(close, "/s/.hostsync-tmp.0123")).is_empty());
        let overflow = Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
        assert!(matches!(translate(overflow)[..], [Change::Rescan(_)]));
        let limit = Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        let [Change::Rescan(msg)] = &translate(limit)[..] else {
            panic!()
        };
        assert!(msg.contains("max_user_watches"), "{msg}");
    }

    /// Real inotify: a write and close in a watched directory arrive as Ready, a
    /// new directory as Writing. (A file written into a brand-new directory may
    /// beat notify's new watch; that is why the planner pushes a new directory
    /// whole, after the quiet period.)
    #[test]
    fn real_inotify_reports_new_dirs_and_close_write() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let w = start(&[d.path().to_path_buf()], tx).unwrap();
        assert_eq!(w.watched, 1);
        std::fs::write(d.path().join("sub/f"), "x").unwrap();
        std::fs::create_dir(d.path().join("new")).unwrap();
        let mut want = vec![
            Change::Ready(d.path().join("sub/f")),
            Change::Writing(d.path().join("new")),
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !want.is_empty() {
            match rx.recv_deadline(deadline) {
                Ok(c) => want.retain(|w| *w != c),
                Err(e) => panic!("still waiting for {want:?}: {e}"),
            }
        }
    }
}

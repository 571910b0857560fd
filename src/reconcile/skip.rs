//! When a remote file already holds the local one, so `sync` skips it, and, when
//! not, why it is sent (issue 14: `sync -v` says why; bug 4: two edits of one
//! second).
//!
//! A remote regular file of the local file's size and mode holds its content when:
//! - the listing gave the remote file's SHA-256 (path pushes, `sync --checksum`):
//!   that hash is the local file's;
//! - otherwise, its mtime is the local one at the precision the remote keeps.
//!   Where the remote copy's mtime has a fraction of a second, the two must agree
//!   to [`MTIME_SLACK_NS`]: the agent and GNU tar keep nanoseconds, OpenSSH's scp
//!   microseconds, and the agent's perl passes times as doubles. Where it has none
//!   (a remote that keeps whole seconds, or a copy made over whole seconds), only
//!   the second can match, and the host's record of what was last pushed decides
//!   ([`crate::local::pushed`]): skipped when the record is of this very file (size and
//!   mtime to the nanosecond) or of the same content, sent otherwise, and skipped
//!   as rsync does when there is no record for that path.
//!
//! These rules are pure (a local file's hash is asked of the caller, only when
//! needed) and shared by every way a host is served.

use crate::local::pushed::Record;
use crate::local::{FileMeta, Kind};
use crate::remote::RemoteEntry;

/// How far apart two mtimes may be and still count as equal where the remote keeps
/// fractions of a second. OpenSSH's scp sink keeps microseconds (the rest is
/// dropped), and the agent's Time::HiRes passes times as doubles, exact to about
/// 0.24 µs at today's epoch.
pub(crate) const MTIME_SLACK_NS: i128 = 1_000;

/// What a remote file's mtime says about a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mtime {
    /// The same, at the precision the remote keeps.
    Same,
    /// Different.
    Differs,
    /// The same second, and the remote copy has no fraction: it cannot tell more.
    SameSecond,
}

/// Compares the mtime of remote file `r` with local `meta` (see the module doc).
pub(crate) fn mtime(r: &RemoteEntry, meta: &FileMeta) -> Mtime {
    let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    if (ns(r.mtime, r.mtime_nsec) - ns(meta.mtime, meta.mtime_nsec)).abs() <= MTIME_SLACK_NS {
        Mtime::Same
    } else if r.mtime_nsec == 0 && r.mtime == meta.mtime {
        Mtime::SameSecond
    } else {
        Mtime::Differs
    }
}

/// Whether remote file `r`, of the size and mode of the local file (`meta`),
/// holds its content: by `remote_hash` when the listing gave one, else by mtime, and
/// for the same second without a fraction by `recorded`, what this host was last
/// sent at that path (see the module doc). `local_hash` hashes the local file,
/// only when needed (`None`: it cannot be read).
pub(crate) fn same_content(
    remote_hash: Option<&String>,
    r: &RemoteEntry,
    meta: &FileMeta,
    local_hash: &dyn Fn() -> Option<String>,
    recorded: Option<&Record>,
) -> bool {
    if let Some(hash) = remote_hash {
        return local_hash().is_some_and(|h| &h == hash);
    }
    match mtime(r, meta) {
        Mtime::Same => true,
        Mtime::Differs => false,
        Mtime::SameSecond => recorded
            .is_none_or(|rec| rec.same_file(meta) || local_hash().is_some_and(|h| h == rec.sha256)),
    }
}

/// Why a local entry that differs from `there` is sent: `new` (nothing there), `type`
/// (something of another kind), or the attributes that differ. `hashed`: the
/// listing gave the remote file's hash, so content was compared, not mtime; a file
/// told apart within one second by the host's record differs in `content`.
/// `mode_mask`: the mode bits a remote copy keeps (see
/// [`crate::config::Mapping::file_mode`]).
pub(crate) fn why_sent(
    kind: &Kind,
    there: Option<&RemoteEntry>,
    hashed: bool,
    mode_mask: u32,
) -> String {
    let Some(r) = there else {
        return "new".into();
    };
    let mut differ = Vec::new();
    match kind {
        Kind::Dir { .. } if r.kind != b'd' => return "type".into(),
        Kind::File(_) if r.kind != b'f' => return "type".into(),
        Kind::Symlink { .. } if r.kind != b'l' => return "type".into(),
        Kind::Dir { .. } => differ.push("mode"),
        Kind::Symlink { .. } => differ.push("target"),
        Kind::File(meta) => {
            if r.size != meta.size {
                differ.push("size");
            }
            if !hashed && mtime(r, meta) == Mtime::Differs {
                differ.push("mtime");
            }
            if r.mode != meta.mode & mode_mask {
                differ.push("mode");
            }
            if differ.is_empty() {
                differ.push("content");
            }
        }
    }
    differ.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, mtime: i64, mtime_nsec: i64) -> FileMeta {
        FileMeta {
            size,
            mtime,
            mtime_nsec,
            atime: 0,
            mode: 0o644,
            dev: 0,
            ino: 0,
        }
    }

    fn remote(size: u64, mtime: i64, mtime_nsec: i64) -> RemoteEntry {
        RemoteEntry {
            kind: b'f',
            size,
            mtime,
            mtime_nsec,
            mode: 0o644,
            target: Vec::new(),
        }
    }

    /// Issue 14, bug 4: compared to the nanosecond where the remote has a fraction
    /// (give or take the agent's doubles and scp's microseconds), to the second where
    /// it has none.
    #[test]
    fn mtimes_compare_at_the_remote_precision() {
        const S: i64 = 1_700_000_000;
        let local = meta(4, S, 600_000_123);
        assert_eq!(mtime(&remote(4, S, 600_000_123), &local), Mtime::Same);
        assert_eq!(
            mtime(&remote(4, S, 600_000_000), &local),
            Mtime::Same,
            "scp: µs"
        );
        assert_eq!(
            mtime(&remote(4, S, 600_000_230), &local),
            Mtime::Same,
            "perl doubles"
        );
        assert_eq!(mtime(&remote(4, S, 100_000_000), &local), Mtime::Differs);
        assert_eq!(mtime(&remote(4, S, 0), &local), Mtime::SameSecond);
        assert_eq!(mtime(&remote(4, S + 1, 0), &local), Mtime::Differs);
        assert_eq!(
            mtime(&remote(4, S - 1, 600_000_123), &local),
            Mtime::Differs
        );
        // Rounding across a second boundary is still the same time.
        let edge = meta(4, S, 999_999_900);
        assert_eq!(mtime(&remote(4, S + 1, 0), &edge), Mtime::Same);
        assert_eq!(mtime(&remote(4, S, 0), &meta(4, S, 0)), Mtime::Same);
    }

    /// Issue 14, bug 4: where the remote kept only the second, the record decides:
    /// this very file, or the same content, is skipped; another file is sent; no
    /// record is skipped as rsync does. A remote hash overrides everything.
    #[test]
    fn the_record_decides_within_one_second() {
        const S: i64 = 1_700_000_000;
        let bbbb = "b".repeat(64);
        let aaaa = "a".repeat(64);
        let f = || Some(bbbb.clone());
        let now = meta(4, S, 600_000_000);
        let whole = remote(4, S, 0);
        let sent = |m: &FileMeta, h: &str| Record::sent(m, h);
        let same = |rec: Option<&Record>| same_content(None, &whole, &now, &f, rec);
        assert!(same(None), "nothing known: skipped, as rsync does");
        assert!(same(Some(&sent(&now, &aaaa))), "this very file was sent");
        assert!(
            !same(Some(&sent(&meta(4, S, 100_000_000), &aaaa))),
            "an earlier edit of the same second was sent"
        );
        assert!(
            same(Some(&sent(&meta(4, S, 100_000_000), &bbbb))),
            "only touched since: the same content"
        );
        // With a fraction on the remote, the mtime alone decides.
        let fraction = remote(4, S, 100_000_000);
        assert!(!same_content(
            None,
            &fraction,
            &now,
            &f,
            Some(&sent(&now, &bbbb))
        ));
        // A remote hash (path push, --checksum) decides alone; an unreadable
        // local file never matches it.
        assert!(same_content(Some(&bbbb), &fraction, &now, &f, None));
        assert!(!same_content(Some(&aaaa), &whole, &now, &f, None));
        assert!(!same_content(Some(&bbbb), &whole, &now, &|| None, None));
    }

    /// Issue 14: `sync -v` says why, in rsync -i's terms.
    #[test]
    fn why_a_file_is_sent() {
        let file = Kind::File(meta(3, 100, 0));
        let r = |kind, size, mtime, mode| RemoteEntry {
            kind,
            mode,
            ..remote(size, mtime, 0)
        };
        assert_eq!(why_sent(&file, None, false, 0o7777), "new");
        assert_eq!(
            why_sent(&file, Some(&r(b'l', 3, 100, 0o777)), false, 0o7777),
            "type"
        );
        assert_eq!(
            why_sent(&file, Some(&r(b'f', 4, 99, 0o644)), false, 0o7777),
            "size, mtime"
        );
        assert_eq!(
            why_sent(&file, Some(&r(b'f', 3, 100, 0o600)), false, 0o7777),
            "mode"
        );
        assert_eq!(
            why_sent(&file, Some(&r(b'f', 3, 99, 0o644)), false, 0o7777),
            "mtime"
        );
        // Within one second: the nanoseconds count where the remote keeps them.
        let later = Kind::File(meta(3, 100, 500_000_000));
        let kept = RemoteEntry {
            mtime_nsec: 100_000_000,
            ..r(b'f', 3, 100, 0o644)
        };
        assert_eq!(why_sent(&later, Some(&kept), false, 0o7777), "mtime");
        // The remote kept the second only: told apart by the record's hash.
        assert_eq!(
            why_sent(&later, Some(&r(b'f', 3, 100, 0o644)), false, 0o7777),
            "content"
        );
        // Compared by hash (path pushes): mtime is no reason, content is.
        assert_eq!(
            why_sent(&file, Some(&r(b'f', 3, 99, 0o644)), true, 0o7777),
            "content"
        );
        assert_eq!(
            why_sent(&file, Some(&r(b'f', 5, 99, 0o644)), true, 0o7777),
            "size"
        );
        let dir = Kind::Dir { mode: 0o755 };
        assert_eq!(
            why_sent(&dir, Some(&r(b'd', 0, 0, 0o700)), false, 0o7777),
            "mode"
        );
        let link = Kind::Symlink { target: "a".into() };
        assert_eq!(
            why_sent(&link, Some(&r(b'l', 1, 0, 0o777)), false, 0o7777),
            "target"
        );
        assert_eq!(
            why_sent(&link, Some(&r(b'f', 1, 0, 0o644)), false, 0o7777),
            "type"
        );
    }
}

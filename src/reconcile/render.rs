//! `hostsync sync --dry-run`: what a sync would change, without changing anything.
//!
//! The dry run lists every destination with the listing script's no-create mode
//! (a missing remote directory is reported as missing, never made), compares it
//! with the local side exactly as `sync` does (size, mtime and mode; excludes;
//! `"delete": true`) and turns what `sync` would upload, link or remove into
//! [`Diff`]s. Nothing is uploaded, renamed, rotated or removed, and no post_sync
//! command runs. The differences are printed grouped by host, in the style of
//! gosyncd (issue 5):
//!
//! ```text
//! [+] 10.0.0.12 /srv/www/site/new.html added
//! [M] 10.0.0.12 /etc/app/app.conf updated
//! [-] 10.0.0.12 /srv/www/site/old.html deleted
//! ```
//!
//! A directory's path ends in `/` (a new empty directory, or a changed mode is a
//! difference too), and every directory `sync` would make has its line, not only
//! the deepest. `[-]` only appears for mappings with `"delete": true`.
//!
//! Before listing, the dry run asks each host the question `check` asks: can the
//! login user write the directory each mapping writes into (or make it)? Where it
//! cannot, `sync` would fail that mapping, so the dry run says so instead of
//! promising its files (issue 14, bug 5), as one `[!]` line with `check`'s reason,
//! counted as a failure (exit 1):
//!
//! ```text
//! [!] 10.0.0.12 /opt/app/ not writable: permission denied on the remote: deploy cannot write /opt/app; make it writable for deploy or change dest
//! ```

use super::{ItemKind, Plan, join};
use serde_json::{Value, json};

/// What a sync would do to one remote path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Change {
    /// It does not exist on the remote and would be created.
    Added,
    /// It exists and would be replaced (content, mode or mtime differ, or another kind).
    Updated,
    /// It exists only on the remote and would be removed (`"delete": true`).
    Deleted,
    /// A directory `sync` would write into, which the login user cannot write
    /// (or make): `sync` fails the mapping there. [`Diff::reason`] says why.
    Unwritable,
}

impl Change {
    /// The tag at the start of a line.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Change::Added => "[+]",
            Change::Updated => "[M]",
            Change::Deleted => "[-]",
            Change::Unwritable => "[!]",
        }
    }

    /// The word at the end of a line, and the `change` field of a JSON line.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Updated => "updated",
            Change::Deleted => "deleted",
            Change::Unwritable => "unwritable",
        }
    }
}

/// One difference on one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Diff {
    /// The absolute remote path (bytes: remote names need not be UTF-8).
    pub(crate) path: Vec<u8>,
    /// What a sync would do there.
    pub(crate) change: Change,
    /// Whether the path is (or would be) a directory.
    pub(crate) is_dir: bool,
    /// For [`Change::Unwritable`], why (as `check` says it); empty otherwise.
    pub(crate) reason: String,
    /// For a file that would be sent: whether it would go as a delta (issue 19:
    /// a remote copy to start from, `delta_min_kib`, a remote that can compute
    /// checksums). Whether the delta turns out smaller is known only when sent.
    pub(crate) delta: Option<bool>,
}

impl Diff {
    /// The path for display: control characters and bytes that are not UTF-8
    /// escaped ([`crate::escape::escape`]), with a trailing `/` for a directory.
    fn shown(&self) -> String {
        let mut p = crate::escape::escape(&self.path);
        if self.is_dir {
            p.push('/');
        }
        p
    }
}

/// One `-v` text line: [`line()`], then `(delta)` or `(whole file)` for a file
/// that would be sent (issue 19).
pub(crate) fn line_verbose(host: &str, d: &Diff) -> String {
    match d.delta {
        Some(true) => format!("{} (delta)", line(host, d)),
        Some(false) => format!("{} (whole file)", line(host, d)),
        None => line(host, d),
    }
}

/// One text line: `[+] HOST PATH added`, or `[!] HOST PATH not writable: REASON`.
pub(crate) fn line(host: &str, d: &Diff) -> String {
    match d.change {
        Change::Unwritable => format!(
            "{} {host} {} not writable: {}",
            d.change.tag(),
            d.shown(),
            crate::escape::controls(&d.reason)
        ),
        _ => format!(
            "{} {host} {} {}",
            d.change.tag(),
            d.shown(),
            d.change.word()
        ),
    }
}

/// One JSON object: `{"type":"diff","host":..,"path":..,"change":"added","dir":false}`,
/// with `"reason"` for `"change":"unwritable"`.
pub(crate) fn json_line(host: &str, d: &Diff) -> Value {
    let mut v = json!({
        "type": "diff",
        "host": host,
        "path": String::from_utf8_lossy(&d.path),
        "change": d.change.word(),
        "dir": d.is_dir,
    });
    if d.change == Change::Unwritable {
        v["reason"] = json!(d.reason);
    }
    if let Some(delta) = d.delta {
        v["delta"] = json!(delta);
    }
    v
}

/// The directories `mkdir -p ROOT` makes when `existing` is the nearest ancestor of
/// `root` that exists, top first, `root` last: each gets its line (issue 14, bug 5).
/// Just `root` when `existing` is not one of its ancestors.
pub(crate) fn made_dirs(root: &[u8], existing: &[u8]) -> Vec<Vec<u8>> {
    let base = existing.strip_suffix(b"/").unwrap_or(existing);
    let Some(rest) = root.strip_prefix(base).filter(|r| r.starts_with(b"/")) else {
        return vec![root.to_vec()];
    };
    let mut out = Vec::new();
    let mut at = base.to_vec();
    for c in rest.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        at.push(b'/');
        at.extend_from_slice(c);
        out.push(at.clone());
    }
    if out.is_empty() {
        out.push(root.to_vec());
    }
    out
}

/// Every host's differences, grouped by host in the order given and sorted by
/// path within a host, as text lines (`verbose`: [`line_verbose`]) or JSON lines.
pub(crate) fn render(hosts: &[(&str, &[Diff])], as_json: bool, verbose: bool) -> String {
    let mut out = String::new();
    for (host, diffs) in hosts {
        let mut sorted: Vec<&Diff> = diffs.iter().collect();
        sorted.sort();
        for d in sorted {
            if as_json {
                out.push_str(&json_line(host, d).to_string());
            } else if verbose {
                out.push_str(&line_verbose(host, d));
            } else {
                out.push_str(&line(host, d));
            }
            out.push('\n');
        }
    }
    out
}

/// For each root `sync` would make, its nearest existing ancestor.
pub(crate) type MadeBelow = std::collections::HashMap<Vec<u8>, Vec<u8>>;

/// The differences a plan would make, as absolute remote paths. A missing root is
/// made (`mkdir -p`) by the real run's listing: every directory from below its
/// nearest existing ancestor (`made_below`, where known) down to it is added.
/// Files that may go as a delta where the smallest is `delta_min` bytes (0: none;
/// see [`super::Item::may_go_as_delta`]) say so.
pub(crate) fn diffs(plan: &Plan, made_below: &MadeBelow, delta_min: u64) -> Vec<Diff> {
    let mut out: Vec<Diff> = plan
        .missing
        .iter()
        .flat_map(|root| match made_below.get(root) {
            Some(existing) => made_dirs(root, existing),
            None => vec![root.clone()],
        })
        .map(|path| Diff {
            path,
            change: Change::Added,
            is_dir: true,
            reason: String::new(),
            delta: None,
        })
        .collect();
    for (root, w) in &plan.work {
        for item in &w.items {
            let (change, is_dir) = match item.what {
                ItemKind::Dir => (added_or_updated(item.exists), true),
                ItemKind::File | ItemKind::Symlink { .. } => (added_or_updated(item.exists), false),
                ItemKind::Removed => (Change::Deleted, false),
            };
            out.push(Diff {
                path: join(root, &item.rel),
                change,
                is_dir,
                reason: String::new(),
                delta: matches!(item.what, ItemKind::File).then(|| item.may_go_as_delta(delta_min)),
            });
        }
        for r in &w.removes {
            out.push(Diff {
                path: join(root, &r.rel),
                change: Change::Deleted,
                is_dir: r.is_dir,
                reason: String::new(),
                delta: None,
            });
        }
    }
    out
}

/// `[M]` when something is there already, `[+]` when not.
fn added_or_updated(exists: bool) -> Change {
    if exists {
        Change::Updated
    } else {
        Change::Added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(p: &str, change: Change, is_dir: bool) -> Diff {
        Diff {
            path: p.as_bytes().to_vec(),
            change,
            is_dir,
            reason: String::new(),
            delta: None,
        }
    }

    #[test]
    fn lines_look_like_gosyncd() {
        assert_eq!(
            line(
                "10.0.0.12",
                &diff("/srv/www/site/new.html", Change::Added, false)
            ),
            "[+] 10.0.0.12 /srv/www/site/new.html added"
        );
        assert_eq!(
            line(
                "10.0.0.12",
                &diff("/etc/app/app.conf", Change::Updated, false)
            ),
            "[M] 10.0.0.12 /etc/app/app.conf updated"
        );
        assert_eq!(
            line("::1", &diff("/srv/old", Change::Deleted, true)),
            "[-] ::1 /srv/old/ deleted"
        );
        let lossy = Diff {
            path: b"/x/\xff".to_vec(),
            ..diff("", Change::Added, false)
        };
        // Not UTF-8, or a control character: escaped, so a name cannot forge a line.
        assert_eq!(line("h", &lossy), "[+] h /x/\\xff added");
        let forged = Diff {
            path: b"/x/a\r[+] h /etc/shadow added\n\x1b[2J".to_vec(),
            ..diff("", Change::Added, false)
        };
        assert_eq!(
            line("h", &forged),
            "[+] h /x/a\\r[+] h /etc/shadow added\\n\\x1b[2J added"
        );
        // Issue 14, bug 5: a directory sync could not write, with check's reason.
        let locked = Diff {
            reason: "permission denied on the remote: deploy cannot write /opt\n".into(),
            ..diff("/opt", Change::Unwritable, true)
        };
        assert_eq!(
            line("h", &locked),
            "[!] h /opt/ not writable: permission denied on the remote: deploy cannot write /opt\\n"
        );
        let j = json_line("h", &locked);
        assert_eq!(
            (&j["change"], &j["dir"]),
            (&json!("unwritable"), &json!(true))
        );
        assert!(
            j["reason"]
                .as_str()
                .unwrap()
                .starts_with("permission denied")
        );
        assert!(
            json_line("h", &diff("/a", Change::Added, false))
                .get("reason")
                .is_none()
        );
    }

    #[test]
    fn every_made_directory_is_listed() {
        let made = |root: &str, existing: &str| -> Vec<String> {
            made_dirs(root.as_bytes(), existing.as_bytes())
                .iter()
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .collect()
        };
        assert_eq!(made("/r/a/b", "/r"), ["/r/a", "/r/a/b"]);
        assert_eq!(made("/a/b", "/"), ["/a", "/a/b"]);
        assert_eq!(made("/r/a", "/r/"), ["/r/a"]);
        assert_eq!(made("/r/ab", "/r/a"), ["/r/ab"], "not an ancestor");
        assert_eq!(made("/r", "/r"), ["/r"]);
    }

    #[test]
    fn render_groups_by_host_and_sorts_by_path() {
        let a = [
            diff("/b", Change::Added, false),
            diff("/a", Change::Deleted, false),
        ];
        let b = [diff("/c", Change::Updated, false)];
        let text = render(&[("h2", &b), ("h1", &a)], false, false);
        assert_eq!(
            text,
            "[M] h2 /c updated\n[-] h1 /a deleted\n[+] h1 /b added\n"
        );
        let json = render(&[("h1", &a)], true, false);
        let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "diff");
        assert_eq!(first["host"], "h1");
        assert_eq!(first["path"], "/a");
        assert_eq!(first["change"], "deleted");
        assert_eq!(first["dir"], false);
        assert!(render(&[("h", &[])], false, false).is_empty());
        // Issue 19: `-v` says how a file would go; JSON always does.
        let files = [
            Diff {
                delta: Some(true),
                ..diff("/big", Change::Updated, false)
            },
            Diff {
                delta: Some(false),
                ..diff("/new", Change::Added, false)
            },
            diff("/dir", Change::Added, true),
        ];
        assert_eq!(
            render(&[("h", &files)], false, true),
            "[M] h /big updated (delta)\n[+] h /dir/ added\n[+] h /new added (whole file)\n"
        );
        assert_eq!(
            render(&[("h", &files)], false, false),
            "[M] h /big updated\n[+] h /dir/ added\n[+] h /new added\n"
        );
        let json: Vec<Value> = render(&[("h", &files)], true, false)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            (&json[0]["delta"], &json[2]["delta"], json[1].get("delta")),
            (&json!(true), &json!(false), None)
        );
    }
}

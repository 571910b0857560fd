//! The writability probe `check` runs on a host, and `sync --dry-run` before it
//! lists (issue 14, bug 5): one sh script asks, for each mapping, whether the
//! directory `sync` would write into (dest itself for a directory src, dest's
//! parent for a file src) is writable, or could be created because its nearest
//! existing ancestor is a writable directory, with `sync`'s ancestor rule
//! ([`super::TRUST`]). Nothing is created or changed on the remote. This module
//! is the script and the grammar of its answers; `exec::probe` runs it.

use super::tags::probe as tag;
use super::{program, quote};
use crate::config::Mapping;

/// What to ask the remote about one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// `src -> dest`, for messages.
    label: String,
    /// The directory `sync` writes into: dest, or the parent of [`Mapping::file_dest`] for a file src.
    dir: String,
    /// For a file src, [`Mapping::file_dest`] (it must not be a directory).
    file: Option<String>,
}

impl Probe {
    /// The directory `sync` writes into.
    pub(crate) fn dir(&self) -> &str {
        &self.dir
    }

    /// The probe for mapping `m`, whose src is a directory when `src_is_dir`.
    pub(crate) fn of(m: &Mapping, src_is_dir: bool) -> Probe {
        let label = format!("{} -> {}", m.src.display(), m.dest);
        if src_is_dir {
            Probe {
                label,
                dir: m.dest.clone(),
                file: None,
            }
        } else {
            Probe {
                label,
                dir: parent(&m.file_dest()),
                file: Some(m.file_dest()),
            }
        }
    }

    /// `src -> dest`, for messages.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }
}

/// What the probe script found for one directory `sync` writes into: the same
/// verdict `check` gives (`sync --dry-run` runs it too, issue 14, bug 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirState {
    /// Why `sync` cannot write there, as `check` words it; `None` when it can.
    pub(crate) problem: Option<String>,
    /// For a missing directory `sync` would make: its nearest existing ancestor,
    /// below which every directory is new.
    pub(crate) made_below: Option<String>,
}

/// The parent of a normalised absolute dest (`/` for a top-level name).
pub(crate) fn parent(dest: &str) -> String {
    match dest.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => dest[..i].into(),
    }
}

/// The probe program (`probe.sh`, whose header gives its grammar).
const PROBE_PROGRAM: &str = include_str!("probe.sh");

/// The whole script: the prelude, then one quoted call per probe.
pub(crate) fn probe_script(probes: &[Probe], strict: bool) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(if strict { b"SM=1\n" } else { b"SM=0\n" });
    s.extend_from_slice(program(super::TRUST).as_bytes());
    s.extend_from_slice(program(PROBE_PROGRAM).as_bytes());
    for (i, p) in probes.iter().enumerate() {
        s.extend_from_slice(format!("C {i} ").as_bytes());
        s.extend_from_slice(&quote(p.dir.as_bytes()));
        s.push(b' ');
        s.extend_from_slice(&quote(p.file.as_deref().unwrap_or("").as_bytes()));
        s.push(b'\n');
    }
    s
}

/// What [`probe_script`] said.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    /// Per probe index, the verdict and the path it names.
    pub(crate) verdicts: Vec<(usize, String, String)>,
    /// Per probe index, `owner mode path` of a directory others can write.
    pub(crate) open: Vec<(usize, String)>,
    /// The host has perl for the agent.
    pub(crate) perl: bool,
}

/// Parses the records of [`probe_script`].
pub(crate) fn parse_answers(out: &[u8]) -> Answers {
    let fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut answers = Answers::default();
    let mut i = 0;
    while i < fields.len() {
        let n = fields
            .get(i + 1)
            .and_then(|f| text(f).parse::<usize>().ok());
        match (fields[i], n) {
            (tag::VERDICT, Some(n)) if i + 3 < fields.len() => {
                answers
                    .verdicts
                    .push((n, text(fields[i + 2]), text(fields[i + 3])));
                i += 4;
            }
            (tag::OPEN, Some(n)) if i + 2 < fields.len() => {
                answers.open.push((n, text(fields[i + 2])));
                i += 3;
            }
            (tag::PERL, _) => {
                answers.perl = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    answers
}

/// What the answers say of probe `i`, for login `user` (see [`DirState`]); a probe
/// the remote did not answer is a problem, told with the script's exit status and
/// stderr.
pub(crate) fn dir_state(
    answers: &Answers,
    (status, stderr): (i32, &str),
    i: usize,
    probe: &Probe,
    user: &str,
) -> DirState {
    let Some((_, verdict, path)) = answers.verdicts.iter().find(|(n, _, _)| *n == i) else {
        return DirState {
            problem: Some(format!(
                "the remote shell gave no answer (exit {status}, stderr: {})",
                crate::escape::fold(stderr.as_bytes(), 300)
            )),
            made_below: None,
        };
    };
    DirState {
        problem: verdict_problem(verdict, path, probe, user),
        made_below: (verdict == "new").then(|| path.clone()),
    }
}

/// The failure a verdict means, or `None` when the directory is usable.
pub(crate) fn verdict_problem(
    verdict: &str,
    path: &str,
    probe: &Probe,
    user: &str,
) -> Option<String> {
    let dir = &probe.dir;
    match verdict {
        "ok" | "new" => None,
        "ancestor" => Some(format!("cannot use remote directory {dir}: {path}")),
        "notdir" => Some(format!(
            "cannot use remote directory {dir}: {path} exists and is not a directory; remove it or change dest"
        )),
        "ro" if path == dir => Some(format!(
            "permission denied on the remote: {user} cannot write {dir}; make it writable for {user} or change dest"
        )),
        "ro" => Some(format!(
            "permission denied on the remote: {dir} is missing and {user} cannot create it in {path}; create it for {user} or change dest"
        )),
        "isdir" => Some(format!(
            "the remote path {path} is a directory, but src is a file; change dest (a dest ending in / puts the file inside that directory)"
        )),
        other => Some(format!("unexpected answer {other:?} from the remote check")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs the probe script with the local sh, as the remote would.
    fn run_local(shell: &str, probes: &[Probe]) -> Vec<(usize, String, String)> {
        answers(shell, probes).verdicts
    }

    /// Everything the probe script says, run with the local sh.
    fn answers(shell: &str, probes: &[Probe]) -> Answers {
        let out = crate::remote::run_sh(shell, &probe_script(probes, true));
        parse_answers(&out)
    }

    fn probe(dir: &Path, file: Option<&Path>) -> Probe {
        Probe {
            label: "x".into(),
            dir: dir.display().to_string(),
            file: file.map(|f| f.display().to_string()),
        }
    }

    #[test]
    fn probe_script_verdicts() {
        for shell in crate::remote::SHELLS {
            probe_script_verdicts_under(shell);
        }
    }

    fn probe_script_verdicts_under(shell: &str) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("it's $(x) `y`; z");
        std::fs::create_dir_all(root.join("sub dir")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        std::os::unix::fs::symlink("sub dir", root.join("link")).unwrap();
        let probes = [
            probe(&root, None),
            probe(&root.join("missing/deeper"), None),
            probe(&root.join("file/below"), None),
            probe(&root.join("link"), None),
            probe(&root, Some(&root.join("sub dir"))),
            probe(&root, Some(&root.join("new.txt"))),
        ];
        let got: Vec<(usize, String)> = run_local(shell, &probes)
            .into_iter()
            .map(|(i, v, _)| (i, v))
            .collect();
        let want = ["ok", "new", "notdir", "notdir", "isdir", "ok"];
        assert_eq!(
            got,
            want.iter()
                .enumerate()
                .map(|(i, v)| (i, v.to_string()))
                .collect::<Vec<_>>()
        );
        // Nothing was created by the check.
        assert!(!root.join("missing").exists());
    }

    /// Issue 13: `check` applies sync's ancestor rule and names a destination others
    /// can write (a sticky parent such as /tmp does not count).
    #[test]
    fn probe_script_applies_the_ancestor_rule_and_reports_open_dirs() {
        for shell in crate::remote::SHELLS {
            probe_script_applies_the_ancestor_rule_and_reports_open_dirs_under(shell);
        }
    }

    fn probe_script_applies_the_ancestor_rule_and_reports_open_dirs_under(shell: &str) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let open = d.path().join("open");
        std::fs::create_dir_all(d.path().join("real/dest")).unwrap();
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), open.join("l")).unwrap();
        let shared = d.path().join("real/shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sticky = d.path().join("sticky");
        std::fs::create_dir_all(sticky.join("dest")).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let a = answers(
            shell,
            &[
                probe(&open.join("l/dest"), None),
                probe(&shared, None),
                probe(&sticky.join("dest"), None),
            ],
        );
        let (_, verdict, why) = &a.verdicts[0];
        assert_eq!(verdict, "ancestor");
        assert!(
            why.contains("/open/l is a symlink and its directory"),
            "{why}"
        );
        assert_eq!(a.verdicts[1].1, "ok");
        let open_dirs: Vec<&(usize, String)> = a.open.iter().collect();
        assert_eq!(open_dirs.len(), 1, "{open_dirs:?}");
        assert!(
            open_dirs[0].0 == 1 && open_dirs[0].1.contains(" 777 "),
            "{open_dirs:?}"
        );
        assert_eq!(
            a.perl,
            shell != "busybox",
            "Debian has perl, BusyBox has none"
        );
    }

    #[test]
    fn parent_of_dest() {
        assert_eq!(parent("/etc/app/app.conf"), "/etc/app");
        assert_eq!(parent("/top"), "/");
    }
}

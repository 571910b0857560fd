//! `hostsync check`: is every host ready for `sync`? Sends nothing.
//!
//! After the configuration has loaded (any problem there is exit 2, with the same
//! messages as `sync`), every host is visited in parallel, at most
//! `number_of_connections` at once, each by a named worker thread (`check-<n>`):
//! connect, verify the host key, log in (the same [`Connection::open`] as
//! `sync`), then one remote `sh -s` script asks, for each mapping, whether the
//! directory `sync` would write into (dest itself for a directory src, dest's
//! parent for a file src) is writable, or could be created because its nearest
//! existing ancestor is a writable directory. Nothing is created or changed on
//! the remote. The result is a table, one row per host (or with `--json` one JSON
//! object per host, issue 5); each failure is also one error.log line, as in
//! `sync` (issue 4, "Trust").
//!
//! Issue 18: the ROUTE column (JSON `route`) says how a host is reached, `direct`
//! or `via B` (`via B1,B2` for a chain, the first logged in to first). A bastion
//! without a mapping file is checked like any host and says whom it serves. Under
//! `-v` a second table shows what each host resolved to (HostName, User, Port,
//! IdentityFile, ProxyJump, ConnectTimeout, ServerAliveInterval,
//! UserKnownHostsFile) and where each value was written: connection_info.json, an
//! ssh_config `FILE:LINE`, config.ini or the default (JSON: `resolved`).

use std::fmt::Write as _;
use std::path::Path;
use std::thread;

use crate::config::reach::Setting;
use crate::config::{Host, Mapping, SshSettings, Target};
use crate::exit::ExitCode;
use crate::transfer::remote::quote;
use crate::transfer::ssh::Connection;

/// One row of the table: what was learned about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    /// `ip_address` as configured.
    pub address: String,
    /// sshd port.
    pub port: u16,
    /// Remote login.
    pub user: String,
    /// `direct`, or `via B` (see [`Host::route`]).
    pub route: String,
    /// The auth method that worked, `-` when login did not happen.
    pub auth: String,
    /// The server's host key fingerprint, `-` when the handshake did not happen.
    pub fingerprint: String,
    /// Destination directories found writable (or creatable).
    pub writable: usize,
    /// Remarks that are not failures (no mapping file).
    pub notes: Vec<String>,
    /// Failures, each a full reason; empty means the host is ready.
    pub problems: Vec<String>,
    /// What the host resolved to and where each value was written (for `-v`).
    pub resolved: Vec<Setting>,
}

/// How `check` shows its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Show {
    /// One JSON object per host instead of the table.
    pub json: bool,
    /// Also what each host resolved to (`-v`).
    pub verbose: bool,
}

impl HostCheck {
    /// A row for `host` before anything was tried.
    fn new(host: &Host) -> HostCheck {
        HostCheck {
            address: host.address.clone(),
            port: host.port,
            user: host.user.clone(),
            route: host.route(),
            auth: "-".into(),
            fingerprint: "-".into(),
            writable: 0,
            notes: Vec::new(),
            problems: Vec::new(),
            resolved: Vec::new(),
        }
    }

    /// Records a failure and logs it to error.log, starting with the host as `sync` does.
    fn fail(&mut self, reason: String) {
        log::error!("{}: {reason}", self.address);
        self.problems.push(reason);
    }

    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every host, prints the table (or JSON lines), and says how it ended
/// (0 ready, 1 not).
pub fn run(targets: &[Target], ssh: &SshSettings, workers: usize, how: Show) -> ExitCode {
    log::info!(
        "check started: {} host(s), {} connection(s) at most",
        targets.len(),
        workers
    );
    let mut rows = check_all(targets, ssh, workers);
    if how.verbose {
        for (row, t) in rows.iter_mut().zip(targets) {
            row.resolved = resolution(&t.host, ssh);
        }
    }
    if how.json {
        for r in &rows {
            let mut j = json_row(r);
            if how.verbose {
                j["resolved"] = resolved_json(&r.resolved);
            }
            println!("{j}");
        }
    } else {
        print!("{}", table(&rows));
        if how.verbose {
            print!("\n{}", resolution_table(&rows));
        }
    }
    let failed = rows.iter().filter(|r| !r.ok()).count();
    log::info!("check finished: {failed} of {} host(s) failed", rows.len());
    if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

/// Visits the hosts with at most `workers` threads; rows come back in `targets` order.
fn check_all(targets: &[Target], ssh: &SshSettings, workers: usize) -> Vec<HostCheck> {
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, &Target)>();
    for job in targets.iter().enumerate() {
        tx.send(job).expect("receiver is alive");
    }
    drop(tx);
    let mut rows: Vec<(usize, HostCheck)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.min(targets.len()))
            .map(|n| {
                let rx = rx.clone();
                thread::Builder::new()
                    .name(format!("check-{n}"))
                    .spawn_scoped(scope, move || {
                        rx.iter()
                            .map(|(i, t)| (i, check_host(t, ssh)))
                            .collect::<Vec<_>>()
                    })
                    .expect("cannot start a worker thread")
            })
            .collect();
        // A worker's panic is a bug: let it propagate, as the style guide asks.
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// Connects to one host, logs in and tests its destination directories.
fn check_host(target: &Target, ssh: &SshSettings) -> HostCheck {
    let host = &target.host;
    let mut row = HostCheck::new(host);
    if target.mapping_file.is_none() && target.bastion_for > 0 {
        row.notes
            .push(format!("bastion for {} host(s)", target.bastion_for));
    } else if target.mapping_file.is_none() {
        log::warn!(
            "{}: no mapping file; sync skips this host (create {}.json in the mappings folder)",
            host.address,
            host.address
        );
        row.notes
            .push("no mapping file; sync skips this host".into());
    }
    let conn = match Connection::open(host, ssh) {
        Ok(conn) => conn,
        Err(e) => {
            row.fail(format!("{e:#}"));
            return row;
        }
    };
    row.auth = conn.auth_method.to_string();
    row.fingerprint.clone_from(&conn.fingerprint);
    let probes = probes(&target.mappings, &mut row);
    if !probes.is_empty() {
        test_dirs(&conn, &probes, &mut row);
    }
    row
}

/// What to ask the remote about one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    /// `src -> dest`, for messages.
    label: String,
    /// The directory `sync` writes into: dest, or the parent of [`Mapping::file_dest`] for a file src.
    dir: String,
    /// For a file src, [`Mapping::file_dest`] (it must not be a directory).
    file: Option<String>,
}

/// One probe per mapping whose src is usable; a missing or odd src is a failure
/// here, as it would be in `sync`.
fn probes(mappings: &[Mapping], row: &mut HostCheck) -> Vec<Probe> {
    let mut out = Vec::new();
    for m in mappings {
        let label = format!("{} -> {}", m.src.display(), m.dest);
        match src_is_dir(&m.src) {
            Ok(true) => out.push(Probe {
                label,
                dir: m.dest.clone(),
                file: None,
            }),
            Ok(false) => out.push(Probe {
                label,
                dir: parent(&m.file_dest()),
                file: Some(m.file_dest()),
            }),
            Err(why) => row.fail(format!("{}: {why}", m.src.display())),
        }
    }
    out
}

/// Whether a src is a directory (mirrored) or a file; the same rules and words as the
/// scan `sync` does (`local::scan`), without walking the tree.
pub(crate) fn src_is_dir(src: &Path) -> Result<bool, String> {
    let meta = std::fs::metadata(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "src does not exist".to_string(),
        _ => format!("cannot read src: {e}"),
    })?;
    if meta.is_dir() || meta.is_file() {
        Ok(meta.is_dir())
    } else {
        Err("src is neither a regular file nor a directory".into())
    }
}

/// The parent of a normalised absolute dest (`/` for a top-level name).
fn parent(dest: &str) -> String {
    match dest.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => dest[..i].into(),
    }
}

/// Shell function run once per probe: first the ancestor rule (`G`, the same as
/// `sync`'s, from [`crate::transfer::remote::TRUST`]), then walks up to the nearest
/// existing path and prints `R\0index\0verdict\0path\0`. Verdicts: `ok` (dir is a
/// writable directory), `new` (missing; path is a writable ancestor that `mkdir -p`
/// can use), `notdir`, `ro` (path is not writable or not searchable), `isdir` (the
/// file dest is a directory), `ancestor` (path is why a symlink on the way is not
/// followed). `test -w` asks the kernel with the remote user's own rights. For an
/// existing dir that others than root and the login user can write (or whose
/// parent they can, unless it is sticky), `O\0index\0owner mode path\0` follows; a
/// `P\0\0` record says the host has perl for the agent, which serves such a dir.
const PROBE_PRELUDE: &[u8] = br#"command -v perl >/dev/null 2>&1 && printf 'P\0\0'
C() {
  i=$1; d=$2; f=$3; p=$d
  if ! G "$d"; then printf 'R\0%s\0%s\0%s\0' "$i" ancestor "$g"; return; fi
  while [ "$p" != / ] && [ ! -e "$p" ] && [ ! -L "$p" ]; do
    p=${p%/*}; [ -n "$p" ] || p=/
  done
  if [ "$p" = "$d" ] && [ -L "$p" ]; then r=notdir
  elif [ ! -d "$p" ]; then r=notdir
  elif [ ! -w "$p" ] || [ ! -x "$p" ]; then r=ro
  elif [ -n "$f" ] && [ -d "$f" ] && [ ! -L "$f" ]; then r=isdir; p=$f
  elif [ "$p" = "$d" ]; then r=ok
  else r=new
  fi
  printf 'R\0%s\0%s\0%s\0' "$i" "$r" "$p"
  [ "$r" = ok ] || [ "$r" = isdir ] || return 0
  for q in "$d" "$d/.."; do
    o=$(find "$q" -maxdepth 0 -printf '%U %m' 2>/dev/null) || continue
    [ -n "$o" ] || continue
    T "${o% *}" "${o#* }" && continue
    [ "$q" != "$d" ] && [ $((0${o#* } & 01000)) != 0 ] && continue
    printf 'O\0%s\0%s %s\0' "$i" "$o" "$q"
  done
}
"#;

/// The whole script: the prelude, then one quoted call per probe.
fn probe_script(probes: &[Probe], strict: bool) -> Vec<u8> {
    let mut s = crate::transfer::remote::TRUST.to_vec();
    s.extend_from_slice(if strict { b"SM=1\n" } else { b"SM=0\n" });
    s.extend_from_slice(PROBE_PRELUDE);
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
struct Answers {
    /// Per probe index, the verdict and the path it names.
    verdicts: Vec<(usize, String, String)>,
    /// Per probe index, `owner mode path` of a directory others can write.
    open: Vec<(usize, String)>,
    /// The host has perl for the agent.
    perl: bool,
}

/// Parses the records of [`probe_script`].
fn parse_answers(out: &[u8]) -> Answers {
    let fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut answers = Answers::default();
    let mut i = 0;
    while i < fields.len() {
        let n = fields
            .get(i + 1)
            .and_then(|f| text(f).parse::<usize>().ok());
        match (fields[i], n) {
            (b"R", Some(n)) if i + 3 < fields.len() => {
                answers
                    .verdicts
                    .push((n, text(fields[i + 2]), text(fields[i + 3])));
                i += 4;
            }
            (b"O", Some(n)) if i + 2 < fields.len() => {
                answers.open.push((n, text(fields[i + 2])));
                i += 3;
            }
            (b"P", _) => {
                answers.perl = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    answers
}

/// Runs the probe script over `conn` and records each verdict in `row`.
fn test_dirs(conn: &Connection, probes: &[Probe], row: &mut HostCheck) {
    let out = match conn.run_script(
        &probe_script(probes, conn.strict_modes()),
        64 * 1024 + 8 * 1024 * probes.len() as u64,
    ) {
        Ok(out) => out,
        Err(e) => return row.fail(format!("cannot run the remote check: {e:#}")),
    };
    let answers = parse_answers(&out.stdout);
    for (i, probe) in probes.iter().enumerate() {
        let Some((_, verdict, path)) = answers.verdicts.iter().find(|(n, _, _)| *n == i) else {
            row.fail(format!(
                "{}: the remote shell gave no answer (exit {}, stderr: {})",
                probe.label,
                out.status,
                out.stderr.trim()
            ));
            continue;
        };
        match verdict_problem(verdict, path, probe, &row.user) {
            None => row.writable += 1,
            Some(why) => row.fail(format!("{}: {why}", probe.label)),
        }
        // The same rule as sync (issue 13): others can write there, which only the
        // agent serves safely.
        for (_, what) in answers.open.iter().filter(|(n, _)| *n == i) {
            let (owner, rest) = what.split_once(' ').unwrap_or((what, ""));
            let (mode, at) = rest.split_once(' ').unwrap_or((rest, ""));
            let why = format!(
                "{at} can be written by others than root and {} (owner uid {owner}, mode {mode})",
                row.user
            );
            if answers.perl {
                row.notes.push(format!(
                    "{}: {why}; served by hostsync's agent, which writes there safely",
                    probe.label
                ));
            } else {
                row.fail(format!(
                    "{}: {why}, and this host has no perl for hostsync's agent, which is what writes safely there; install perl, or set [ssh] strict_modes = no",
                    probe.label
                ));
            }
        }
    }
}

/// The failure a verdict means, or `None` when the directory is usable.
fn verdict_problem(verdict: &str, path: &str, probe: &Probe, user: &str) -> Option<String> {
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

/// The table printed by `check`: one row per host.
pub fn table(rows: &[HostCheck]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.address.clone(),
                r.port.to_string(),
                r.user.clone(),
                r.auth.clone(),
                r.fingerprint.clone(),
                if r.ok() { "ok" } else { "failed" }.to_string(),
                r.route.clone(),
                // Remote paths and messages may hold control characters (issue 13).
                crate::escape::controls(&reason(r)).into_owned(),
            ]
        })
        .collect();
    let header = [
        "HOST",
        "PORT",
        "USER",
        "AUTH",
        "FINGERPRINT",
        "STATUS",
        "ROUTE",
        "REASON",
    ]
    .map(String::from);
    columns(&header, &cells)
}

/// Rows of cells as aligned columns, two spaces apart; the last column is not padded.
fn columns<const N: usize>(header: &[String; N], cells: &[[String; N]]) -> String {
    let mut width = [0usize; N];
    for row in std::iter::once(header).chain(cells) {
        for (w, cell) in width.iter_mut().zip(row).take(N - 1) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(cells) {
        for (w, cell) in width.iter().zip(row).take(N - 1) {
            let _ = write!(out, "{cell:w$}  ");
        }
        let _ = writeln!(out, "{}", row[N - 1]);
    }
    out
}

/// What `host` resolved to, value by value, with where each was written (see the
/// module doc); what no file set comes from config.ini or the default.
pub fn resolution(host: &Host, ssh: &SshSettings) -> Vec<Setting> {
    let set = |keyword: &'static str, value: String, from: &str| Setting {
        keyword,
        value,
        from: from.to_string(),
    };
    let mut out = Vec::new();
    let mut take = |keyword: &'static str, fallback: Option<Setting>| {
        let found: Vec<Setting> = host
            .settings
            .iter()
            .filter(|s| s.keyword == keyword)
            .cloned()
            .collect();
        if found.is_empty() {
            out.extend(fallback);
        } else {
            out.extend(found);
        }
    };
    take(
        "HostName",
        Some(set("HostName", host.host_name.clone(), "ip_address")),
    );
    take("User", None);
    take("Port", Some(set("Port", host.port.to_string(), "default")));
    take("IdentityFile", None);
    take(
        "ProxyJump",
        Some(set("ProxyJump", "none".into(), "default")),
    );
    take(
        "ConnectTimeout",
        Some(set(
            "ConnectTimeout",
            ssh.connect_timeout.as_secs().to_string(),
            "[ssh] connect_timeout",
        )),
    );
    take("ServerAliveInterval", None);
    take(
        "UserKnownHostsFile",
        Some(set(
            "UserKnownHostsFile",
            ssh.known_hosts.display().to_string(),
            "[ssh] known_hosts",
        )),
    );
    out
}

/// The `-v` table: `HOST KEYWORD VALUE FROM`, one row per value.
fn resolution_table(rows: &[HostCheck]) -> String {
    let hosts: Vec<(&str, &[Setting])> = rows
        .iter()
        .map(|r| (r.address.as_str(), r.resolved.as_slice()))
        .collect();
    settings_table(&hosts)
}

/// `HOST KEYWORD VALUE FROM`, one row per value of each host (`check -v`, and
/// `check --offline -v`).
pub fn settings_table(hosts: &[(&str, &[Setting])]) -> String {
    let cells: Vec<[String; 4]> = hosts
        .iter()
        .flat_map(|(address, settings)| {
            settings.iter().map(|s| {
                [
                    address.to_string(),
                    s.keyword.to_string(),
                    crate::escape::controls(&s.value).into_owned(),
                    crate::escape::controls(&s.from).into_owned(),
                ]
            })
        })
        .collect();
    let header = ["HOST", "KEYWORD", "VALUE", "FROM"].map(String::from);
    columns(&header, &cells)
}

/// `resolved` for `check -v --json`: `[{"keyword", "value", "from"}, ...]`.
fn resolved_json(resolved: &[Setting]) -> serde_json::Value {
    resolved
        .iter()
        .map(|s| serde_json::json!({"keyword": s.keyword, "value": s.value, "from": s.from}))
        .collect()
}

/// One host as a JSON object (`check --json`); see README, "JSON output".
pub fn json_row(r: &HostCheck) -> serde_json::Value {
    serde_json::json!({
        "type": "check",
        "host": r.address,
        "port": r.port,
        "user": r.user,
        "route": r.route,
        "auth": (r.auth != "-").then_some(&r.auth),
        "fingerprint": (r.fingerprint != "-").then_some(&r.fingerprint),
        "status": if r.ok() { "ok" } else { "failed" },
        "writable": r.writable,
        "problems": r.problems,
        "notes": r.notes,
    })
}

/// The REASON column: every problem, or what was verified.
fn reason(r: &HostCheck) -> String {
    if !r.ok() {
        return r.problems.join("; ");
    }
    let mut parts = Vec::new();
    if r.writable > 0 || r.notes.is_empty() {
        let s = if r.writable == 1 { "" } else { "s" };
        parts.push(format!("{} destination dir{s} writable", r.writable));
    }
    parts.extend(r.notes.iter().cloned());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the probe script with the local sh, as the remote would.
    fn run_local(probes: &[Probe]) -> Vec<(usize, String, String)> {
        answers(probes).verdicts
    }

    /// Everything the probe script says, run with the local sh.
    fn answers(probes: &[Probe]) -> Answers {
        let out = crate::transfer::remote::run_local("sh", &["-s"], &probe_script(probes, true));
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
        let got: Vec<(usize, String)> = run_local(&probes)
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
        let a = answers(&[
            probe(&open.join("l/dest"), None),
            probe(&shared, None),
            probe(&sticky.join("dest"), None),
        ]);
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
        assert!(a.perl, "Debian has perl");
    }

    #[test]
    fn parent_of_dest() {
        assert_eq!(parent("/etc/app/app.conf"), "/etc/app");
        assert_eq!(parent("/top"), "/");
    }

    #[test]
    fn table_has_one_row_per_host_and_reasons() {
        let ok = HostCheck {
            address: "::1".into(),
            port: 2222,
            user: "deploy".into(),
            route: "direct".into(),
            auth: "publickey".into(),
            fingerprint: "SHA256:abc".into(),
            writable: 2,
            notes: Vec::new(),
            problems: Vec::new(),
            resolved: Vec::new(),
        };
        let bad = HostCheck {
            address: "127.0.0.9".into(),
            auth: "-".into(),
            fingerprint: "-".into(),
            writable: 0,
            problems: vec!["host unreachable: x".into(), "y".into()],
            route: "via 127.0.0.10".into(),
            ..ok.clone()
        };
        let t = table(&[ok.clone(), bad.clone()]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0].starts_with("HOST") && lines[0].ends_with("ROUTE           REASON"),
            "{t}"
        );
        let cols = |l: &str| l.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
        assert_eq!(
            cols(lines[1]),
            "::1 2222 deploy publickey SHA256:abc ok",
            "{t}"
        );
        assert!(
            lines[1].ends_with("  direct          2 destination dirs writable"),
            "{t}"
        );
        assert_eq!(cols(lines[2]), "127.0.0.9 2222 deploy - - failed", "{t}");
        assert!(
            lines[2].ends_with("  via 127.0.0.10  host unreachable: x; y"),
            "{t}"
        );
        let j = json_row(&bad);
        assert_eq!(j["status"], "failed");
        assert_eq!(j["auth"], serde_json::Value::Null);
        assert_eq!(j["problems"][1], "y");
        assert_eq!(json_row(&ok)["fingerprint"], "SHA256:abc");
        assert_eq!(j["route"], "via 127.0.0.10");
    }

    /// Issue 18: what a host resolved to, and from where; what no file set comes
    /// from config.ini or the default.
    #[test]
    fn resolution_names_where_each_value_came_from() {
        let host = Host {
            address: "web".into(),
            host_name: "10.0.0.5".into(),
            port: 22,
            user: "deploy".into(),
            settings: vec![
                Setting {
                    keyword: "HostName",
                    value: "10.0.0.5".into(),
                    from: "/c:2".into(),
                },
                Setting {
                    keyword: "User",
                    value: "deploy".into(),
                    from: "connection_info.json".into(),
                },
            ],
            ..Host::default()
        };
        let ssh = SshSettings {
            known_hosts: "/k".into(),
            host_key_policy: crate::config::HostKeyPolicy::Strict,
            connect_timeout: std::time::Duration::from_secs(10),
            io_timeout: std::time::Duration::from_secs(30),
            strict_modes: true,
            client_id: "c".into(),
            runs_dir: "/r".into(),
        };
        let rows: Vec<(&str, String, String)> = resolution(&host, &ssh)
            .into_iter()
            .map(|s| (s.keyword, s.value, s.from))
            .collect();
        let want = [
            ("HostName", "10.0.0.5", "/c:2"),
            ("User", "deploy", "connection_info.json"),
            ("Port", "22", "default"),
            ("ProxyJump", "none", "default"),
            ("ConnectTimeout", "10", "[ssh] connect_timeout"),
            ("UserKnownHostsFile", "/k", "[ssh] known_hosts"),
        ];
        let want: Vec<(&str, String, String)> = want
            .iter()
            .map(|(k, v, f)| (*k, v.to_string(), f.to_string()))
            .collect();
        assert_eq!(rows, want);
    }
}

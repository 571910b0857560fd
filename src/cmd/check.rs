//! `hostsync check`: is every host ready for `sync`? Sends nothing.
//!
//! After the configuration has loaded (any problem there is exit 2, with the same
//! messages as `sync`), every host is visited by the worker pool
//! ([`crate::exec::pool`]), at most `number_of_connections` at once: connect,
//! verify the host key, log in (the same [`Connection::open`] as `sync`), then
//! the writability probe ([`crate::remote::probe`]) asks, for each mapping,
//! whether the directory `sync` would write into is writable or could be made.
//! Nothing is created or changed on the remote. The result is a table, one row
//! per host (or with `--json` one JSON object per host, issue 5); each failure
//! is also one error.log line, as in `sync` (issue 4, "Trust"). `sync --dry-run`
//! asks the same question before it lists, so it never promises what `sync`
//! cannot write (issue 14, bug 5).
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
use std::sync::Arc;

use crate::config::reach::Setting;
use crate::config::{Host, Mapping, SshSettings, Target};
use crate::exec::probe::run_probes;
use crate::exit::ExitCode;
use crate::remote::probe::{Probe, dir_state};
use crate::transport::ssh::Connection;

/// One row of the table: what was learned about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostCheck {
    /// `ip_address` as configured.
    pub(crate) address: String,
    /// sshd port.
    pub(crate) port: u16,
    /// Remote login.
    pub(crate) user: String,
    /// `direct`, or `via B` (see [`Host::route`]).
    pub(crate) route: String,
    /// The auth method that worked, `-` when login did not happen.
    pub(crate) auth: String,
    /// The server's host key fingerprint, `-` when the handshake did not happen.
    pub(crate) fingerprint: String,
    /// The tier that serves the host (`gnu`, `posix`, `sftp`; issue 16), `-`
    /// when none could be settled.
    pub(crate) tier: String,
    /// Destination directories found writable (or creatable).
    pub(crate) writable: usize,
    /// Remarks that are not failures (no mapping file).
    pub(crate) notes: Vec<String>,
    /// Failures, each a full reason; empty means the host is ready.
    pub(crate) problems: Vec<String>,
    /// What the host resolved to and where each value was written (for `-v`).
    pub(crate) resolved: Vec<Setting>,
}

/// How `check` shows its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Show {
    /// One JSON object per host instead of the table.
    pub(crate) json: bool,
    /// Also what each host resolved to (`-v`).
    pub(crate) verbose: bool,
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
            tier: "-".into(),
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
    pub(crate) fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `hostsync check`: log in to every host and test its destinations; sends nothing.
/// An `Err` is a setup problem (exit 2); host failures are in the exit code.
pub(crate) fn run(
    config: &crate::config::Config,
    json: bool,
    hosts: &[String],
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let targets: Vec<Target> = super::select_hosts(config, hosts)?
        .into_iter()
        .cloned()
        .collect();
    let _logs = super::start_logs(config, verbose)?;
    ::log::info!("config {}", config.path.display());
    let how = Show { json, verbose };
    Ok(probe_all(&targets, &config.ssh, config.connections, how)?)
}

/// Checks every host, prints the table (or JSON lines), and says how it ended
/// (0 ready, 1 not).
fn probe_all(
    targets: &[Target],
    ssh: &SshSettings,
    workers: usize,
    how: Show,
) -> Result<ExitCode, crate::exec::pool::Panicked> {
    log::info!(
        "check started: {} host(s), {} connection(s) at most",
        targets.len(),
        workers
    );
    let mut rows = check_all(targets, ssh, workers)?;
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
    Ok(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// Visits the hosts with at most `workers` threads; rows come back in `targets` order.
fn check_all(
    targets: &[Target],
    ssh: &SshSettings,
    workers: usize,
) -> Result<Vec<HostCheck>, crate::exec::pool::Panicked> {
    let ssh = ssh.clone();
    crate::exec::pool::for_each(Arc::new(targets.to_vec()), workers, move |_, t| {
        check_host(t, &ssh)
    })
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
    test_dirs(&conn, &probes, &mut row);
    row
}

/// One probe per mapping whose src is usable; a missing or odd src is a failure
/// here, as it would be in `sync`.
fn probes(mappings: &[Mapping], row: &mut HostCheck) -> Vec<Probe> {
    let mut out = Vec::new();
    for m in mappings {
        match src_is_dir(&m.src) {
            Ok(is_dir) => out.push(Probe::of(m, is_dir)),
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

/// Runs the probe script over `conn` (which also settles the tier, see
/// [`crate::exec::tier`]) and records each verdict in `row`; a host served over
/// SFTP is judged by its SFTP listing instead ([`sftp_dirs`]).
fn test_dirs(conn: &Connection, probes: &[Probe], row: &mut HostCheck) {
    let settled = if crate::exec::tier::may_exec(conn) {
        run_probes(conn, probes).map(Some)
    } else {
        Ok(None)
    };
    let (answers, out) = match settled {
        Ok(Some(found)) => found,
        Ok(None) => return tier_then_sftp(conn, probes, row, true, false, ""),
        Err(e) => return row.fail(format!("cannot run the remote check: {e:#}")),
    };
    let ran = crate::exec::probe::shell_answered(&answers, &out);
    if !ran {
        let said = crate::escape::first_line(&out.stdout, 200);
        return tier_then_sftp(conn, probes, row, false, false, &said);
    }
    match crate::exec::tier::after_probe(conn, true, answers.perl, "") {
        Ok(t) => row.tier = t.name().to_string(),
        Err(e) => return row.fail(format!("{e:#}")),
    }
    for (i, probe) in probes.iter().enumerate() {
        match dir_state(&answers, (out.status, &out.stderr), i, probe, &row.user).problem {
            None => row.writable += 1,
            Some(why) => row.fail(format!("{}: {why}", probe.label())),
        }
        open_dirs(&answers, i, probe, row);
    }
}

/// The same rule as sync (issue 13): where others can write, only the agent
/// serves safely; REASON says so for probe `i`.
fn open_dirs(
    answers: &crate::remote::probe::Answers,
    i: usize,
    probe: &Probe,
    row: &mut HostCheck,
) {
    for (_, what) in answers.open.iter().filter(|(n, _)| *n == i) {
        let (owner, rest) = what.split_once(' ').unwrap_or((what, ""));
        let (mode, at) = rest.split_once(' ').unwrap_or((rest, ""));
        let why = format!(
            "{at} can be written by others than root and {} (owner uid {owner}, mode {mode})",
            row.user
        );
        if row.tier == "gnu" {
            row.notes.push(format!(
                "{}: {why}; served by hostsync's agent, which writes there safely",
                probe.label()
            ));
        } else {
            row.fail(format!(
                "{}: {why}, and this host has no perl for hostsync's agent, which is what writes safely there; install perl, or set [ssh] strict_modes = no",
                probe.label()
            ));
        }
    }
}

/// Settles the tier where the probe script did not run (`ran`) and judges the
/// destinations over SFTP.
fn tier_then_sftp(
    conn: &Connection,
    probes: &[Probe],
    row: &mut HostCheck,
    ran: bool,
    perl: bool,
    said: &str,
) {
    match crate::exec::tier::after_probe(conn, ran, perl, said) {
        Ok(t) => row.tier = t.name().to_string(),
        Err(e) => return row.fail(format!("{e:#}")),
    }
    if let Err(e) = sftp_dirs(conn, probes, row) {
        row.fail(format!("cannot run the remote check over SFTP: {e:#}"));
    }
}

/// Judges each probe's directory from an SFTP listing that creates nothing: a
/// directory that cannot be used, or that others can write (SFTP acts on paths,
/// so hostsync refuses it, issue 13), fails; one that exists or would be made
/// counts as writable.
fn sftp_dirs(conn: &Connection, probes: &[Probe], row: &mut HostCheck) -> anyhow::Result<()> {
    let roots: Vec<crate::remote::ListRoot> = probes
        .iter()
        .map(|p| crate::remote::ListRoot {
            dir: p.dir().as_bytes().to_vec(),
            max_depth: Some(0),
            paths: None,
            checksum: false,
        })
        .collect();
    let strict = conn.strict_modes();
    let listing = conn.with_sftp(|s| s.list(&roots, false, strict))?;
    for (probe, st) in probes.iter().zip(&listing.states) {
        let denied = match (&st.error, &st.open) {
            (None, None) => conn.with_sftp(|s| sftp_denied(s, probe.dir(), &row.user))?,
            _ => None,
        };
        match (&st.error, &st.open, denied) {
            (Some(err), _, _) => row.fail(format!("{}: {err}", probe.label())),
            (None, Some(who), _) => row.fail(format!(
                "{}: other users can write there ({who}); over SFTP hostsync refuses such a destination: make it writable only by root and {}",
                probe.label(),
                row.user
            )),
            (None, None, Some(why)) => row.fail(format!("{}: {why}", probe.label())),
            (None, None, None) => row.writable += 1,
        }
    }
    Ok(())
}

/// Why the login `user` cannot write `dir` (or make it: its nearest existing
/// ancestor), as far as SFTP's attributes tell: a folder it does not own or
/// whose owner write bit is off. `None` when it can, or when the login's uid is
/// unknown (a root-owned chroot) or a link is on the way (the listing judged it).
fn sftp_denied(
    sftp: &mut crate::transport::sftp::Sftp,
    dir: &str,
    user: &str,
) -> anyhow::Result<Option<String>> {
    let Some(me) = sftp.whoami()? else {
        return Ok(None);
    };
    let mut at = std::path::PathBuf::from(dir);
    loop {
        use std::os::unix::ffi::OsStrExt;
        match sftp.lstat(at.as_os_str().as_bytes())? {
            Some(a) if a.kind() == b'd' => {
                let ok = a.uid() == Some(me) && a.mode.is_some_and(|m| m & 0o200 != 0);
                return Ok((!ok).then(|| {
                    format!(
                        "permission denied on the remote: {user} cannot write {}; make it writable for {user} or change dest",
                        at.display()
                    )
                }));
            }
            Some(_) => return Ok(None),
            None => match at.parent() {
                Some(up) => at = up.to_path_buf(),
                None => return Ok(None),
            },
        }
    }
}

/// The table printed by `check`: one row per host.
pub(crate) fn table(rows: &[HostCheck]) -> String {
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.address.clone(),
                r.port.to_string(),
                r.user.clone(),
                r.auth.clone(),
                r.tier.clone(),
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
        "TIER",
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
pub(crate) fn resolution(host: &Host, ssh: &SshSettings) -> Vec<Setting> {
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
    take(
        "ServerAliveInterval",
        Some(set(
            "ServerAliveInterval",
            ssh.keepalive.as_secs().to_string(),
            "[ssh] keepalive_s",
        )),
    );
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
pub(crate) fn settings_table(hosts: &[(&str, &[Setting])]) -> String {
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
pub(crate) fn json_row(r: &HostCheck) -> serde_json::Value {
    serde_json::json!({
        "type": "check",
        "host": r.address,
        "port": r.port,
        "user": r.user,
        "route": r.route,
        "auth": (r.auth != "-").then_some(&r.auth),
        "tier": (r.tier != "-").then_some(&r.tier),
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

    #[test]
    fn table_has_one_row_per_host_and_reasons() {
        let ok = HostCheck {
            address: "::1".into(),
            port: 2222,
            user: "deploy".into(),
            route: "direct".into(),
            auth: "publickey".into(),
            fingerprint: "SHA256:abc".into(),
            tier: "gnu".into(),
            writable: 2,
            notes: Vec::new(),
            problems: Vec::new(),
            resolved: Vec::new(),
        };
        let bad = HostCheck {
            address: "127.0.0.9".into(),
            auth: "-".into(),
            fingerprint: "-".into(),
            tier: "-".into(),
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
        let cols = |l: &str| l.split_whitespace().take(7).collect::<Vec<_>>().join(" ");
        assert_eq!(
            cols(lines[1]),
            "::1 2222 deploy publickey gnu SHA256:abc ok",
            "{t}"
        );
        assert!(
            lines[1].ends_with("  direct          2 destination dirs writable"),
            "{t}"
        );
        assert_eq!(cols(lines[2]), "127.0.0.9 2222 deploy - - - failed", "{t}");
        assert!(
            lines[2].ends_with("  via 127.0.0.10  host unreachable: x; y"),
            "{t}"
        );
        let j = json_row(&bad);
        assert_eq!(j["status"], "failed");
        assert_eq!(j["auth"], serde_json::Value::Null);
        assert_eq!(j["problems"][1], "y");
        assert_eq!(json_row(&ok)["fingerprint"], "SHA256:abc");
        assert_eq!(
            (json_row(&ok)["tier"].as_str(), &j["tier"]),
            (Some("gnu"), &serde_json::Value::Null)
        );
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
        let ssh = SshSettings::for_tests();
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
            ("ServerAliveInterval", "15", "[ssh] keepalive_s"),
            ("UserKnownHostsFile", "/k", "[ssh] known_hosts"),
        ];
        let want: Vec<(&str, String, String)> = want
            .iter()
            .map(|(k, v, f)| (*k, v.to_string(), f.to_string()))
            .collect();
        assert_eq!(rows, want);
    }
}

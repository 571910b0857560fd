//! How each host is reached (issue 18): what `[ssh] ssh_config` adds to an entry
//! of connection_info.json, and which bastions lie on the way.
//!
//! Precedence is OpenSSH's for command-line options over its config: a field
//! connection_info.json has wins, then what the ssh_config file says for the name
//! in `ip_address` ([`SshConfig::resolve`], first value wins), then config.ini and
//! hostsync's defaults (the transport falls back to `[ssh] connect_timeout` and
//! `known_hosts` itself). Used: HostName, User, Port, IdentityFile, ProxyJump,
//! ConnectTimeout, ServerAliveInterval and UserKnownHostsFile. ssh_config never
//! weakens the host-key check: `StrictHostKeyChecking no` (or `off`) and
//! `UserKnownHostsFile none` are ignored with one warning each, and
//! `host_key_policy` rules. Keywords hostsync does not use and `Match` blocks get
//! one debug line each.
//!
//! Jumps: an entry's `"proxy_jump"` names another entry by its `ip_address`; a
//! ssh_config `ProxyJump` may also name `[user@]host[:port]` hops that are not
//! entries (resolved through the same file, as `ssh -J` resolves them), and lists
//! (`a,b`: a first, then b through a). A hop whose host is an entry is that entry,
//! with the hop's user and port if it writes them. A cycle, a `proxy_jump` that
//! is not an entry, or a disabled bastion for an enabled host is a configuration
//! error; a cycle is reported once, naming the file and its members.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hosts::{Host, check_address};
use super::source::Problems;
use super::ssh_config::{Origin, Resolved, SshConfig};

/// How long a chain of jumps may be before it is refused (each hop costs a login).
const MAX_HOPS: usize = 8;

/// One entry of connection_info.json as written, before ssh_config and jumps.
#[derive(Debug)]
pub(crate) struct Draft {
    /// `FILE: host #N (ADDRESS)`, the start of every message about it.
    pub(crate) at: String,
    /// `user`, if written.
    pub(crate) user: Option<String>,
    /// `port`, if written.
    pub(crate) port: Option<u16>,
    /// `proxy_jump`, if written.
    pub(crate) proxy_jump: Option<String>,
    /// The rest, already checked (address, keys, secrets, disabled).
    pub(crate) host: Host,
}

/// One value a host resolved to and where it was written, for `check -v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The ssh_config keyword it stands for (`HostName`, `User`, ...).
    pub(crate) keyword: &'static str,
    /// The value, as hostsync uses it (paths expanded).
    pub(crate) value: String,
    /// `connection_info.json`, or the ssh_config `FILE:LINE`.
    pub(crate) from: String,
}

/// What loading had to say besides errors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notes {
    /// `passkey_env`/`passphrase_env` variables that are not set (see
    /// [`super::hosts::parse_in`]; whether they are errors is the caller's call).
    pub(crate) unset: Vec<String>,
    /// Warnings for stderr and error.log (one line each).
    pub(crate) warnings: Vec<String>,
    /// Debug lines for info.log under `-v` (ssh_config lines that were skipped).
    pub(crate) debug: Vec<String>,
}

/// Where an entry's jump was written.
#[derive(Debug, Clone)]
enum From {
    /// `"proxy_jump"` in connection_info.json.
    Hosts,
    /// `ProxyJump` in ssh_config.
    Config(Origin),
}

/// An entry with ssh_config applied, its jump not yet linked.
struct Applied {
    /// The host (without `jump`).
    host: Host,
    /// The jump as written, and where.
    jump: Option<(String, From)>,
    /// `FILE: host #N (ADDRESS)`.
    at: String,
}

/// Turns drafts into hosts: ssh_config applied ([`apply`]), jumps linked into
/// chains. Every problem goes to `problems` (one line each); hosts with a problem
/// are left out.
pub(crate) fn hosts(
    drafts: Vec<Draft>,
    file: &Path,
    cfg: Option<&SshConfig>,
    problems: &mut Problems,
    notes: &mut Notes,
) -> Vec<Host> {
    let mut seen = BTreeSet::new();
    let applied: Vec<Applied> = drafts
        .into_iter()
        .filter_map(|d| {
            let at = d.at.clone();
            apply(d, cfg, notes, &mut seen)
                .map_err(|e| problems.push(format!("{at}: {e}")))
                .ok()
        })
        .collect();
    let mut linker = Linker {
        index: applied
            .iter()
            .enumerate()
            .map(|(i, a)| (a.host.address.clone(), i))
            .collect(),
        done: vec![None; applied.len()],
        entries: applied,
        stack: Vec::new(),
        reported: BTreeSet::new(),
        file,
        cfg,
        problems,
        notes,
        seen,
    };
    (0..linker.entries.len())
        .filter_map(|i| linker.entry(i))
        .collect()
}

/// Applies what ssh_config says about `d.host.address` under what the entry wrote.
fn apply(
    d: Draft,
    cfg: Option<&SshConfig>,
    notes: &mut Notes,
    seen: &mut BTreeSet<String>,
) -> Result<Applied, String> {
    let r = match cfg {
        Some(cfg) => cfg.resolve(&d.host.address).map_err(|e| format!("{e:#}"))?,
        None => Resolved::default(),
    };
    note_ignored(&r, notes, seen);
    let mut host = d.host;
    let mut settings = Vec::new();
    if let Some((name, origin)) = &r.host_name {
        check_address(name).map_err(|e| format!("HostName from {origin}: {e}"))?;
        host.host_name = name.clone();
        settings.push(setting("HostName", name, origin.to_string()));
    }
    host.user = login_user(d.user, &r, &mut settings)?;
    host.port = login_port(d.port, &r, &mut settings);
    if let Some(key) = &host.identity_file {
        settings.push(setting(
            "IdentityFile",
            &key.display().to_string(),
            from_hosts(),
        ));
    }
    connection_values(&mut host, &r, notes, seen, &mut settings)?;
    let jump = jump_of(d.proxy_jump, &r, &mut settings);
    host.settings = settings;
    Ok(Applied {
        host,
        jump,
        at: d.at,
    })
}

/// Where a value the entry itself wrote comes from, for `check -v`.
fn from_hosts() -> String {
    "connection_info.json".to_string()
}

/// The login name: the entry's `user`, else ssh_config's User; one of them must
/// say it. Recorded in `settings`.
fn login_user(
    written: Option<String>,
    r: &Resolved,
    settings: &mut Vec<Setting>,
) -> Result<String, String> {
    match (written, &r.user) {
        (Some(u), _) => {
            settings.push(setting("User", &u, from_hosts()));
            Ok(u)
        }
        (None, Some((u, origin))) => {
            settings.push(setting("User", u, origin.to_string()));
            Ok(u.clone())
        }
        (None, None) => Err(
            "missing field `user`; write the remote login name (\"user\": \"deploy\"), or set User for this host in the file [ssh] ssh_config names"
                .into(),
        ),
    }
}

/// The port: the entry's `port`, else ssh_config's Port, else 22. Recorded in
/// `settings` unless it is the default.
fn login_port(written: Option<u16>, r: &Resolved, settings: &mut Vec<Setting>) -> u16 {
    match (written, &r.port) {
        (Some(p), _) => {
            settings.push(setting("Port", &p.to_string(), from_hosts()));
            p
        }
        (None, Some((p, origin))) => {
            settings.push(setting("Port", &p.to_string(), origin.to_string()));
            *p
        }
        (None, None) => 22,
    }
}

/// The jump: the entry's `proxy_jump`, else ssh_config's ProxyJump (`none`:
/// no jump), and where it was written. Recorded in `settings`.
fn jump_of(
    written: Option<String>,
    r: &Resolved,
    settings: &mut Vec<Setting>,
) -> Option<(String, From)> {
    let jump = match (written, &r.proxy_jump) {
        (Some(j), _) => Some((j, From::Hosts)),
        (None, Some((j, _))) if j.eq_ignore_ascii_case("none") => None,
        (None, Some((j, origin))) => Some((j.clone(), From::Config(origin.clone()))),
        (None, None) => None,
    };
    if let Some((j, from)) = &jump {
        let from = match from {
            From::Hosts => from_hosts(),
            From::Config(o) => o.to_string(),
        };
        settings.push(setting("ProxyJump", j, from));
    }
    jump
}

/// IdentityFile, ConnectTimeout, ServerAliveInterval and UserKnownHostsFile from
/// `r` into `host`, each recorded in `settings`.
fn connection_values(
    host: &mut Host,
    r: &Resolved,
    notes: &mut Notes,
    seen: &mut BTreeSet<String>,
    settings: &mut Vec<Setting>,
) -> Result<(), String> {
    for (value, origin) in &r.identity_files {
        if value.eq_ignore_ascii_case("none") {
            continue;
        }
        let path = expand_path(value, origin, host)?;
        settings.push(setting(
            "IdentityFile",
            &path.display().to_string(),
            origin.to_string(),
        ));
        host.config_identity_files.push(path);
    }
    if let Some((secs, origin)) = r.connect_timeout.as_ref().filter(|(s, _)| *s > 0) {
        host.connect_timeout = Some(Duration::from_secs(*secs));
        settings.push(setting(
            "ConnectTimeout",
            &secs.to_string(),
            origin.to_string(),
        ));
    }
    // 0 turns keepalives off for this host, as in OpenSSH (and `[ssh] keepalive_s = 0`).
    if let Some((secs, origin)) = &r.server_alive_interval {
        host.keepalive = Some(Duration::from_secs(*secs));
        settings.push(setting(
            "ServerAliveInterval",
            &secs.to_string(),
            origin.to_string(),
        ));
    }
    if let Some((value, origin)) = &r.user_known_hosts_file {
        if value.eq_ignore_ascii_case("none") {
            once(
                &mut notes.warnings,
                seen,
                format!(
                    "{origin}: UserKnownHostsFile none is ignored: ssh_config never weakens hostsync's host-key check; [ssh] known_hosts is used"
                ),
            );
        } else {
            let path = expand_path(value, origin, host)?;
            settings.push(setting(
                "UserKnownHostsFile",
                &path.display().to_string(),
                origin.to_string(),
            ));
            host.known_hosts = Some(path);
        }
    }
    Ok(())
}

/// The warning for a `StrictHostKeyChecking` that would weaken the check, and a
/// debug line for each skipped keyword or `Match` block; each once per line of
/// ssh_config (`seen` remembers which).
fn note_ignored(r: &Resolved, notes: &mut Notes, seen: &mut BTreeSet<String>) {
    if let Some((value, origin)) = &r.strict_host_key_checking {
        let weakens = matches!(value.to_ascii_lowercase().as_str(), "no" | "off");
        let line = if weakens {
            format!(
                "{origin}: StrictHostKeyChecking {value} is ignored: ssh_config never weakens hostsync's host-key check; [ssh] host_key_policy decides"
            )
        } else {
            format!("{origin}: StrictHostKeyChecking {value}: [ssh] host_key_policy decides")
        };
        let to = if weakens {
            &mut notes.warnings
        } else {
            &mut notes.debug
        };
        once(to, seen, line);
    }
    for (keyword, origin) in &r.skipped {
        let line = if keyword == "Match" {
            format!("{origin}: Match block skipped: hostsync applies Host blocks only")
        } else {
            format!("{origin}: {keyword}: not used by hostsync; skipped")
        };
        once(&mut notes.debug, seen, line);
    }
}

/// Pushes `line` to `to` unless it was seen before.
fn once(to: &mut Vec<String>, seen: &mut BTreeSet<String>, line: String) {
    if seen.insert(line.clone()) {
        to.push(line);
    }
}

/// A [`Setting`].
fn setting(keyword: &'static str, value: &str, from: String) -> Setting {
    Setting {
        keyword,
        value: value.to_string(),
        from,
    }
}

/// An IdentityFile or UserKnownHostsFile value as ssh reads it: `~` is the home
/// directory; `%d` home, `%u` local user, `%h` HostName, `%n` the name given, `%r`
/// remote user, `%p` port, `%%` a percent sign; a relative path is relative to
/// the current directory.
fn expand_path(value: &str, origin: &Origin, host: &Host) -> Result<PathBuf, String> {
    let home = home();
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&home.display().to_string()),
            Some('u') => out.push_str(&local_user()),
            Some('h') => out.push_str(&host.host_name),
            Some('n') => out.push_str(&host.address),
            Some('r') => out.push_str(&host.user),
            Some('p') => out.push_str(&host.port.to_string()),
            Some('%') => out.push('%'),
            other => {
                return Err(format!(
                    "{origin}: {value:?}: %{} is not a token hostsync expands (%d %u %h %n %r %p %%); write the path out",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        }
    }
    let path = match out.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if out == "~" => home,
        None => PathBuf::from(out),
    };
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| format!("{origin}: cannot read the current directory: {e}"))?;
    Ok(cwd.join(path))
}

/// `$HOME` (`/` when unset).
fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The local user's login name (`$USER`, else the password database), which ssh
/// logs in as when nothing names a user.
fn local_user() -> String {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; getpwuid_r writes into `pw` and `buf` (whose
    // length it is told) and sets `found` to null or to `&pw`.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc == 0 && !found.is_null() && !pw.pw_name.is_null() {
            return std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    "root".into()
}

/// One hop of a ProxyJump: `[user@]host[:port]` (or `ssh://` form).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    /// As written, for messages and as the address of a host that is not an entry.
    text: String,
    /// `user@`, if written.
    user: Option<String>,
    /// The host (brackets of an IPv6 literal removed).
    host: String,
    /// `:port`, if written.
    port: Option<u16>,
}

/// Splits a ProxyJump value into hops.
fn parse_hops(value: &str) -> Result<Vec<Hop>, String> {
    value.split(',').map(|h| parse_hop(h.trim())).collect()
}

/// One `[user@]host[:port]`, `ssh://[user@]host[:port]`, `[v6]:port` or bare IPv6 literal.
fn parse_hop(text: &str) -> Result<Hop, String> {
    let rest = text.strip_prefix("ssh://").unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (user, rest) = match rest.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(format!("{text:?} has an empty user before @")),
        None => (None, rest),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: the [ of an IPv6 address is not closed"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{text:?}: expected :port after ]")),
        }
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        (rest, None)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(format!(
                    "{text:?}: port {p:?} is not a port from 1 to 65535"
                ));
            }
        },
        None => None,
    };
    check_address(host).map_err(|e| format!("{text:?}: the host {e}"))?;
    Ok(Hop {
        text: text.to_string(),
        user,
        host: host.to_string(),
        port,
    })
}

/// Links every entry's jump into a chain of [`Host`]s, remembering what it did.
struct Linker<'a> {
    /// The entries, ssh_config applied.
    entries: Vec<Applied>,
    /// Entry index by `ip_address`.
    index: HashMap<String, usize>,
    /// Per entry: not linked yet, linked (`Some(Some)`), or failed (`Some(None)`).
    done: Vec<Option<Option<Host>>>,
    /// Names being linked now, outermost first: a name met again is a cycle.
    stack: Vec<String>,
    /// Cycles already reported (their members, sorted), so each is one line.
    reported: BTreeSet<Vec<String>>,
    /// connection_info.json, for messages.
    file: &'a Path,
    /// The ssh_config, for hops that are not entries.
    cfg: Option<&'a SshConfig>,
    /// Where problems go.
    problems: &'a mut Problems,
    /// Where warnings and debug lines go.
    notes: &'a mut Notes,
    /// Lines noted already (see [`once`]).
    seen: BTreeSet<String>,
}

impl Linker<'_> {
    /// Entry `i` with its chain, or `None` if it (or a bastion of it) has a problem.
    fn entry(&mut self, i: usize) -> Option<Host> {
        if let Some(done) = &self.done[i] {
            return done.clone();
        }
        let name = self.entries[i].host.address.clone();
        if !self.enter(&name) {
            return None;
        }
        let jump = self.entries[i].jump.clone();
        let linked = match jump {
            None => Some(None),
            Some((spec, from)) => self.jump_of(i, &spec, &from).map(Some),
        };
        self.stack.pop();
        let host = linked.map(|jump| {
            let mut host = self.entries[i].host.clone();
            host.jump = jump.map(Box::new);
            host
        });
        self.done[i] = Some(host.clone());
        host
    }

    /// Pushes `name` on the stack; false (and the cycle reported once) if it is
    /// there already, or if the chain is too long.
    fn enter(&mut self, name: &str) -> bool {
        if let Some(at) = self.stack.iter().position(|n| n == name) {
            let mut members: Vec<String> = self.stack[at..].to_vec();
            let mut key = members.clone();
            key.sort();
            if self.reported.insert(key) {
                members.push(name.to_string());
                self.problems.push(format!(
                    "{}: proxy_jump cycle: {}; remove one of these jumps (proxy_jump here, or ProxyJump in the ssh_config)",
                    self.file.display(),
                    members.join(" -> ")
                ));
            }
            return false;
        }
        if self.stack.len() > MAX_HOPS {
            self.problems.push(format!(
                "{}: the jumps to reach {} go through more than {MAX_HOPS} bastions; shorten the chain",
                self.file.display(),
                self.stack[0]
            ));
            return false;
        }
        self.stack.push(name.to_string());
        true
    }

    /// The bastion chain of entry `i`, whose jump `spec` was written at `from`.
    fn jump_of(&mut self, i: usize, spec: &str, from: &From) -> Option<Host> {
        let at = self.entries[i].at.clone();
        let disabled = self.entries[i].host.disabled;
        let bastion = match from {
            From::Hosts => match self.index.get(spec).copied() {
                Some(j) => self.entry(j),
                None => {
                    let file = self.file.display();
                    self.problems.push(format!(
                        "{at}: proxy_jump {spec:?} is not the ip_address of an entry in {file}; add that host to {file} or fix the name (a jump host that is not an entry can be a ProxyJump in [ssh] ssh_config)"
                    ));
                    return None;
                }
            },
            From::Config(origin) => match parse_hops(spec) {
                Ok(hops) => self.chain(&hops, origin),
                Err(e) => {
                    self.problems
                        .push(format!("{origin}: ProxyJump {e}; write [user@]host[:port]"));
                    return None;
                }
            },
        }?;
        if !disabled && let Some(off) = std::iter::once(&bastion).find(|h| h.disabled) {
            self.problems.push(format!(
                "{at}: its bastion {} is \"disabled\": true, so it cannot be reached; enable the bastion or disable this host too",
                off.address
            ));
            return None;
        }
        Some(bastion)
    }

    /// The hosts of a ProxyJump list, each reached through the one before; the
    /// first follows its own ProxyJump (as `ssh -J a,b` does). Returns the last.
    fn chain(&mut self, hops: &[Hop], origin: &Origin) -> Option<Host> {
        let mut prev: Option<Host> = None;
        for (k, hop) in hops.iter().enumerate() {
            let mut host = self.hop(hop, origin, k == 0)?;
            if k > 0 {
                host.jump = prev.map(Box::new);
            }
            prev = Some(host);
        }
        prev
    }

    /// One hop: the entry it names (with the hop's user and port), or a host
    /// resolved through ssh_config; with its own jump when `follow`.
    fn hop(&mut self, hop: &Hop, origin: &Origin, follow: bool) -> Option<Host> {
        let mut host = match self.index.get(&hop.host).copied() {
            Some(j) if follow => self.entry(j)?,
            Some(j) => self.entries[j].host.clone(),
            None => self.outside(hop, origin, follow)?,
        };
        if let Some(u) = &hop.user {
            host.user.clone_from(u);
        }
        if let Some(p) = hop.port {
            host.port = p;
        }
        Some(host)
    }

    /// A jump host that is not an entry, resolved through ssh_config as `ssh`
    /// resolves the name of a `-J` hop.
    fn outside(&mut self, hop: &Hop, origin: &Origin, follow: bool) -> Option<Host> {
        let r = match self.cfg.map(|c| c.resolve(&hop.host)).transpose() {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                self.problems.push(format!("{e:#}"));
                return None;
            }
        };
        note_ignored(&r, self.notes, &mut self.seen);
        let mut host = Host {
            address: hop.text.clone(),
            host_name: r
                .host_name
                .as_ref()
                .map_or_else(|| hop.host.clone(), |(h, _)| h.clone()),
            user: hop
                .user
                .clone()
                .or_else(|| r.user.as_ref().map(|(u, _)| u.clone()))
                .unwrap_or_else(local_user),
            port: hop.port.or(r.port.as_ref().map(|(p, _)| *p)).unwrap_or(22),
            ..Host::default()
        };
        let mut settings = Vec::new();
        if let Err(e) = connection_values(&mut host, &r, self.notes, &mut self.seen, &mut settings)
        {
            self.problems
                .push(format!("{origin}: ProxyJump {}: {e}", hop.text));
            return None;
        }
        host.settings = settings;
        if !follow {
            return Some(host);
        }
        let own = r
            .proxy_jump
            .clone()
            .filter(|(j, _)| !j.eq_ignore_ascii_case("none"));
        let Some((spec, at)) = own else {
            return Some(host);
        };
        if !self.enter(&hop.host) {
            return None;
        }
        let jump = match parse_hops(&spec) {
            Ok(hops) => self.chain(&hops, &at),
            Err(e) => {
                self.problems
                    .push(format!("{at}: ProxyJump {e}; write [user@]host[:port]"));
                None
            }
        };
        self.stack.pop();
        host.jump = Some(Box::new(jump?));
        Some(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads hosts from `json` with `cfg` (an ssh_config text) as ssh_config.
    fn load(json: &str, cfg: Option<&str>) -> Result<(Vec<Host>, Notes), String> {
        let config = cfg.map(|t| SshConfig::parse(Path::new("/x/ssh_config"), t).unwrap());
        super::super::hosts::parse_in(
            Path::new("hosts.json"),
            Path::new("/cfg"),
            json,
            super::super::hosts::UnsetVars::Refuse,
            config.as_ref(),
        )
        .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn hops_parse_as_ssh_writes_them() {
        let h = parse_hops("jump@10.0.0.9:2222,[::1]:22,ssh://u@b.example/,::1,bare").unwrap();
        let short: Vec<(Option<&str>, &str, Option<u16>)> = h
            .iter()
            .map(|h| (h.user.as_deref(), h.host.as_str(), h.port))
            .collect();
        assert_eq!(
            short,
            [
                (Some("jump"), "10.0.0.9", Some(2222)),
                (None, "::1", Some(22)),
                (Some("u"), "b.example", None),
                (None, "::1", None),
                (None, "bare", None),
            ]
        );
        for bad in ["a:0", "a:x", "@a", "[::1", "a b", ""] {
            assert!(parse_hop(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_jump_names_an_entry_and_chains_follow() {
        let (hosts, _) = load(
            r#"[{"ip_address": "10.0.0.1", "user": "b"},
                {"ip_address": "10.0.0.2", "user": "i", "proxy_jump": "10.0.0.1"},
                {"ip_address": "10.0.0.3", "user": "t", "proxy_jump": "10.0.0.2", "port": 2222}]"#,
            None,
        )
        .unwrap();
        assert_eq!(hosts[0].route(), "direct");
        assert_eq!(hosts[1].route(), "via 10.0.0.1");
        assert_eq!(hosts[2].route(), "via 10.0.0.1,10.0.0.2");
        let inner = hosts[2].jump.as_deref().unwrap();
        assert_eq!((inner.user.as_str(), inner.port), ("i", 22));
    }

    #[test]
    fn cycles_unknown_names_and_disabled_bastions_are_one_line_each() {
        for (json, want) in [
            (
                r#"[{"ip_address": "a", "user": "u", "proxy_jump": "b"},
                    {"ip_address": "b", "user": "u", "proxy_jump": "c"},
                    {"ip_address": "c", "user": "u", "proxy_jump": "a"},
                    {"ip_address": "d", "user": "u", "proxy_jump": "b"}]"#,
                "hosts.json: proxy_jump cycle: a -> b -> c -> a; remove one of these jumps",
            ),
            (
                r#"[{"ip_address": "a", "user": "u", "proxy_jump": "a"}]"#,
                "hosts.json: proxy_jump cycle: a -> a; ",
            ),
            (
                r#"[{"ip_address": "a", "user": "u", "proxy_jump": "10.9.9.9"}]"#,
                "hosts.json: host #1 (a): proxy_jump \"10.9.9.9\" is not the ip_address of an entry in hosts.json; add that host",
            ),
            (
                r#"[{"ip_address": "a", "user": "u", "disabled": true},
                    {"ip_address": "b", "user": "u", "proxy_jump": "a"}]"#,
                "hosts.json: host #2 (b): its bastion a is \"disabled\": true",
            ),
        ] {
            let e = load(json, None).unwrap_err();
            assert!(e.starts_with(want), "{json}: {e}");
            assert_eq!(e.lines().count(), 1, "one line: {e}");
        }
        // A disabled host may jump through a disabled bastion.
        load(
            r#"[{"ip_address": "a", "user": "u", "disabled": true},
                {"ip_address": "b", "user": "u", "proxy_jump": "a", "disabled": true}]"#,
            None,
        )
        .unwrap();
    }

    /// connection_info.json wins over ssh_config, which wins over the defaults;
    /// every value names where it came from.
    #[test]
    fn precedence_and_origins() {
        let cfg = "Host web\n  HostName 10.0.0.5\n  User cfguser\n  Port 2200\n  IdentityFile /k/%r@%h\n  \
                   ConnectTimeout 7\n  ServerAliveInterval 15\n  UserKnownHostsFile /kh/%n\n  \
                   ProxyJump hop@10.0.0.9:2222\n  StrictHostKeyChecking no\n  ForwardAgent yes\nMatch all\n  User x\n";
        let (hosts, notes) = load(
            r#"[{"ip_address": "web", "port": 22}, {"ip_address": "db", "user": "d", "proxy_jump": "web"}]"#,
            Some(cfg),
        )
        .unwrap();
        let web = &hosts[0];
        assert_eq!(web.host_name, "10.0.0.5");
        assert_eq!((web.user.as_str(), web.port), ("cfguser", 22));
        assert_eq!(
            web.config_identity_files,
            [PathBuf::from("/k/cfguser@10.0.0.5")]
        );
        assert_eq!(web.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(web.keepalive, Some(Duration::from_secs(15)));
        assert_eq!(web.known_hosts, Some(PathBuf::from("/kh/web")));
        assert_eq!(web.route(), "via hop@10.0.0.9:2222");
        let hop = web.jump.as_deref().unwrap();
        assert_eq!(
            (hop.host_name.as_str(), hop.user.as_str(), hop.port),
            ("10.0.0.9", "hop", 2222)
        );
        let from = |k: &str| {
            web.settings
                .iter()
                .find(|s| s.keyword == k)
                .map(|s| s.from.clone())
                .unwrap()
        };
        assert_eq!(from("HostName"), "/x/ssh_config:2");
        assert_eq!(from("Port"), "connection_info.json");
        assert_eq!(from("ProxyJump"), "/x/ssh_config:9");
        // The JSON proxy_jump of db names the entry web, with its own chain.
        assert_eq!(hosts[1].route(), "via hop@10.0.0.9:2222,web");
        assert_eq!(
            notes.warnings,
            [
                "/x/ssh_config:10: StrictHostKeyChecking no is ignored: ssh_config never weakens hostsync's host-key check; [ssh] host_key_policy decides"
            ]
        );
        assert!(
            notes
                .debug
                .iter()
                .any(|d| d == "/x/ssh_config:11: forwardagent: not used by hostsync; skipped")
                && notes
                    .debug
                    .iter()
                    .any(|d| d.contains(":12: Match block skipped")),
            "{:?}",
            notes.debug
        );
        // Said once, though two hosts resolved through the same lines.
        assert_eq!(
            notes
                .debug
                .iter()
                .filter(|d| d.contains("forwardagent"))
                .count(),
            1
        );
    }

    #[test]
    fn user_is_needed_from_somewhere() {
        let e = load(r#"[{"ip_address": "a"}]"#, None).unwrap_err();
        assert!(
            e.starts_with("hosts.json: host #1 (a): missing field `user`; "),
            "{e}"
        );
        let (h, _) = load(r#"[{"ip_address": "a"}]"#, Some("Host *\n User z\n")).unwrap();
        assert_eq!(h[0].user, "z");
    }

    /// A ssh_config ProxyJump cycle through hosts that are not entries, and a hop
    /// list whose later hops ignore their own ProxyJump (as ssh -J does).
    #[test]
    fn config_jumps_cycle_and_lists() {
        let e = load(
            r#"[{"ip_address": "t", "user": "u"}]"#,
            Some("Host t\n ProxyJump j1\nHost j1\n ProxyJump j2\nHost j2\n ProxyJump j1\n"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("hosts.json: proxy_jump cycle: j1 -> j2 -> j1; "),
            "{e}"
        );
        let (h, _) = load(
            r#"[{"ip_address": "t", "user": "u"}]"#,
            Some("Host t\n ProxyJump a,b\nHost b\n ProxyJump nowhere\n"),
        )
        .unwrap();
        assert_eq!(h[0].route(), "via a,b");
    }
}

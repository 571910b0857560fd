//! `connection_info.json`: the list of hosts, how to reach them and how to log in.
//!
//! The format is the Python tool's (`ip_address`, `user`, `passkey`) plus optional
//! `port`, `identity_file`, `passphrase`, their `_env` forms, and `disabled`.
//! Unknown fields and duplicate addresses are errors. Secrets are wrapped in
//! [`Secret`] so they cannot end up in a log line or an error message by accident.
//!
//! A `"disabled": true` host (issue 14) is validated like any other, but no
//! command contacts it, so a `passkey_env` or `passphrase_env` variable it names
//! need not be set.
//!
//! Issue 18: `"proxy_jump"` names another entry to log in to first, and with
//! `[ssh] ssh_config` set, `user` may come from that file instead. What the file
//! adds and how jumps become chains is [`super::reach`]'s work; this module reads
//! what connection_info.json says.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;

use super::ini::resolve;
use super::reach::{self, Draft, Setting};
use super::source::{self, Problems};
use super::ssh_config::SshConfig;

/// A password or passphrase. Its Debug and Display print `***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// The value, for handing to libssh2 only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One host as the rest of the program sees it: validated, paths resolved, with
/// what `[ssh] ssh_config` says about it applied (see [`super::reach`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Host {
    /// `ip_address` as written: an IPv4/IPv6 literal or a DNS name. Also names the
    /// mapping file and starts every log line. For a jump host that is not an
    /// entry (a ssh_config `ProxyJump user@host:port`), that hop as written.
    pub(crate) address: String,
    /// Where to connect, and the name its host key is looked up under: ssh_config's
    /// `HostName`, else `address`.
    pub(crate) host_name: String,
    /// TCP port of sshd.
    pub(crate) port: u16,
    /// Remote user to log in as.
    pub(crate) user: String,
    /// Private key file, tried first.
    pub(crate) identity_file: Option<PathBuf>,
    /// ssh_config's `IdentityFile`s, tried after `identity_file` (one that does not
    /// exist is skipped, as ssh skips it).
    pub(crate) config_identity_files: Vec<PathBuf>,
    /// Passphrase of `identity_file`.
    pub(crate) passphrase: Option<Secret>,
    /// Password, tried last.
    pub(crate) password: Option<Secret>,
    /// `"disabled": true`: left out of every command; its mapping file is still read.
    pub(crate) disabled: bool,
    /// The bastion to log in to first (issue 18), itself perhaps behind another.
    pub(crate) jump: Option<Box<Host>>,
    /// ssh_config's `ConnectTimeout`, over `[ssh] connect_timeout`.
    pub(crate) connect_timeout: Option<std::time::Duration>,
    /// ssh_config's `ServerAliveInterval`, over `[ssh] keepalive_s` (issue 17):
    /// how often an idle `watch` session is probed; zero: never.
    pub(crate) keepalive: Option<std::time::Duration>,
    /// ssh_config's `UserKnownHostsFile`, over `[ssh] known_hosts`.
    pub(crate) known_hosts: Option<PathBuf>,
    /// Each value taken from connection_info.json or ssh_config, and where it was
    /// written, for `check -v`.
    pub(crate) settings: Vec<Setting>,
}

impl Host {
    /// The bastions on the way, the first one logged in to first (as ProxyJump lists them).
    pub(crate) fn hops(&self) -> Vec<&Host> {
        let mut out = Vec::new();
        let mut at = self.jump.as_deref();
        while let Some(h) = at {
            out.push(h);
            at = h.jump.as_deref();
        }
        out.reverse();
        out
    }

    /// `check`'s ROUTE: `direct`, or `via B` (`via B1,B2` for a chain, as ProxyJump writes it).
    pub(crate) fn route(&self) -> String {
        let hops = self.hops();
        if hops.is_empty() {
            return "direct".into();
        }
        let names: Vec<&str> = hops.iter().map(|h| h.address.as_str()).collect();
        format!("via {}", names.join(","))
    }
}

/// What [`parse_in`] does with a `passkey_env` or `passphrase_env` variable that
/// is not set in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsetVars {
    /// A configuration error for an enabled host (every command but `check --offline`).
    Refuse,
    /// A warning: `check --offline` checks the files, not the calling shell.
    Warn,
}

/// The JSON shape of one host entry, exactly what the user wrote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    ip_address: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    passkey: Option<String>,
    #[serde(default)]
    passkey_env: Option<String>,
    #[serde(default)]
    identity_file: Option<String>,
    #[serde(default)]
    passphrase: Option<String>,
    #[serde(default)]
    passphrase_env: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    proxy_jump: Option<String>,
}

/// Reads connection_info.json and applies `ssh_config` (if any) to each host.
/// `base` is config.ini's directory, for relative key paths. Returns the hosts and
/// the notes: unset variables (see [`parse_in`]), what ssh_config says that
/// hostsync ignores, and the debug lines about what it skipped.
pub(crate) fn load(
    path: &Path,
    base: &Path,
    unset: UnsetVars,
    ssh_config: Option<&SshConfig>,
) -> Result<(Vec<Host>, reach::Notes)> {
    let text = source::read_text(path, "connection_info.json")?;
    parse_in(path, base, &text, unset, ssh_config)
}

/// A warning when the hosts file holds an inline `passkey` or `passphrase` and group
/// or others may read it, as ssh warns about an unprotected private key (issue 4).
/// `None` when it is private, holds no inline secret, or cannot be read again.
pub(crate) fn exposure_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    if mode & 0o044 == 0 {
        return None;
    }
    // Re-read only in this rare case; `parse` does not keep inline vs _env apart.
    let text = std::fs::read_to_string(path).ok()?;
    let hosts: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&text).ok()?;
    let inline = |h: &serde_json::Map<_, serde_json::Value>| {
        ["passkey", "passphrase"]
            .iter()
            .any(|k| h.get(*k).is_some_and(|v| !v.is_null()))
    };
    hosts.iter().any(inline).then(|| {
        let file = path.display();
        format!(
            "{file}: holds a passkey or passphrase and is readable by group or others (mode {mode:04o}); run `chmod 600 {file}` (or use passkey_env / passphrase_env)"
        )
    })
}

/// Parses the hosts file text as every command but `check --offline` does; `path`
/// is used in messages only.
#[cfg(test)]
pub(crate) fn parse(path: &Path, base: &Path, text: &str) -> Result<Vec<Host>> {
    parse_with(path, base, text, UnsetVars::Refuse).map(|(hosts, _)| hosts)
}

/// Parses the hosts file text. A variable named by `passkey_env` or
/// `passphrase_env` that is not set is, for an enabled host, an error under
/// [`UnsetVars::Refuse`] and one of the returned warnings under
/// [`UnsetVars::Warn`] (one line each, naming file, host and variable); for a
/// disabled host it is neither. Either way that secret is left out.
#[cfg(test)]
pub(crate) fn parse_with(
    path: &Path,
    base: &Path,
    text: &str,
    unset: UnsetVars,
) -> Result<(Vec<Host>, Vec<String>)> {
    parse_in(path, base, text, unset, None).map(|(hosts, notes)| (hosts, notes.unset))
}

/// Parses the hosts file text (as `parse_with` describes), applying `ssh_config`
/// to each host and linking `proxy_jump`s into chains ([`reach::hosts`]).
pub(crate) fn parse_in(
    path: &Path,
    base: &Path,
    text: &str,
    unset: UnsetVars,
    ssh_config: Option<&SshConfig>,
) -> Result<(Vec<Host>, reach::Notes)> {
    let file = path.display();
    if text.trim().is_empty() {
        bail!(
            "{file}: the file is empty; write a JSON array of hosts like [{{\"ip_address\": \"127.0.0.1\", \"user\": \"deploy\", \"passkey\": \"...\"}}]"
        );
    }
    let raw: Vec<RawHost> = super::parse_json(
        path,
        text,
        "an array of host objects with ip_address and user",
    )?;
    let mut problems = Problems::default();
    let mut warnings = Vec::new();
    let mut seen = HashSet::new();
    let mut drafts = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("{file}: host #{} ({})", i + 1, r.ip_address);
        if let Err(msg) = check_address(&r.ip_address) {
            problems.push(format!("{at}: ip_address: {msg}"));
            continue;
        }
        if !seen.insert(r.ip_address.clone()) {
            problems.push(format!(
                "{at}: ip_address appears twice; keep one entry per host"
            ));
            continue;
        }
        if r.user
            .as_ref()
            .is_some_and(|u| u.trim().is_empty() || u.contains(|c: char| c.is_control()))
        {
            problems.push(format!(
                "{at}: user is empty or has control characters; write the remote login name"
            ));
            continue;
        }
        if r.port == Some(0) {
            problems.push(format!(
                "{at}: port 0 is not a valid port; write 1-65535 or leave it out for 22"
            ));
            continue;
        }
        let mut unset_here = Vec::new();
        let password = match secret(&r.passkey, &r.passkey_env, "passkey", &mut unset_here) {
            Ok(s) => s,
            Err(msg) => {
                problems.push(format!("{at}: {msg}"));
                continue;
            }
        };
        let passphrase = match secret(
            &r.passphrase,
            &r.passphrase_env,
            "passphrase",
            &mut unset_here,
        ) {
            Ok(s) => s,
            Err(msg) => {
                problems.push(format!("{at}: {msg}"));
                continue;
            }
        };
        // A disabled host is never logged in to, so its secrets are not needed.
        let unset_here = if r.disabled { Vec::new() } else { unset_here };
        let refuse = unset == UnsetVars::Refuse && !unset_here.is_empty();
        for msg in unset_here {
            let msg = format!("{at}: {msg}");
            if refuse {
                problems.push(msg);
            } else {
                warnings.push(msg);
            }
        }
        if refuse {
            continue;
        }
        let identity_file = match r.identity_file.as_deref() {
            Some("") => {
                problems.push(format!(
                    "{at}: identity_file is empty; write the private key's path or remove the field"
                ));
                continue;
            }
            Some(p) => Some(resolve(base, p)),
            None => None,
        };
        if passphrase.is_some() && identity_file.is_none() {
            problems.push(format!(
                "{at}: passphrase is set but identity_file is not; add the key's path"
            ));
            continue;
        }
        drafts.push(Draft {
            at,
            user: r.user,
            port: r.port,
            proxy_jump: r.proxy_jump,
            host: Host {
                host_name: r.ip_address.clone(),
                address: r.ip_address,
                identity_file,
                passphrase,
                password,
                disabled: r.disabled,
                ..Host::default()
            },
        });
    }
    let mut notes = reach::Notes {
        unset: warnings,
        ..reach::Notes::default()
    };
    let hosts = reach::hosts(drafts, path, ssh_config, &mut problems, &mut notes);
    problems.into_result()?;
    Ok((hosts, notes))
}

/// A secret given either inline (`name`) or through an environment variable
/// (`name_env`). A variable that is not set gives `None` and a message in `unset`,
/// for the caller to judge.
fn secret(
    inline: &Option<String>,
    env: &Option<String>,
    name: &str,
    unset: &mut Vec<String>,
) -> Result<Option<Secret>, String> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(format!("both {name} and {name}_env are set; keep one")),
        (Some(v), None) => Ok(Some(Secret(v.clone()))),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) => Ok(Some(Secret(v))),
            Err(_) => {
                unset.push(format!(
                    "{name}_env names the environment variable {var}, which is not set; export it before running hostsync"
                ));
                Ok(None)
            }
        },
        (None, None) => Ok(None),
    }
}

/// Accepts IPv4 and IPv6 literals and DNS names; refuses things like `300.1.1.1`.
pub(crate) fn check_address(a: &str) -> Result<(), String> {
    if a.parse::<Ipv6Addr>().is_ok() || a.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if a.is_empty() {
        return Err("is empty; write an IPv4/IPv6 address or a host name".into());
    }
    // All digits and dots but not a valid IPv4 address: a typo, not a host name.
    if a.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{a:?} is not a valid IPv4 address (each part 0-255, four parts)"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if a.len() <= 253 && a.trim_end_matches('.').split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{a:?} is neither an IP address nor a valid host name"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Host>> {
        parse(Path::new("connection_info.json"), Path::new("/cfg"), text)
    }

    #[test]
    fn seed_format() {
        let h = p(r#"[
  {"ip_address": "10.0.0.11", "user": "deploy", "passkey": "s3cret"},
  {"ip_address": "10.0.0.12", "user": "deploy", "identity_file": "keys/id", "port": 2222}
]"#)
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].port, 22);
        assert_eq!(h[0].password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(
            h[1].identity_file.as_deref(),
            Some(Path::new("/cfg/keys/id"))
        );
        assert_eq!(h[1].port, 2222);
    }

    #[test]
    fn secrets_never_print() {
        let h = p(r#"[{"ip_address": "::1", "user": "u", "passkey": "hunter2"}]"#).unwrap();
        assert!(!format!("{h:?}").contains("hunter2"));
    }

    #[test]
    fn bad_entries() {
        for (text, needle) in [
            (
                r#"[{"ip_address": "300.1.1.1", "user": "u"}]"#,
                "not a valid IPv4",
            ),
            (
                r#"[{"ip_address": "a", "user": "u"}, {"ip_address": "a", "user": "u"}]"#,
                "twice",
            ),
            (
                r#"[{"ip_address": "a", "user": "u", "pasword": "x"}]"#,
                "unknown field `pasword`",
            ),
            (r#"[{"ip_address": "a"}]"#, "missing field `user`"),
            (
                r#"[{"ip_address": "a", "user": "u", "port": 70000}]"#,
                "port",
            ),
            (r#"[{"ip_address": "a", "user": "u", "port": 0}]"#, "port 0"),
            (
                r#"[{"ip_address": "a", "user": "u", "passkey": "x", "passkey_env": "Y"}]"#,
                "both",
            ),
            (r#"{"ip_address": "a"}"#, "array"),
            ("", "empty"),
            (r#"[{"ip_address": "a", "user": "u"},]"#, "line 1"),
        ] {
            let e = format!("{:#}", p(text).unwrap_err());
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.starts_with("connection_info.json"), "{e}");
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "web1.example.net",
            "localhost",
        ] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in ["300.1.1.1", "1.2.3", "", "a b", "-x.com", "a..b"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exposure_warning_needs_inline_secret_and_loose_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("connection_info.json");
        let set = |text: &str, mode: u32| {
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            exposure_warning(&f)
        };
        let inline = r#"[{"ip_address": "a", "user": "u", "passkey": "hunter2"}]"#;
        let w = set(inline, 0o644).expect("a warning");
        assert!(w.contains(&format!("chmod 600 {}", f.display())), "{w}");
        assert!(w.contains("0644") && !w.contains("hunter2"), "{w}");
        assert!(set(inline, 0o640).is_some());
        assert!(set(inline, 0o600).is_none());
        let env_only = r#"[{"ip_address": "a", "user": "u", "passkey_env": "X"}]"#;
        assert!(set(env_only, 0o644).is_none());
        let phrase =
            r#"[{"ip_address": "a", "user": "u", "identity_file": "k", "passphrase": "p"}]"#;
        assert!(set(phrase, 0o604).is_some());
    }

    /// Issue 14: `disabled` is read; a disabled host needs none of its variables.
    /// Issue 20: under `Warn`, an enabled host's unset variable is a warning.
    #[test]
    fn disabled_hosts_and_unset_variables() {
        let text = r#"[
  {"ip_address": "a", "user": "u", "passkey_env": "HOSTSYNC_TEST_UNSET_A", "disabled": true},
  {"ip_address": "b", "user": "u", "identity_file": "k", "passphrase_env": "HOSTSYNC_TEST_UNSET_B"},
  {"ip_address": "c", "user": "u", "disabled": false}
]"#;
        let at = |unset| parse_with(Path::new("h.json"), Path::new("/cfg"), text, unset);
        let e = format!("{:#}", at(UnsetVars::Refuse).unwrap_err());
        assert_eq!(
            e,
            "h.json: host #2 (b): passphrase_env names the environment variable HOSTSYNC_TEST_UNSET_B, which is not set; export it before running hostsync"
        );
        let (hosts, warnings) = at(UnsetVars::Warn).unwrap();
        assert_eq!(warnings, [e]);
        let flags: Vec<(&str, bool)> = hosts
            .iter()
            .map(|h| (h.address.as_str(), h.disabled))
            .collect();
        assert_eq!(flags, [("a", true), ("b", false), ("c", false)]);
        assert!(hosts[0].password.is_none() && hosts[1].passphrase.is_none());
        let e = format!(
            "{:#}",
            p(r#"[{"ip_address": "a", "user": "u", "disabled": "yes"}]"#).unwrap_err()
        );
        assert!(
            e.contains("field `disabled`") && e.ends_with("disabled must be true or false"),
            "{e}"
        );
    }

    /// serde quotes a value of the wrong type; for secrets that would leak them.
    #[test]
    fn wrong_type_secrets_are_not_echoed() {
        for field in ["passkey", "passphrase"] {
            let text = format!(
                r#"[{{"ip_address": "a", "user": "u", "identity_file": "k", "{field}": 48151623}}]"#
            );
            let e = format!("{:#}", p(&text).unwrap_err());
            assert!(!e.contains("48151623"), "{e}");
            assert!(e.contains(&format!("{field} must be a string")), "{e}");
        }
    }
}

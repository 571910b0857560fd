//! The validated configuration every other module sees, and [`load_with`], which builds it.
//!
//! Only this module reads configuration files. It works in two stages, as the
//! style guide asks: `ini`, `hosts` and `mapping` turn text into typed values with
//! messages that name the file and field; [`load_with`] then checks what spans files
//! (a mapping file for an unknown host, the log folder) and resolves every path
//! against config.ini's directory.
//!
//! Hosts marked `"disabled": true` (issue 14) are loaded and validated, mapping
//! file included, then set apart in [`Config::disabled`]: every command works on
//! [`Config::targets`] only, so a disabled host is never contacted or reported.
//!
//! With `[ssh] ssh_config = PATH` (issue 18) that OpenSSH client config (and only
//! it, with its `Include`s) is read once and applied to every host ([`reach`]);
//! a host that other hosts jump through and that has no mapping file is a
//! bastion ([`Target::bastion_for`]), not a host sync skips.

pub(crate) mod example;
pub(crate) mod exclude;
/// Property tests of the parsers (issue 4); see the module for running them longer.
#[cfg(test)]
mod fuzz;
pub(crate) mod hosts;
pub(crate) mod ini;
pub(crate) mod mapping;
pub(crate) mod reach;
pub(crate) mod source;
pub(crate) mod ssh_config;
pub(crate) mod typo;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

pub(crate) use hosts::{Host, UnsetVars};
pub(crate) use ini::HostKeyPolicy;
pub(crate) use mapping::Mapping;

/// SSH client settings shared by every connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SshSettings {
    /// known_hosts file (OpenSSH format).
    pub(crate) known_hosts: PathBuf,
    /// What to do with unknown or changed host keys.
    pub(crate) host_key_policy: HostKeyPolicy,
    /// Limit for TCP connect, handshake and authentication.
    pub(crate) connect_timeout: Duration,
    /// Limit for any single read or write once connected.
    pub(crate) io_timeout: Duration,
    /// `[ssh] keepalive_s`: an idle `watch` session is probed this often
    /// (issue 17); zero: never. A host's ssh_config `ServerAliveInterval` wins.
    pub(crate) keepalive: Duration,
    /// `[ssh] strict_modes`: the ancestor rule for symlinks on the way to dest.
    pub(crate) strict_modes: bool,
    /// Who this client is, in every remote temporary's name: 8 hex digits of a
    /// hash of this machine's id and config.ini's path ([`client_id`]).
    pub(crate) client_id: String,
    /// Where each run holds its lock (`<log_path>/runs`, see [`crate::remote::runs`]).
    pub(crate) runs_dir: PathBuf,
    /// Where each host's record of what was last pushed to it lives
    /// (`<log_path>/pushed`, see [`crate::local::pushed`]).
    pub(crate) pushed_dir: PathBuf,
    /// `[ssh] transfer`: which tier serves a host.
    pub(crate) transfer: Transfer,
    /// The posix tier always uses the SCP sink ([`scp_sink_from_env`]).
    pub(crate) scp_sink: bool,
    /// `[sync] split`: the agent may make a big batch in two lanes.
    pub(crate) split: bool,
    /// `[sync] inflight_kib`: `None` for automatic (from the round trip).
    pub(crate) inflight_kib: Option<u32>,
    /// `[ssh] compression`: negotiate zlib compression (issue 19).
    pub(crate) compression: bool,
    /// `[sync] bwlimit_kib` in bytes per second, per connection; 0: unlimited.
    pub(crate) bwlimit: u64,
    /// `[sync] delta_min_kib` in bytes: the smallest file sent as a delta; 0: never.
    pub(crate) delta_min: u64,
}

#[cfg(test)]
impl SshSettings {
    /// Settings for unit tests that build connections or routes by hand: strict
    /// host keys, 10 s to connect, 30 s per read or write, made-up paths.
    pub(crate) fn for_tests() -> SshSettings {
        SshSettings {
            known_hosts: "/k".into(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            strict_modes: true,
            client_id: "c".into(),
            runs_dir: "/r".into(),
            pushed_dir: "/p".into(),
            transfer: Transfer::Auto,
            scp_sink: false,
            split: true,
            inflight_kib: None,
            compression: false,
            bwlimit: 0,
            delta_min: 0,
        }
    }
}

/// `[ssh] transfer`: which tier serves a host (issue 16; README, "How a push
/// works"). `auto` picks the fastest that works on each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// `auto`: the agent where the host has perl, else its shell (tar stream or
    /// SCP sink, sh commit), else the SFTP subsystem.
    Auto,
    /// `gnu`: only hostsync's perl agent.
    Gnu,
    /// `sftp`: only the SFTP subsystem.
    Sftp,
    /// `posix`: only the shell (listing script, tar stream or SCP sink, sh commit).
    Posix,
}

impl Transfer {
    /// Parses config.ini's value; the error names the valid ones.
    pub(crate) fn parse(value: &str) -> Result<Transfer, String> {
        match value {
            "auto" => Ok(Transfer::Auto),
            "gnu" => Ok(Transfer::Gnu),
            "sftp" => Ok(Transfer::Sftp),
            "posix" => Ok(Transfer::Posix),
            _ => Err("expected one of auto, gnu, sftp, posix".into()),
        }
    }
}

/// Whether the posix tier must use the SCP sink even where the remote has tar: an
/// internal knob for tests and measurements (`HOSTSYNC_POSIX_SINK=scp`, README,
/// "Running tests"), read once at start-up. Any other value is an error.
pub(crate) fn scp_sink_from_env() -> Result<bool> {
    if std::env::var_os("HOSTSYNC_TRANSFER").is_some() {
        bail!(
            "HOSTSYNC_TRANSFER is no longer read; unset it and set [ssh] transfer = auto, gnu, sftp or posix in config.ini"
        );
    }
    match std::env::var("HOSTSYNC_POSIX_SINK").as_deref() {
        Err(_) | Ok("" | "auto") => Ok(false),
        Ok("scp") => Ok(true),
        Ok(other) => bail!(
            "HOSTSYNC_POSIX_SINK={}: unknown sink; set it to scp, or unset it",
            crate::escape::controls(other)
        ),
    }
}

/// A host together with what to push to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    /// How to reach and log in.
    pub(crate) host: Host,
    /// Its mapping file, if there is one.
    pub(crate) mapping_file: Option<PathBuf>,
    /// What to push (empty when there is no mapping file).
    pub(crate) mappings: Vec<Mapping>,
    /// How many enabled hosts are reached through this one (0: it is no bastion).
    pub(crate) bastion_for: usize,
}

/// Everything a run needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// config.ini itself.
    pub(crate) path: PathBuf,
    /// At most this many SSH sessions at once.
    pub(crate) connections: usize,
    /// Folder of info.log and error.log.
    pub(crate) log_dir: PathBuf,
    /// The mappings folder (`address_mapper_path`), resolved.
    pub(crate) map_dir: PathBuf,
    /// SSH client settings.
    pub(crate) ssh: SshSettings,
    /// Quiet period for writes that never close (watch).
    pub(crate) debounce: Duration,
    /// Cap of the retry backoff for an unreachable host (watch).
    pub(crate) retry_max: Duration,
    /// Every enabled host of connection_info.json, in file order.
    pub(crate) targets: Vec<Target>,
    /// The hosts marked `"disabled": true`, in file order: validated, never contacted.
    pub(crate) disabled: Vec<Target>,
    /// Problems that do not stop a run (a hosts file with secrets others can
    /// read); logged as warnings once logging has started.
    pub(crate) warnings: Vec<String>,
    /// What loading skipped on purpose (ssh_config keywords hostsync does not
    /// use); logged at debug level once logging has started.
    pub(crate) debug_notes: Vec<String>,
}

/// Loads config.ini (`config_path`, or the `config.ini` in that directory) and the
/// files it names. Every error names its file.
#[cfg(test)]
pub(crate) fn load(config_path: &Path) -> Result<Config> {
    load_with(config_path, UnsetVars::Refuse)
}

/// Loads config.ini and the files it names, as `load` does, choosing what a
/// `passkey_env`/`passphrase_env` variable that is not set is; under [`UnsetVars::Warn`] (`check --offline`) it joins [`Config::warnings`].
pub(crate) fn load_with(config_path: &Path, unset: UnsetVars) -> Result<Config> {
    let mut config_path = absolute(config_path)?;
    if config_path.is_dir() {
        // `-c /etc/hostsync` (issue 14), as `-c /etc/hostsync/config.ini`.
        config_path.push("config.ini");
    }
    let base = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let settings = ini::load(&config_path)?;
    let ssh_config = match &settings.ssh_config {
        Some(p) => Some(ssh_config::SshConfig::load(&ini::resolve(&base, p)).map_err(|e| {
            anyhow!(
                "{e:#} (read because {} sets [ssh] ssh_config; fix the file or set ssh_config = none)",
                config_path.display()
            )
        })?),
        None => None,
    };
    let hosts_path = ini::resolve(&base, &settings.connection_info_path);
    let (hosts, notes) = hosts::load(&hosts_path, &base, unset, ssh_config.as_ref())?;
    let mut warnings: Vec<String> = hosts::exposure_warning(&hosts_path).into_iter().collect();
    // Under Refuse these are only about disabled hosts, which need no secret.
    if unset == UnsetVars::Warn {
        warnings.extend(notes.unset);
    }
    warnings.extend(notes.warnings);
    let map_dir = ini::resolve(&base, &settings.address_mapper_path);
    let (disabled, targets): (Vec<Target>, Vec<Target>) = load_targets(&map_dir, &base, hosts)?
        .into_iter()
        .partition(|t| t.host.disabled);
    let client_id = client_id(&config_path);
    Ok(Config {
        path: config_path,
        connections: settings.connections,
        log_dir: ini::resolve(&base, &settings.log_path),
        map_dir: map_dir.clone(),
        ssh: SshSettings {
            known_hosts: ini::resolve(&base, &settings.known_hosts),
            host_key_policy: settings.host_key_policy,
            connect_timeout: settings.connect_timeout,
            io_timeout: settings.io_timeout,
            keepalive: settings.keepalive,
            strict_modes: settings.strict_modes,
            client_id,
            runs_dir: ini::resolve(&base, &settings.log_path).join("runs"),
            pushed_dir: ini::resolve(&base, &settings.log_path).join("pushed"),
            transfer: settings.transfer,
            scp_sink: scp_sink_from_env()?,
            split: settings.split,
            inflight_kib: settings.inflight_kib,
            compression: settings.compression,
            bwlimit: settings.bwlimit,
            delta_min: settings.delta_min,
        },
        debounce: settings.debounce,
        retry_max: settings.retry_max,
        targets,
        disabled,
        warnings,
        debug_notes: notes.debug,
    })
}

/// Pairs each host with its mapping file; a mapping file for an unknown host is an error.
fn load_targets(map_dir: &Path, base: &Path, hosts: Vec<Host>) -> Result<Vec<Target>> {
    let dir = map_dir.display();
    let entries = std::fs::read_dir(map_dir).map_err(|e| {
        anyhow!("{dir}: cannot read the mappings folder (address_mapper_path): {e}; create it with one <ip>.json per host")
    })?;
    let mut problems = source::Problems::default();
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{dir}: cannot list the mappings folder"))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if !hosts.iter().any(|h| h.address == stem) {
            problems.push(format!(
                "{}: no host {stem} in connection_info.json; add it there or remove this mapping file",
                entry.path().display()
            ));
            continue;
        }
        names.push(stem.to_string());
    }
    let mut targets = Vec::new();
    for host in hosts {
        let mapping_file = names
            .contains(&host.address)
            .then(|| map_dir.join(format!("{}.json", host.address)));
        let mappings = match &mapping_file {
            Some(f) => match mapping::load(f, base) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("{e:#}"));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        targets.push(Target {
            host,
            mapping_file,
            mappings,
            bastion_for: 0,
        });
    }
    problems.into_result()?;
    count_bastions(&mut targets);
    Ok(targets)
}

/// Sets each entry's [`Target::bastion_for`]: how many enabled hosts have it on
/// their way (a hop that is not an entry counts for nothing here).
fn count_bastions(targets: &mut [Target]) {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for t in targets.iter().filter(|t| !t.host.disabled) {
        let mut names: Vec<&str> = t.host.hops().iter().map(|h| h.address.as_str()).collect();
        names.dedup();
        for name in names {
            *counts.entry(name.to_string()).or_default() += 1;
        }
    }
    for t in targets.iter_mut() {
        t.bastion_for = counts.get(&t.host.address).copied().unwrap_or(0);
    }
}

/// This client's id: 8 hex digits of SHA-256 over the machine's id (systemd's
/// /etc/machine-id, else the host name) and config.ini's canonical path, so two
/// fleets on one machine, or one config on two machines, never share temporaries.
pub(crate) fn client_id(config_path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let machine = [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/etc/hostname",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok().filter(|b| !b.is_empty()))
    .unwrap_or_default();
    let canonical = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.into());
    let mut h = Sha256::new();
    h.update(&machine);
    h.update([0]);
    h.update(canonical.as_os_str().as_encoded_bytes());
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `p` made absolute against the current directory (without resolving symlinks).
fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(p))
}

/// Parses JSON into `T`; errors become one line with file, line, column, the
/// entry and field (`entry #2 field \`port\``) and a hint.
fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    expected: &str,
) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut at = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => {
                    at.push_str(&format!("entry #{} ", index + 1))
                }
                serde_path_to_error::Segment::Map { key } => {
                    at.push_str(&format!("field `{key}` "))
                }
                _ => {}
            }
        }
        json_error(path, e.inner(), at.trim_end(), expected)
    })?;
    Ok(value)
}

/// Turns a serde_json error into a one-line message with file, line, column and a hint.
fn json_error(path: &Path, e: &serde_json::Error, at: &str, expected: &str) -> anyhow::Error {
    let msg = e.to_string();
    // serde_json appends " at line L column C"; we put the position first instead.
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    // serde quotes the offending value (`invalid type: integer `1234``): never for a secret.
    let msg = match at.rsplit('`').nth(1) {
        Some("passkey" | "passphrase") => "invalid type (value not shown, it may be a secret)",
        _ => msg,
    };
    let hint = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "fix the JSON syntax (no trailing commas, double quotes only)".to_string()
        }
        _ => match at.rsplit('`').nth(1) {
            Some("port") => "port must be a whole number from 1 to 65535".to_string(),
            Some("backups") => "backups must be a whole number from 0 to 99".to_string(),
            Some(field @ ("delete" | "disabled")) => format!("{field} must be true or false"),
            Some("exclude") => "exclude must be an array of strings, like [\"*.swp\"]".to_string(),
            Some("post_sync") => {
                "post_sync must be an array of strings, like [\"systemctl reload nginx\"]"
                    .to_string()
            }
            Some(
                field @ ("ip_address" | "user" | "src" | "dest" | "passkey" | "passkey_env"
                | "identity_file" | "passphrase" | "passphrase_env"),
            ) => {
                format!("{field} must be a string in double quotes")
            }
            _ => unknown_field_hint(msg).unwrap_or_else(|| format!("expected {expected}")),
        },
    };
    let at = if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    };
    anyhow!(
        "{}: line {} column {}: {at}{msg}; {hint}",
        path.display(),
        e.line(),
        e.column()
    )
}

/// For serde's "unknown field `exlude`, expected one of `src`, `dest`, ..." (from
/// `deny_unknown_fields`): "did you mean `exclude`?" when a known field is close.
fn unknown_field_hint(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let (_, expected) = rest.split_once("expected")?;
    // The known fields are the backticked words after "expected".
    let known = expected.split('`').skip(1).step_by(2);
    typo::did_you_mean(field, known)
}

impl Config {
    /// Where `address`'s mapping file is or would be, for messages: relative to
    /// config.ini's directory when it lies below it (`mappings/192.0.2.11.json`).
    pub(crate) fn mapping_file_shown(&self, address: &str) -> String {
        let file = self.map_dir.join(format!("{address}.json"));
        let base = self.path.parent().unwrap_or(Path::new("/"));
        file.strip_prefix(base)
            .unwrap_or(&file)
            .display()
            .to_string()
    }

    /// Refuses a log folder inside a local src, which a watcher would see change.
    pub(crate) fn check_log_dir_outside_sources(&self) -> Result<()> {
        for t in &self.targets {
            for m in &t.mappings {
                if self.log_dir.starts_with(&m.src) {
                    bail!(
                        "{}: log_path {} is inside the watched src {}; move log_path outside every src, or the daemon would react to its own log writes",
                        self.path.display(),
                        self.log_dir.display(),
                        m.src.display()
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[ssh] transfer` takes exactly the four tier names; anything else names them.
    #[test]
    fn transfer_takes_the_four_tier_names() {
        let all = ["auto", "gnu", "sftp", "posix"].map(Transfer::parse);
        assert_eq!(
            all,
            [
                Transfer::Auto,
                Transfer::Gnu,
                Transfer::Sftp,
                Transfer::Posix
            ]
            .map(Ok)
        );
        for bad in ["", "tar", "scp", "agent", "SFTP"] {
            assert_eq!(
                Transfer::parse(bad),
                Err("expected one of auto, gnu, sftp, posix".into()),
                "{bad:?}"
            );
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn loads_seed_layout_and_resolves_paths() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "config.ini",
            "[DEFAULT]\nnumber_of_connections = 2\nlog_path = logs\nconnection_info_path = connection_info.json\naddress_mapper_path = mappings\n",
        );
        write(
            d.path(),
            "connection_info.json",
            r#"[{"ip_address": "127.0.0.2", "user": "u", "passkey": "p"}, {"ip_address": "127.0.0.3", "user": "u"}]"#,
        );
        write(
            d.path(),
            "mappings/127.0.0.2.json",
            r#"[{"src": "site/", "dest": "/srv/site"}]"#,
        );
        let c = load(&d.path().join("config.ini")).unwrap();
        assert_eq!(c.connections, 2);
        assert_eq!(c.log_dir, d.path().join("logs"));
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].mappings[0].src, d.path().join("site/"));
        assert!(c.targets[1].mapping_file.is_none());
        assert_eq!(c.mapping_file_shown("127.0.0.3"), "mappings/127.0.0.3.json");
    }

    #[test]
    fn a_directory_means_its_config_ini() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "config.ini", "[DEFAULT]\n");
        write(d.path(), "connection_info.json", "[]");
        write(d.path(), "mappings/.keep", "");
        let c = load(d.path()).unwrap();
        assert_eq!(c.path, d.path().join("config.ini"));
        let e = load(&d.path().join("mappings")).unwrap_err().to_string();
        assert!(
            e.contains("mappings/config.ini: config.ini not found"),
            "{e}"
        );
    }

    #[test]
    fn mapping_for_unknown_host_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "config.ini", "[DEFAULT]\n");
        write(
            d.path(),
            "connection_info.json",
            r#"[{"ip_address": "127.0.0.2", "user": "u"}]"#,
        );
        write(d.path(), "mappings/127.0.0.9.json", "[]");
        let e = load(&d.path().join("config.ini")).unwrap_err().to_string();
        assert!(e.contains("127.0.0.9.json: no host 127.0.0.9"), "{e}");
    }

    /// Issue 14: a disabled host keeps its mapping file, which is still validated,
    /// and is set apart from the targets every command works on.
    #[test]
    fn disabled_hosts_are_validated_and_set_apart() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "config.ini", "[DEFAULT]\n");
        write(
            d.path(),
            "connection_info.json",
            r#"[{"ip_address": "127.0.0.2", "user": "u", "disabled": true}, {"ip_address": "127.0.0.3", "user": "u"}]"#,
        );
        write(
            d.path(),
            "mappings/127.0.0.2.json",
            r#"[{"src": "a", "dest": "/a"}]"#,
        );
        let c = load(&d.path().join("config.ini")).unwrap();
        let names = |ts: &[Target]| {
            ts.iter()
                .map(|t| t.host.address.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.targets), ["127.0.0.3"]);
        assert_eq!(names(&c.disabled), ["127.0.0.2"]);
        assert_eq!(c.disabled[0].mappings.len(), 1);
        write(
            d.path(),
            "mappings/127.0.0.2.json",
            r#"[{"src": "a", "dest": "rel"}]"#,
        );
        let e = load(&d.path().join("config.ini")).unwrap_err().to_string();
        assert!(
            e.contains("127.0.0.2.json: mapping #1: dest \"rel\""),
            "{e}"
        );
    }

    /// A shape with one known field, for the unknown-field hint without a close name.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Only {
        name: Option<String>,
    }

    #[test]
    fn json_errors_have_position() {
        let e = serde_json::from_str::<Vec<u8>>("[1,]").unwrap_err();
        let m = json_error(Path::new("f.json"), &e, "", "x").to_string();
        assert!(m.starts_with("f.json: line 1 column 4: "), "{m}");
        assert!(m.contains("trailing commas"), "{m}");
        let e = parse_json::<Vec<std::collections::HashMap<String, u16>>>(
            Path::new("f.json"),
            r#"[{"a": 1}, {"port": 70000}]"#,
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("entry #2 field `port`: invalid value"), "{e}");
        assert!(
            e.ends_with("port must be a whole number from 1 to 65535"),
            "{e}"
        );
        // Issue 14: a misspelt field gets the close one named.
        let e = mapping::parse(
            Path::new("m.json"),
            Path::new("/cfg"),
            r#"[{"src": "a", "dest": "/b", "exlude": []}]"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("m.json: line 1 column ")
                && e.contains("unknown field `exlude`")
                && e.ends_with("; did you mean `exclude`?"),
            "{e}"
        );
        let e = parse_json::<Vec<Only>>(Path::new("f.json"), r#"[{"zzz": 1}]"#, "things")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("; expected things"), "{e}");
    }
}

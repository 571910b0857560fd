//! The raw `config.ini` layer: rust-ini text to typed [`Settings`].
//!
//! The file format is the one the Python tool used (Python's `configparser`): a
//! `[DEFAULT]` section with the four historical keys, plus our `[ssh]` and `[sync]`
//! sections. Every error names the file, the section and the key, and says what
//! to write instead. Unknown sections and keys are errors, not silently ignored,
//! so a typo never turns into a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use ini::{Ini, ParseOption, Properties};

use super::source::{self, Problems};

/// How a server's host key is checked against known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKeyPolicy {
    /// Unknown or changed keys are refused (OpenSSH `StrictHostKeyChecking=yes`).
    Strict,
    /// Unknown keys are appended to known_hosts; changed keys are refused.
    AcceptNew,
    /// Keys are not checked; every host gets a warning in error.log.
    Off,
}

/// Everything `config.ini` says, with defaults applied and paths still as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// `[DEFAULT] number_of_connections`: at most this many SSH sessions at once.
    pub(crate) connections: usize,
    /// `[DEFAULT] log_path`: folder for info.log and error.log.
    pub(crate) log_path: String,
    /// `[DEFAULT] connection_info_path`: the hosts file.
    pub(crate) connection_info_path: String,
    /// `[DEFAULT] address_mapper_path`: the folder of `<ip>.json` mapping files.
    pub(crate) address_mapper_path: String,
    /// `[ssh] known_hosts`.
    pub(crate) known_hosts: String,
    /// `[ssh] host_key_policy`.
    pub(crate) host_key_policy: HostKeyPolicy,
    /// `[ssh] connect_timeout`: TCP connect, handshake and authentication.
    pub(crate) connect_timeout: Duration,
    /// `[ssh] io_timeout`: any single read or write on an established session.
    pub(crate) io_timeout: Duration,
    /// `[ssh] keepalive_s`: how long a `watch` session may sit idle before it is
    /// asked for a reply (issue 17); zero: never.
    pub(crate) keepalive: Duration,
    /// `[ssh] strict_modes`: follow a symlink on the way to dest only in a directory
    /// nobody but root and the login user can write (OpenSSH's StrictModes).
    pub(crate) strict_modes: bool,
    /// `[ssh] ssh_config`: an OpenSSH client config to apply to the hosts (issue
    /// 18); `None` for `none`, the default.
    pub(crate) ssh_config: Option<String>,
    /// `[sync] debounce_ms`: quiet period for writes that never close (watch).
    pub(crate) debounce: Duration,
    /// `[sync] retry_max_s`: cap of the retry backoff for a host that is down (watch).
    pub(crate) retry_max: Duration,
    /// `[sync] split`: a big batch on a host with the agent is made by two remote
    /// processes (the agent's lanes).
    pub(crate) split: bool,
    /// `[sync] inflight_kib`: most KiB written ahead of the remote's
    /// acknowledgements; `None` (`auto`): from the measured round trip; 0: no pacing.
    pub(crate) inflight_kib: Option<u32>,
    /// `[ssh] compression`: SSH zlib compression (issue 19).
    pub(crate) compression: bool,
    /// `[ssh] transfer`: which tier serves the hosts (issue 16).
    pub(crate) transfer: super::Transfer,
    /// `[sync] delta_min_kib`, in bytes: files at least this big whose remote copy
    /// differs go as a delta; 0: never (issue 19).
    pub(crate) delta_min: u64,
    /// `[sync] bwlimit_kib`, in bytes per second per host; 0: unlimited (issue 19).
    pub(crate) bwlimit: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connections: 4,
            log_path: "logs".into(),
            connection_info_path: "connection_info.json".into(),
            address_mapper_path: "mappings".into(),
            known_hosts: "~/.ssh/known_hosts".into(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            strict_modes: true,
            ssh_config: None,
            debounce: Duration::from_millis(50),
            retry_max: Duration::from_secs(30),
            split: true,
            inflight_kib: None,
            compression: false,
            transfer: super::Transfer::Auto,
            delta_min: 1024 * 1024,
            bwlimit: 0,
        }
    }
}

/// The sections and keys we know, for the "unknown key" message.
pub(crate) const KNOWN: &[(&str, &[&str])] = &[
    (
        "DEFAULT",
        &[
            "number_of_connections",
            "log_path",
            "connection_info_path",
            "address_mapper_path",
        ],
    ),
    (
        "ssh",
        &[
            "known_hosts",
            "host_key_policy",
            "connect_timeout",
            "io_timeout",
            "keepalive_s",
            "strict_modes",
            "ssh_config",
            "compression",
            "transfer",
        ],
    ),
    (
        "sync",
        &[
            "debounce_ms",
            "retry_max_s",
            "split",
            "inflight_kib",
            "delta_min_kib",
            "bwlimit_kib",
        ],
    ),
];

/// Reads and parses `config.ini`. A missing file is an error that says how to make one.
pub(crate) fn load(path: &Path) -> Result<Settings> {
    let text = source::read_text(path, "config.ini")?;
    parse(path, &text)
}

/// `yes` or `no` (as in OpenSSH's configuration).
fn yes_no(value: &str) -> Result<bool, String> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("expected yes or no".into()),
    }
}

/// Parses the text of a config.ini; `path` is used only in messages.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Settings> {
    let file = path.display();
    if text.trim().is_empty() {
        bail!(
            "{file}: the file is empty; write at least a [DEFAULT] section (see README, Configuration)"
        );
    }
    let ini = load_ini(path, text)?;
    let mut reader = Reader {
        file,
        problems: Problems::default(),
        settings: Settings::default(),
    };
    for (section, props) in &ini {
        reader.section(section, props);
    }
    reader.problems.into_result()?;
    Ok(reader.settings)
}

/// Reads the text with rust-ini as configparser would (no quotes, no escapes);
/// a syntax error names the line.
fn load_ini(path: &Path, text: &str) -> Result<Ini> {
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ParseOption::default()
    };
    match Ini::load_from_str_opt(text, opt) {
        Ok(ini) => Ok(ini),
        Err(e) => bail!(
            "{}:{}: {}; write `key = value` lines under a [section] header",
            path.display(),
            e.line,
            e.msg
        ),
    }
}

/// Walks the sections of one config.ini: the settings so far, and every
/// problem found, each naming the file.
struct Reader<'a> {
    /// The file, for messages.
    file: std::path::Display<'a>,
    /// Everything wrong so far.
    problems: Problems,
    /// The values read so far, on top of the defaults.
    settings: Settings,
}

impl Reader<'_> {
    /// Checks one section (`None`: the keys before any header) and reads its keys.
    fn section(&mut self, section: Option<&str>, props: &Properties) {
        let file = &self.file;
        let Some(name) = section else {
            if let Some((key, _)) = props.iter().next() {
                self.problems.push(match not_key_value(key) {
                    Some(msg) => format!("{file}: {msg}"),
                    None => format!(
                        "{file}: key `{key}` comes before any section; put it under [DEFAULT]"
                    ),
                });
            }
            return;
        };
        // rust-ini lets an unclosed `[` run on to the next `]`, across lines
        // (found by the property test in config/fuzz.rs).
        if name.contains(['\n', '\r']) {
            let first = name.lines().next().unwrap_or_default();
            self.problems.push(format!(
                "{file}: section header `[{first}` is not closed on its line; write [DEFAULT], [ssh] or [sync]"
            ));
            return;
        }
        let Some((_, keys)) = KNOWN.iter().find(|(s, _)| *s == name) else {
            let hint = super::typo::closest(name, KNOWN.iter().map(|(s, _)| *s))
                .map(|s| format!("did you mean [{s}]? "))
                .unwrap_or_default();
            self.problems.push(format!(
                "{file}: unknown section [{name}]; {hint}known sections are [DEFAULT], [ssh] and [sync]"
            ));
            return;
        };
        self.keys(name, keys, props);
    }

    /// Reads the keys of the known section `name`, whose known keys are `keys`:
    /// each one at most once, and each value checked.
    fn keys(&mut self, name: &str, keys: &[&str], props: &Properties) {
        let file = &self.file;
        let mut seen: Vec<String> = Vec::new();
        for (raw_key, value) in props.iter() {
            if let Some(msg) = not_key_value(raw_key) {
                self.problems.push(format!("{file}: [{name}] {msg}"));
                continue;
            }
            // configparser lowercases keys; do the same so seed files keep working.
            let key = raw_key.trim().to_ascii_lowercase();
            let value = value.trim();
            if seen.contains(&key) {
                self.problems.push(format!(
                    "{file}: [{name}] {key} is set twice; keep one of the lines"
                ));
                continue;
            }
            seen.push(key.clone());
            if !keys.contains(&key.as_str()) {
                self.problems.push(format!(
                    "{file}: [{name}] unknown key `{key}`; {}known keys in [{name}]: {}",
                    key_hint(&key, keys),
                    keys.join(", ")
                ));
                continue;
            }
            if let Err(msg) = apply(&mut self.settings, name, &key, value) {
                self.problems
                    .push(format!("{file}: [{name}] {key} = {value:?}: {msg}"));
            }
        }
    }
}

/// What to say about an unknown key in a section that knows `keys`: the close
/// key there (issue 14), or the section the key belongs in, with a trailing space.
fn key_hint(key: &str, keys: &[&str]) -> String {
    if let Some(k) = super::typo::closest(key, keys.iter().copied()) {
        return format!("did you mean `{k}`? ");
    }
    let elsewhere = KNOWN
        .iter()
        .find(|(_, ks)| super::typo::closest(key, ks.iter().copied()).is_some());
    match elsewhere {
        Some((s, ks)) => {
            let k = super::typo::closest(key, ks.iter().copied()).unwrap_or(key);
            format!("did you mean `{k}` in [{s}]? ")
        }
        None => String::new(),
    }
}

/// rust-ini reads a line without `=` as the start of a key that runs on into the
/// next line (found by the property test in config/fuzz.rs); Python's configparser
/// refuses such a line. Says so, naming the line, for a key with a line break.
fn not_key_value(key: &str) -> Option<String> {
    let first = key.lines().next().unwrap_or_default().trim();
    key.contains(['\n', '\r'])
        .then(|| format!("line `{first}` is not `key = value`; fix or remove it"))
}

/// Stores one known key's value, or says what is wrong with it.
fn apply(s: &mut Settings, section: &str, key: &str, value: &str) -> Result<(), String> {
    match (section, key) {
        ("DEFAULT", "number_of_connections") => s.connections = int(value, 1, 1024)? as usize,
        ("DEFAULT", "log_path") => s.log_path = path(value)?,
        ("DEFAULT", "connection_info_path") => s.connection_info_path = path(value)?,
        ("DEFAULT", "address_mapper_path") => s.address_mapper_path = path(value)?,
        ("ssh", "known_hosts") => s.known_hosts = path(value)?,
        ("ssh", "host_key_policy") => {
            s.host_key_policy = match value {
                "strict" => HostKeyPolicy::Strict,
                "accept-new" => HostKeyPolicy::AcceptNew,
                "off" => HostKeyPolicy::Off,
                _ => return Err("expected one of strict, accept-new, off".into()),
            }
        }
        ("ssh", "connect_timeout") => s.connect_timeout = Duration::from_secs(int(value, 1, 3600)?),
        ("ssh", "io_timeout") => s.io_timeout = Duration::from_secs(int(value, 1, 86400)?),
        ("ssh", "keepalive_s") => {
            s.keepalive = Duration::from_secs(
                int(value, 0, 86400).map_err(|e| format!("{e} (0 turns keepalives off)"))?,
            )
        }
        ("ssh", "strict_modes") => s.strict_modes = yes_no(value)?,
        ("ssh", "ssh_config") => {
            s.ssh_config = Some(path(value)?).filter(|p| !p.eq_ignore_ascii_case("none"))
        }
        ("sync", "debounce_ms") => s.debounce = Duration::from_millis(int(value, 0, 60_000)?),
        ("sync", "retry_max_s") => s.retry_max = Duration::from_secs(int(value, 1, 86400)?),
        ("sync", "split") => s.split = yes_no(value)?,
        ("ssh", "compression") => s.compression = yes_no(value)?,
        ("ssh", "transfer") => s.transfer = super::Transfer::parse(value)?,
        // Up to 1 TiB and 1 GiB/s: a larger value is a typo, not a setting.
        ("sync", "delta_min_kib") => s.delta_min = int(value, 0, 1 << 30)? * 1024,
        ("sync", "bwlimit_kib") => s.bwlimit = int(value, 0, 1 << 20)? * 1024,
        ("sync", "inflight_kib") => {
            s.inflight_kib = match value {
                "auto" => None,
                n => Some(
                    int(n, 0, 1 << 22)
                        .map_err(|e| format!("{e}, or auto (from the measured round trip)"))?
                        as u32,
                ),
            }
        }
        _ => unreachable!("key list and apply() disagree on [{section}] {key}"),
    }
    Ok(())
}

/// A whole number in `min..=max`.
fn int(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<i128>() {
        Ok(n) if n >= min as i128 && n <= max as i128 => Ok(n as u64),
        Ok(_) => Err(format!("must be a whole number from {min} to {max}")),
        Err(_) => Err(format!(
            "not a whole number; write a number from {min} to {max}"
        )),
    }
}

/// A non-empty path value.
fn path(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("is empty; write a path or remove the line to use the default".into());
    }
    Ok(value.to_string())
}

/// Expands a leading `~` and makes `p` absolute against `base`.
pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let expanded = if p == "~" {
        home()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home().join(rest)
    } else {
        PathBuf::from(p)
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// The user's home directory (`$HOME`, else `/`).
fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Settings> {
        parse(Path::new("config.ini"), text)
    }

    #[test]
    fn seed_file_parses_with_defaults() {
        let s = p("[DEFAULT]\nnumber_of_connections = 4\nlog_path = logs\nconnection_info_path = connection_info.json\naddress_mapper_path = mappings\n").unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn ssh_and_sync_sections() {
        let s = p("[DEFAULT]\nnumber_of_connections: 9\n[ssh]\nhost_key_policy = accept-new\nconnect_timeout = 3\n[sync]\ndebounce_ms = 0\n").unwrap();
        assert_eq!(s.connections, 9);
        assert_eq!(s.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.debounce, Duration::ZERO);
        assert_eq!(s.ssh_config, None);
        let s = p("[ssh]\nssh_config = ~/.ssh/config\n").unwrap();
        assert_eq!(s.ssh_config.as_deref(), Some("~/.ssh/config"));
        assert_eq!(p("[ssh]\nssh_config = none\n").unwrap().ssh_config, None);
        assert!(s.split);
        assert_eq!(s.inflight_kib, None);
        let s = p("[sync]\nsplit = no\ninflight_kib = 0\n").unwrap();
        assert_eq!((s.split, s.inflight_kib), (false, Some(0)));
        let s = p("[sync]\ninflight_kib = auto\n").unwrap();
        assert_eq!(s.inflight_kib, None);
        assert_eq!(
            p("[sync]\ninflight_kib = 64\n").unwrap().inflight_kib,
            Some(64)
        );
        let s =
            p("[ssh]\ncompression = yes\n[sync]\ndelta_min_kib = 0\nbwlimit_kib = 2048\n").unwrap();
        assert!(s.compression);
        assert_eq!((s.delta_min, s.bwlimit), (0, 2048 * 1024));
        let d = Settings::default();
        assert_eq!((d.compression, d.delta_min, d.bwlimit), (false, 1 << 20, 0));
    }

    /// The settings that were environment variables (issue 15) are validated like
    /// every key: one line naming file, section, key and what to write.
    #[test]
    fn transfer_settings_are_validated() {
        let e = p("[sync]\nsplit = 1\n").unwrap_err().to_string();
        assert!(
            e.contains("[sync] split") && e.contains("expected yes or no"),
            "{e}"
        );
        let e = p("[sync]\ninflight_kib = lots\n").unwrap_err().to_string();
        assert!(
            e.contains("[sync] inflight_kib") && e.contains("or auto"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = p("[sync]\nbwlimit_kib = 2M\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.ini: [sync] bwlimit_kib = \"2M\": not a whole number; write a number from 0 to 1048576"
        );
        let e = p("[sync]\ndelta_min_kib = -1\n").unwrap_err();
        assert!(e.to_string().contains("from 0 to 1073741824"), "{e}");
        let e = p("[ssh]\ncompression = zlib\n").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("compression = \"zlib\": expected yes or no"),
            "{e}"
        );
        let e = p("[sync]\nbwlimit_kb = 5\n").unwrap_err();
        assert!(e.to_string().contains("did you mean `bwlimit_kib`?"), "{e}");
    }

    /// Issue 17: `[ssh] keepalive_s` is 15 by default, 0 turns it off, and a
    /// bad value is one line that says so.
    #[test]
    fn keepalive_is_validated() {
        assert_eq!(p("[ssh]\n").unwrap().keepalive, Duration::from_secs(15));
        assert_eq!(
            p("[ssh]\nkeepalive_s = 0\n").unwrap().keepalive,
            Duration::ZERO
        );
        assert_eq!(
            p("[ssh]\nkeepalive_s = 5\n").unwrap().keepalive,
            Duration::from_secs(5)
        );
        let e = p("[ssh]\nkeepalive_s = -1\n").unwrap_err().to_string();
        assert!(
            e.starts_with("config.ini: [ssh] keepalive_s = \"-1\": ")
                && e.contains("from 0 to 86400")
                && e.contains("0 turns keepalives off")
                && !e.contains('\n'),
            "{e}"
        );
        let e = p("[ssh]\nkeepalive = 5\n").unwrap_err().to_string();
        assert!(e.contains("did you mean `keepalive_s`?"), "{e}");
    }

    #[test]
    fn errors_name_section_and_key() {
        let e = p("[DEFAULT]\nnumber_of_conections = 4\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown key `number_of_conections`"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("; did you mean `number_of_connections`? known keys in [DEFAULT]: "),
            "{e}"
        );
        let e = p("[DEFAULT]\nknown_host = x\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown key `known_host`; did you mean `known_hosts` in [ssh]? "),
            "{e}"
        );
        let e = p("[snyc]\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown section [snyc]; did you mean [sync]? known sections"),
            "{e}"
        );
        let e = p("[DEFAULT]\nzzz = 1\n").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("unknown key `zzz`; known keys in [DEFAULT]: number_of_connections, log_path, connection_info_path, address_mapper_path"),
            "{e}"
        );
        let e = p("[DEFAULT]\nnumber_of_connections = -1\n").unwrap_err();
        assert!(e.to_string().contains("number_of_connections"), "{e}");
        let e = p("[DEFAULT]\n[sssh]\n").unwrap_err();
        assert!(e.to_string().contains("unknown section [sssh]"), "{e}");
        let e = p("[ssh]\nhost_key_policy = maybe\n").unwrap_err();
        assert!(e.to_string().contains("strict, accept-new, off"), "{e}");
        let e = p("").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = p("[DEFAULT]\nlog_path = a\nlog_path = b\n").unwrap_err();
        assert!(e.to_string().contains("set twice"), "{e}");
    }

    /// Lines rust-ini would glue to the next one are named, one line per problem.
    #[test]
    fn unclosed_header_and_line_without_equals() {
        let e = p("[DEFAULT\nlog_path = x\n[ssh]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.ini: section header `[DEFAULT` is not closed on its line; write [DEFAULT], [ssh] or [sync]"
        );
        let e = p("[DEFAULT]\nlog_path\nconnect_timeout = 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.ini: [DEFAULT] line `log_path` is not `key = value`; fix or remove it"
        );
        let e = p("oops\nlog_path = x\n").unwrap_err();
        assert!(e.to_string().starts_with("config.ini: line `oops`"), "{e}");
    }

    #[test]
    fn resolve_expands_tilde_and_relative() {
        assert_eq!(
            resolve(Path::new("/cfg"), "logs"),
            PathBuf::from("/cfg/logs")
        );
        assert_eq!(resolve(Path::new("/cfg"), "/abs"), PathBuf::from("/abs"));
        assert!(resolve(Path::new("/cfg"), "~/x").ends_with("x"));
        assert!(!resolve(Path::new("/cfg"), "~/x").starts_with("/cfg"));
    }
}

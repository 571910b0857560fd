//! OpenSSH's client configuration, read the way `ssh` reads it (issue 18, for
//! `[ssh] ssh_config = PATH`).
//!
//! Only the named file and its `Include`s are read, never /etc/ssh/ssh_config. For
//! the name a host is given by (its `ip_address`), the `Host` blocks whose patterns
//! match it apply, first value wins: patterns with `*` and `?`, case-insensitive,
//! a `!pattern` that matches rules the block out, `Host *` for defaults. `Include`
//! takes glob patterns, relative to ~/.ssh, and is textual, except that inside a
//! block that does not match nothing of the included files applies, as in
//! OpenSSH's readconf.c. `Match` blocks and keywords hostsync does not use are
//! skipped (listed in [`Resolved::skipped`], for one debug line each), never an
//! error; a line that is not even `keyword value`, or a value that is not what its
//! keyword takes, is an error naming the file and line.
//!
//! What it resolves: HostName (`%h` is the name given, `%%` a percent sign),
//! User, Port, IdentityFile (all of them, in order), ProxyJump, ConnectTimeout,
//! ServerAliveInterval, UserKnownHostsFile and StrictHostKeyChecking (which
//! hostsync never lets weaken its check; the caller warns). Each value carries the
//! file and line it came from, for `check -v`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// How deep `Include`s may nest (OpenSSH's READCONF_MAX_DEPTH).
const MAX_DEPTH: usize = 16;

/// Where a value was written: file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The file.
    pub(crate) file: PathBuf,
    /// Its line, from 1.
    pub(crate) line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One line of a file, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// `Host PATTERN...`: the block that follows applies when they match.
    Host(Vec<String>),
    /// `Match ...`: its block is skipped.
    Match(Origin),
    /// `Include`: the files it named, read.
    Include(Vec<Vec<Item>>),
    /// `keyword value...`, keyword in lower case.
    Setting {
        keyword: String,
        args: Vec<String>,
        origin: Origin,
    },
}

/// A parsed ssh_config with its includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshConfig {
    /// The main file's lines.
    items: Vec<Item>,
}

/// What the configuration says about one host name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// `HostName`, with `%h` and `%%` expanded.
    pub(crate) host_name: Option<(String, Origin)>,
    /// `User`.
    pub(crate) user: Option<(String, Origin)>,
    /// `Port`.
    pub(crate) port: Option<(u16, Origin)>,
    /// Every `IdentityFile`, in order (`~` not expanded).
    pub(crate) identity_files: Vec<(String, Origin)>,
    /// `ProxyJump` (`none` is no jump).
    pub(crate) proxy_jump: Option<(String, Origin)>,
    /// `ConnectTimeout`, seconds.
    pub(crate) connect_timeout: Option<(u64, Origin)>,
    /// `ServerAliveInterval`, seconds.
    pub(crate) server_alive_interval: Option<(u64, Origin)>,
    /// `UserKnownHostsFile` (the first file named).
    pub(crate) user_known_hosts_file: Option<(String, Origin)>,
    /// `StrictHostKeyChecking`.
    pub(crate) strict_host_key_checking: Option<(String, Origin)>,
    /// Keywords and `Match` blocks that applied or were met and are not used, with
    /// where they are.
    pub(crate) skipped: Vec<(String, Origin)>,
}

impl SshConfig {
    /// Reads `path` and the files it includes (relative ones from `~/.ssh`).
    pub(crate) fn load(path: &Path) -> Result<SshConfig> {
        SshConfig::load_in(path, &home())
    }

    /// [`SshConfig::load`] for a user whose home directory is `home`.
    pub(crate) fn load_in(path: &Path, home: &Path) -> Result<SshConfig> {
        Ok(SshConfig {
            items: read_file(path, home, 0)?,
        })
    }

    #[cfg(test)]
    /// Parses `text` as file `path` (its includes are read from disk).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<SshConfig> {
        Ok(SshConfig {
            items: parse_text(path, text, &home(), 0)?,
        })
    }

    /// What applies to `name` (first value wins).
    pub(crate) fn resolve(&self, name: &str) -> Result<Resolved> {
        let mut r = Resolved::default();
        let mut active = true;
        apply(
            &self.items,
            &name.to_lowercase(),
            name,
            &mut active,
            true,
            &mut r,
        )?;
        Ok(r)
    }
}

/// Applies `items` to `r`. `active`: whether the current block matches; `live`:
/// false inside an include of a block that does not match (nothing applies).
fn apply(
    items: &[Item],
    lower: &str,
    name: &str,
    active: &mut bool,
    live: bool,
    r: &mut Resolved,
) -> Result<()> {
    for item in items {
        match item {
            Item::Host(patterns) => *active = live && host_matches(patterns, lower),
            Item::Match(origin) => {
                r.skipped.push(("Match".into(), origin.clone()));
                *active = false;
            }
            Item::Include(files) => {
                let outer = *active;
                for file in files {
                    let mut inner = outer;
                    apply(file, lower, name, &mut inner, live && outer, r)?;
                }
                *active = outer;
            }
            Item::Setting {
                keyword,
                args,
                origin,
            } if *active => setting(keyword, args, origin, name, r)?,
            Item::Setting { .. } => {}
        }
    }
    Ok(())
}

/// One applying `keyword args` into `r`, first value wins.
fn setting(
    keyword: &str,
    args: &[String],
    origin: &Origin,
    name: &str,
    r: &mut Resolved,
) -> Result<()> {
    let first = || (args[0].clone(), origin.clone());
    let number = |what: &str, max: u64| -> Result<u64> {
        match args[0].parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => bail!(
                "{origin}: {what} {:?} is not a whole number from 0 to {max}; fix the value",
                args[0]
            ),
        }
    };
    match keyword {
        "hostname" if r.host_name.is_none() => {
            r.host_name = Some((expand(&args[0], name, origin)?, origin.clone()))
        }
        "user" if r.user.is_none() => r.user = Some(first()),
        "port" if r.port.is_none() => match number("Port", 65535)? {
            0 => bail!("{origin}: Port 0 is not a port; write one from 1 to 65535"),
            p => r.port = Some((p as u16, origin.clone())),
        },
        "identityfile" => r.identity_files.push(first()),
        "proxyjump" if r.proxy_jump.is_none() => r.proxy_jump = Some(first()),
        "connecttimeout" if r.connect_timeout.is_none() => {
            r.connect_timeout = Some((number("ConnectTimeout", 86400)?, origin.clone()))
        }
        "serveraliveinterval" if r.server_alive_interval.is_none() => {
            r.server_alive_interval = Some((number("ServerAliveInterval", 86400)?, origin.clone()))
        }
        "userknownhostsfile" if r.user_known_hosts_file.is_none() => {
            r.user_known_hosts_file = Some(first())
        }
        "stricthostkeychecking" if r.strict_host_key_checking.is_none() => {
            r.strict_host_key_checking = Some(first())
        }
        "hostname"
        | "user"
        | "port"
        | "proxyjump"
        | "connecttimeout"
        | "serveraliveinterval"
        | "userknownhostsfile"
        | "stricthostkeychecking" => {}
        other => r.skipped.push((other.to_string(), origin.clone())),
    }
    Ok(())
}

/// `%h` is the name given, `%%` a percent sign; other tokens are errors.
fn expand(value: &str, name: &str, origin: &Origin) -> Result<String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(name),
            Some('%') => out.push('%'),
            other => bail!(
                "{origin}: HostName {value:?}: %{} is not a token hostsync expands (only %h and %%); write the name out",
                other.map(String::from).unwrap_or_default()
            ),
        }
    }
    Ok(out)
}

/// Whether a `Host` pattern list matches `lower` (a lowercased name): some pattern
/// matches and no negated one does.
fn host_matches(patterns: &[String], lower: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        let p = p.to_lowercase();
        match p.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), lower.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(p.as_bytes(), lower.as_bytes()),
        }
    }
    matched
}

/// `*` and `?` wildcard match of `text` against `pattern`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Reads and parses one file at include depth `depth`.
fn read_file(path: &Path, home: &Path, depth: usize) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("{}: cannot read this ssh_config file: {e}", path.display())
    })?;
    parse_text(path, &text, home, depth)
}

/// Parses the lines of `path`.
fn parse_text(path: &Path, text: &str, home: &Path, depth: usize) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let origin = Origin {
            file: path.to_path_buf(),
            line: i + 1,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, args) = split_line(line, &origin)?;
        let item = match keyword.as_str() {
            "host" => Item::Host(args),
            "match" => Item::Match(origin),
            "include" => Item::Include(includes(&args, &origin, home, depth)?),
            _ => Item::Setting {
                keyword,
                args,
                origin,
            },
        };
        items.push(item);
    }
    Ok(items)
}

/// `keyword value...` or `keyword=value...`, values split on blanks, `"..."` kept
/// together; the keyword lowercased.
fn split_line(line: &str, origin: &Origin) -> Result<(String, Vec<String>)> {
    let cut = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = &line[..cut];
    let rest = line[cut..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    if keyword.is_empty() || !keyword.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("{origin}: `{line}` is not `keyword value`; fix or remove the line");
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                word.push(c);
            }
            if !closed {
                bail!("{origin}: a quote is not closed on this line; close it");
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        args.push(word);
    }
    if args.is_empty() {
        bail!("{origin}: `{keyword}` has no value; write `{keyword} value`, or remove the line");
    }
    Ok((keyword.to_lowercase(), args))
}

/// The files an `Include` names: each pattern globbed (relative to ~/.ssh), sorted.
fn includes(
    patterns: &[String],
    origin: &Origin,
    home: &Path,
    depth: usize,
) -> Result<Vec<Vec<Item>>> {
    if depth >= MAX_DEPTH {
        bail!("{origin}: Include nested more than {MAX_DEPTH} deep (a loop?); remove it");
    }
    let mut out = Vec::new();
    for p in patterns {
        let full = if let Some(rest) = p.strip_prefix("~/") {
            home.join(rest)
        } else if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            home.join(".ssh").join(p)
        };
        let mut found: Vec<PathBuf> = glob_files(&full);
        found.sort();
        for f in found {
            out.push(read_file(&f, home, depth + 1)?);
        }
    }
    Ok(out)
}

/// The files matching `pattern` (wildcards in its last component only; a pattern
/// without any is the file itself, if it exists; none is no error, as in OpenSSH).
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| glob(name.as_bytes(), e.file_name().as_encoded_bytes()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// The home directory (`$HOME`).
fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What OpenSSH's `ssh -G` resolves `name` to, for the keywords compared.
    fn ssh_g(file: &Path, name: &str, home: &Path) -> std::collections::HashMap<String, String> {
        let out = std::process::Command::new("ssh")
            .args(["-G", "-F"])
            .arg(file)
            .arg(name)
            .env("HOME", home)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh (openssh-client) runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `user@host:port` with the brackets `ssh -G` puts around an address dropped.
    fn jump(s: &str) -> String {
        s.replace(['[', ']'], "")
    }

    /// Every name resolves as `ssh -G` resolves it: aliases, `Host *`, an Include
    /// (textual, and nothing of it where its block does not match), a negated
    /// pattern, a ProxyJump in user@host:port form, `%h`.
    #[test]
    fn names_resolve_as_ssh_g_resolves_them() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
        std::fs::write(
            ssh.join("conf.d/web.conf"),
            "Host web2\n  HostName 127.0.0.22\n  Port 2202\n",
        )
        .unwrap();
        std::fs::write(ssh.join("conf.d/other.conf"), "User from-include\n").unwrap();
        std::fs::write(ssh.join("only-db.conf"), "Port 5432\n").unwrap();
        let main = ssh.join("config");
        std::fs::write(
            &main,
            "# fleet\nHost web1\n  HostName 127.0.0.5\n  Port=2201\nInclude conf.d/*.conf\n\
             Host db.prod\n  Include only-db.conf\nHost *.prod !db.prod\n  User deploy\n  \
             ProxyJump jump@127.0.0.9:2222\nHost %h-alias x-*\n  HostName %h.internal\n\
             Match host foo\n  User never\nHost *\n  User fallback\n  IdentityFile ~/.ssh/id_test\n  \
             ConnectTimeout 7\n  ServerAliveInterval 15\n  UserKnownHostsFile ~/.ssh/kh\n  ForwardAgent no\n",
        )
        .unwrap();
        let config = SshConfig::load_in(&main, home.path()).unwrap();
        for name in ["web1", "web2", "a.prod", "db.prod", "x-1", "plain"] {
            let g = ssh_g(&main, name, home.path());
            let r = config.resolve(name).unwrap();
            let v = |o: &Option<(String, Origin)>| o.as_ref().map(|(v, _)| v.clone());
            assert_eq!(
                v(&r.host_name).unwrap_or(name.to_string()),
                g["hostname"],
                "{name}: hostname"
            );
            assert_eq!(v(&r.user).unwrap(), g["user"], "{name}: user");
            assert_eq!(
                r.port.map_or(22, |(p, _)| p).to_string(),
                g["port"],
                "{name}: port"
            );
            assert_eq!(
                v(&r.proxy_jump).map(|j| jump(&j)).unwrap_or_default(),
                g.get("proxyjump").map(|j| jump(j)).unwrap_or_default(),
                "{name}: proxyjump"
            );
            assert_eq!(
                r.connect_timeout.map(|(t, _)| t.to_string()).as_deref(),
                Some(g["connecttimeout"].as_str())
            );
            assert_eq!(
                r.identity_files[0].0, g["identityfile"],
                "{name}: identityfile"
            );
        }
        // Where the values came from; what was not used.
        let r = config.resolve("web1").unwrap();
        assert_eq!(
            r.port.unwrap().1.to_string(),
            format!("{}:4", main.display())
        );
        assert!(
            r.skipped.iter().any(|(k, _)| k == "forwardagent"),
            "{:?}",
            r.skipped
        );
        assert!(
            r.skipped.iter().any(|(k, _)| k == "Match"),
            "{:?}",
            r.skipped
        );
    }

    #[test]
    fn lines_that_are_not_keyword_value_are_errors_with_their_line() {
        let p = Path::new("/x/config");
        for (text, want) in [
            ("Host a\nHostName\n", "/x/config:2: `HostName` has no value"),
            ("= value\n", "/x/config:1: `= value` is not `keyword value`"),
            (
                "Host a\n  Port 99999\n",
                "/x/config:2: Port \"99999\" is not a whole number",
            ),
            ("User \"open\n", "/x/config:1: a quote is not closed"),
            (
                "Host a\n HostName %r.x\n",
                "/x/config:2: HostName \"%r.x\": %r is not a token",
            ),
        ] {
            let e = SshConfig::parse(p, text)
                .and_then(|c| c.resolve("a"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // Unknown keywords are no error.
        assert!(
            SshConfig::parse(p, "Host a\n  Frobnicate yes\n")
                .unwrap()
                .resolve("a")
                .is_ok()
        );
    }

    #[test]
    fn patterns_and_negation() {
        assert!(host_matches(&["*.prod".into()], "a.prod"));
        assert!(!host_matches(
            &["*.prod".into(), "!db.prod".into()],
            "db.prod"
        ));
        assert!(
            !host_matches(&["!db.prod".into()], "a.prod"),
            "a negation alone matches nothing"
        );
        assert!(host_matches(&["web?".into()], "web1") && !host_matches(&["web?".into()], "web10"));
        assert!(host_matches(&["WEB1".into()], "web1"));
    }
}

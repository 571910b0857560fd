//! The manual page hostsync(1), generated from the clap definitions in
//! [`crate::cli`] with clap_mangen and printed by `hostsync man` (issue 20).
//!
//! Printing it from the binary (as `rg --generate man` does) rather than writing it
//! in a build script keeps the build plain and lets anyone read the page of the
//! binary they have: `hostsync man | man -l -`. The Debian package runs it at
//! packaging time (`scripts/deb.sh`) and installs the result as
//! `/usr/share/man/man1/hostsync.1.gz`.
//!
//! What clap knows (synopsis, options, the about text) comes from clap_mangen,
//! with one section per subcommand. The configuration reference is built from
//! the example `config.ini` ([`crate::config::example`]: every key, its default and its
//! comment) and from the field tables below, whose completeness a unit test
//! checks against the parsers' own field lists. Exit codes come from
//! [`ExitCode`] through an exhaustive match.

use std::io::Write as _;

use clap::CommandFactory as _;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::cli::Cli;
use crate::config::example;
use crate::exit::ExitCode;

/// The fields of a connection_info.json entry, with their meaning and default.
pub(crate) const HOST_FIELDS: &[(&str, &str)] = &[
    (
        "ip_address",
        "Required. An IPv4 or IPv6 literal, or a DNS name; also the name of the host's mapping file.",
    ),
    (
        "user",
        "Required, unless the file [ssh] ssh_config names gives a User for this host. The remote login.",
    ),
    ("port", "The port of sshd (22, or ssh_config's Port)."),
    (
        "identity_file",
        "A private key file (OpenSSH or PEM format; ed25519, ecdsa or rsa), tried first.",
    ),
    ("passphrase", "The passphrase of identity_file."),
    (
        "passphrase_env",
        "The name of an environment variable that holds the passphrase.",
    ),
    (
        "passkey",
        "The password, tried after the key and the ssh-agent (also over keyboard-interactive).",
    ),
    (
        "passkey_env",
        "The name of an environment variable that holds the password.",
    ),
    (
        "disabled",
        "true: no command contacts this host or lists it; its mapping file stays and is still validated (false).",
    ),
    (
        "proxy_jump",
        "The ip_address of another entry, a bastion: it is logged in to first (with its own user, port, key, password and host-key check), and this host is reached through it, its host key checked end to end. The bastion may have its own proxy_jump. Without it, ssh_config's ProxyJump applies.",
    ),
];

/// The fields of a mapping, with their meaning and default.
pub(crate) const MAPPING_FIELDS: &[(&str, &str)] = &[
    (
        "src",
        "Required. A local file, or a folder whose tree is mirrored; relative to config.ini's folder.",
    ),
    (
        "dest",
        "Required. An absolute path on the host: the file, or the folder the tree goes into.",
    ),
    (
        "exclude",
        "Folder src only: gitignore patterns for paths that are never sent, deleted or watched ([]).",
    ),
    (
        "delete",
        "Folder src only: remote paths under dest that are gone locally are removed (false).",
    ),
    (
        "backups",
        "0-99: keep the versions a push replaces as dest.1 ... dest.N (0).",
    ),
    (
        "post_sync",
        "Remote shell commands run in order after a batch of changes under this mapping landed ([]).",
    ),
    (
        "follow_symlinks",
        "Folder src only: a symlink below src is followed and its target's content sent, instead of being recreated as a symlink (false).",
    ),
    (
        "keep_special_bits",
        "Keep setuid and setgid on files; by default they are dropped on the remote copy (false).",
    ),
];

/// More than the one-line `about` of each subcommand: what an operator needs
/// to know that `--help` does not say.
fn command_notes(name: &str) -> &'static [&'static str] {
    match name {
        "sync" => &[
            "A file whose remote copy has the same size, mtime and mode is skipped; the mtime is kept and compared with its fraction of a second where the remote keeps one, and where the remote keeps whole seconds the record of what was last pushed (log_path/pushed/) tells two edits within one second apart. --checksum compares every file by content instead. Each file is written under a temporary name and renamed over its destination when complete, so a remote file is never half-written. Exit 1 when a host or file failed (the others completed).",
            "With --dry-run nothing changes on any host; each difference is one line on stdout: [+] added (every directory sync would make has its line), [M] updated, [-] deleted (only with \"delete\": true), and [!] HOST PATH/ not writable: REASON for a directory a mapping writes into that the login user cannot write or make (the check of hostsync check), where sync would fail; such a dry run exits 1. With -v, a file line ends in (delta) or (whole file): how sync would send it.",
            "A file of at least [sync] delta_min_kib whose remote copy differs is sent as a delta: only what the remote copy lacks, rebuilt there into the temporary and checked by SHA-256 before the rename; the line says so: (N bytes, reused R bytes). [sync] bwlimit_kib caps what each host is sent per second; [ssh] compression = yes compresses.",
        ],
        "watch" => &[
            "The watches are set first, then every host gets a full reconcile, then each local change is pushed to the hosts mapped to it as soon as its writer is done. A host that is down keeps its pending changes and is retried with backoff up to [sync] retry_max_s; so is a path the host refused (disk full, permission denied, read-only), with one error line when it starts failing and one info line when it lands. Only one watch runs per config.ini: a second one exits 2 naming the pid that holds log_path/watch.pid. SIGINT or SIGTERM stops it within a few seconds, exit 0, after logging how many changes each host still had pending.",
            "SIGHUP (systemctl reload) reads config.ini, connection_info.json and the mappings again without a restart: a host that is new or whose entry or mappings changed gets a full reconcile, a removed one gets no more pushes, an unchanged one keeps its pending changes. A configuration with a problem is logged in error.log with the message sync would exit 2 with, and the one in force stays. log_path and number_of_connections change only at the next start.",
        ],
        "status" => &[
            "It reads log_path/status.json, which the running watch rewrites atomically whenever a host's state changes (at most a few times a second). STATE is ok, catching-up (changes pending or in flight), down (unreachable; retried with backoff up to [sync] retry_max_s) or failing (reached, but some paths were refused, e.g. disk full or permission denied; each is listed with its reason and retried on the same backoff until it lands). PENDING counts the changes not delivered yet, LAST_OK is when a push last reached the host (UTC), BYTES what was sent since the daemon started. With --json: one object per host, {\"host\", \"state\", \"pending\", \"failing\": [{\"path\", \"reason\"}], \"last_ok\", \"bytes\"}, then {\"daemon\": {\"pid\", \"started\", \"config\"}}.",
            "Exit 0 when every host is ok or catching-up, 1 when any is down or failing, 3 when no hostsync watch is running for this config.ini (asked of the lock on log_path/watch.pid), 2 for a configuration error.",
        ],
        "check" => &[
            "Exit 0 when every host is ready, 1 when any failed, 2 for a configuration error.",
            "ROUTE is direct, or via B for a host reached through the bastion B (via B1,B2 for a chain, B1 logged in to first). With -v a second table shows what each host resolved to (HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout, ServerAliveInterval, UserKnownHostsFile) and where each value was written: connection_info.json, a FILE:LINE of [ssh] ssh_config, config.ini or the default; check --offline -v prints it without contacting anything.",
            "With --offline the files are loaded exactly as sync loads them (a problem is exit 2 with the same message) and no host is contacted; exit 0 when they are valid. A passkey_env or passphrase_env variable that is not set, or a src or identity_file missing on this machine, is a warning on stderr, not an error.",
        ],
        "init" => &[
            "The files are the example of /usr/share/doc/hostsync/examples: its hosts are on documentation addresses and \"disabled\": true; put yours in their place, then remove that field. If any of config.ini, connection_info.json, mappings or logs exists in DIR, it names each and exits 2 having changed nothing.",
        ],
        "completions" => &[
            "The Debian package installs them in /usr/share/bash-completion/completions, /usr/share/zsh/vendor-completions and /usr/share/fish/vendor_completions.d. No configuration is needed.",
        ],
        "man" => &["For example: hostsync man | man -l -"],
        _ => &[],
    }
}

/// What each exit code means; exhaustive, so a new code must be documented here.
fn exit_meaning(code: ExitCode) -> &'static str {
    match code {
        ExitCode::Success => "Everything arrived (check: every host is ready).",
        ExitCode::Failure => "Some host or file failed; the others completed. See error.log.",
        ExitCode::Usage => {
            "Usage or configuration error; nothing was sent. The message names the file, the field and the fix."
        }
        ExitCode::Differences => {
            "sync --dry-run --exit-code: there are differences, and nothing failed. status: no hostsync watch is running for this config.ini."
        }
    }
}

/// Every exit code, in order.
const EXIT_CODES: [ExitCode; 4] = [
    ExitCode::Success,
    ExitCode::Failure,
    ExitCode::Usage,
    ExitCode::Differences,
];

/// `hostsync man`: the page on stdout. A closed pipe is not an error.
pub(crate) fn print() -> ExitCode {
    let page = render();
    let _ = std::io::stdout().lock().write_all(page.as_bytes());
    ExitCode::Success
}

/// The whole page, as roff source.
pub(crate) fn render() -> String {
    let cmd = Cli::command();
    let man = Man::new(cmd.clone())
        .title("HOSTSYNC")
        .section("1")
        .manual("hostsync manual");
    let mut page = Roff::new().render();
    page += &chunk(|w| man.render_title(w));
    page += &chunk(|w| man.render_name_section(w));
    page += &chunk(|w| man.render_synopsis_section(w));
    page += &description();
    page += &chunk(|w| man.render_options_section(w));
    for sub in cmd.get_subcommands() {
        page += &command_section(sub);
    }
    page += &configuration();
    page += &exit_status();
    page += &files();
    page += &environment();
    page += &examples();
    page += &see_also();
    page += &chunk(|w| man.render_version_section(w));
    page
}

/// Renders one part into text without roff's preamble, which the page has once.
fn chunk(render: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    render(&mut buf).expect("writing to memory cannot fail");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let preamble = Roff::new().render();
    text.strip_prefix(&preamble).unwrap_or(&text).to_string()
}

/// A [`Roff`] as text without its preamble.
fn roff_text(roff: &Roff) -> String {
    chunk(|w| roff.to_writer(w))
}

/// `.SH "HOSTSYNC NAME"`: the subcommand's synopsis, about text, notes and options.
fn command_section(sub: &clap::Command) -> String {
    let name = sub.get_name();
    let man = Man::new(sub.clone().bin_name(format!("hostsync {name}")));
    let mut head = Roff::new();
    head.control("SH", [format!("HOSTSYNC {}", name.to_uppercase()).as_str()]);
    let mut out = roff_text(&head);
    out += &without_headers(&chunk(|w| man.render_synopsis_section(w)));
    out += &roff_text(Roff::new().control("PP", []));
    out += &without_headers(&chunk(|w| man.render_description_section(w)));
    let mut notes = Roff::new();
    for n in command_notes(name) {
        notes.control("PP", []).text([roman(*n)]);
    }
    out += &roff_text(&notes);
    out += &chunk(|w| man.render_options_section(w)).replace(".SH OPTIONS", ".SS Options");
    out
}

/// The text with its `.SH` lines removed.
fn without_headers(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(".SH"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A `.TP` item: a bold term and its paragraph.
fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", [])
        .text([bold(term)])
        .text([roman(text)]);
}

/// DESCRIPTION: what hostsync is, in a few sentences.
fn description() -> String {
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]).text([roman(
        "hostsync pushes files and folder trees from this machine to many hosts over plain SSH, with a destination per host, atomically, and records every transfer in info.log and every failure in error.log. It reads the files of the Python \"Multiple Host Sync\" tool unchanged: config.ini, connection_info.json and mappings/<ip_address>.json.",
    )]);
    r.control("PP", []).text([roman(
        "Start a new fleet with hostsync init, then check --offline, check, sync --dry-run and sync (see EXAMPLES). Only the commands completions, init and man work without a configuration.",
    )]);
    roff_text(&r)
}

/// CONFIGURATION: config.ini from the example, then the two JSON files' fields.
fn configuration() -> String {
    let mut r = Roff::new();
    r.control("SH", ["CONFIGURATION"]).text([roman(
        "Relative paths in config.ini and in the mapping files are relative to the folder of config.ini; a leading ~ is the home directory. Unknown sections, keys and fields are errors, so a typo never silently becomes a default.",
    )]);
    r.control("SS", ["config.ini"]);
    let mut section = String::new();
    for k in example::config_keys() {
        if k.section != section {
            r.control("PP", []).text([bold(format!("[{}]", k.section))]);
            section = k.section.clone();
        }
        let term = format!("{} = {}", k.key, k.default);
        item(&mut r, &term, &k.comment);
    }
    r.control("SS", ["connection_info.json"]).text([roman(
        "A JSON array of hosts, one object each. Authentication tries identity_file, then the ssh-agent if SSH_AUTH_SOCK is set, then the password. An entry may have passkey or passkey_env, not both (the same for passphrase); a variable that is not set is a configuration error, except for a disabled host and under check --offline.",
    )]);
    for (field, text) in HOST_FIELDS {
        item(&mut r, field, text);
    }
    r.control("SS", ["mappings/<ip_address>.json"]).text([roman(
        "A JSON array of mappings, one object each, for the host of that address. A host without a mapping file is skipped with a warning; a mapping file for an address not in connection_info.json is an error.",
    )]);
    for (field, text) in MAPPING_FIELDS {
        item(&mut r, field, text);
    }
    roff_text(&r)
}

/// EXIT STATUS, from [`exit_meaning`].
fn exit_status() -> String {
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    for code in EXIT_CODES {
        item(&mut r, &(code as u8).to_string(), exit_meaning(code));
    }
    roff_text(&r)
}

/// FILES: the configuration, the logs, and where the package puts things.
fn files() -> String {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, text) in [
        (
            "./config.ini",
            "The configuration read by default (-c PATH chooses another).",
        ),
        (
            "connection_info.json, mappings/",
            "The hosts and what goes where, as config.ini names them (these are the defaults).",
        ),
        (
            "logs/info.log, logs/error.log",
            "Every transfer, and every failure (log_path); rotated at 10 MiB, 5 kept.",
        ),
        (
            "logs/pushed/<ip_address>",
            "What was last pushed to each host (size, mtime, SHA-256 per remote file): tells two edits within one second apart where the remote keeps whole seconds; safe to delete.",
        ),
        (
            "~/.ssh/known_hosts",
            "The default known_hosts file ([ssh] known_hosts).",
        ),
        (
            "/etc/hostsync/config.ini",
            "The fleet of hostsync.service (hostsync watch as a systemd service).",
        ),
        (
            "/etc/hostsync/NAME/config.ini",
            "The fleet of hostsync@NAME.service; its log_path must be /var/log/hostsync/NAME.",
        ),
        (
            "/var/log/hostsync/",
            "The services' logs, owned by the hostsync user.",
        ),
        (
            "/usr/share/doc/hostsync/examples/",
            "The example configuration that hostsync init writes.",
        ),
    ] {
        item(&mut r, path, text);
    }
    roff_text(&r)
}

/// ENVIRONMENT: the variables hostsync reads.
fn environment() -> String {
    let mut r = Roff::new();
    r.control("SH", ["ENVIRONMENT"]);
    for (var, text) in [
        ("HOME", "Where a leading ~ in the configuration points."),
        (
            "SSH_AUTH_SOCK",
            "An ssh-agent to try after identity_file and before the password.",
        ),
        (
            "the passkey_env and passphrase_env variables",
            "Secrets kept out of connection_info.json.",
        ),
        (
            "HOSTSYNC_POSIX_SINK=scp",
            "For tests and measurements: the posix tier ([ssh] transfer) sends over the SCP sink even where the remote has tar. Any other value than scp (or unset) is an error. HOSTSYNC_TRANSFER is no longer read: set [ssh] transfer instead.",
        ),
    ] {
        item(&mut r, var, text);
    }
    roff_text(&r)
}

/// EXAMPLES: the first fleet, step by step.
fn examples() -> String {
    let mut r = Roff::new();
    r.control("SH", ["EXAMPLES"])
        .text([roman("Your first fleet:")])
        .control("PP", [])
        .control("nf", [])
        .control("RS", ["4"])
        .text([roman(
            "hostsync init myfleet && cd myfleet\n\
             # edit connection_info.json and mappings/, remove \"disabled\": true\n\
             hostsync check --offline\n\
             hostsync check\n\
             hostsync sync --dry-run\n\
             hostsync sync",
        )])
        .control("RE", [])
        .control("fi", []);
    roff_text(&r)
}

/// SEE ALSO.
fn see_also() -> String {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]).text([
        bold("ssh"),
        roman("(1), "),
        bold("ssh-keygen"),
        roman("(1), "),
        bold("ssh-keyscan"),
        roman("(1), "),
        bold("sshd"),
        roman("(8), "),
        bold("systemd.service"),
        roman("(5); "),
        italic("/usr/share/doc/hostsync/README.md"),
    ]);
    roff_text(&r)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{hosts, mapping};

    /// The field names serde expects, read from its unknown-field error
    /// ("expected one of `a`, `b`"), so the tables cannot miss a field.
    fn serde_fields(error: &str) -> Vec<String> {
        let list = error.split("expected one of ").nth(1).expect(error);
        list.split(',')
            .filter_map(|w| w.split('`').nth(1))
            .map(String::from)
            .collect()
    }

    fn names(table: &[(&str, &str)]) -> Vec<String> {
        let mut v: Vec<String> = table.iter().map(|(f, _)| f.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn field_tables_document_every_field() {
        let e = hosts::parse(
            Path::new("h.json"),
            Path::new("/"),
            r#"[{"ip_address": "a", "user": "u", "zz": 1}]"#,
        )
        .unwrap_err()
        .to_string();
        let mut want = serde_fields(&e);
        want.sort();
        assert_eq!(names(HOST_FIELDS), want);
        let e = mapping::parse(
            Path::new("m.json"),
            Path::new("/"),
            r#"[{"src": "a", "dest": "/b", "zz": 1}]"#,
        )
        .unwrap_err()
        .to_string();
        let mut want = serde_fields(&e);
        want.sort();
        assert_eq!(names(MAPPING_FIELDS), want);
    }

    /// A section per subcommand, the reference, exit codes and files; one preamble.
    #[test]
    fn page_has_every_section() {
        let page = render();
        assert!(page.contains(".TH HOSTSYNC 1"), "{page}");
        for sub in Cli::command().get_subcommands() {
            let head = format!(".SH \"HOSTSYNC {}\"", sub.get_name().to_uppercase());
            assert!(page.contains(&head), "{head} missing");
        }
        for head in [
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH CONFIGURATION",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
            ".SH EXAMPLES",
        ] {
            assert_eq!(page.matches(head).count(), 1, "{head}");
        }
        for k in example::config_keys() {
            assert!(
                page.contains(&format!("{} = {}", k.key, k.default)),
                "{k:?}"
            );
        }
        assert!(page.contains("\\-\\-offline"), "check's flag is rendered");
        assert_eq!(page.matches(&Roff::new().render()).count(), 1);
    }
}

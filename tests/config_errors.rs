//! Malformed configuration: every case exits 2 with one line naming the file and
//! the problem, and never panics (issues 2 and 4). Table-driven: each row starts
//! from a valid seed-format setup and breaks exactly one file.

use crate::util::Dir;
use crate::util::hostsync::run_in;

const INI: &str = "[DEFAULT]\nnumber_of_connections = 4\nlog_path = logs\nconnection_info_path = connection_info.json\naddress_mapper_path = mappings\n";
const HOSTS: &str = r#"[{"ip_address": "127.0.0.2", "user": "deploy", "passkey": "s3cret"}]"#;
const MAP: &str = r#"[{"src": "site/", "dest": "/srv/www"}]"#;
const MAP_FILE: &str = "mappings/127.0.0.2.json";

/// What a case does to the valid setup.
enum Edit {
    /// Replace a file's bytes.
    Write(&'static str, Vec<u8>),
    /// Remove a file or folder.
    Remove(&'static str),
}
use Edit::*;

fn w(file: &'static str, text: &str) -> Edit {
    Write(file, text.as_bytes().to_vec())
}

/// (name, edit, file the message must name, text it must contain)
fn cases() -> Vec<(&'static str, Edit, &'static str, &'static str)> {
    let big = |prefix: &str| {
        let mut v = prefix.as_bytes().to_vec();
        v.resize(10 * 1024 * 1024, b' ');
        v
    };
    let ini = |extra: &str| format!("{INI}{extra}");
    vec![
        (
            "ini missing",
            Remove("config.ini"),
            "config.ini",
            "not found",
        ),
        ("ini empty", w("config.ini", ""), "config.ini", "empty"),
        (
            "split not yes/no",
            w("config.ini", &ini("[sync]\nsplit = true\n")),
            "config.ini",
            "[sync] split",
        ),
        (
            "inflight_kib not a number",
            w("config.ini", &ini("[sync]\ninflight_kib = 1M\n")),
            "config.ini",
            "[sync] inflight_kib",
        ),
        (
            "ini bom",
            Write(
                "config.ini",
                [b"\xEF\xBB\xBF".as_slice(), INI.as_bytes()].concat(),
            ),
            "config.ini",
            "byte order mark",
        ),
        (
            "ini binary",
            Write(
                "config.ini",
                vec![0x7f, 0x45, 0x4c, 0x46, 0xff, 0xfe, 0x00, 0x01],
            ),
            "config.ini",
            "UTF-8",
        ),
        (
            "ini 10MB",
            Write("config.ini", big(INI)),
            "config.ini",
            "too large",
        ),
        (
            "ini key before section",
            w("config.ini", &format!("log_path = x\n{INI}")),
            "config.ini",
            "before any section",
        ),
        (
            "ini unknown section",
            w("config.ini", &ini("[sshh]\n")),
            "config.ini",
            "unknown section [sshh]",
        ),
        (
            "ini unknown key",
            w("config.ini", &ini("number_of_conections = 3\n")),
            "config.ini",
            "unknown key `number_of_conections`",
        ),
        // Issue 14: a close known name is suggested, on the same one line.
        (
            "ini unknown key, close",
            w("config.ini", &ini("number_of_conections = 3\n")),
            "config.ini",
            "unknown key `number_of_conections`; did you mean `number_of_connections`?",
        ),
        (
            "ini unknown section, close",
            w("config.ini", &ini("[ssj]\n")),
            "config.ini",
            "unknown section [ssj]; did you mean [ssh]?",
        ),
        (
            "hosts unknown field, close",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "identity_fil": "k"}]"#,
            ),
            "connection_info.json",
            "unknown field `identity_fil`, expected one of",
        ),
        (
            "hosts unknown field, close hint",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "identity_fil": "k"}]"#,
            ),
            "connection_info.json",
            "; did you mean `identity_file`?",
        ),
        (
            "mapping post_sync not an array",
            w(
                MAP_FILE,
                r#"[{"src": "a", "dest": "/x", "post_sync": "systemctl reload nginx"}]"#,
            ),
            MAP_FILE,
            r#"post_sync must be an array of strings, like ["systemctl reload nginx"]"#,
        ),
        (
            "mapping unknown field, close",
            w(
                MAP_FILE,
                r#"[{"src": "a", "dest": "/x", "exlude": ["*.swp"]}]"#,
            ),
            MAP_FILE,
            "did you mean `exclude`?",
        ),
        (
            "ini negative",
            w("config.ini", "[DEFAULT]\nnumber_of_connections = -1\n"),
            "config.ini",
            "number_of_connections",
        ),
        (
            "ini zero",
            w("config.ini", "[DEFAULT]\nnumber_of_connections = 0\n"),
            "config.ini",
            "from 1 to 1024",
        ),
        (
            "ini huge",
            w(
                "config.ini",
                "[DEFAULT]\nnumber_of_connections = 99999999999999999999999\n",
            ),
            "config.ini",
            "from 1 to 1024",
        ),
        (
            "ini not a number",
            w("config.ini", "[DEFAULT]\nnumber_of_connections = four\n"),
            "config.ini",
            "not a whole number",
        ),
        (
            "ini bad policy",
            w("config.ini", &ini("[ssh]\nhost_key_policy = maybe\n")),
            "config.ini",
            "strict, accept-new, off",
        ),
        (
            "ini zero timeout",
            w("config.ini", &ini("[ssh]\nconnect_timeout = 0\n")),
            "config.ini",
            "connect_timeout",
        ),
        (
            "ini duplicate key",
            w("config.ini", &ini("log_path = other\n")),
            "config.ini",
            "set twice",
        ),
        (
            "ini broken header",
            w("config.ini", "[DEFAULT\nlog_path = x\n"),
            "config.ini",
            "config.ini:",
        ),
        (
            "ini empty value",
            w("config.ini", &ini("[ssh]\nknown_hosts =\n")),
            "config.ini",
            "known_hosts",
        ),
        (
            "hosts missing",
            Remove("connection_info.json"),
            "connection_info.json",
            "not found",
        ),
        (
            "hosts empty",
            w("connection_info.json", "  \n"),
            "connection_info.json",
            "empty",
        ),
        (
            "hosts bom",
            Write(
                "connection_info.json",
                [b"\xEF\xBB\xBF".as_slice(), HOSTS.as_bytes()].concat(),
            ),
            "connection_info.json",
            "byte order mark",
        ),
        (
            "hosts binary",
            Write(
                "connection_info.json",
                vec![0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00],
            ),
            "connection_info.json",
            "not",
        ),
        (
            "hosts 10MB",
            Write("connection_info.json", big(HOSTS)),
            "connection_info.json",
            "too large",
        ),
        (
            "hosts trailing comma",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u"},]"#,
            ),
            "connection_info.json",
            "trailing commas",
        ),
        (
            "hosts object not array",
            w(
                "connection_info.json",
                r#"{"ip_address": "127.0.0.2", "user": "u"}"#,
            ),
            "connection_info.json",
            "expected",
        ),
        (
            "hosts port as string",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "port": "22"}]"#,
            ),
            "connection_info.json",
            "field `port`",
        ),
        (
            "hosts negative port",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "port": -1}]"#,
            ),
            "connection_info.json",
            "field `port`",
        ),
        (
            "hosts huge port",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "port": 70000}]"#,
            ),
            "connection_info.json",
            "field `port`",
        ),
        (
            "hosts user number",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": 7}]"#,
            ),
            "connection_info.json",
            "field `user`",
        ),
        (
            "hosts missing user",
            w("connection_info.json", r#"[{"ip_address": "127.0.0.2"}]"#),
            "connection_info.json",
            "missing field `user`",
        ),
        (
            "hosts unknown field",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "pasword": "x"}]"#,
            ),
            "connection_info.json",
            "unknown field `pasword`",
        ),
        (
            "hosts duplicate ip",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u"}, {"ip_address": "127.0.0.2", "user": "v"}]"#,
            ),
            "connection_info.json",
            "twice",
        ),
        (
            "hosts invalid ip",
            w(
                "connection_info.json",
                r#"[{"ip_address": "300.1.1.1", "user": "u"}]"#,
            ),
            "connection_info.json",
            "not a valid IPv4",
        ),
        (
            "hosts both passkeys",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "passkey": "a", "passkey_env": "B"}]"#,
            ),
            "connection_info.json",
            "both passkey and passkey_env",
        ),
        (
            "hosts unset env",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "passkey_env": "HOSTSYNC_TEST_UNSET_VAR"}]"#,
            ),
            "connection_info.json",
            "HOSTSYNC_TEST_UNSET_VAR",
        ),
        (
            "hosts passphrase without key",
            w(
                "connection_info.json",
                r#"[{"ip_address": "127.0.0.2", "user": "u", "passphrase": "p"}]"#,
            ),
            "connection_info.json",
            "identity_file",
        ),
        (
            "mappings dir missing",
            Remove("mappings"),
            "mappings",
            "mappings folder",
        ),
        (
            "mapping unknown host",
            w("mappings/127.0.0.99.json", MAP),
            "127.0.0.99.json",
            "no host 127.0.0.99",
        ),
        ("mapping empty", w(MAP_FILE, ""), MAP_FILE, "empty"),
        (
            "mapping not array",
            w(MAP_FILE, r#"{"src": "a", "dest": "/b"}"#),
            MAP_FILE,
            "expected",
        ),
        (
            "mapping relative dest",
            w(MAP_FILE, r#"[{"src": "a", "dest": "srv/www"}]"#),
            MAP_FILE,
            "absolute",
        ),
        (
            "mapping root dest",
            w(MAP_FILE, r#"[{"src": "a", "dest": "/"}]"#),
            MAP_FILE,
            "root directory",
        ),
        (
            "mapping dotdot dest",
            w(MAP_FILE, r#"[{"src": "a", "dest": "/srv/../etc"}]"#),
            MAP_FILE,
            "..",
        ),
        (
            "mapping missing dest",
            w(MAP_FILE, r#"[{"src": "a"}]"#),
            MAP_FILE,
            "missing field `dest`",
        ),
        (
            "mapping src number",
            w(MAP_FILE, r#"[{"src": 1, "dest": "/x"}]"#),
            MAP_FILE,
            "field `src`",
        ),
        (
            "mapping unknown field",
            w(MAP_FILE, r#"[{"src": "a", "dest": "/x", "dst": "/y"}]"#),
            MAP_FILE,
            "unknown field `dst`",
        ),
        (
            "mapping trailing comma",
            w(MAP_FILE, r#"[{"src": "a", "dest": "/x"},]"#),
            MAP_FILE,
            "trailing commas",
        ),
        (
            "mapping binary",
            Write(MAP_FILE, b"\x00\x01\x02garbage\xff".to_vec()),
            MAP_FILE,
            "not",
        ),
    ]
}

#[test]
fn malformed_config_exits_2_with_one_line_naming_file_and_problem() {
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, edit, file, needle) in cases {
        let dir = Dir::new("badcfg");
        dir.write("config.ini", INI);
        dir.write("connection_info.json", HOSTS);
        dir.write(MAP_FILE, MAP);
        dir.mkdir("site");
        match edit {
            Write(f, bytes) => {
                dir.write(f, bytes);
            }
            Remove(f) => {
                let p = dir.join(f);
                if p.is_dir() {
                    std::fs::remove_dir_all(p).unwrap();
                } else {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
        let run = run_in(dir.path(), dir.path(), &["sync"]);
        let msg = run.stderr.trim_end();
        let ok = run.code == 2
            && msg.lines().count() == 1
            && msg.starts_with("hostsync: ")
            && msg.contains(file)
            && msg.contains(needle)
            && !msg.contains("panicked")
            && run.stdout.is_empty()
            && !dir.join("logs").exists();
        if !ok {
            failures.push(format!(
                "case {name:?} (want {file} / {needle:?}):\n{}",
                run.dump()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Issue 16: `[ssh] transfer` takes auto, gnu, sftp or posix; anything else is
/// one line naming config.ini, the key and the valid values, exit 2. The
/// `HOSTSYNC_TRANSFER` variable it replaced is no longer read: set, it is an
/// error saying what to do instead, never silently ignored.
#[test]
fn unknown_transfer_exits_2() {
    let dir = Dir::new("badtransfer");
    dir.write("config.ini", format!("{INI}\n[ssh]\ntransfer = rsync\n"));
    dir.write("connection_info.json", HOSTS);
    dir.write(MAP_FILE, MAP);
    dir.mkdir("site");
    let run = run_in(dir.path(), dir.path(), &["sync"]);
    assert_eq!(run.code, 2, "{}", run.dump());
    let line = run.stderr.trim_end();
    assert!(
        !line.contains('\n')
            && line.contains("config.ini")
            && line.contains("transfer")
            && line.contains("expected one of auto, gnu, sftp, posix"),
        "{}",
        run.dump()
    );
    dir.write("config.ini", INI);
    let vars = [("HOSTSYNC_TRANSFER", "tar")];
    let run = crate::util::hostsync::run_in_env(dir.path(), dir.path(), &["sync"], &vars);
    assert_eq!(run.code, 2, "{}", run.dump());
    assert_eq!(
        run.stderr.trim_end(),
        "hostsync: HOSTSYNC_TRANSFER is no longer read; unset it and set [ssh] transfer = auto, gnu, sftp or posix in config.ini",
        "{}",
        run.dump()
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = Dir::new("usage");
    let run = run_in(dir.path(), dir.path(), &["-c", "nope/config.ini", "sync"]);
    assert_eq!(run.code, 2, "{}", run.dump());
    assert!(
        run.stderr.contains("nope/config.ini: config.ini not found"),
        "{}",
        run.dump()
    );
    let run = run_in(dir.path(), dir.path(), &["frobnicate"]);
    assert_eq!(run.code, 2, "{}", run.dump());
    let run = run_in(dir.path(), dir.path(), &["--help"]);
    assert_eq!(run.code, 0, "{}", run.dump());
    assert!(run.stdout.contains("sync"), "{}", run.dump());
}

//! Issue 20 (from clone to fleet): the example configuration at the top of the
//! repository, `hostsync init`, `check --offline`, the man page, the installed
//! Debian package; and the `"disabled": true` host field of issue 14.
//!
//! No test here ever contacts the example's documentation addresses (192.0.2.x):
//! where a test needs the example's hosts enabled, it first rewrites them to
//! loopback listeners of its own, which also prove that nothing connected.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::util::hostsync::{Auth, Env, Run, run_in, run_in_env};
use crate::util::sshd::next_loopback_addr;
use crate::util::{Dir, test_user, wait_until};

/// The repository's top level, where the example lives.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file and folder below `dir` (relative path → mode and SHA-256 of the
/// content, or "dir"), for before/after comparisons.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.is_dir() {
                "dir".to_string()
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                let sum = Sha256::digest(&bytes);
                sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
            };
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            (rel, format!("{mode:o} {what}"))
        })
        .collect()
}

/// A TCP listener on a loopback address of its own that nothing should dial.
struct Untouched {
    /// The socket; never accepted from until [`Untouched::contacted`].
    listener: TcpListener,
    /// Its address.
    addr: String,
    /// Its port.
    port: u16,
}

impl Untouched {
    fn new() -> Untouched {
        let addr = next_loopback_addr();
        let listener = TcpListener::bind((addr.as_str(), 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        Untouched {
            listener,
            addr,
            port,
        }
    }

    /// Whether any connection reached it (a connection waits in the backlog).
    fn contacted(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept on {}:{}: {e}", self.addr, self.port),
        }
    }
}

/// Copies the top-level example into `dir/cfg`, with its hosts enabled and moved
/// to `listeners` (same order), mapping files renamed to match. Returns the folder.
fn example_on_loopback(dir: &Dir, listeners: &[&Untouched]) -> PathBuf {
    let cfg = dir.mkdir("cfg/mappings");
    let cfg = cfg.parent().unwrap().to_path_buf();
    std::fs::copy(repo().join("config.ini"), cfg.join("config.ini")).unwrap();
    let text = std::fs::read_to_string(repo().join("connection_info.json")).unwrap();
    let mut hosts: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(hosts.len(), listeners.len(), "{text}");
    for (h, l) in hosts.iter_mut().zip(listeners) {
        let old = h["ip_address"].as_str().unwrap().to_string();
        std::fs::copy(
            repo().join(format!("mappings/{old}.json")),
            cfg.join(format!("mappings/{}.json", l.addr)),
        )
        .unwrap();
        h["ip_address"] = json!(l.addr);
        h["port"] = json!(l.port);
        h.as_object_mut().unwrap().remove("disabled");
    }
    let hosts = serde_json::to_string_pretty(&hosts).unwrap();
    assert!(!hosts.contains("192.0.2."), "{hosts}");
    std::fs::write(cfg.join("connection_info.json"), hosts).unwrap();
    cfg
}

/// Runs the binary in `cwd` with HOME in the test folder and none of the
/// example's secret variables set.
fn run_clean(cwd: &Path, home: &Path, args: &[&str]) -> Run {
    // `env_remove` is not offered by run_in; an empty value would count as set.
    assert!(
        std::env::var_os("HOSTSYNC_PASSKEY").is_none(),
        "unset HOSTSYNC_PASSKEY before running the tests: the example names it"
    );
    run_in(cwd, home, args)
}

/// The example at the top of the repository passes `check --offline` as it is,
/// contacting nothing and writing nothing (not even the logs).
#[test]
fn the_top_level_example_passes_check_offline() {
    let home = Dir::new("example-home");
    let logs_before = tree(&repo().join("logs"));
    let run = run_clean(repo(), home.path(), &["check", "--offline"]);
    run.expect(0);
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{}", run.dump());
    for row in &rows[1..] {
        assert!(row.starts_with("192.0.2."), "{}", run.dump());
        assert!(
            row.ends_with("disabled: no command contacts it"),
            "{}",
            run.dump()
        );
    }
    assert!(!run.stderr.contains("warning:"), "{}", run.dump());
    run.expect_output("no host was contacted");
    assert_eq!(tree(&repo().join("logs")), logs_before, "{}", run.dump());
}

/// `init` writes exactly the top-level example (the same files, byte for byte,
/// and no other), and `check --offline` accepts what it wrote.
#[test]
fn init_writes_the_top_level_example_and_check_offline_accepts_it() {
    let dir = Dir::new("init");
    let run = run_clean(dir.path(), dir.path(), &["init", "fleet"]);
    run.expect(0);
    run.expect_output("Next:");
    run.expect_output("hostsync -c fleet/config.ini check --offline");
    let fleet = dir.join("fleet");
    let written = tree(&fleet);
    for entry in ["config.ini", "connection_info.json", "mappings", "logs"] {
        assert!(fleet.join(entry).exists(), "{entry}\n{}", dir.listing());
    }
    for path in written.keys().filter(|p| fleet.join(p).is_file()) {
        let mine = std::fs::read(fleet.join(path)).unwrap();
        let theirs = std::fs::read(repo().join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", repo().join(path).display()));
        assert!(
            mine == theirs,
            "{} differs from the example",
            path.display()
        );
    }
    // And nothing of the example is missing from what init wrote.
    for top in ["config.ini", "connection_info.json", "mappings", "logs"] {
        for e in walkdir::WalkDir::new(repo().join(top)) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(repo()).unwrap();
            let ignored = rel.starts_with("logs") && rel.extension().is_some_and(|x| x == "log");
            assert!(
                ignored || written.contains_key(rel),
                "{} is in the example but init did not write it",
                rel.display()
            );
        }
    }
    let check = run_clean(
        dir.path(),
        dir.path(),
        &["-c", "fleet/config.ini", "check", "--offline"],
    );
    check.expect(0);
    check.expect_output("2 host(s), 2 disabled, 2 mapping file(s)");
}

/// `init` over an existing configuration exits 2, names each entry that is in
/// the way, and changes nothing (checksums and modes before and after).
#[test]
fn init_over_existing_files_exits_2_and_changes_nothing() {
    let dir = Dir::new("init-again");
    run_clean(dir.path(), dir.path(), &["init"]).expect(0);
    dir.write("config.ini", "[DEFAULT]\nnumber_of_connections = 9\n");
    dir.write("mappings/127.0.0.9.json", "[]");
    let before = tree(dir.path());
    let run = run_clean(dir.path(), dir.path(), &["init"]);
    run.expect(2);
    for entry in ["config.ini", "connection_info.json", "mappings", "logs"] {
        run.expect_output(&format!(
            "./{entry}: already exists; hostsync init changed nothing"
        ));
    }
    assert_eq!(tree(dir.path()), before, "{}", run.dump());

    // One entry in the way is enough, and nothing else is created beside it.
    let other = Dir::new("init-logs");
    other.write("logs/keep.log", "mine\n");
    let before = tree(other.path());
    let run = run_clean(other.path(), other.path(), &["init", "."]);
    run.expect(2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.dump());
    run.expect_output("./logs: already exists");
    assert_eq!(tree(other.path()), before, "{}", run.dump());
}

/// With the example's hosts enabled: what depends on this machine (the unset
/// HOSTSYNC_PASSKEY, the missing srcs and key) is a warning under `--offline`
/// (exit 0), while a normal `check` keeps refusing the unset variable (exit 2).
/// Neither contacts the hosts.
#[test]
fn check_offline_warns_about_this_machine_and_contacts_nothing() {
    let dir = Dir::new("offline-warn");
    let (a, b) = (Untouched::new(), Untouched::new());
    let cfg = example_on_loopback(&dir, &[&a, &b]);
    let run = run_clean(&cfg, dir.path(), &["check", "--offline"]);
    run.expect(0);
    for l in [&a, &b] {
        let row = run
            .stdout
            .lines()
            .find(|r| r.starts_with(&format!("{} ", l.addr)));
        let cols: Vec<&str> = row.unwrap_or_default().split_whitespace().collect();
        assert_eq!(
            cols[..2],
            [l.addr.clone(), l.port.to_string()],
            "{}",
            run.dump()
        );
        assert_eq!(cols.last(), Some(&"ok"), "{}", run.dump());
    }
    run.expect_output(
        "passkey_env names the environment variable HOSTSYNC_PASSKEY, which is not set",
    );
    run.expect_output("identity_file");
    let missing_src = run
        .stderr
        .matches("src does not exist on this machine")
        .count();
    assert_eq!(missing_src, 6, "{}", run.dump());
    run.expect_output("2 host(s), 0 disabled, 2 mapping file(s); 8 warning(s)");
    assert!(
        !cfg.join("logs").exists(),
        "--offline wrote logs\n{}",
        dir.listing()
    );

    let strict = run_clean(&cfg, dir.path(), &["check"]);
    strict.expect(2);
    strict.expect_output("HOSTSYNC_PASSKEY, which is not set; export it before running hostsync");
    assert!(!a.contacted() && !b.contacted(), "a host was contacted");
}

/// A configuration error is the same exit 2 and the same message under
/// `check --offline` as under `sync`.
#[test]
fn check_offline_refuses_what_sync_refuses_with_the_same_message() {
    let dir = Dir::new("offline-errors");
    let (a, b) = (Untouched::new(), Untouched::new());
    let cfg = example_on_loopback(&dir, &[&a, &b]);
    let vars = [("HOSTSYNC_PASSKEY", "not-a-real-password")];
    let map = cfg.join(format!("mappings/{}.json", b.addr));
    for (file, text) in [
        (
            map.clone(),
            r#"[{"src": "site/", "dest": "srv/www"}]"#.to_string(),
        ),
        (
            map.clone(),
            r#"[{"src": "site/", "dest": "/srv", "exlude": []}]"#.to_string(),
        ),
        (
            cfg.join("config.ini"),
            "[DEFAULT]\nnumber_of_connections = 0\n".to_string(),
        ),
        (
            cfg.join("mappings/127.0.0.1.json"),
            r#"[{"src": "a", "dest": "/a"}]"#.to_string(),
        ),
    ] {
        let old = std::fs::read(&file).ok();
        std::fs::write(&file, &text).unwrap();
        let offline = run_in_env(&cfg, dir.path(), &["check", "--offline"], &vars);
        let sync = run_in_env(&cfg, dir.path(), &["sync"], &vars);
        offline.expect(2);
        sync.expect(2);
        assert_eq!(
            offline.stderr,
            sync.stderr,
            "{}\n{}",
            offline.dump(),
            sync.dump()
        );
        assert!(offline.stdout.is_empty(), "{}", offline.dump());
        match old {
            Some(old) => std::fs::write(&file, old).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
    }
    assert!(!a.contacted() && !b.contacted(), "a host was contacted");
}

/// `hostsync man` prints a roff page with a section per subcommand, the
/// configuration reference, exit codes and files, that `man` itself renders.
#[test]
fn man_prints_a_page_that_man_renders() {
    let dir = Dir::new("man");
    let run = run_in(dir.path(), dir.path(), &["man"]);
    run.expect(0);
    for head in [
        ".TH HOSTSYNC 1",
        ".SH \"HOSTSYNC SYNC\"",
        ".SH \"HOSTSYNC CHECK\"",
        ".SH \"HOSTSYNC INIT\"",
        ".SH CONFIGURATION",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
    ] {
        assert!(run.stdout.contains(head), "{head}\n{}", run.dump());
    }
    let page = dir.write("hostsync.1", &run.stdout);
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap_or_else(|e| panic!("cannot run man (Debian: apt-get install man-db): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "man -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "HOSTSYNC CHECK",
        "--offline",
        "retry_max_s = 30",
        "disabled",
    ] {
        assert!(
            text.contains(needle),
            "{needle} not in the rendered page:\n{text}"
        );
    }
}

/// Issue 14: a disabled host keeps its mapping file, and no command contacts
/// it or lists it; the other hosts work as before. `--host` naming it is a
/// usage error that says why.
#[test]
fn a_disabled_host_is_left_out_of_sync_dry_run_check_and_watch() {
    let mut env = Env::new("disabled");
    let on = env.sshd();
    let off = Untouched::new();
    env.add_host(&on, Auth::Key);
    env.add_host_raw(json!({
        "ip_address": off.addr, "user": test_user(), "port": off.port,
        "identity_file": env.key.private, "passkey_env": "HOSTSYNC_TEST_NEVER_SET",
        "disabled": true,
    }));
    env.src("site/index.html", "v1\n");
    let r_on = env.remote("on");
    let r_off = env.remote("off");
    env.map(
        &on.addr,
        json!([{"src": "site/", "dest": r_on.join("www")}]),
    );
    env.map(
        &off.addr,
        json!([{"src": "site/", "dest": r_off.join("www")}]),
    );

    let dry = env.run(&["sync", "--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stdout.contains(&format!("[+] {} ", on.addr)),
        "{}",
        dry.dump()
    );
    assert!(!dry.stdout.contains(&off.addr), "{}", dry.dump());

    let sync = env.run(&["sync"]);
    sync.expect(0);
    assert_eq!(sync.row(&on.addr).0, 1, "{}", sync.dump());
    assert!(!sync.stdout.contains(&off.addr), "{}", sync.dump());
    assert_eq!(
        std::fs::read_to_string(r_on.join("www/index.html")).unwrap(),
        "v1\n"
    );
    assert!(env.error_log().is_empty(), "{}", sync.dump());
    assert!(
        env.info_log().contains(&format!(
            "{}: disabled in connection_info.json; not contacted",
            off.addr
        )),
        "{}",
        sync.dump()
    );

    let check = env.run(&["check"]);
    check.expect(0);
    assert!(!check.stdout.contains(&off.addr), "{}", check.dump());
    assert_eq!(check.stdout.lines().count(), 2, "{}", check.dump());

    let named = env.run(&["sync", "--host", &off.addr]);
    named.expect(2);
    named.expect_output("this host is disabled in connection_info.json");

    let mut daemon = env.watch();
    assert!(
        daemon.output().contains("for 1 host(s)"),
        "{}",
        daemon.dump()
    );
    std::fs::write(env.cfg().join("site/index.html"), "v2\n").unwrap();
    wait_until(
        Duration::from_secs(20),
        "the change reaches the enabled host",
        || std::fs::read_to_string(r_on.join("www/index.html")).is_ok_and(|t| t == "v2\n"),
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.dump());

    assert!(!off.contacted(), "the disabled host was contacted");
    assert_eq!(std::fs::read_dir(&r_off).unwrap().count(), 0);
    assert!(
        env.cfg()
            .join(format!("mappings/{}.json", off.addr))
            .exists()
    );
}

/// Runs `program args` and returns its stdout; panics with everything on failure.
fn output_of(program: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Issue 20: the Debian package (which `.ci/run` builds with scripts/deb.sh and
/// installs with dpkg -i before the tests) installed this build: the binary, the
/// man page and completions this source generates, contrib's units pointed at
/// /usr/bin, and the example; postinst made the hostsync user and its log
/// folder and enabled nothing. Skipped only outside CI where no package is
/// installed; under CI a missing package fails.
#[test]
fn the_installed_debian_package_is_this_build() {
    let installed = std::process::Command::new("dpkg")
        .args(["-s", "hostsync"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must install the package before the tests (.ci/run: scripts/deb.sh, dpkg -i)"
        );
        eprintln!("SKIPPED: the hostsync package is not installed (scripts/deb.sh, then dpkg -i)");
        return;
    }
    let ours = env!("CARGO_BIN_EXE_hostsync");
    let status = String::from_utf8(output_of("dpkg", &["-s", "hostsync"])).unwrap();
    let want = format!("Version: {}-", env!("CARGO_PKG_VERSION"));
    assert!(status.contains(&want), "{want} not in\n{status}");
    assert_eq!(
        output_of("/usr/bin/hostsync", &["--version"]),
        output_of(ours, &["--version"])
    );
    let stale = "the installed package is not this build: run scripts/deb.sh and dpkg -i again";
    let page = output_of("zcat", &["/usr/share/man/man1/hostsync.1.gz"]);
    assert!(page == output_of(ours, &["man"]), "man page: {stale}");
    assert_eq!(
        String::from_utf8(output_of("man", &["-w", "hostsync"]))
            .unwrap()
            .trim(),
        "/usr/share/man/man1/hostsync.1.gz"
    );
    for (shell, path) in [
        ("bash", "/usr/share/bash-completion/completions/hostsync"),
        ("zsh", "/usr/share/zsh/vendor-completions/_hostsync"),
        ("fish", "/usr/share/fish/vendor_completions.d/hostsync.fish"),
    ] {
        let file = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            file == output_of(ours, &["completions", shell]),
            "{path}: {stale}"
        );
    }
    for unit in ["hostsync.service", "hostsync@.service"] {
        let path = format!("/usr/lib/systemd/system/{unit}");
        let packaged = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let contrib = std::fs::read_to_string(repo().join("contrib").join(unit)).unwrap();
        assert!(
            contrib.contains("ExecStart=/usr/local/bin/hostsync "),
            "{unit}"
        );
        assert_eq!(
            packaged,
            contrib.replace("/usr/local/bin/hostsync", "/usr/bin/hostsync"),
            "{path}: {stale}"
        );
        let wanted = Path::new("/etc/systemd/system/multi-user.target.wants").join(unit);
        assert!(!wanted.exists(), "{} is enabled", wanted.display());
    }
    for f in [
        "config.ini",
        "connection_info.json",
        "mappings/192.0.2.10.json",
    ] {
        let doc = Path::new("/usr/share/doc/hostsync/examples").join(f);
        let text = std::fs::read(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        assert!(
            text == std::fs::read(repo().join(f)).unwrap(),
            "{f}: {stale}"
        );
    }
    let example = "/usr/share/doc/hostsync/examples/config.ini";
    output_of("/usr/bin/hostsync", &["-c", example, "check", "--offline"]);
    let user = String::from_utf8(output_of("getent", &["passwd", "hostsync"])).unwrap();
    assert!(user.starts_with("hostsync:"), "{user}");
    let owner =
        String::from_utf8(output_of("stat", &["-c", "%U %a", "/var/log/hostsync"])).unwrap();
    assert_eq!(owner.trim(), "hostsync 750");
}

//! Issue 16's sftp tier against real servers: the SFTP-only account
//! (`ForceCommand internal-sftp`, `hostsync-sftp` from `util::foreign`), and the
//! plain OpenSSH host with `[ssh] transfer = sftp` forced. The cases: sync of
//! nested trees and single files (bytes, mode, mtime, symlinks, names with
//! spaces, quotes, `$(...)`, backquotes and a newline); a second sync sends
//! nothing; an exact `--dry-run`; delete, excludes and backups; `check` names
//! the tier; watch create, modify, rename and delete; a connection cut
//! mid-upload; two daemons mapped at each other; post_sync on an SFTP-only host
//! fails its mapping; a destination others can write is refused in one line.
//! The other tiers forced on plain OpenSSH (`posix`, `gnu`) pass a basic sync.
//!
//! Cases and helpers grew out of the `foreign` branch's draft (tests/foreign.rs).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::dir::{set_mtime, temporaries};
use crate::util::foreign::{
    ForeignUser, add_foreign_host, chown_tree, foreign_remote, sftp_only_sshd, sftp_user,
};
use crate::util::hostsync::{Auth, Daemon, Env, Run, start_daemon};
use crate::util::{Fault, Proxy, Sshd, wait_until};

/// How long a watched change may take to arrive (far above the real latency).
const ARRIVE: Duration = Duration::from_secs(20);

/// The kind of host a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// OpenSSH, `ForceCommand internal-sftp`, `[ssh] transfer` left at auto.
    SftpOnly,
    /// OpenSSH, the ordinary test user, `[ssh] transfer = sftp`.
    Sftp,
    /// OpenSSH, the ordinary test user, `[ssh] transfer = posix`.
    Posix,
    /// OpenSSH, the ordinary test user, `[ssh] transfer = gnu`.
    Gnu,
}

impl Kind {
    /// The tier `check` must name.
    fn tier(self) -> &'static str {
        match self {
            Kind::SftpOnly | Kind::Sftp => "sftp",
            Kind::Posix => "posix",
            Kind::Gnu => "gnu",
        }
    }

    /// How its batches go, as the `-v` line names it.
    fn way(self) -> &'static str {
        match self {
            Kind::SftpOnly | Kind::Sftp => "sftp",
            Kind::Posix => "tar",
            Kind::Gnu => "agent",
        }
    }

    /// Whether names with a newline are carried (the agent and SFTP do; the
    /// SCP sink's line records cannot, README "Names").
    fn newlines(self) -> bool {
        matches!(self, Kind::SftpOnly | Kind::Sftp | Kind::Gnu)
    }
}

/// One case's world: an [`Env`], its server, and the user hostsync logs in as.
struct World {
    env: Env,
    kind: Kind,
    server: Sshd,
    /// The login user; `None` for the ordinary test user.
    user: Option<&'static ForeignUser>,
    /// The address hostsync dials (the server's, or a proxy's).
    addr: String,
}

impl World {
    /// A server of `kind`, added to a fresh env as its one host.
    fn new(kind: Kind, name: &str) -> World {
        let mut w = World::unconnected(kind, name);
        let (addr, port) = (w.server.addr.clone(), w.server.port);
        w.add_host(&addr, port);
        w
    }

    /// Like [`World::new`], reached through a [`Proxy`] with `fault`.
    fn behind_proxy(kind: Kind, name: &str, fault: Fault) -> (World, Proxy) {
        let mut w = World::unconnected(kind, name);
        let proxy = Proxy::start(&w.server.addr, w.server.port, fault);
        w.add_host(&proxy.addr, proxy.port);
        (w, proxy)
    }

    fn unconnected(kind: Kind, name: &str) -> World {
        let mut env = Env::new(name);
        let (server, user) = match kind {
            Kind::SftpOnly => (sftp_only_sshd(env.dir.path()), Some(sftp_user())),
            _ => (env.sshd(), None),
        };
        if kind != Kind::SftpOnly {
            env.ini(&format!("transfer = {}\n", kind.tier()));
        }
        World {
            env,
            kind,
            server,
            user,
            addr: String::new(),
        }
    }

    /// Adds the host at `addr:port`, as the login user with its key.
    fn add_host(&mut self, addr: &str, port: u16) {
        let known = self.server.known_hosts_line_as(addr, port);
        match self.user {
            Some(user) => add_foreign_host(&mut self.env, addr, port, known, user),
            None if self.server.addr == addr && self.server.port == port => {
                self.env.add_host(&self.server, Auth::Key)
            }
            None => {
                self.env
                    .add_host_raw(json!({"ip_address": addr, "port": port,
                    "user": crate::util::test_user(), "identity_file": self.env.key.private}));
                self.env.trust(known);
            }
        }
        self.addr = addr.to_owned();
    }

    /// A destination folder the login user owns.
    fn remote(&self, name: &str) -> PathBuf {
        match self.user {
            Some(user) => foreign_remote(&self.env, user, name),
            None => self.env.remote(name),
        }
    }

    /// Gives `path` (and what is below it) to the login user.
    fn own(&self, path: &Path) {
        match self.user {
            Some(user) => chown_tree(path, user),
            None => {
                let rel = path.strip_prefix(self.env.dir.path()).unwrap();
                self.env.dir.chown_to_test_user(rel);
            }
        }
    }

    /// Writes a local source file under `cfg/` with `mode`.
    fn src(&self, rel: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.env.src(rel, body);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Runs hostsync.
    fn run(&self, args: &[&str]) -> Run {
        self.env.run(args)
    }

    /// A run's dump plus the remote folders and the server log, for failure messages.
    fn dump(&self, run: &Run) -> String {
        format!(
            "kind: {:?}\n{}\n{}--- server log\n{}",
            self.kind,
            run.dump(),
            self.env.dir.listing(),
            self.server.log()
        )
    }

    /// A daemon's dump plus the remote folders and the server log.
    fn dump_daemon(&self, d: &Daemon) -> String {
        format!(
            "kind: {:?}\n{}\n{}--- server log\n{}",
            self.kind,
            d.dump(),
            self.env.dir.listing(),
            self.server.log()
        )
    }
}

/// One test per host kind for a case.
macro_rules! cases {
    ($case:ident { $( $name:ident: $kind:ident; )* }) => {
        $(
            #[test]
            fn $name() {
                $case(Kind::$kind)
            }
        )*
    };
}

/// The site every sync case pushes: nested folders (one empty), modes, mtimes with
/// a fraction, a symlink, names with spaces, quotes, `$(...)` and backquotes; and a
/// single-file mapping. Returns the remote folder and the count of files and
/// symlinks.
fn hostile_site(w: &World, pwned: &str) -> (PathBuf, u64) {
    let r = w.remote("r");
    let files = [
        ("site/a/b/deep.txt", "deep\n", 0o640),
        ("site/with space.txt", "space\n", 0o644),
        ("site/it's \"quoted\".txt", "quotes\n", 0o600),
        (
            &format!("site/$(touch {pwned}).txt") as &str,
            "dollar\n",
            0o644,
        ),
        (
            &format!("site/`touch {pwned}`.sh") as &str,
            "#!/bin/sh\n",
            0o755,
        ),
    ];
    let mut files = files.to_vec();
    if w.kind.newlines() {
        files.push(("site/new\nline.txt", "newline\n", 0o644));
    }
    for (i, (rel, body, mode)) in files.iter().enumerate() {
        let p = w.src(rel, body, *mode);
        set_mtime(&p, 1_600_000_000 + i as u64 * 1000, 123_456_789);
    }
    w.env.dir.mkdir("cfg/site/empty");
    std::fs::set_permissions(
        w.env.cfg().join("site/empty"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::set_permissions(
        w.env.cfg().join("site/a"),
        std::fs::Permissions::from_mode(0o711),
    )
    .unwrap();
    std::os::unix::fs::symlink("a/b/deep.txt", w.env.cfg().join("site/link")).unwrap();
    let conf = w.src("conf/app.conf", "key = value\n", 0o600);
    set_mtime(&conf, 1_500_000_000, 0);
    w.env.map(
        &w.addr,
        json!([
            {"src": "site/", "dest": r.join("www")},
            {"src": "conf/app.conf", "dest": r.join("etc/app.conf")},
        ]),
    );
    (r, files.len() as u64 + 2)
}

/// What a path is, for comparing a local and a remote tree: kind, mode, size,
/// mtime in whole seconds, content or link target.
fn state(p: &Path) -> String {
    let md = p.symlink_metadata().unwrap();
    if md.file_type().is_symlink() {
        format!("link -> {}", std::fs::read_link(p).unwrap().display())
    } else if md.is_dir() {
        format!("dir {:o}", md.mode() & 0o7777)
    } else {
        format!(
            "file {:o} {} {} {:?}",
            md.mode() & 0o7777,
            md.len(),
            md.mtime(),
            String::from_utf8_lossy(&std::fs::read(p).unwrap())
        )
    }
}

/// Every path below `local` has its twin below `remote`, with the same [`state`].
fn assert_same_tree(local: &Path, remote: &Path, why: &dyn Fn() -> String) {
    for e in walkdir::WalkDir::new(local)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(local).unwrap();
        let twin = remote.join(rel);
        assert!(
            twin.symlink_metadata().is_ok(),
            "{} did not arrive\n{}",
            twin.display(),
            why()
        );
        assert_eq!(
            state(&twin),
            state(e.path()),
            "{} differs\n{}",
            rel.display(),
            why()
        );
    }
}

/// Nested trees and single files arrive byte-exact with mode and mtime; hostile
/// names run nothing on the remote; no temporary is left.
fn trees_and_files(kind: Kind) {
    let w = World::new(kind, "fg-tree");
    let pwned = format!("pwned-{}", std::process::id());
    let (r, _) = hostile_site(&w, &pwned);
    let run = w.run(&["-v", "sync"]);
    run.expect(0);
    let why = || w.dump(&run);
    assert_same_tree(&w.env.cfg().join("site"), &r.join("www"), &why);
    // The tier asked for is the one that served (README, "Logs": `over WAY`).
    let ways = crate::util::hostsync::ways(&w.env.info_log());
    assert!(
        !ways.is_empty() && ways.iter().all(|way| way == kind.way()),
        "{ways:?}\n{}",
        why()
    );
    assert_eq!(
        state(&r.join("etc/app.conf")),
        state(&w.env.cfg().join("conf/app.conf")),
        "{}",
        why()
    );
    for place in [r.clone(), r.join("www"), w.env.cfg()] {
        assert!(!place.join(&pwned).exists(), "a name ran\n{}", why());
    }
    assert!(temporaries(&r).is_empty(), "{}", why());
}

cases!(trees_and_files {
    sftp_only_trees_and_files_arrive_exact: SftpOnly;
    forced_sftp_trees_and_files_arrive_exact: Sftp;
    forced_posix_trees_and_files_arrive_exact: Posix;
    forced_gnu_trees_and_files_arrive_exact: Gnu;
});

/// A second sync finds everything up to date and sends nothing.
fn second_sync(kind: Kind) {
    let w = World::new(kind, "fg-again");
    let (_, count) = hostile_site(&w, "pwned-again");
    let first = w.run(&["sync"]);
    first.expect(0);
    assert_eq!(first.row(&w.addr).0, count, "{}", w.dump(&first));
    let again = w.run(&["sync"]);
    again.expect(0);
    assert_eq!(
        again.row(&w.addr),
        (0, count, 0, 0, 0),
        "the second sync sent something\n{}",
        w.dump(&again)
    );
}

cases!(second_sync {
    sftp_only_second_sync_sends_nothing: SftpOnly;
    forced_sftp_second_sync_sends_nothing: Sftp;
    forced_gnu_second_sync_sends_nothing: Gnu;
    forced_posix_second_sync_sends_nothing: Posix;
});

/// A snapshot of every path below `root` (kind, mode, size, mtime, content).
fn snapshot(root: &Path) -> String {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            format!("{} {}\n", e.path().display(), state(e.path()))
        })
        .collect()
}

/// `--dry-run` prints exactly `[M]`, `[+]` and `[-]` for what changed and changes
/// nothing; after the sync it prints nothing.
fn dry_run(kind: Kind) {
    let w = World::new(kind, "fg-dry");
    let r = w.remote("r");
    for rel in ["same.txt", "change.txt", "gone.txt", "sub/x.txt"] {
        w.src(&format!("site/{rel}"), rel, 0o644);
    }
    let www = r.join("www");
    w.env.map(
        &w.addr,
        json!([{"src": "site/", "dest": www, "delete": true}]),
    );
    w.run(&["sync"]).expect(0);
    w.src("site/change.txt", "new content, longer", 0o644);
    w.src("site/new.txt", "new", 0o644);
    w.src("site/newdir/inner.txt", "inner", 0o644);
    std::fs::remove_file(w.env.cfg().join("site/gone.txt")).unwrap();
    let before = snapshot(&r);
    let dry = w.run(&["sync", "--dry-run"]);
    dry.expect(0);
    let (a, p) = (&w.addr, |rel: &str| www.join(rel).display().to_string());
    let want = [
        format!("[M] {a} {} updated", p("change.txt")),
        format!("[-] {a} {} deleted", p("gone.txt")),
        format!("[+] {a} {} added", p("new.txt")),
        format!("[+] {a} {}/ added", p("newdir")),
        format!("[+] {a} {} added", p("newdir/inner.txt")),
    ];
    let got: Vec<&str> = dry.stdout.lines().collect();
    assert_eq!(got, want, "{}", w.dump(&dry));
    assert_eq!(snapshot(&r), before, "the dry run changed the remote");
    w.run(&["sync"]).expect(0);
    let none = w.run(&["sync", "--dry-run"]);
    none.expect(0);
    assert_eq!(none.stdout, "", "{}", w.dump(&none));
}

cases!(dry_run {
    sftp_only_dry_run_is_exact: SftpOnly;
    forced_sftp_dry_run_is_exact: Sftp;
});

/// Reads a file, "" when missing.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `"delete": true` removes what is gone locally (excluded paths and backups
/// stay), excluded paths are never sent, `backups` keeps exactly N versions.
fn delete_excludes_backups(kind: Kind) {
    let w = World::new(kind, "fg-parity");
    let r = w.remote("r");
    let www = r.join("www");
    for (rel, body) in [
        ("a.txt", "v1"),
        ("b.txt", "b"),
        ("skip.log", "log"),
        ("cache/c.bin", "c"),
        ("sub/s.txt", "s"),
    ] {
        w.src(&format!("site/{rel}"), body, 0o644);
    }
    w.env.map(
        &w.addr,
        json!([{"src": "site/", "dest": www, "delete": true, "backups": 2,
                "exclude": ["*.log", "cache/"]}]),
    );
    let first = w.run(&["sync"]);
    first.expect(0);
    assert!(read(&www.join("a.txt")) == "v1" && read(&www.join("sub/s.txt")) == "s");
    assert!(
        !www.join("skip.log").exists() && !www.join("cache").exists(),
        "{}",
        w.dump(&first)
    );
    std::fs::write(www.join("extra.txt"), "remote only").unwrap();
    std::fs::write(www.join("remote.log"), "excluded: stays").unwrap();
    w.own(&www);
    w.src("site/a.txt", "v2-longer", 0o644);
    std::fs::remove_file(w.env.cfg().join("site/b.txt")).unwrap();
    std::fs::remove_dir_all(w.env.cfg().join("site/sub")).unwrap();
    let second = w.run(&["sync"]);
    second.expect(0);
    let why = || w.dump(&second);
    assert_eq!(read(&www.join("a.txt")), "v2-longer", "{}", why());
    assert_eq!(read(&www.join("a.txt.1")), "v1", "{}", why());
    assert!(
        !www.join("b.txt").exists() && !www.join("sub").exists(),
        "{}",
        why()
    );
    assert!(!www.join("extra.txt").exists(), "{}", why());
    assert_eq!(
        read(&www.join("remote.log")),
        "excluded: stays",
        "{}",
        why()
    );
    for v in ["v3-longer!", "v4-longer!!"] {
        w.src("site/a.txt", v, 0o644);
        w.run(&["sync"]).expect(0);
    }
    let got = ["a.txt", "a.txt.1", "a.txt.2", "a.txt.3"].map(|n| read(&www.join(n)));
    assert_eq!(
        got,
        ["v4-longer!!", "v3-longer!", "v2-longer", ""],
        "{}",
        why()
    );
}

cases!(delete_excludes_backups {
    sftp_only_delete_excludes_and_backups: SftpOnly;
    forced_sftp_delete_excludes_and_backups: Sftp;
});

/// `check` has a TIER column right after AUTH (JSON `tier`) naming the tier that
/// serves the host.
fn check_tier(kind: Kind) {
    let w = World::new(kind, "fg-check");
    let r = w.remote("r");
    w.src("f.txt", "f", 0o644);
    w.env
        .map(&w.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let allowed: &[&str] = &[kind.tier()];
    let json = w.run(&["check", "--json"]);
    json.expect(0);
    let row: Value = json
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "check")
        .unwrap_or_else(|| panic!("no check object\n{}", w.dump(&json)));
    let tier = row["tier"].as_str().unwrap_or("<missing>");
    assert!(allowed.contains(&tier), "tier {tier}\n{}", w.dump(&json));
    let table = w.run(&["check"]);
    table.expect(0);
    let header: Vec<&str> = table
        .stdout
        .lines()
        .find(|l| l.starts_with("HOST "))
        .unwrap_or_else(|| panic!("no header\n{}", w.dump(&table)))
        .split_whitespace()
        .collect();
    let auth = header.iter().position(|c| *c == "AUTH").unwrap();
    assert_eq!(header.get(auth + 1), Some(&"TIER"), "{}", w.dump(&table));
    let line = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(w.addr.as_str()))
        .unwrap_or_else(|| panic!("no row\n{}", w.dump(&table)));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells.get(auth + 1), Some(&tier), "{}", w.dump(&table));
}

cases!(check_tier {
    sftp_only_check_names_the_tier: SftpOnly;
    forced_sftp_check_names_the_tier: Sftp;
    forced_posix_check_names_the_tier: Posix;
    forced_gnu_check_names_the_tier: Gnu;
});

/// `watch`: create, modify, rename and delete (with `"delete": true`) in a nested
/// tree arrive, and error.log stays empty.
fn watch_ops(kind: Kind) {
    let w = World::new(kind, "fg-watch");
    let r = w.remote("r");
    let www = r.join("www");
    w.src("site/a/old.txt", "old", 0o644);
    w.src("site/keep.txt", "keep", 0o644);
    w.env.map(
        &w.addr,
        json!([{"src": "site/", "dest": www, "delete": true}]),
    );
    let daemon = w.env.watch();
    let why = || w.dump_daemon(&daemon);
    wait_until(ARRIVE, "the initial reconcile", || {
        read(&www.join("a/old.txt")) == "old"
    });
    let site = w.env.cfg().join("site");
    std::fs::create_dir_all(site.join("a/b/c")).unwrap();
    std::fs::write(site.join("a/b/c/new.txt"), "new").unwrap();
    std::fs::write(site.join("keep.txt"), "changed").unwrap();
    std::fs::rename(site.join("a/old.txt"), site.join("a/renamed.txt")).unwrap();
    wait_until(ARRIVE, "create, modify and rename", || {
        read(&www.join("a/b/c/new.txt")) == "new"
            && read(&www.join("keep.txt")) == "changed"
            && read(&www.join("a/renamed.txt")) == "old"
            && !www.join("a/old.txt").exists()
    });
    std::fs::remove_file(site.join("keep.txt")).unwrap();
    std::fs::remove_dir_all(site.join("a/b")).unwrap();
    wait_until(ARRIVE, "the deletes", || {
        !www.join("keep.txt").exists() && !www.join("a/b").exists()
    });
    assert!(daemon.error_log().is_empty(), "{}", why());
}

cases!(watch_ops {
    sftp_only_watch_create_modify_rename_delete: SftpOnly;
    forced_sftp_watch_create_modify_rename_delete: Sftp;
});

/// A connection cut in the middle of a large upload keeps the old remote content;
/// the next run completes and leaves no temporary.
fn cut_mid_upload(kind: Kind) {
    let (w, proxy) = World::behind_proxy(kind, "fg-cut", Fault::CutAfter(4 * 1024 * 1024));
    let big: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    w.env.src("big.bin", &big);
    let r = w.remote("r");
    std::fs::write(r.join("big.bin"), b"old content").unwrap();
    w.own(&r);
    w.env.map(
        &w.addr,
        json!([{"src": "big.bin", "dest": r.join("big.bin")}]),
    );
    let cut = w.run(&["sync"]);
    cut.expect(1);
    assert_eq!(
        std::fs::read(r.join("big.bin")).unwrap(),
        b"old content",
        "{}",
        w.dump(&cut)
    );
    proxy.set_fault(Fault::None);
    let again = w.run(&["sync"]);
    again.expect(0);
    assert!(
        std::fs::read(r.join("big.bin")).unwrap() == big,
        "content differs after the second run\n{}",
        w.dump(&again)
    );
    assert!(temporaries(&r).is_empty(), "{}", w.dump(&again));
}

cases!(cut_mid_upload {
    sftp_only_cut_mid_upload_keeps_old_content: SftpOnly;
    forced_sftp_cut_mid_upload_keeps_old_content: Sftp;
});

/// Lines of info.log reporting a transfer to `dest`.
fn sends_to(info: &str, dest: &Path) -> usize {
    let needle = format!(" -> {} (", dest.display());
    info.lines()
        .filter(|l| l.contains(": sent ") && l.contains(&needle))
        .count()
}

/// The number `count` returns once it has stayed the same for 1.5 s (polled).
fn settled(what: &str, count: &dyn Fn() -> usize) -> usize {
    let mut last = (count(), std::time::Instant::now());
    wait_until(ARRIVE, what, || {
        let now = count();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(1500)
    });
    count()
}

/// Two daemons whose mappings point at each other's file (both through this
/// host) settle after one transfer per change instead of ping-ponging.
fn two_way(kind: Kind) {
    let w = World::new(kind, "fg-pingpong");
    let (a, b) = (w.remote("a"), w.remote("b"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for d in [&a, &b] {
        std::fs::write(d.join("f"), "same").unwrap();
        set_mtime(&d.join("f"), now - 100, 0);
    }
    w.own(&a);
    w.own(&b);
    w.env
        .map(&w.addr, json!([{"src": a.join("f"), "dest": b.join("f")}]));
    let da = w.env.watch();
    let cfg_b = w.env.dir.join("cfg-b");
    std::fs::create_dir_all(cfg_b.join("mappings")).unwrap();
    for f in ["config.ini", "connection_info.json", "known_hosts"] {
        std::fs::copy(w.env.cfg().join(f), cfg_b.join(f)).unwrap();
    }
    std::fs::write(
        cfg_b.join(format!("mappings/{}.json", w.addr)),
        json!([{"src": b.join("f"), "dest": a.join("f")}]).to_string(),
    )
    .unwrap();
    let db = start_daemon(&cfg_b, w.env.dir.path());
    let why = || format!("{}\n{}", w.dump_daemon(&da), db.dump());
    let total = || sends_to(&da.info_log(), &b.join("f")) + sends_to(&db.info_log(), &a.join("f"));
    let before = settled("the start-up settles", &total);
    std::fs::write(a.join("f"), "from a").unwrap();
    wait_until(ARRIVE, "a's change reaches b", || {
        read(&b.join("f")) == "from a"
    });
    let after_a = settled("a's change settles", &total);
    assert_eq!(after_a - before, 1, "one transfer expected\n{}", why());
    std::fs::write(b.join("f"), "from b!").unwrap();
    wait_until(ARRIVE, "b's change reaches a", || {
        read(&a.join("f")) == "from b!"
    });
    let after_b = settled("b's change settles", &total);
    assert_eq!(after_b - after_a, 1, "one transfer expected\n{}", why());
    assert!(
        da.error_log().is_empty() && db.error_log().is_empty(),
        "{}",
        why()
    );
}

cases!(two_way {
    sftp_only_two_way_does_not_ping_pong: SftpOnly;
    forced_sftp_two_way_does_not_ping_pong: Sftp;
});

/// post_sync needs a shell: on the SFTP-only account a mapping with it fails, in
/// one line naming why, and nothing of it is sent; the mapping without it is
/// served. See: issue 16.
#[test]
fn post_sync_on_sftp_only_fails_its_mapping() {
    let w = World::new(Kind::SftpOnly, "sftp-post");
    let r = w.remote("r");
    w.src("a/f.txt", "a", 0o644);
    w.src("b/g.txt", "b", 0o644);
    w.env.map(
        &w.addr,
        json!([
            {"src": "a/", "dest": r.join("a"), "post_sync": ["touch ran"]},
            {"src": "b/", "dest": r.join("b")},
        ]),
    );
    let run = w.run(&["sync"]);
    run.expect(1);
    let why = || w.dump(&run);
    assert_eq!(read(&r.join("b/g.txt")), "b", "{}", why());
    assert!(!r.join("a/f.txt").exists(), "{}", why());
    let errors = w.env.error_log();
    let lines: Vec<&str> = errors.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].contains("post_sync needs a shell")
            && lines[0].contains("serves only SFTP"),
        "{}",
        why()
    );
}

/// A destination that other users can write is refused with one line over
/// SFTP (it acts on paths, never relative to a checked folder: issue 13), on
/// the SFTP-only account and with `transfer = sftp`; nothing is written there,
/// `check` fails it with the same reason, and another mapping is served.
fn open_dest_refused(kind: Kind) {
    let w = World::new(kind, "sftp-open");
    let r = w.remote("r");
    let open = r.join("open");
    std::fs::create_dir(&open).unwrap();
    w.own(&open);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    w.src("site/f.txt", "f", 0o644);
    w.env.map(
        &w.addr,
        json!([
            {"src": "site/", "dest": open},
            {"src": "site/", "dest": r.join("safe")},
        ]),
    );
    let run = w.run(&["sync"]);
    run.expect(1);
    let why = || w.dump(&run);
    assert!(!open.join("f.txt").exists(), "{}", why());
    assert_eq!(read(&r.join("safe/f.txt")), "f", "{}", why());
    let errors = w.env.error_log();
    let lines: Vec<&str> = errors.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].contains("other users can write"),
        "{}",
        why()
    );
    let check = w.run(&["check"]);
    check.expect(1);
    assert!(
        check.stdout.contains("other users can write there"),
        "{}",
        w.dump(&check)
    );
}

cases!(open_dest_refused {
    sftp_only_open_dest_is_refused_in_one_line: SftpOnly;
    forced_sftp_open_dest_is_refused_in_one_line: Sftp;
});

/// A host that runs no command and has no SFTP subsystem (every request runs
/// `ForceCommand /bin/false`): `check` fails it and `sync` fails it, each with
/// one line saying there is no shell and no SFTP subsystem.
#[test]
fn no_shell_and_no_sftp_fails_check_and_sync_in_one_line() {
    let mut env = Env::new("sftp-none");
    let mut h = env.sshd();
    h.restart_with_config("ForceCommand /bin/false");
    env.add_host(&h, Auth::Key);
    let r = env.remote("r");
    env.src("f.txt", "f");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let check = env.run(&["check"]);
    check.expect(1);
    assert!(
        check.stdout.contains("no shell and no SFTP subsystem"),
        "{}",
        check.dump()
    );
    let sync = env.run(&["sync"]);
    sync.expect(1);
    let errors = env.error_log();
    let lines: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("no shell and no SFTP subsystem"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one for check, one for sync\n{}",
        sync.dump()
    );
    assert!(!r.join("f.txt").exists());
}

/// What one watched change costs: 20 changes of a 10-byte file, each from the
/// write to the new content at the destination (polled every 0.2 ms). On the
/// SFTP-only account the session's SFTP channel stays open (no remote process
/// per change); with `transfer = gnu`, for comparison, each change is one agent
/// exec. Every change must arrive; the medians are printed for BENCHMARKS.md
/// (`-- --nocapture --test-threads 1`). See: issue 16, "Watch latency".
fn watch_latency(kind: Kind) {
    let w = World::new(kind, "sftp-lat");
    let r = w.remote("r");
    let f = w.src("site/f.txt", "start-0000", 0o644);
    w.env
        .map(&w.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let daemon = w.env.watch();
    let dest = r.join("www/f.txt");
    wait_until(ARRIVE, "the initial reconcile", || {
        read(&dest) == "start-0000"
    });
    let mut took = Vec::new();
    for i in 0..20 {
        let body = format!("change-{i:03}");
        let start = std::time::Instant::now();
        std::fs::write(&f, &body).unwrap();
        while read(&dest) != body {
            assert!(
                start.elapsed() < ARRIVE,
                "change {i} did not arrive\n{}",
                w.dump_daemon(&daemon)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        took.push(start.elapsed());
    }
    took.sort();
    eprintln!(
        "{kind:?} watch, write to arrival: p50 {:.2} ms, p90 {:.2} ms",
        took[10].as_secs_f64() * 1e3,
        took[18].as_secs_f64() * 1e3
    );
    assert!(daemon.error_log().is_empty(), "{}", w.dump_daemon(&daemon));
}

cases!(watch_latency {
    sftp_only_watch_change_arrives_and_its_latency_is_printed: SftpOnly;
    forced_gnu_watch_change_arrives_and_its_latency_is_printed: Gnu;
});

/// `check` over SFTP tells a destination the login cannot write (nor make) from
/// one it can, as the shell's probe does: a dest below a folder root owns fails
/// with the reason, `sync` fails it too, and the writable one is counted.
#[test]
fn sftp_only_check_tells_an_unwritable_dest() {
    let w = World::new(Kind::SftpOnly, "sftp-ro");
    let r = w.remote("r");
    let locked = r.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.src("site/f.txt", "f", 0o644);
    w.env.map(
        &w.addr,
        json!([
            {"src": "site/", "dest": locked.join("www")},
            {"src": "site/", "dest": r.join("ok")},
        ]),
    );
    let check = w.run(&["check", "--json"]);
    check.expect(1);
    let row: Value = check
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "check")
        .unwrap_or_else(|| panic!("no check object\n{}", w.dump(&check)));
    let problems = row["problems"].to_string();
    assert!(
        row["writable"] == 1
            && row["tier"] == "sftp"
            && problems.contains("permission denied on the remote")
            && problems.contains(&locked.display().to_string()),
        "{}",
        w.dump(&check)
    );
    let sync = w.run(&["sync"]);
    sync.expect(1);
    assert_eq!(read(&r.join("ok/f.txt")), "f", "{}", w.dump(&sync));
    assert!(!locked.join("www").exists(), "{}", w.dump(&sync));
}

/// SIGTERM while a large file is in flight over SFTP: the upload stops between
/// two chunks, the daemon exits 0 within 5 s, the temporary is removed and the
/// destination never appears. The host is behind a proxy that passes 1 MiB/s,
/// so the 64 MiB file is surely still in flight when the signal comes.
#[test]
fn sftp_only_sigterm_mid_upload_exits_cleanly_without_temporaries() {
    let (w, _proxy) = World::behind_proxy(
        Kind::SftpOnly,
        "sftp-term",
        Fault::Slow {
            bytes_per_sec: 1 << 20,
        },
    );
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    w.env.src("big.bin", &big);
    let r = w.remote("r");
    w.env.map(
        &w.addr,
        json!([{"src": "big.bin", "dest": r.join("big.bin")}]),
    );
    let mut daemon = w.env.watch();
    let sizes = || {
        std::fs::read_dir(&r)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".hostsync-tmp.")
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .collect::<Vec<u64>>()
    };
    wait_until(ARRIVE, "upload in flight", || {
        sizes().iter().any(|&n| n > 256 << 10)
    });
    let (code, took) = daemon.terminate();
    let why = || w.dump_daemon(&daemon);
    assert_eq!(code, Some(0), "{}", why());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}\n{}",
        why()
    );
    wait_until(Duration::from_secs(3), "no temporary left", || {
        sizes().is_empty()
    });
    assert!(!r.join("big.bin").exists(), "{}", why());
}

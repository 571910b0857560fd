//! Issue 16, the shell way of serving a host (the posix tier) on any POSIX sh +
//! BusyBox host: the issue's test list against a BusyBox-only login behind
//! OpenSSH (`busybox_*`) and behind Dropbear (`dropbear_*`: no SFTP subsystem, and
//! it ends the session on an exec command over about 9000 bytes), both from
//! `util::foreign`: no GNU find, no GNU tar, no perl; OpenSSH's `scp` is the sink.
//! The cases: sync of nested trees and single files (bytes, mode, mtime, a
//! symlink, names with spaces, quotes, `$(...)` and backquotes); a second sync
//! sends nothing; an exact `--dry-run`; delete, excludes and backups; watch
//! create, modify, rename and delete; a connection cut mid-upload; two daemons
//! mapped at each other; a destination others can write (issue 13's rule, whose
//! owner checks use `stat -c` there). A name with a newline cannot go (the SCP
//! sink's records are lines): one error line (`*_newline_name_is_one_error_line`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::util::dir::{set_mtime, temporaries};
use crate::util::foreign::{
    Dropbear, ForeignUser, add_foreign_host, busybox_sshd, busybox_user, chown_tree, foreign_remote,
};
use crate::util::hostsync::{Daemon, Env, Run, start_daemon};
use crate::util::{Fault, Proxy, Sshd, wait_until};

/// How long a watched change may take to arrive (far above the real latency).
const ARRIVE: Duration = Duration::from_secs(20);

/// The kind of host a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// OpenSSH, the BusyBox-only login.
    BusyBox,
    /// Dropbear, the BusyBox-only login, no SFTP subsystem.
    Dropbear,
}

/// The server of one case.
enum Server {
    /// An OpenSSH sshd.
    Open(Sshd),
    /// A Dropbear sshd.
    Bear(Dropbear),
}

impl Server {
    fn addr(&self) -> &str {
        match self {
            Server::Open(s) => &s.addr,
            Server::Bear(s) => &s.addr,
        }
    }

    fn port(&self) -> u16 {
        match self {
            Server::Open(s) => s.port,
            Server::Bear(s) => s.port,
        }
    }

    fn known_hosts_line_as(&self, addr: &str, port: u16) -> String {
        match self {
            Server::Open(s) => s.known_hosts_line_as(addr, port),
            Server::Bear(s) => s.known_hosts_line_as(addr, port),
        }
    }

    fn log(&self) -> String {
        match self {
            Server::Open(s) => s.log(),
            Server::Bear(s) => s.log(),
        }
    }
}

/// One case's world: an [`Env`], its server, and the user hostsync logs in as.
struct World {
    /// The server, dropped first, so its log is printed before `env`'s folder goes.
    server: Server,
    env: Env,
    kind: Kind,
    /// The login user (BusyBox's).
    user: &'static ForeignUser,
    /// The address hostsync dials (the server's, or a proxy's).
    addr: String,
}

impl World {
    /// A server of `kind`, added to a fresh env as its one host.
    fn new(kind: Kind, name: &str) -> World {
        let mut w = World::unconnected(kind, name);
        let (addr, port) = (w.server.addr().to_owned(), w.server.port());
        w.add_host(&addr, port);
        w
    }

    /// Like [`World::new`], reached through a [`Proxy`] with `fault`.
    fn behind_proxy(kind: Kind, name: &str, fault: Fault) -> (World, Proxy) {
        let mut w = World::unconnected(kind, name);
        let proxy = Proxy::start(w.server.addr(), w.server.port(), fault);
        w.add_host(&proxy.addr, proxy.port);
        (w, proxy)
    }

    fn unconnected(kind: Kind, name: &str) -> World {
        let env = Env::new(name);
        let server = match kind {
            Kind::BusyBox => Server::Open(busybox_sshd(env.dir.path())),
            Kind::Dropbear => Server::Bear(Dropbear::start(env.dir.path())),
        };
        let user = busybox_user();
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
        add_foreign_host(&mut self.env, addr, port, known, self.user);
        self.addr = addr.to_owned();
    }

    /// A destination folder the login user owns.
    fn remote(&self, name: &str) -> PathBuf {
        foreign_remote(&self.env, self.user, name)
    }

    /// Gives `path` (and what is below it) to the login user.
    fn own(&self, path: &Path) {
        chown_tree(path, self.user)
    }

    /// The login user's home directory (where a remote command would start).
    fn home(&self) -> PathBuf {
        self.user.home.clone()
    }

    /// Writes a local source file under `cfg/` with `mode`.
    fn src(&self, rel: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.env.src(rel, body);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Runs hostsync; on a failing assertion `dump` says everything.
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

/// One test per host kind for a case, each with its own attributes.
macro_rules! cases {
    ($case:ident { $( $(#[$attr:meta])* $name:ident: $kind:ident; )* }) => {
        $(
            #[test]
            $(#[$attr])*
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
    let run = w.run(&["sync"]);
    run.expect(0);
    let why = || w.dump(&run);
    assert_same_tree(&w.env.cfg().join("site"), &r.join("www"), &why);
    assert_eq!(
        state(&r.join("etc/app.conf")),
        state(&w.env.cfg().join("conf/app.conf")),
        "{}",
        why()
    );
    for place in [w.home(), r.clone(), r.join("www"), w.env.cfg()] {
        assert!(!place.join(&pwned).exists(), "a name ran\n{}", why());
    }
    assert!(temporaries(&r).is_empty(), "{}", why());
}

cases!(trees_and_files {
    busybox_trees_and_files_arrive_exact: BusyBox;
    dropbear_trees_and_files_arrive_exact: Dropbear;
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
    busybox_second_sync_sends_nothing: BusyBox;
    dropbear_second_sync_sends_nothing: Dropbear;
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
    busybox_dry_run_is_exact: BusyBox;
    dropbear_dry_run_is_exact: Dropbear;
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
    busybox_delete_excludes_and_backups: BusyBox;
    dropbear_delete_excludes_and_backups: Dropbear;
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
    busybox_watch_create_modify_rename_delete: BusyBox;
    dropbear_watch_create_modify_rename_delete: Dropbear;
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
    busybox_cut_mid_upload_keeps_old_content: BusyBox;
    dropbear_cut_mid_upload_keeps_old_content: Dropbear;
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
    busybox_two_way_does_not_ping_pong: BusyBox;
    dropbear_two_way_does_not_ping_pong: Dropbear;
});

/// A name with a newline cannot go through the SCP sink (its records are lines):
/// that file fails with one error line, its siblings arrive, nothing is left.
fn newline_name(kind: Kind) {
    let w = World::new(kind, "fg-newline");
    let r = w.remote("r");
    w.src("tree/good.txt", "good", 0o644);
    w.src("tree/bad\nname.txt", "bad", 0o644);
    w.env
        .map(&w.addr, json!([{"src": "tree/", "dest": r.join("t")}]));
    let run = w.run(&["sync"]);
    run.expect(1);
    let why = || w.dump(&run);
    assert_eq!(read(&r.join("t/good.txt")), "good", "{}", why());
    let names: Vec<_> = std::fs::read_dir(r.join("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["good.txt"], "{}", why());
    let errors = w.env.error_log();
    let lines: Vec<&str> = errors.lines().filter(|l| l.contains("newline")).collect();
    assert_eq!(lines.len(), 1, "{}", why());
    assert!(
        lines[0].contains("the name contains a newline, which the SCP protocol cannot carry"),
        "{}",
        why()
    );
}

cases!(newline_name {
    busybox_newline_name_is_one_error_line: BusyBox;
    dropbear_newline_name_is_one_error_line: Dropbear;
});

/// Issue 13's rule on these hosts, whose owner and mode checks use `stat -c`: a
/// destination others can write is refused by `sync` in one line and nothing is
/// written there; `check` fails naming it; both are fine once it is 0755.
fn open_destination(kind: Kind) {
    let w = World::new(kind, "fg-open");
    let www = w.remote("r").join("www");
    std::fs::create_dir_all(&www).unwrap();
    w.own(&www);
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o777)).unwrap();
    w.src("site/a.txt", "a", 0o644);
    w.env.map(&w.addr, json!([{"src": "site/", "dest": www}]));
    let run = w.run(&["sync"]);
    run.expect(1);
    let refusals = w
        .env
        .error_log()
        .lines()
        .filter(|l| l.contains("other users can write where this mapping writes"))
        .count();
    assert_eq!(refusals, 1, "{}", w.dump(&run));
    assert!(!www.join("a.txt").exists(), "{}", w.dump(&run));
    let check = w.run(&["check"]);
    check.expect(1);
    assert!(
        check.stdout.contains("mode 777") && check.stdout.contains("has no perl"),
        "{}",
        w.dump(&check)
    );
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.run(&["check"]).expect(0);
    let ok = w.run(&["sync"]);
    ok.expect(0);
    assert_eq!(read(&www.join("a.txt")), "a", "{}", w.dump(&ok));
}

cases!(open_destination {
    busybox_open_destination_is_refused: BusyBox;
    dropbear_open_destination_is_refused: Dropbear;
});

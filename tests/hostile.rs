//! Issue 13: hostsync in hostile places, against real sshd. An unprivileged user
//! (`hostsync-a`, the attacker) owns destinations or their parents, plants links,
//! swaps directories while a sync runs, and a lying server floods or trickles.
//! The files that must never change belong to the login user (`hostsync-t`), in a
//! folder only it can write: whatever hostsync writes through a planted link lands
//! there first. In every case nothing outside dest changes, no secret leaves this
//! machine, the outcome is ok or a clear one-line refusal, nothing hangs, and no
//! raw control character reaches the terminal or a log.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::util::hostsync::{Auth, Env, Run, run_bounded};
use crate::util::{attacker_ids, root_or_skip};

/// The login user's files outside dest, which nothing may change: name, content.
struct Victim {
    dir: PathBuf,
    files: Vec<(String, String)>,
}

impl Victim {
    /// A 0700 folder of the login user with four 0600 files.
    fn new(env: &Env, name: &str) -> Victim {
        let dir = env.remote(name);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let files: Vec<(String, String)> = ["a", "b", "c", "d"]
            .iter()
            .map(|f| (f.to_string(), format!("victim {f}\n")))
            .collect();
        for (f, body) in &files {
            std::fs::write(dir.join(f), body).unwrap();
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        env.dir.chown_to_test_user(Path::new("remote").join(name));
        Victim { dir, files }
    }

    /// Fails unless every file is as made and nothing was added.
    fn intact(&self, context: &str) {
        for (f, body) in &self.files {
            let p = self.dir.join(f);
            let md =
                std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{f}: {e}\n{context}"));
            assert!(
                md.file_type().is_file(),
                "{f} is no longer a file\n{context}"
            );
            assert_eq!(
                &std::fs::read_to_string(&p).unwrap(),
                body,
                "{f} changed\n{context}"
            );
            assert_eq!(md.mode() & 0o7777, 0o600, "{f}'s mode changed\n{context}");
        }
        let added: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| !self.files.iter().any(|(f, _)| e.file_name() == f.as_str()))
            .map(|e| describe(&e.path()))
            .collect();
        assert!(
            added.is_empty(),
            "files were added to {}: {added:?}\n{context}",
            self.dir.display()
        );
    }
}

/// `path`'s name, type, owner and (for a link) target: who made an added entry.
fn describe(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => {
            let to = std::fs::read_link(path).unwrap_or_default();
            format!("{name}: a symlink of uid {} to {}", md.uid(), to.display())
        }
        Ok(md) => format!(
            "{name}: {} of uid {}, mode {:o}",
            if md.is_dir() { "a directory" } else { "a file" },
            md.uid(),
            md.mode() & 0o7777
        ),
        Err(e) => format!("{name}: {e}"),
    }
}

/// `path` (a new directory, or what is there) owned by the attacker with `mode`.
fn attacker_dir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    own(path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// Makes the calling thread act as the attacker (groups, gid, uid). The raw system
/// calls change only this thread's credentials, where libc's wrappers would change
/// every thread's, the test's own included.
fn become_attacker() {
    let (uid, gid) = attacker_ids();
    // SAFETY: system calls with integer arguments and a null, zero-length list.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
    }
}

/// As the attacker, until `stop`: swaps directory `name` in `dir` for a link to
/// `target` and back, again and again; how many times. Acts on `dir` held open, so
/// on the real directory even while another swapper has a link at its path.
/// Should `name` be made again meanwhile (hostsync makes what is missing), the
/// swapped-out copy is set aside under another name and the swapping goes on.
fn swap_for_a_link(dir: &Dir, name: &str, target: &Path, stop: &AtomicBool) -> u64 {
    become_attacker();
    let orig = format!("{name}.orig");
    let mut swaps = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if dir.is_dir(name) && dir.rename(name, &orig) {
            swaps += u64::from(dir.symlink(target, name));
            std::thread::yield_now();
            dir.unlink(name);
            if !dir.rename(&orig, name) {
                dir.rename(&orig, &format!("{name}.aside{swaps}"));
            }
        }
        std::thread::yield_now();
    }
    swaps
}

/// A directory held open, acted on by the names in it (the `*at` system calls).
struct Dir(std::fs::File);

impl Dir {
    /// Opens `path` (by the test, before a thread becomes the attacker).
    fn open(path: &Path) -> Dir {
        Dir(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn fd(&self) -> libc::c_int {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// Whether `name` is a directory (not a link to one).
    fn is_dir(&self, name: &str) -> bool {
        let n = c_name(name.as_bytes());
        // SAFETY: all-zero bytes are a valid `stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a `stat` buffer of the right type.
        let r = unsafe { libc::fstatat(self.fd(), n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Renames `from` to `to`; whether that was done.
    fn rename(&self, from: &str, to: &str) -> bool {
        let (f, t) = (c_name(from.as_bytes()), c_name(to.as_bytes()));
        // SAFETY: valid C strings.
        unsafe { libc::renameat(self.fd(), f.as_ptr(), self.fd(), t.as_ptr()) == 0 }
    }

    /// Makes `name` a link to `target`; whether that was done.
    fn symlink(&self, target: &Path, name: &str) -> bool {
        let (t, n) = (
            c_name(target.as_os_str().as_bytes()),
            c_name(name.as_bytes()),
        );
        // SAFETY: valid C strings.
        unsafe { libc::symlinkat(t.as_ptr(), self.fd(), n.as_ptr()) == 0 }
    }

    /// Removes the file or link `name`; whether that was done.
    fn unlink(&self, name: &str) -> bool {
        let n = c_name(name.as_bytes());
        // SAFETY: a valid C string.
        unsafe { libc::unlinkat(self.fd(), n.as_ptr(), 0) == 0 }
    }
}

/// `b` as a C string (names here hold no NUL).
fn c_name(b: &[u8]) -> std::ffi::CString {
    std::ffi::CString::new(b).unwrap()
}

/// Hands `path` (not following a link) to the attacker.
fn own(path: &Path) {
    let (uid, gid) = attacker_ids();
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// The temporary name an older hostsync used for `name` (FNV-1a of it): what an
/// attacker could predict and plant before.
fn old_tmp_name(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!(".hostsync-tmp.{h:016x}")
}

/// hostsync's own temporaries below `dir`: `.hostsync-tmp.CLIENT.RUN.*` names.
fn own_temporaries(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().to_path_buf())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let parts: Vec<&[u8]> = n.split(|&b| b == b'.').collect();
            n.starts_with(b".hostsync-tmp.")
                && parts.len() >= 5
                && parts[2].len() == 8
                && parts[3].len() == 16
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// Fails if a log line or the output holds a raw control character.
fn no_raw_controls(env: &Env, run: &Run) {
    let raw = |s: &str| s.chars().any(|c| c.is_control() && c != '\n');
    for (what, text) in [
        ("stdout", run.stdout.clone()),
        ("stderr", run.stderr.clone()),
        ("info.log", env.info_log()),
        ("error.log", env.error_log()),
    ] {
        assert!(
            !raw(&text),
            "a raw control character in {what}\n{}",
            run.dump()
        );
    }
}

/// Finding 1 and 3: links planted at every name hostsync uses (dest itself, its
/// backups, an older version's predictable temporaries), a FIFO and a directory at
/// temporary names: nothing is written through them, on the agent's way; the ways
/// of hosts without perl refuse a destination others can write.
#[test]
fn planted_links_at_every_name_are_never_written_through() {
    if !root_or_skip("an attacker user owns the destination") {
        return;
    }
    let mut env = Env::new("planted");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let r = env.remote("r");
    let victim = Victim::new(&env, "victim");
    let site = attacker_dir(&r.join("site"), 0o777);
    let plant = |name: &str, target: &str| {
        let at = site.join(name);
        std::os::unix::fs::symlink(victim.dir.join(target), &at).unwrap();
        own(&at);
    };
    plant("conf.txt", "a");
    plant("conf.txt.1", "b");
    plant("conf.txt.2", "c");
    plant(&old_tmp_name("conf.txt"), "d");
    let fifo = site.join(old_tmp_name("other.txt"));
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    own(&fifo);
    attacker_dir(&site.join(old_tmp_name("third.txt")), 0o777);
    env.src("site/conf.txt", "new 1\n");
    env.src("site/other.txt", "other\n");
    env.src("site/third.txt", "third\n");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": site, "backups": 2}]),
    );

    let run = env.run(&["-v", "sync"]);
    run.expect(0);
    victim.intact(&run.dump());
    let conf = site.join("conf.txt");
    assert!(
        std::fs::symlink_metadata(&conf).unwrap().is_file(),
        "{}",
        env.dir.listing()
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "new 1\n");
    assert_eq!(
        std::fs::read_to_string(site.join("other.txt")).unwrap(),
        "other\n"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("third.txt")).unwrap(),
        "third\n"
    );
    // The backups rotate through the planted links, never through their targets.
    let conf_src = env.src("site/conf.txt", "new 2\n");
    // Another second than the first version's: the quick check sees the change.
    let later = std::time::SystemTime::now() + Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(&conf_src)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let again = env.run(&["-v", "sync"]);
    again.expect(0);
    victim.intact(&again.dump());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "new 2\n");
    assert_eq!(
        std::fs::read_to_string(site.join("conf.txt.1")).unwrap(),
        "new 1\n"
    );
    assert!(own_temporaries(&r).is_empty(), "{:?}", own_temporaries(&r));
    no_raw_controls(&env, &again);

    // Hosts without perl: a destination others can write is refused, in one line.
    env.src("site/conf.txt", "new 3\n");
    for way in ["tar", "scp"] {
        let run = env.run_way(&["sync"], way);
        run.expect(1);
        let refusal = env
            .error_log()
            .lines()
            .filter(|l| l.contains("other users can write where this mapping writes"))
            .count();
        assert!(refusal >= 1, "{way}: no refusal\n{}", run.dump());
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "new 2\n", "{way}");
        victim.intact(&run.dump());
    }
    assert!(own_temporaries(&r).is_empty(), "{:?}", own_temporaries(&r));
}

/// Findings 1 and 2: while syncs of 500 files with `"delete": true` run, one thread
/// of the attacker keeps swapping the dest root for a link to the victim's folder,
/// another keeps swapping a subdirectory of dest. Nothing outside dest changes;
/// each run is ok or refuses in one line; once the swapping stops, a run completes.
#[test]
fn swapping_the_dest_root_or_a_subdirectory_never_reaches_outside() {
    if !root_or_skip("an attacker user owns the destination's parent") {
        return;
    }
    let mut env = Env::new("swaps");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let r = env.remote("r");
    let victim = Victim::new(&env, "victim");
    let parent = attacker_dir(&r.join("parent"), 0o777);
    let site = attacker_dir(&parent.join("site"), 0o777);
    for i in 0..500 {
        env.src(&format!("tree/d{}/f{i}", i % 10), format!("{i}\n"));
    }
    // Extraneous remote files that `"delete": true` removes on the first run.
    for i in 0..20 {
        std::fs::write(site.join(format!("old{i}")), "old").unwrap();
    }
    // The subdirectory swapped, there from the start as a sync would make it: runs
    // that refuse (the root swapped) make none, and there was none to swap.
    std::fs::create_dir(site.join("d3")).unwrap();
    env.dir
        .chown_to_test_user(Path::new("remote/r/parent/site/d3"));
    env.map(
        &h.addr,
        json!([{"src": "tree/", "dest": site, "delete": true}]),
    );
    // The swapping threads act as the attacker, who cannot write the victim's
    // folder, each on its directory held open: as root and by path, the
    // subdirectory swapper's link landed in the victim's folder itself whenever
    // the root swapper had `site` pointing there (a copy of the two threads left
    // `victim/d3` there under load, without hostsync), taken for hostsync's write.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = |dir: Dir, name: &'static str| {
        let (stop, target) = (stop.clone(), victim.dir.clone());
        std::thread::spawn(move || swap_for_a_link(&dir, name, &target, &stop))
    };
    // Both opened before either thread starts, while `site` is still the folder.
    let (parent_dir, site_dir) = (Dir::open(&parent), Dir::open(&site));
    let (swap_root, swap_sub) = (swapper(parent_dir, "site"), swapper(site_dir, "d3"));
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (run, _, _) = run_bounded(&env, &["sync"], "", Duration::from_secs(120));
        assert!(run.code == 0 || run.code == 1, "{}", run.dump());
        victim.intact(&run.dump());
        codes.push(run.code);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = (swap_root.join().unwrap(), swap_sub.join().unwrap());
    assert!(
        swaps.0 > 0 && swaps.1 > 0,
        "the attacker never swapped: {swaps:?}"
    );
    victim.intact("after the swapping");
    // The swapped-out copies are the attacker's: put the tree back as it was.
    let _ = std::fs::remove_file(parent.join("site"));
    if parent.join("site.orig").exists() {
        std::fs::rename(parent.join("site.orig"), parent.join("site")).unwrap();
    }
    let _ = std::fs::remove_file(site.join("d3"));
    if site.join("d3.orig").exists() {
        std::fs::rename(site.join("d3.orig"), site.join("d3")).unwrap();
    }
    let last = env.run(&["sync"]);
    last.expect(0);
    for i in 0..500 {
        let got = std::fs::read_to_string(site.join(format!("d{}/f{i}", i % 10))).unwrap();
        assert_eq!(got, format!("{i}\n"));
    }
    assert!(!site.join("old0").exists(), "delete ran");
    victim.intact(&last.dump());
    assert!(own_temporaries(&r).is_empty(), "{:?}", own_temporaries(&r));
    eprintln!("exit codes while swapping: {codes:?}; swaps of the root, of d3: {swaps:?}");
}

/// Finding 4 and "untrusted ancestors": a symlink on the way to dest, in a folder the
/// attacker can write, is refused by sync and check, naming the link and the owner
/// of its folder; a plain ancestor folder the attacker can write is served (by the
/// agent), and refused where no agent can serve it.
#[test]
fn a_symlinked_ancestor_in_an_open_folder_is_refused_and_a_plain_one_is_served() {
    if !root_or_skip("an attacker user owns an ancestor of dest") {
        return;
    }
    let mut env = Env::new("ancestor");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let r = env.remote("r");
    let victim = Victim::new(&env, "victim");
    let open = attacker_dir(&r.join("open"), 0o777);
    let link = open.join("link");
    std::os::unix::fs::symlink(&victim.dir, &link).unwrap();
    own(&link);
    let shared = attacker_dir(&r.join("shared"), 0o777);
    env.src("site/precious.db", "pushed\n");
    env.map(
        &h.addr,
        json!([
            {"src": "site/", "dest": link.join("dest"), "delete": true},
            {"src": "site/", "dest": shared.join("dest")},
        ]),
    );
    let run = env.run(&["sync"]);
    run.expect(1);
    victim.intact(&run.dump());
    let (uid, _) = attacker_ids();
    let refused: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("open/link is a symlink"))
        .collect();
    assert!(
        !refused.is_empty()
            && refused[0].contains(&format!("uid {uid}"))
            && refused[0].contains("strict_modes = no"),
        "{}",
        run.dump()
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("dest/precious.db")).unwrap(),
        "pushed\n"
    );
    let check = env.run(&["check"]);
    check.expect(1);
    assert!(
        check.stdout.contains("open/link is a symlink"),
        "{}",
        check.dump()
    );
    // The plain open folder, by the way of hosts without perl: refused, in one line.
    let _ = std::fs::remove_dir_all(shared.join("dest"));
    let tar = env.run_way(&["sync"], "tar");
    tar.expect(1);
    assert!(!shared.join("dest/precious.db").exists(), "{}", tar.dump());
    victim.intact(&tar.dump());
}

/// The agent removing a directory (`"delete": true`) that becomes a link to the
/// victim's folder between its look at it and its entering it: that removal is
/// refused, and the next step (a directory) is still made in dest, not where the
/// link led (before, the agent stayed there). The real agent, run directly, with
/// strace holding its entering of that directory (the chdir after those that
/// resolve dest) for half a second, the window the swap needs.
#[test]
fn a_directory_swapped_for_a_link_while_removed_leaves_the_agent_in_dest() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let (site, victim) = (tmp.path().join("site"), tmp.path().join("victim"));
    std::fs::create_dir_all(site.join("x")).unwrap();
    std::fs::create_dir(&victim).unwrap();
    // Resolving dest: a chdir to `/`, then one per component; then rmtree's.
    let when = format!(
        "inject=chdir:delay_enter=500000:when={}",
        site.components().count() + 1
    );
    let agent = concat!(env!("CARGO_MANIFEST_DIR"), "/src/remote/agent.pl");
    let mut child = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=chdir"])
        .args(["-e", &when, "perl", agent])
        .args(["0123abcd", "0123456789abcdef", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("strace and perl run the agent");
    let (mut to, mut from) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut send = |tag: u8, fields: &[&[u8]]| {
        let p = fields.join(&0u8);
        let mut f = vec![tag];
        f.extend_from_slice(&u32::try_from(p.len()).unwrap().to_be_bytes());
        f.extend_from_slice(&p);
        to.write_all(&f).unwrap();
    };
    let mut answer = || {
        let mut head = [0u8; 5];
        from.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(head[1..].try_into().unwrap()) as usize];
        from.read_exact(&mut body).unwrap();
        (head[0], String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(answer().0, b'H');
    send(b'R', &[b"0", site.as_os_str().as_bytes(), b"0"]);
    assert_eq!(answer().0, b'K');
    send(b'X', &[b"0", b"x"]);
    // The agent has seen `x` a directory and waits to enter it: make it a link.
    std::thread::sleep(Duration::from_millis(250));
    std::fs::rename(site.join("x"), site.join("x.orig")).unwrap();
    std::os::unix::fs::symlink(&victim, site.join("x")).unwrap();
    let removal = answer();
    send(b'D', &[b"0", b"newdir", b"755"]);
    let made = answer();
    send(b'Q', &[]);
    let quit = answer();
    assert!(child.wait().unwrap().success());
    let listing = || std::fs::read_dir(&victim).unwrap().count();
    assert_eq!(
        listing(),
        0,
        "the agent wrote in the victim's folder: {made:?}"
    );
    assert_eq!(
        (removal.0, made.0, quit.0),
        (b'F', b'K', b'K'),
        "{removal:?} {made:?} {quit:?}"
    );
    assert!(removal.1.contains("swapped"), "{removal:?}");
    assert!(site.join("newdir").is_dir(), "{made:?}");
}

/// Finding 3: two pushers at once (a cron sync beside another) to one host: neither
/// takes the other's temporaries, both succeed, every byte arrives.
#[test]
fn two_pushers_at_once_never_take_each_others_temporaries() {
    let mut env = Env::new("pushers");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    env.src("site/big.bin", &big);
    for i in 0..100 {
        env.src(&format!("site/s/f{i}"), format!("{i}\n"));
    }
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    env.write_config();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let cfg = env.cfg();
            let home = env.dir.path().to_path_buf();
            std::thread::spawn(move || crate::util::hostsync::run_in(&cfg, &home, &["sync"]))
        })
        .collect();
    for run in runs {
        run.join().unwrap().expect(0);
    }
    assert!(
        std::fs::read(r.join("www/big.bin")).unwrap() == big,
        "big.bin differs"
    );
    for i in 0..100 {
        assert_eq!(
            std::fs::read_to_string(r.join(format!("www/s/f{i}"))).unwrap(),
            format!("{i}\n")
        );
    }
    assert!(own_temporaries(&r).is_empty(), "{:?}", own_temporaries(&r));
}

/// Finding 5: a local file another local user swaps for a link to a root-only
/// secret after the scan is never read through, on every way; at most the link
/// itself is sent.
#[test]
fn a_local_file_swapped_for_a_link_after_the_scan_is_never_read_through() {
    if !root_or_skip("read a root-only secret") {
        return;
    }
    let mut env = Env::new("localswap");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let secret = env.dir.write("secret", "TOP SECRET\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for i in 0..200 {
        env.src(&format!("site/pad{i}"), format!("{i}\n"));
    }
    let swapped = env.src("site/pub.txt", "public\n");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, swapped, secret) = (stop.clone(), swapped.clone(), secret.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&swapped);
                let _ = std::os::unix::fs::symlink(&secret, &swapped);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&swapped);
                let _ = std::fs::write(&swapped, "public\n");
                std::thread::yield_now();
            }
        })
    };
    for way in ["agent", "tar", "scp", "agent", "tar", "scp"] {
        let run = env.run_way(&["sync"], way);
        assert!(run.code == 0 || run.code == 1, "{way}\n{}", run.dump());
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    for e in walkdir::WalkDir::new(&r).into_iter().filter_map(Result::ok) {
        if e.file_type().is_file() {
            let body = std::fs::read(e.path()).unwrap();
            assert!(
                !body.windows(10).any(|w| w == b"TOP SECRET"),
                "{} holds the secret",
                e.path().display()
            );
        }
    }
}

/// Finding 6: the remote program dies in the middle of a batch (a perl first on the
/// login user's PATH that may write only 32 KiB): nothing it did not confirm is
/// reported sent, the run fails, and the next run completes with no temporary left.
#[test]
fn an_agent_killed_mid_batch_reports_nothing_it_did_not_confirm() {
    let mut env = Env::new("killed");
    let mut h = env.sshd();
    env.add_host(&h, Auth::Key);
    let bin = env.dir.mkdir("killing-bin");
    let perl = bin.join("perl");
    std::fs::write(
        &perl,
        "#!/bin/sh\nulimit -f 64\nexec /usr/bin/perl \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&perl, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.restart_with_config(&format!("SetEnv PATH={}:/usr/bin:/bin", bin.display()));
    for i in 0..20 {
        env.src(&format!("site/a-small-{i:02}"), format!("small {i}\n"));
    }
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    env.src("site/z-big.bin", &big);
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));

    let run = env.run(&["-v", "sync"]);
    run.expect(1);
    let info = env.info_log();
    let sent: Vec<&str> = info.lines().filter(|l| l.contains(": sent ")).collect();
    for line in &sent {
        let remote = line
            .split(" -> ")
            .nth(1)
            .and_then(|r| r.split(" (").next())
            .unwrap();
        let name = Path::new(remote)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let local = std::fs::read(env.cfg().join("site").join(&name)).unwrap();
        assert_eq!(
            std::fs::read(remote).ok(),
            Some(local),
            "reported sent, not there: {line}"
        );
    }
    assert!(
        !info.contains("z-big.bin ("),
        "the cut file was reported sent\n{}",
        run.dump()
    );
    assert!(!r.join("www/z-big.bin").exists());
    assert!(
        env.error_log().contains("not confirmed by the remote")
            || env.error_log().contains("the remote agent stopped"),
        "{}",
        run.dump()
    );
    h.drop_config_lines("SetEnv PATH=");
    h.restart();
    let again = env.run(&["sync"]);
    again.expect(0);
    assert!(std::fs::read(r.join("www/z-big.bin")).unwrap() == big);
    assert!(
        own_temporaries(&r).is_empty(),
        "{:?}\n{}",
        own_temporaries(&r),
        again.dump()
    );
}

/// Finding 7: a server that floods (`cat /dev/zero`) or trickles (one byte a second,
/// `io_timeout = 3`) fails the run in time and in bounded memory, on the agent's
/// way and on the listing script's.
#[test]
fn a_flooding_or_trickling_server_fails_in_time_and_memory() {
    let mut env = Env::new("lying");
    let mut h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.ini("io_timeout = 3\n");
    env.src("site/f", "x\n");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    // The agent's greeting, then a record that announces 1000 bytes and trickles.
    let greeting = env.dir.join("greeting.bin");
    let mut g = vec![b'H'];
    let payload = b"1\x000\x000\x00none";
    g.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    g.extend_from_slice(payload);
    g.extend_from_slice(b"K\x00\x00\x03\xe8");
    std::fs::write(&greeting, &g).unwrap();
    let trickle = env.dir.write(
        "trickle.sh",
        format!(
            "#!/bin/sh\ncat {}\nwhile :; do printf a; sleep 1; done\n",
            greeting.display()
        ),
    );
    std::fs::set_permissions(&trickle, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (server, way) in [
        ("cat /dev/zero", ""),
        ("cat /dev/zero", "scp"),
        (trickle.to_str().unwrap(), ""),
        (trickle.to_str().unwrap(), "scp"),
    ] {
        h.restart_with_config(&format!("ForceCommand {server}"));
        let (run, peak_kib, took) = run_bounded(&env, &["sync"], way, Duration::from_secs(60));
        let case = format!("{server} {way}: {took:?}, {peak_kib} KiB");
        assert_eq!(run.code, 1, "{case}\n{}", run.dump());
        assert!(peak_kib < 256 * 1024, "{case}");
        assert!(took < Duration::from_secs(30), "{case}");
        assert!(
            run.status(&h.addr).starts_with("failed: "),
            "{case}\n{}",
            run.dump()
        );
        no_raw_controls(&env, &run);
        // For the next case: restart_with_config appends.
        h.drop_config_lines("ForceCommand");
    }
}

/// Finding 8: a remote name with `\r`, an ANSI sequence and a newline reaches the dry
/// run, `-v` and both logs escaped, never raw, and forges no line.
#[test]
fn control_characters_in_remote_names_never_reach_a_terminal_or_log() {
    let mut env = Env::new("controls");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/real.txt", "real\n");
    let r = env.remote("r");
    let www = r.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let evil = b"evil\r[+] 127.0.0.1 shadow added\n\x1b[31mred";
    std::fs::write(www.join(std::ffi::OsStr::from_bytes(evil)), "x").unwrap();
    env.dir.chown_to_test_user("remote/r");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": www, "delete": true}]),
    );
    let dry = env.run(&["sync", "--dry-run"]);
    dry.expect(0);
    no_raw_controls(&env, &dry);
    assert_eq!(dry.stdout.lines().count(), 2, "{}", dry.dump());
    assert!(
        dry.stdout
            .contains("evil\\r[+] 127.0.0.1 shadow added\\n\\x1b[31mred deleted"),
        "{}",
        dry.dump()
    );
    let run = env.run(&["-v", "sync"]);
    run.expect(0);
    no_raw_controls(&env, &run);
    assert!(env.info_log().contains("evil\\r"), "{}", run.dump());
}

/// Finding 9: setuid and setgid are dropped from a pushed file unless the mapping
/// keeps them; the quick check compares the mode hostsync sets, so nothing is sent
/// again; on every way.
#[test]
fn setuid_and_setgid_are_dropped_unless_kept() {
    let mut env = Env::new("setuid");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let tool = env.src("site/tool", "#!/bin/sh\n");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o6755)).unwrap();
    let r = env.remote("r");
    for way in ["agent", "tar", "scp"] {
        let (dropped, kept) = (
            r.join(format!("{way}-dropped")),
            r.join(format!("{way}-kept")),
        );
        env.map(
            &h.addr,
            json!([
                {"src": "site/", "dest": dropped},
                {"src": "site/", "dest": kept, "keep_special_bits": true},
            ]),
        );
        let run = env.run_way(&["sync"], way);
        let mode = |p: &Path| std::fs::metadata(p.join("tool")).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dropped), 0o755, "{way}\n{}", run.dump());
        if way == "scp" {
            // OpenSSH's scp sink cannot keep them: that file fails, in one line.
            run.expect(1);
            assert!(
                run.stdout
                    .contains("keep_special_bits: the remote scp cannot keep setuid"),
                "{}",
                run.dump()
            );
            assert!(!kept.join("tool").exists());
        } else {
            run.expect(0);
            assert_eq!(mode(&kept), 0o6755, "{way}\n{}", run.dump());
        }
        let again = env.run_way(&["sync"], way);
        assert_eq!(
            again.row(&h.addr).0,
            0,
            "{way}: sent again\n{}",
            again.dump()
        );
    }
}

/// A local file whose name is in the temporaries' namespace is refused in one line
/// (it would be sent in one run and removed as stale in the next); the rest arrives.
#[test]
fn local_names_in_the_temporaries_namespace_are_refused() {
    let mut env = Env::new("reserved");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/.hostsync-tmp.keep", "mine\n");
    env.src("site/ok.txt", "ok\n");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let run = env.run(&["sync"]);
    run.expect(1);
    let errors = env.error_log();
    let lines: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains(".hostsync-tmp.keep"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.dump());
    assert!(
        lines[0].contains("keeps for its temporaries"),
        "{}",
        lines[0]
    );
    assert_eq!(
        std::fs::read_to_string(r.join("www/ok.txt")).unwrap(),
        "ok\n"
    );
    assert!(!r.join("www/.hostsync-tmp.keep").exists());
}

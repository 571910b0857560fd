//! Issue 16's sftp tier, pipelined: runs of small files go many in flight
//! (`Sftp::put_many`), so these cases cover what pipelining could break, against
//! the SFTP-only account (`ForceCommand internal-sftp`, `hostsync-sftp` from
//! `util::foreign`): many more files than the window arrive with exact bytes,
//! mode and mtime, and a second sync sends nothing; refused files in the middle
//! of a run (a folder the login cannot write, a remote directory in the way)
//! fail alone, with one line each, while the others land and no temporary is
//! left; a local file that changes during the run is not swapped in by it;
//! SIGTERM in the middle of a run leaves whole files or none, and no temporary;
//! a connection cut in the middle of a run leaves every file old or new.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::util::dir::{set_mtime, temporaries};
use crate::util::foreign::{
    add_foreign_host, chown_tree, foreign_remote, sftp_only_sshd, sftp_user,
};
use crate::util::hostsync::{Env, Run};
use crate::util::{Fault, Proxy, Sshd, wait_until};

/// One case's world: an env whose one host is the SFTP-only account.
struct World {
    env: Env,
    server: Sshd,
    /// The address hostsync dials (the server's, or a proxy's).
    addr: String,
}

impl World {
    /// The SFTP-only server, added as the env's one host.
    fn new(name: &str) -> World {
        let (env, server) = World::start(name);
        let (addr, port) = (server.addr.clone(), server.port);
        World::connect(env, server, &addr, port)
    }

    /// A fresh env and its SFTP-only server, no host added yet.
    fn start(name: &str) -> (Env, Sshd) {
        let env = Env::new(name);
        let server = sftp_only_sshd(env.dir.path());
        (env, server)
    }

    /// `server` added to `env` as its one host, dialled at `addr:port` (the
    /// server's, or a proxy's in front of it).
    fn connect(mut env: Env, server: Sshd, addr: &str, port: u16) -> World {
        let known = server.known_hosts_line_as(addr, port);
        add_foreign_host(&mut env, addr, port, known, sftp_user());
        World {
            env,
            server,
            addr: addr.to_owned(),
        }
    }

    /// A destination folder the login user owns.
    fn remote(&self, name: &str) -> PathBuf {
        foreign_remote(&self.env, sftp_user(), name)
    }

    /// A run's dump plus the remote folders and the server log.
    fn dump(&self, run: &Run) -> String {
        format!(
            "{}\n{}--- server log\n{}",
            run.dump(),
            self.env.dir.listing(),
            self.server.log()
        )
    }
}

/// The bytes of test file number `i`, `len` long.
fn body(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| ((k * 31 + i * 7) % 251) as u8).collect()
}

/// Writes `n` files `site/dDD/fNNN.bin` (a new folder every `per_dir`) with
/// sizes from 0 to a few KiB, four modes and distinct mtimes; returns their
/// paths below `site/`.
fn small_tree(w: &World, n: usize, per_dir: usize) -> Vec<String> {
    let modes = [0o644, 0o600, 0o755, 0o640];
    (0..n)
        .map(|i| {
            let rel = format!("d{:02}/f{i:03}.bin", i / per_dir);
            write_file(w, &rel, &body(i, (i * 97) % 5000), modes[i % 4], i);
            rel
        })
        .collect()
}

/// Writes `site/REL` with `bytes`, `mode` and an mtime that depends on `i`.
fn write_file(w: &World, rel: &str, bytes: &[u8], mode: u32, i: usize) {
    let p = w.env.src(&format!("site/{rel}"), bytes);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&p, 1_600_000_000 + i as u64 * 61, 250_000_000);
}

/// Panics unless `remote/REL` has the bytes, mode and mtime (whole seconds) of
/// `local/REL`.
fn assert_twin(local: &Path, remote: &Path, rel: &str, why: &dyn Fn() -> String) {
    let (l, r) = (local.join(rel), remote.join(rel));
    let (lm, rm) = (l.metadata().unwrap(), r.metadata());
    let rm = rm.unwrap_or_else(|e| panic!("{}: {e}\n{}", r.display(), why()));
    assert!(
        std::fs::read(&l).unwrap() == std::fs::read(&r).unwrap(),
        "{rel}: bytes differ\n{}",
        why()
    );
    assert_eq!(
        (rm.mode() & 0o7777, rm.mtime()),
        (lm.mode() & 0o7777, lm.mtime()),
        "{rel}: mode or mtime differ\n{}",
        why()
    );
}

/// Many more files than are in flight at once (at most 128), in several
/// folders, with sizes across the 32 KiB write size, one at the limit of a
/// pipelined file and one just above it (sent one at a time between two runs),
/// all arrive exact; nothing is left behind; the record of what was pushed is
/// right, so the second sync sends nothing.
#[test]
fn sftp_only_many_small_files_arrive_exact() {
    let w = World::new("pipe-many");
    let r = w.remote("r");
    let mut rels = small_tree(&w, 330, 110);
    for (i, len) in [
        (900, 0),
        (901, 32 * 1024),
        (902, 32 * 1024 + 1),
        (903, 64 * 1024),
        (904, 64 * 1024 + 1),
    ] {
        let rel = format!("d01/m{i}.bin");
        write_file(&w, &rel, &body(i, len), 0o644, i);
        rels.push(rel);
    }
    w.env
        .map(&w.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let run = w.run_v();
    let why = || w.dump(&run);
    run.expect(0);
    let ways = crate::util::hostsync::ways(&w.env.info_log());
    assert!(
        !ways.is_empty() && ways.iter().all(|x| x == "sftp"),
        "{ways:?}\n{}",
        why()
    );
    assert_eq!(run.row(&w.addr).0, rels.len() as u64, "{}", why());
    for rel in &rels {
        assert_twin(&w.env.cfg().join("site"), &r.join("www"), rel, &why);
    }
    assert!(
        temporaries(&r).is_empty(),
        "{:?}\n{}",
        temporaries(&r),
        why()
    );
    let again = w.env.run(&["sync"]);
    again.expect(0);
    assert_eq!(
        again.row(&w.addr),
        (0, rels.len() as u64, 0, 0, 0),
        "the second sync sent something\n{}",
        w.dump(&again)
    );
}

impl World {
    /// `sync -v`.
    fn run_v(&self) -> Run {
        self.env.run(&["-v", "sync"])
    }
}

/// Refused files in the middle of a run fail alone: five files in a folder
/// only root can write (the login is not root: their `OPEN` is refused), and
/// forty in a 64 KiB file system that fills up (the later ones' writes are
/// refused, after their temporaries were made). Each refused file gets one
/// line and does not appear; every other file lands exact; no temporary is
/// left anywhere.
#[test]
fn sftp_only_refused_files_in_a_run_fail_alone() {
    let w = World::new("pipe-refused");
    let r = w.remote("r");
    let www = r.join("www");
    let mut good = Vec::new();
    for i in 0..40 {
        for dir in ["a", "c"] {
            let rel = format!("{dir}/f{i:03}.txt");
            write_file(&w, &rel, &body(i, 100 + i), 0o644, i);
            good.push(rel);
        }
    }
    let locked: Vec<String> = (0..5).map(|i| format!("b/locked/g{i}.txt")).collect();
    for (i, rel) in locked.iter().enumerate() {
        write_file(&w, rel, b"never lands", 0o644, i);
    }
    let full: Vec<String> = (0..40).map(|i| format!("b/full/h{i:02}.bin")).collect();
    for (i, rel) in full.iter().enumerate() {
        write_file(&w, rel, &body(i, 4096), 0o644, i);
    }
    for d in ["b", "b/locked", "b/full"] {
        let p = w.env.cfg().join("site").join(d);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(www.join("b/locked")).unwrap();
    let _fs = crate::retry::Tmpfs::mount(&www.join("b/full"), "64k");
    chown_tree(&www, sftp_user());
    std::os::unix::fs::lchown(www.join("b/locked"), Some(0), Some(0)).unwrap();
    w.env.map(&w.addr, json!([{"src": "site/", "dest": www}]));
    let run = w.run_v();
    let why = || w.dump(&run);
    run.expect(1);
    let errors = w.env.error_log();
    let lines_on = |rel: &str| -> Vec<String> {
        // The error line names the destination, then a colon and the reason.
        let name = format!("{}:", www.join(rel).display());
        errors
            .lines()
            .filter(|l| l.contains(&name))
            .map(str::to_owned)
            .collect()
    };
    for rel in &locked {
        let lines = lines_on(rel);
        assert!(
            lines.len() == 1 && lines[0].contains("permission denied on the remote"),
            "{rel}: {lines:?}\n{}",
            why()
        );
        assert!(!www.join(rel).exists(), "{}", why());
    }
    let (landed, refused): (Vec<&String>, Vec<&String>) =
        full.iter().partition(|rel| www.join(rel).exists());
    assert!(
        !refused.is_empty() && !landed.is_empty(),
        "{refused:?}\n{}",
        why()
    );
    for rel in &refused {
        let lines = lines_on(rel);
        assert!(
            lines.len() == 1 && lines[0].contains("write "),
            "{rel}: {lines:?}\n{}",
            why()
        );
    }
    good.extend(landed.into_iter().cloned());
    for rel in &good {
        assert_twin(&w.env.cfg().join("site"), &www, rel, &why);
    }
    let (sent, _, _, failed, _) = run.row(&w.addr);
    let want = (good.len() as u64, (locked.len() + refused.len()) as u64);
    assert_eq!((sent, failed), want, "{}", why());
    assert!(
        temporaries(&r).is_empty(),
        "{:?}\n{}",
        temporaries(&r),
        why()
    );
}

/// A local file that changes all the time while a run of small files goes,
/// through a slow link (so seconds pass between its open and the end of its
/// upload, and it surely changes in between), is not swapped in by that run:
/// hostsync says it changed and sends it again. It then lands at most once, as
/// one whole version of the file, or, if it kept changing, the old remote copy
/// stays and its one error line says so. The 100 others land; no temporary is
/// left.
#[test]
fn sftp_only_a_file_changing_during_a_run_is_not_swapped_in() {
    let (env, server) = World::start("pipe-changing");
    let slow = Fault::Slow {
        bytes_per_sec: 128 << 10,
    };
    let proxy = Proxy::start(&server.addr, server.port, slow);
    let w = World::connect(env, server, &proxy.addr, proxy.port);
    let r = w.remote("r");
    let rels = small_tree(&w, 100, 100);
    let hot = w.env.src("site/d00/hot.log", "start\n");
    let www = r.join("www");
    std::fs::create_dir_all(www.join("d00")).unwrap();
    std::fs::write(www.join("d00/hot.log"), "old remote copy").unwrap();
    chown_tree(&www, sftp_user());
    w.env.map(&w.addr, json!([{"src": "site/", "dest": www}]));
    // One byte every millisecond or so: every version is "start\n" and x's.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, hot) = (stop.clone(), hot.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&hot).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"x").unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let run = w.run_v();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let why = || w.dump(&run);
    let info = w.env.info_log();
    let name = hot.display().to_string();
    let about = |what: &str| {
        info.lines()
            .filter(|l| l.contains(&name) && l.contains(what))
            .count()
    };
    assert!(
        about("changed while it was read; sending it again") >= 1,
        "{}",
        why()
    );
    let remote = std::fs::read(www.join("d00/hot.log")).unwrap();
    match (about(": sent "), run.code) {
        (1, 0) => {
            let xs = remote.strip_prefix(b"start\n").unwrap_or(&remote);
            assert!(
                xs.iter().all(|&b| b == b'x'),
                "not a version: {remote:?}\n{}",
                why()
            );
        }
        (0, 1) => {
            assert_eq!(remote, b"old remote copy", "{}", why());
            let errors = w.env.error_log();
            let lines: Vec<&str> = errors.lines().filter(|l| l.contains(&name)).collect();
            assert!(
                lines.len() == 1 && lines[0].contains("kept changing while it was read"),
                "{lines:?}\n{}",
                why()
            );
        }
        (sent, code) => panic!("sent {sent} times, exit {code}\n{}", why()),
    }
    for rel in &rels {
        assert_twin(&w.env.cfg().join("site"), &www, rel, &why);
    }
    assert!(
        temporaries(&r).is_empty(),
        "{:?}\n{}",
        temporaries(&r),
        why()
    );
}

/// SIGTERM while a run of 1,000 small files is in flight through a slow link:
/// the daemon exits 0 within 5 s, no temporary is left, and every file that
/// arrived is whole; some did not arrive (the run was cut, not finished).
#[test]
fn sftp_only_sigterm_mid_run_leaves_whole_files_and_no_temporaries() {
    let (env, server) = World::start("pipe-term");
    let slow = Fault::Slow {
        bytes_per_sec: 512 << 10,
    };
    let proxy = Proxy::start(&server.addr, server.port, slow);
    let w = World::connect(env, server, &proxy.addr, proxy.port);
    let r = w.remote("r");
    let rels: Vec<String> = (0..1000)
        .map(|i| {
            let rel = format!("d{:02}/f{i:04}.bin", i / 250);
            write_file(&w, &rel, &body(i, 4096), 0o644, i);
            rel
        })
        .collect();
    w.env
        .map(&w.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let mut daemon = w.env.watch();
    let landed = || {
        rels.iter()
            .filter(|rel| r.join("www").join(rel).exists())
            .count()
    };
    wait_until(Duration::from_secs(30), "files landing", || landed() >= 20);
    let (code, took) = daemon.terminate();
    let why = || format!("{}\n{}", daemon.dump(), w.env.dir.listing());
    assert_eq!(code, Some(0), "{}", why());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}\n{}",
        why()
    );
    wait_until(Duration::from_secs(3), "no temporary left", || {
        temporaries(&r).is_empty()
    });
    let n = landed();
    assert!(
        n < rels.len(),
        "all {n} arrived before the signal\n{}",
        why()
    );
    for rel in rels.iter().filter(|rel| r.join("www").join(rel).exists()) {
        assert_twin(&w.env.cfg().join("site"), &r.join("www"), rel, &why);
    }
    drop(proxy);
}

/// A connection cut in the middle of a run of 300 small files that replace
/// older remote copies: the sync fails, and every remote file is then its old
/// or its new version, never a part; the next run sends the rest and leaves no
/// temporary.
#[test]
fn sftp_only_cut_mid_run_leaves_old_or_new_files() {
    let (env, server) = World::start("pipe-cut");
    let proxy = Proxy::start(&server.addr, server.port, Fault::CutAfter(600 << 10));
    let w = World::connect(env, server, &proxy.addr, proxy.port);
    let r = w.remote("r");
    let www = r.join("www");
    let rels: Vec<String> = (0..300)
        .map(|i| {
            let rel = format!("d{:02}/f{i:03}.bin", i / 100);
            write_file(&w, &rel, &body(i, 4096), 0o644, i);
            std::fs::create_dir_all(www.join(&rel).parent().unwrap()).unwrap();
            std::fs::write(www.join(&rel), format!("old {i}")).unwrap();
            rel
        })
        .collect();
    chown_tree(&www, sftp_user());
    w.env.map(&w.addr, json!([{"src": "site/", "dest": www}]));
    let cut = w.run_v();
    let why = || w.dump(&cut);
    assert_ne!(cut.code, 0, "the cut did not fail the run\n{}", why());
    let mut new = 0;
    for (i, rel) in rels.iter().enumerate() {
        let got = std::fs::read(www.join(rel)).unwrap();
        if got == body(i, 4096) {
            new += 1;
        } else {
            assert_eq!(
                got,
                format!("old {i}").as_bytes(),
                "{rel} is half\n{}",
                why()
            );
        }
    }
    assert!(
        new < rels.len(),
        "all {new} were replaced before the cut\n{}",
        why()
    );
    proxy.set_fault(Fault::None);
    let again = w.run_v();
    let why = || w.dump(&again);
    again.expect(0);
    for rel in &rels {
        assert_twin(&w.env.cfg().join("site"), &www, rel, &why);
    }
    assert!(
        temporaries(&r).is_empty(),
        "{:?}\n{}",
        temporaries(&r),
        why()
    );
}

//! Issue 19 (slow links): big files go as a delta, `bwlimit_kib` caps the rate,
//! `compression` compresses, against real sshd behind a counting proxy.
//!
//! Bytes are checked twice: hostsync's own accounting (the BYTES column and the
//! `reused` part of the per-file line) and what the proxy forwarded.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use serde_json::json;

use crate::util::dir::temporaries;
use crate::util::hostsync::{Env, Run};
use crate::util::{Fault, Proxy, Sshd, test_user};

/// How long a change under watch may take to land, and its batch to end.
const LANDS: std::time::Duration = std::time::Duration::from_secs(30);

/// The size of the big file of these tests.
const BIG: usize = 8 << 20;

/// Pseudo-random bytes (xorshift), the same for the same seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One host behind a counting proxy, mapped `big.img` to `r/big.img`.
struct Slow {
    env: Env,
    /// The server (kept running; restarted with another PATH by some tests).
    #[allow(dead_code)]
    sshd: Sshd,
    proxy: Proxy,
    /// The remote folder.
    r: PathBuf,
    /// The local file.
    local: PathBuf,
}

impl Slow {
    fn new(name: &str) -> Slow {
        let mut env = Env::new(name);
        let sshd = env.sshd();
        let proxy = Proxy::start(&sshd.addr, sshd.port, Fault::None);
        env.add_host_raw(json!({"ip_address": proxy.addr, "port": proxy.port,
            "user": test_user(), "identity_file": env.key.private}));
        env.trust(sshd.known_hosts_line_as(&proxy.addr, proxy.port));
        let r = env.remote("r");
        let local = env.src("big.img", noise(BIG, 1));
        env.map(
            &proxy.addr,
            json!([{"src": "big.img", "dest": r.join("big.img")}]),
        );
        Slow {
            env,
            sshd,
            proxy,
            r,
            local,
        }
    }

    /// Runs `hostsync -v sync` with `vars`; returns the run and the bytes the
    /// proxy forwarded up and down meanwhile.
    fn sync(&self, vars: &[(&str, &str)]) -> (Run, u64, u64) {
        let (up, down) = (self.proxy.bytes_up(), self.proxy.bytes_down());
        let run = self.env.run_env(&["-v", "sync"], vars);
        (
            run,
            self.proxy.bytes_up() - up,
            self.proxy.bytes_down() - down,
        )
    }

    /// The remote copy is the local file, with its mode and mtime; no temporary.
    #[track_caller]
    fn arrived(&self, run: &Run) {
        let remote = self.r.join("big.img");
        assert!(
            std::fs::read(&remote).unwrap() == std::fs::read(&self.local).unwrap(),
            "content differs\n{}",
            run.dump()
        );
        let (l, m) = (
            std::fs::metadata(&self.local).unwrap(),
            std::fs::metadata(&remote).unwrap(),
        );
        // To the microsecond: the agent's perl passes times as doubles (README).
        let ns = |m: &std::fs::Metadata| {
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
        };
        assert!(
            m.mode() & 0o7777 == l.mode() & 0o7777 && (ns(&m) - ns(&l)).abs() < 1000,
            "mode or mtime differs\n{}",
            run.dump()
        );
        assert!(
            temporaries(&self.r).is_empty(),
            "{:?}",
            temporaries(&self.r)
        );
    }
}

/// The reused count of the line `HOST: sent LOCAL -> REMOTE (N bytes, reused R
/// bytes)`, if the last sent line of `run` has one.
fn reused(run: &Run) -> Option<u64> {
    let line = run.stdout.lines().rfind(|l| l.contains(": sent "))?;
    let (_, rest) = line.split_once(", reused ")?;
    rest.split_once(' ')?.0.parse().ok()
}

/// Issue 19, "Delta changes": one byte changed, 100 bytes inserted at offset 10,
/// 1 MiB appended, the file truncated to half, and another file altogether at the
/// remote: each arrives byte-exact with mode and mtime; the deltas send about what
/// changed (hostsync's count and the proxy's agree), the other file goes whole.
#[test]
fn delta_changes_arrive_exact_and_send_what_changed() {
    let s = Slow::new("delta");
    std::fs::set_permissions(&s.local, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (first, up, _) = s.sync(&[]);
    first.expect(0);
    s.arrived(&first);
    assert!(up > BIG as u64, "the first push is whole: {up}");
    assert_eq!(reused(&first), None, "{}", first.dump());
    let old = std::fs::read(&s.local).unwrap();
    let mut one = old.clone();
    one[BIG / 2] ^= 0xff;
    let mut inserted = old[..10].to_vec();
    inserted.extend_from_slice(&noise(100, 2));
    inserted.extend_from_slice(&old[10..]);
    // Each case starts from the previous one's result on the remote.
    let cases: [(&str, Vec<u8>, u64); 4] = [
        ("one byte changed", one.clone(), 64 * 1024),
        ("100 bytes inserted at 10", inserted, 64 * 1024),
        (
            "1 MiB appended",
            [old.clone(), noise(1 << 20, 3)].concat(),
            (1 << 20) + 64 * 1024,
        ),
        ("truncated to half", old[..BIG / 2].to_vec(), 16 * 1024),
    ];
    for (what, body, most) in cases {
        std::fs::write(&s.local, &body).unwrap();
        let (run, up, down) = s.sync(&[]);
        run.expect(0);
        s.arrived(&run);
        let (sent, .., bytes) = run.row(&s.proxy.addr);
        assert_eq!(sent, 1, "{what}\n{}", run.dump());
        let kept = reused(&run).unwrap_or_else(|| panic!("{what}: no delta\n{}", run.dump()));
        eprintln!("{what}: {bytes} bytes sent, {kept} reused; the proxy saw {up} up, {down} down");
        assert_eq!(bytes + kept, body.len() as u64, "{what}\n{}", run.dump());
        assert!(bytes <= most, "{what}: {bytes} bytes sent\n{}", run.dump());
        // The link carried the sent bytes and little else either way.
        assert!(
            up >= bytes && up <= bytes + 96 * 1024 && down <= 96 * 1024,
            "{what}: {up} up, {down} down for {bytes} bytes\n{}",
            run.dump()
        );
    }
    // Another file altogether at the remote: a delta would not be smaller.
    std::fs::write(s.r.join("big.img"), noise(BIG, 9)).unwrap();
    s.env.dir.chown_to_test_user("remote/r");
    let (run, up, _) = s.sync(&[]);
    run.expect(0);
    s.arrived(&run);
    assert_eq!(reused(&run), None, "{}", run.dump());
    assert_eq!(run.row(&s.proxy.addr).4, (BIG / 2) as u64);
    assert!(up >= (BIG / 2) as u64, "{up}");
    assert!(
        run.stdout.contains("sent ") && s.env.info_log().contains("would not be smaller"),
        "{}",
        run.dump()
    );
}

/// `delta_min_kib = 0` turns deltas off, and a file below the threshold goes whole.
#[test]
fn below_the_threshold_or_off_the_file_goes_whole() {
    for (name, min) in [("deltaoff", "0"), ("deltabelow", "9000")] {
        let mut s = Slow::new(name);
        s.env.ini(&format!("[sync]\ndelta_min_kib = {min}\n"));
        s.sync(&[]).0.expect(0);
        let mut body = std::fs::read(&s.local).unwrap();
        body[5] ^= 1;
        std::fs::write(&s.local, &body).unwrap();
        let (run, up, _) = s.sync(&[]);
        run.expect(0);
        s.arrived(&run);
        assert_eq!(
            (reused(&run), run.row(&s.proxy.addr).4),
            (None, BIG as u64),
            "delta_min_kib = {min}\n{}",
            run.dump()
        );
        assert!(up > BIG as u64);
    }
}

/// Restarts `h` so that remote commands get a PATH with everything in /usr/bin and
/// /bin except the commands named in `without`.
fn without_commands(env: &Env, h: &mut Sshd, without: &[&str]) {
    let bin = env.dir.mkdir(format!("bin-without-{}", without.join("-")));
    for dir in ["/usr/bin", "/bin"] {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let name = entry.file_name();
            let link = bin.join(&name);
            let dropped = without
                .iter()
                .any(|w| name.as_bytes().starts_with(w.as_bytes()));
            if !dropped && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).unwrap();
            }
        }
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.drop_config_lines("SetEnv PATH=");
    h.restart_with_config(&format!("SetEnv PATH={}", bin.display()));
}

/// Issue 19, "Fallbacks": without perl, `sha256sum` and `dd` compare aligned
/// blocks (a change in place goes as a delta); without perl and `sha256sum` the
/// whole file goes; either way it arrives exact.
#[test]
fn without_perl_aligned_blocks_and_without_checksums_the_whole_file() {
    let mut s = Slow::new("shdelta");
    without_commands(&s.env, &mut s.sshd, &["perl"]);
    let (first, ..) = s.sync(&[]);
    first.expect(0);
    s.arrived(&first);
    let mut body = std::fs::read(&s.local).unwrap();
    body[BIG / 3] ^= 1;
    std::fs::write(&s.local, &body).unwrap();
    let (run, up, _) = s.sync(&[]);
    run.expect(0);
    s.arrived(&run);
    let kept = reused(&run).unwrap_or_else(|| panic!("no delta\n{}", run.dump()));
    let bytes = run.row(&s.proxy.addr).4;
    assert_eq!(bytes + kept, BIG as u64);
    assert!(bytes <= 256 * 1024, "{bytes}\n{}", run.dump());
    assert!(up < 512 * 1024, "{up}\n{}", run.dump());
    without_commands(&s.env, &mut s.sshd, &["perl", "sha256sum"]);
    body[BIG / 3] ^= 1;
    std::fs::write(&s.local, &body).unwrap();
    let (run, up, _) = s.sync(&[]);
    run.expect(0);
    s.arrived(&run);
    assert_eq!(reused(&run), None, "{}", run.dump());
    assert_eq!(run.row(&s.proxy.addr).4, BIG as u64);
    assert!(up > BIG as u64);
}

/// Issue 19, "Cut connection": cut in the middle of a delta rebuild (its new
/// bytes on the way), the old content stays intact and nothing is left behind
/// by the next run, which completes (as a delta again).
#[test]
fn a_connection_cut_mid_rebuild_keeps_the_old_content() {
    let s = Slow::new("cutdelta");
    s.sync(&[]).0.expect(0);
    let old = std::fs::read(s.r.join("big.img")).unwrap();
    // 3 MiB of new bytes in the middle: the cut comes while they stream.
    let mut body = old.clone();
    body.splice(BIG / 2..BIG / 2, noise(3 << 20, 4));
    std::fs::write(&s.local, &body).unwrap();
    s.proxy.set_fault(Fault::CutAfter(1 << 20));
    let (run, ..) = s.sync(&[]);
    run.expect(1);
    assert!(
        std::fs::read(s.r.join("big.img")).unwrap() == old,
        "the old content changed\n{}",
        run.dump()
    );
    s.proxy.set_fault(Fault::None);
    let (again, ..) = s.sync(&[]);
    again.expect(0);
    s.arrived(&again);
    assert!(reused(&again).is_some(), "{}", again.dump());
}

/// `bwlimit_kib` caps what a push sends: 2 MiB at 1024 KiB/s cannot take less
/// than about 2 s (a lower bound only: a loaded machine is slower, never faster).
#[test]
fn bwlimit_caps_the_rate() {
    let mut s = Slow::new("bwlimit");
    s.env.ini("[sync]\nbwlimit_kib = 1024\n");
    std::fs::write(&s.local, noise(2 << 20, 5)).unwrap();
    let started = std::time::Instant::now();
    let (run, up, _) = s.sync(&[]);
    let took = started.elapsed();
    run.expect(0);
    s.arrived(&run);
    assert!(up > 2 << 20);
    assert!(
        took >= std::time::Duration::from_millis(1800),
        "2 MiB in {took:?} at 1 MiB/s\n{}",
        run.dump()
    );
}

/// `compression = yes` negotiates zlib and sends text in a fraction of its size;
/// the content arrives exact.
#[test]
fn compression_shrinks_text_on_the_wire() {
    let mut s = Slow::new("zlib");
    s.env.ini("[ssh]\ncompression = yes\n");
    let text: String = (0..60_000)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    std::fs::write(&s.local, &text).unwrap();
    let (run, up, _) = s.sync(&[]);
    run.expect(0);
    s.arrived(&run);
    assert!(
        s.env.info_log().contains("compression zlib"),
        "{}",
        run.dump()
    );
    assert!(
        up < text.len() as u64 / 4,
        "{up} bytes for {} of text\n{}",
        text.len(),
        run.dump()
    );
}

/// `sync --dry-run -v` says per file whether it would go as a delta, and changes
/// nothing.
#[test]
fn dry_run_verbose_says_which_files_go_as_a_delta() {
    let s = Slow::new("drydelta");
    s.env.src("small.txt", "small\n");
    s.env.map(
        &s.proxy.addr,
        json!([{"src": "big.img", "dest": s.r.join("big.img")},
               {"src": "small.txt", "dest": s.r.join("small.txt")}]),
    );
    s.sync(&[]).0.expect(0);
    let mut body = std::fs::read(&s.local).unwrap();
    body[7] ^= 1;
    std::fs::write(&s.local, &body).unwrap();
    s.env.src("small.txt", "changed\n");
    let before = std::fs::read(s.r.join("big.img")).unwrap();
    let big = format!("{}/big.img updated (delta)", s.r.display());
    let small = format!("{}/small.txt updated (whole file)", s.r.display());
    // Through the agent, and the way hosts without perl are served.
    for way in ["agent", "tar"] {
        let run = s.env.run_way(&["-v", "sync", "--dry-run"], way);
        run.expect(0);
        assert!(
            run.stdout.contains(&big) && run.stdout.contains(&small),
            "{way}\n{}",
            run.dump()
        );
    }
    let plain = s.env.run(&["sync", "--dry-run"]);
    assert!(!plain.stdout.contains("(delta)"), "{}", plain.dump());
    assert!(std::fs::read(s.r.join("big.img")).unwrap() == before);
}

/// `watch` sends a changed big file as a delta too, under a bandwidth cap.
#[test]
fn watch_sends_a_changed_big_file_as_a_delta() {
    let mut s = Slow::new("watchdelta");
    s.env.ini("[sync]\nbwlimit_kib = 8192\n");
    s.sync(&[]).0.expect(0);
    let sent = |info: String| -> Vec<String> {
        info.lines()
            .filter(|l| l.contains(": sent ") && l.contains("big.img"))
            .map(str::to_string)
            .collect()
    };
    let by_sync = sent(s.env.info_log()).len();
    let daemon = s.env.watch();
    let mut body = std::fs::read(&s.local).unwrap();
    body[BIG - 3] ^= 1;
    std::fs::write(&s.local, &body).unwrap();
    let remote = s.r.join("big.img");
    crate::util::wait_until(LANDS, "the change arrives", || {
        std::fs::read(&remote).is_ok_and(|r| r == body)
    });
    // The file lands (the agent's rename) before the agent's answer is logged and
    // before the batch ends, when the agent removes its run's lock: wait for both.
    let line = crate::util::wait_for(LANDS, "watch's sent line of big.img", || {
        sent(s.env.info_log()).get(by_sync).cloned()
    });
    assert!(line.contains(", reused "), "{line}\n{}", daemon.dump());
    assert!(
        crate::util::holds_within(LANDS, || temporaries(&s.r).is_empty()),
        "left: {:?}\n{}",
        temporaries(&s.r),
        daemon.dump()
    );
}

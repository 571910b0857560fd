//! Issue 16, the shell way of serving a host (the posix tier) on any POSIX sh +
//! BusyBox host, beyond the matrix of `tests/tier.rs` (which runs every case of
//! the issue's test list here too): a destination others can write, on the
//! BusyBox-only login behind OpenSSH (`busybox_*`) and behind Dropbear
//! (`dropbear_*`), both from `util::foreign`: issue 13's rule, whose owner checks
//! use `stat -c` there.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::util::tier::{Target, World, read};

/// One test per target for a case.
macro_rules! cases {
    ($case:ident { $( $name:ident: $target:ident; )* }) => {
        $(
            #[test]
            fn $name() {
                $case(Target::$target)
            }
        )*
    };
}

/// Issue 13's rule on these hosts, whose owner and mode checks use `stat -c`: a
/// destination others can write is refused by `sync` in one line and nothing is
/// written there; `check` fails naming it; both are fine once it is 0755.
fn open_destination(t: Target) {
    let w = World::new(t, "px-open");
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

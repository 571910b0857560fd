//! Issue 14's `"disabled": true` host field: a disabled host keeps its mapping
//! file, and no command contacts it or lists it.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use serde_json::json;

use crate::util::hostsync::{Auth, Env};
use crate::util::sshd::next_loopback_addr;
use crate::util::{test_user, wait_until};

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

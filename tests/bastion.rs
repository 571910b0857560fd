//! Issue 18: fleets behind bastions. A bastion sshd (TCP forwarding allowed, as
//! sshd's default is) in front of target sshds, all on loopback; every proof that
//! a session went through a bastion comes from the bastion's own log (LogLevel
//! DEBUG1 shows each `direct-tcpip` request with its target) and from info.log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::hostsync::{Auth, Env, Run};
use crate::util::{Sshd, test_user, wait_until};

/// How long a watch gets to bring a host up to date.
const CATCH_UP: Duration = Duration::from_secs(30);

/// The bastion log's lines for the `direct-tcpip` requests to `target`.
fn forwarded_to(bastion: &Sshd, target: &Sshd) -> usize {
    let want = format!("target {} port {}", target.addr, target.port);
    bastion
        .log()
        .lines()
        .filter(|l| l.contains("server_request_direct_tcpip") && l.contains(&want))
        .count()
}

/// How many logins the bastion accepted.
fn logins(sshd: &Sshd) -> usize {
    sshd.log()
        .lines()
        .filter(|l| l.contains("Accepted publickey for"))
        .count()
}

/// A bastion sshd logging at DEBUG1, added to `env` as an entry without a mapping file.
fn bastion(env: &mut Env) -> Sshd {
    let mut b = env.sshd();
    b.restart_with_log_level("DEBUG1");
    env.add_host(&b, Auth::Key);
    b
}

/// A target behind `via`, with one mapped file `hello.txt` into `remote/<name>`;
/// returns the sshd and the remote file.
fn target(env: &mut Env, via: &Sshd, name: &str) -> (Sshd, std::path::PathBuf) {
    let t = env.sshd();
    env.add_host(&t, Auth::Key);
    env.set_field(&t.addr, "proxy_jump", json!(via.addr));
    let dest = env.remote(name).join("hello.txt");
    env.map(&t.addr, json!([{"src": "hello.txt", "dest": dest}]));
    (t, dest)
}

/// `check`'s ROUTE cell for `addr` (`direct` or `via ...`).
#[track_caller]
fn route(run: &Run, addr: &str) -> String {
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .unwrap_or_else(|| panic!("no check row for {addr}\n{}", run.dump()));
    // HOST PORT USER AUTH TIER FINGERPRINT STATUS, then ROUTE.
    let cells: Vec<&str> = line.split_whitespace().skip(7).collect();
    match cells.first() {
        Some(&"via") => format!("via {}", cells[1]),
        Some(c) => c.to_string(),
        None => panic!("no ROUTE in {line:?}\n{}", run.dump()),
    }
}

/// Each target's session went through the bastion (its log has a direct-tcpip
/// request for each, and each target's file arrived), one bastion login carried
/// both, the bastion without a mapping file is neither warned about nor a row,
/// and info.log's connected line names the bastion. `check` shows the routes.
#[test]
fn one_bastion_session_carries_every_target() {
    let mut env = Env::new("bastion-two");
    let b = bastion(&mut env);
    env.src("hello.txt", "through the bastion\n");
    let (t1, d1) = target(&mut env, &b, "t1");
    let (t2, d2) = target(&mut env, &b, "t2");
    let run = env.run(&["sync"]);
    run.expect(0);
    for d in [&d1, &d2] {
        assert_eq!(
            std::fs::read_to_string(d).unwrap_or_default(),
            "through the bastion\n",
            "{}",
            run.dump()
        );
    }
    let log = b.log();
    assert_eq!(forwarded_to(&b, &t1), 1, "{log}\n{}", run.dump());
    assert_eq!(forwarded_to(&b, &t2), 1, "{log}\n{}", run.dump());
    assert_eq!(logins(&b), 1, "one bastion session for both\n{log}");
    assert!(
        !run.stderr.contains("warning") && !run.stdout.contains(&b.addr),
        "a bastion without a mapping file is no skipped host\n{}",
        run.dump()
    );
    let info = env.info_log();
    for t in [&t1, &t2] {
        let line = format!(
            "{}: connected as {} on port {} via bastion {} (",
            t.addr,
            test_user(),
            t.port,
            b.addr
        );
        assert!(info.contains(&line), "{line}\n{}", run.dump());
    }

    let check = env.run(&["check"]);
    check.expect(0);
    assert_eq!(route(&check, &b.addr), "direct", "{}", check.dump());
    assert_eq!(route(&check, &t1.addr), format!("via {}", b.addr));
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.starts_with(&b.addr) && l.ends_with("bastion for 2 host(s)")),
        "{}",
        check.dump()
    );
    let json = env.run(&["check", "--json"]);
    json.expect(0);
    let rows: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |a: &str| rows.iter().find(|r| r["host"] == a).unwrap()["route"].clone();
    assert_eq!(of(&t2.addr), json!(format!("via {}", b.addr)));
    assert_eq!(of(&b.addr), json!("direct"));
}

/// A target behind a bastion whose key changed is refused under strict with the
/// usual message (its own name and port), while the other target goes on.
#[test]
fn a_changed_target_key_behind_a_bastion_is_refused() {
    let mut env = Env::new("bastion-key");
    let b = bastion(&mut env);
    env.src("hello.txt", "x\n");
    let (good, good_dest) = target(&mut env, &b, "good");
    let liar = env.sshd();
    let other = env.sshd();
    env.add_host_raw(json!({
        "ip_address": liar.addr, "user": test_user(), "port": liar.port,
        "identity_file": env.key.private, "proxy_jump": b.addr,
    }));
    // known_hosts says another key for this host.
    env.trust(other.known_hosts_line_as(&liar.addr, liar.port));
    let liar_dest = env.remote("liar").join("hello.txt");
    env.map(&liar.addr, json!([{"src": "hello.txt", "dest": liar_dest}]));
    let run = env.run(&["sync"]);
    run.expect(1);
    assert!(good_dest.exists() && !liar_dest.exists(), "{}", run.dump());
    let status = run.status(&liar.addr);
    assert!(
        status.starts_with("failed: host key mismatch: the server offered ssh-ed25519 SHA256:")
            && status.contains(&format!("ssh-keygen -R '[{}]:{}'", liar.addr, liar.port)),
        "{}",
        run.dump()
    );
    assert_eq!(forwarded_to(&b, &liar), 1, "{}", b.log());
    assert_eq!(forwarded_to(&b, &good), 1, "{}", b.log());
    assert!(
        !liar.log().contains("Accepted publickey"),
        "no login after a key mismatch\n{}",
        liar.log()
    );
}

/// bastion → inner bastion → target: each bastion's log has the request for the
/// next hop, and info.log names both, the first logged in to first.
#[test]
fn a_two_hop_chain() {
    let mut env = Env::new("bastion-chain");
    let outer = bastion(&mut env);
    let inner = bastion(&mut env);
    env.set_field(&inner.addr, "proxy_jump", json!(outer.addr));
    env.src("hello.txt", "two hops\n");
    let (t, dest) = target(&mut env, &inner, "t");
    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap_or_default(),
        "two hops\n",
        "{}",
        run.dump()
    );
    assert_eq!(forwarded_to(&outer, &inner), 1, "{}", outer.log());
    assert_eq!(forwarded_to(&inner, &t), 1, "{}", inner.log());
    assert_eq!(forwarded_to(&outer, &t), 0, "{}", outer.log());
    let info = env.info_log();
    let want = format!("via bastions {},{} (", outer.addr, inner.addr);
    assert!(info.contains(&want), "{want}\n{}", run.dump());
    let check = env.run(&["check"]);
    assert_eq!(
        route(&check, &t.addr),
        format!("via {},{}", outer.addr, inner.addr),
        "{}",
        check.dump()
    );
}

/// A bastion that is down: sync fails each target with one line naming it and
/// exits 1; a watch started meanwhile brings both targets up to date once the
/// bastion is back, and again after it went down and came back while idle.
#[test]
fn targets_catch_up_when_their_bastion_is_back() {
    let mut env = Env::new("bastion-down");
    env.ini("\n[sync]\nretry_max_s = 2\n");
    let mut b = bastion(&mut env);
    env.src("hello.txt", "v1\n");
    let (t1, d1) = target(&mut env, &b, "t1");
    let (t2, d2) = target(&mut env, &b, "t2");
    b.stop();
    let run = env.run(&["sync"]);
    run.expect(1);
    let errors = env.error_log();
    for t in [&t1, &t2] {
        let status = run.status(&t.addr);
        assert!(
            status.starts_with(&format!(
                "failed: unreachable via bastion {}: host unreachable: connect to port {}",
                b.addr, b.port
            )),
            "{status}\n{}",
            run.dump()
        );
        let lines = errors.lines().filter(|l| l.contains(&t.addr)).count();
        assert_eq!(lines, 1, "one error line per target\n{errors}");
    }

    let mut watch = env.watch();
    wait_until(CATCH_UP, "both targets are down in error.log", || {
        let e = watch.error_log();
        [&t1, &t2].iter().all(|t| {
            e.lines().any(|l| {
                l.contains(&format!(
                    "{}: host down: unreachable via bastion {}",
                    t.addr, b.addr
                ))
            })
        })
    });
    b.restart();
    let arrived =
        |d: &std::path::Path, want: &str| std::fs::read_to_string(d).is_ok_and(|text| text == want);
    wait_until(
        CATCH_UP,
        "the targets caught up after the bastion came back",
        || arrived(&d1, "v1\n") && arrived(&d2, "v1\n"),
    );
    // Down again while the watch idles (both rounds over), a change meanwhile, then back.
    wait_until(CATCH_UP, "both rounds are over", || {
        let info = watch.info_log();
        [&t1, &t2]
            .iter()
            .all(|t| info.contains(&format!("{}: host is back after", t.addr)))
    });
    b.stop();
    env.src("hello.txt", "v2\n");
    wait_until(CATCH_UP, "the targets are down again", || {
        watch
            .error_log()
            .matches("host down: unreachable via bastion")
            .count()
            >= 4
    });
    b.restart();
    wait_until(
        CATCH_UP,
        "the change arrived once the bastion was back",
        || arrived(&d1, "v2\n") && arrived(&d2, "v2\n"),
    );
    let (code, _) = watch.terminate();
    assert_eq!(code, Some(0), "{}", watch.dump());
}

/// What OpenSSH's `ssh -G -F FILE NAME` resolves, with `HOME=home`: keyword → value.
fn ssh_g(file: &std::path::Path, name: &str, home: &std::path::Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("ssh")
        .args(["-G", "-F"])
        .arg(file)
        .arg(name)
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh (openssh-client) runs");
    assert!(
        out.status.success(),
        "ssh -G {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// hostsync's `check -v --json` view of `name`: keyword (lowercased, as `ssh -G`
/// prints them) → values, in order.
fn resolved(check: &Run, name: &str) -> Vec<(String, String, String)> {
    let row: Value = check
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["host"] == name)
        .unwrap_or_else(|| panic!("no row for {name}\n{}", check.dump()));
    row["resolved"]
        .as_array()
        .unwrap_or_else(|| panic!("no resolved for {name}\n{}", check.dump()))
        .iter()
        .map(|s| {
            (
                s["keyword"].as_str().unwrap().to_lowercase(),
                s["value"].as_str().unwrap().to_string(),
                s["from"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `check --offline -v`'s resolution table for `name`: (keyword lowercased, value,
/// from), in order. Values and origins hold no spaces in these tests.
fn offline_resolved(run: &Run, name: &str) -> Vec<(String, String, String)> {
    let table = run
        .stdout
        .split("\n\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no resolution table\n{}", run.dump()));
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.first() == Some(&name))
        .map(|c| (c[1].to_lowercase(), c[2].to_string(), c[3].to_string()))
        .collect()
}

/// A test-written ssh_config with an alias, a negated pattern, an Include, a
/// `Host *` block, a ProxyJump in user@host:port form to a host that is no entry,
/// a Match block and a keyword hostsync does not use. Each name resolves as
/// `ssh -G` resolves it, the push goes where it says (each through its own
/// bastion, as the bastions' logs show), and what was skipped is one debug line
/// each.
#[test]
fn ssh_config_resolves_as_ssh_g_and_routes_the_push() {
    let mut env = Env::new("bastion-sshcfg");
    let entry_bastion = bastion(&mut env);
    let mut outside = env.sshd();
    outside.restart_with_log_level("DEBUG1");
    let (t1, t2) = (env.sshd(), env.sshd());
    let kh = env.dir.write(
        "kh",
        [&entry_bastion, &outside, &t1, &t2]
            .iter()
            .map(|s| s.known_hosts_line() + "\n")
            .collect::<String>(),
    );
    let user = test_user();
    let key = env.key.private.display().to_string();
    env.dir.write(
        ".ssh/conf.d/db.conf",
        format!(
            "Host db.fleet\n  HostName {}\n  Port {}\n  ProxyJump {}\n",
            t2.addr, t2.port, entry_bastion.addr
        ),
    );
    let config = env.dir.write(
        ".ssh/config",
        format!(
            "# the fleet\nInclude conf.d/*.conf\nHost web\n  HostName {t1a}\n  Port {t1p}\n  ProxyJump {user}@{oa}:{op}\n\
             Host *.fleet !db.fleet\n  Port 1\n  User nobody\n\
             Match host web\n  User nobody\nHost *\n  User {user}\n  IdentityFile {key}\n  \
             UserKnownHostsFile {kh}\n  ConnectTimeout 7\n  ServerAliveInterval 15\n  ForwardAgent no\n",
            t1a = t1.addr,
            t1p = t1.port,
            oa = outside.addr,
            op = outside.port,
            kh = kh.display(),
        ),
    );
    env.ini("ssh_config = ~/.ssh/config\n");
    env.add_host_raw(json!({"ip_address": "web"}));
    env.add_host_raw(json!({"ip_address": "db.fleet"}));
    env.src("hello.txt", "by alias\n");
    let d1 = env.remote("web").join("hello.txt");
    let d2 = env.remote("db").join("hello.txt");
    env.map("web", json!([{"src": "hello.txt", "dest": d1}]));
    env.map("db.fleet", json!([{"src": "hello.txt", "dest": d2}]));

    // Offline first: a name resolved wrongly must fail the test before anything
    // could look it up (only loopback may ever be contacted).
    let offline = env.run(&["-v", "check", "--offline"]);
    offline.expect(0);
    for name in ["web", "db.fleet"] {
        let g = ssh_g(&config, name, env.dir.path());
        let ours = offline_resolved(&offline, name);
        for keyword in [
            "hostname",
            "user",
            "port",
            "identityfile",
            "proxyjump",
            "connecttimeout",
            "serveraliveinterval",
            "userknownhostsfile",
        ] {
            let theirs: Vec<String> = g
                .iter()
                .filter(|(k, _)| k == keyword)
                .map(|(_, v)| v.replace(['[', ']'], ""))
                .collect();
            let mine: Vec<String> = ours
                .iter()
                .filter(|(k, _, _)| k == keyword)
                .map(|(_, v, _)| v.clone())
                .collect();
            assert_eq!(mine, theirs, "{name}: {keyword}\n{}", offline.dump());
        }
        // Every value of these names came from the ssh_config (file and line).
        for (k, _, from) in &ours {
            assert!(
                from.starts_with(&env.dir.path().join(".ssh").display().to_string()),
                "{name}: {k} from {from}"
            );
        }
    }
    let web_port = offline_resolved(&offline, "web")
        .into_iter()
        .find(|(k, _, _)| k == "port")
        .unwrap();
    assert_eq!(web_port.2, format!("{}:5", config.display()));
    let check = env.run(&["-v", "check", "--json"]);
    check.expect(0);
    for name in ["web", "db.fleet"] {
        assert_eq!(
            resolved(&check, name),
            offline_resolved(&offline, name),
            "check -v --json says what check --offline -v says\n{}",
            check.dump()
        );
    }

    // check went through each bastion once already.
    assert_eq!(forwarded_to(&outside, &t1), 1, "{}", outside.log());
    let run = env.run(&["-v", "sync"]);
    run.expect(0);
    for d in [&d1, &d2] {
        assert_eq!(
            std::fs::read_to_string(d).unwrap_or_default(),
            "by alias\n",
            "{}",
            run.dump()
        );
    }
    assert_eq!(forwarded_to(&outside, &t1), 2, "{}", outside.log());
    assert_eq!(
        forwarded_to(&entry_bastion, &t2),
        2,
        "{}",
        entry_bastion.log()
    );
    assert_eq!(
        forwarded_to(&outside, &t2) + forwarded_to(&entry_bastion, &t1),
        0
    );
    // This run's part of info.log (check wrote its own lines before).
    let all = env.info_log();
    let info = &all[all.rfind("] check finished:").expect("check finished")..];
    let via = format!(
        "web: connected as {user} on port {} via bastion {user}@{}:{} (",
        t1.port, outside.addr, outside.port
    );
    assert!(info.contains(&via), "{via}\n{}", run.dump());
    for skipped in [
        format!(
            "{}:18: forwardagent: not used by hostsync; skipped",
            config.display()
        ),
        format!("{}:10: Match block skipped", config.display()),
    ] {
        assert_eq!(
            info.matches(&skipped).count(),
            1,
            "{skipped}: once\n{}",
            run.dump()
        );
    }
}

/// `StrictHostKeyChecking no` in ssh_config is ignored with one warning: a host
/// whose key is not known is still refused under `host_key_policy = strict`.
#[test]
fn ssh_config_never_weakens_the_host_key_check() {
    let mut env = Env::new("bastion-strict");
    let stranger = env.sshd();
    env.add_host_raw(json!({
        "ip_address": stranger.addr, "user": test_user(), "port": stranger.port,
        "identity_file": env.key.private,
    }));
    let dest = env.remote("s").join("hello.txt");
    env.src("hello.txt", "x\n");
    env.map(&stranger.addr, json!([{"src": "hello.txt", "dest": dest}]));
    let config = env.dir.write(
        "ssh_config",
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile none\n",
    );
    env.ini(&format!("ssh_config = {}\n", config.display()));
    let run = env.run(&["sync"]);
    run.expect(1);
    assert!(
        run.status(&stranger.addr)
            .starts_with("failed: host key unknown: "),
        "{}",
        run.dump()
    );
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("hostsync: warning: "))
        .collect();
    assert_eq!(
        warnings,
        [
            format!(
                "hostsync: warning: {}:2: StrictHostKeyChecking no is ignored: ssh_config never weakens hostsync's host-key check; [ssh] host_key_policy decides",
                config.display()
            ),
            format!(
                "hostsync: warning: {}:3: UserKnownHostsFile none is ignored: ssh_config never weakens hostsync's host-key check; [ssh] known_hosts is used",
                config.display()
            ),
        ],
        "{}",
        run.dump()
    );
    assert!(!dest.exists());
}

/// A jump cycle, a proxy_jump that names no entry, and an ssh_config line that is
/// not `keyword value` each stop every command with exit 2 and one line naming
/// the file; nothing is contacted.
#[test]
fn bad_jump_configuration_is_one_line_and_exit_2() {
    let mut env = Env::new("bastion-bad");
    let a = env.sshd();
    let b = env.sshd();
    env.add_host(&a, Auth::Key);
    env.add_host(&b, Auth::Key);
    let hosts = env.cfg().join("connection_info.json").display().to_string();
    let cases: [(&str, Value, Value, Option<&str>, String); 3] = [
        (
            "cycle",
            json!(b.addr),
            json!(a.addr),
            None,
            format!(
                "hostsync: {hosts}: proxy_jump cycle: {} -> {} -> {}; remove one of these jumps",
                a.addr, b.addr, a.addr
            ),
        ),
        (
            "unknown name",
            json!("127.0.0.1"),
            Value::Null,
            None,
            format!(
                "hostsync: {hosts}: host #1 ({}): proxy_jump \"127.0.0.1\" is not the ip_address of an entry in {hosts}; ",
                a.addr
            ),
        ),
        (
            "bad ssh_config line",
            Value::Null,
            Value::Null,
            Some("Host *\n  User u\n\"quoted keyword\" value\n"),
            format!(
                "hostsync: {}:3: `\"quoted keyword\" value` is not `keyword value`; fix or remove the line",
                env.dir.join("bad_config").display()
            ),
        ),
    ];
    for (what, a_jump, b_jump, ssh_config, want) in cases {
        env.set_field(&a.addr, "proxy_jump", a_jump);
        env.set_field(&b.addr, "proxy_jump", b_jump);
        if let Some(text) = ssh_config {
            let f = env.dir.write("bad_config", text);
            env.ini(&format!("ssh_config = {}\n", f.display()));
        }
        for args in [
            &["sync"][..],
            &["check"],
            &["check", "--offline"],
            &["watch"],
        ] {
            let run = env.run(args);
            run.expect(2);
            assert!(run.stdout.is_empty(), "{what}: {}", run.dump());
            assert_eq!(
                run.stderr.lines().count(),
                1,
                "{what}: one line\n{}",
                run.dump()
            );
            assert!(
                run.stderr.starts_with(&want),
                "{what}: {want}\n{}",
                run.dump()
            );
        }
    }
    assert!(!a.log().contains("Accepted") && !b.log().contains("Accepted"));
}

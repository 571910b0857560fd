//! hostsync's integration tests, built as one binary (ripgrep's layout): each
//! module covers one issue's behaviour against real OpenSSH servers on loopback.

/// The shared harness: temp dirs, real sshd, fault proxy, polling, hostsync runs.
mod util;

/// Issue 14 (the audit trail tells the truth): editor saves under watch,
/// removals, trailing-slash dests, same-second edits and `--checksum`, dry runs
/// on unwritable dests, unmapped hosts, host-key hints, systemd steps, narrowed
/// runs, did-you-mean, watch lines, `sync -v` reasons, readable bytes, default keys.
mod audit;
/// Issue 18 (fleets behind bastions): proxy_jump, chains, one bastion session for
/// many targets, a bastion that goes down, ssh_config, check's ROUTE.
mod bastion;
/// Malformed configuration files: exit 2 with one line naming file and problem.
mod config_errors;
/// Issue 20 (from clone to fleet): the top-level example, `init`, `check
/// --offline`, the man page, the installed package; and issue 14's
/// `"disabled": true` hosts.
mod fleet;
/// Self-tests of the harness: sshd, keys, proxy, polling.
mod harness;
/// Issue 13 (hostile places): planted links, swapped directories, an attacker
/// user, a lying server, control characters, setuid bits.
mod hostile;
/// Issue 17: `[ssh] keepalive_s` finds a frozen idle session before a change needs it.
mod keepalive;
/// Issue 15: the folders of src/ depend one way; every file has a true module doc.
mod layout;
/// Issue 5 (everything the older sync tools do): excludes, delete, numbered
/// backups, post_sync, `--dry-run`/`--exit-code`, `--json`, progress bars, completions.
mod parity;
/// Issue 16's watch latency: a `watch` session keeps one agent for all its rounds.
mod persistent;
/// Issue 16: the shell way on BusyBox-only logins behind OpenSSH and Dropbear,
/// beyond the matrix (a destination others can write).
mod posix;
/// Issue 17: SIGHUP reloads the configuration of a running `watch`.
mod reload;
/// Issue 17 (nothing is dropped): a full remote disk, a read-only destination,
/// leftover temporaries, per-path retries under watch, `status`, one daemon per config.
mod retry;
/// Issue 16's sftp tier beyond the matrix: post_sync and open destinations on
/// the SFTP-only account, a host with neither shell nor SFTP, watch latency.
mod sftp;
/// Issue 16's sftp tier, pipelined runs of small files: many files, refusals
/// in the middle of a run, a file changing during it, SIGTERM and a cut mid-run.
mod sftp_pipe;
/// Issue 19 (slow links): delta transfer of big files, `bwlimit_kib`,
/// `compression`, behind a counting proxy.
mod slow;
/// `hostsync sync` against real sshd: destinations, skips, failures, atomicity.
mod sync;
/// Issue 16's test matrix: every case of its list on each foreign host and over
/// each tier forced on plain OpenSSH (`tier::TARGET::CASE`).
mod tier;
/// Issue 4 (Trust): `check`, auth methods and key formats, no secret leaks,
/// hostile remote paths, symlinks, IPv6 and DNS names, host key policies, stalls.
mod trust;
/// `hostsync watch`: live replication with real inotify and sshd.
mod watch;

//! Shared integration-test harness for hostsync.
//!
//! Every integration test file declares `mod util;` and uses:
//!
//! * [`Dir`] — a unique scratch directory per test;
//! * [`Agent`] — a real ssh-agent on a socket in the test's folder;
//! * [`Sshd`] — a real OpenSSH server on a random loopback address, with
//!   [`client_key`] to make client keys and [`ensure_test_user`] /
//!   [`test_user`] for the account the tests log in as;
//! * [`Proxy`] — a fault-injecting TCP proxy to put in front of a server;
//! * [`foreign`] — issue 16's foreign servers: a BusyBox-only login, Dropbear,
//!   an SFTP-only account;
//! * [`tier`] — issue 16's test matrix: the targets every tier case runs
//!   against, and one case's world;
//! * [`wait_until`] / [`wait_for`] / [`holds_within`] — bounded polling instead of sleeps.
//!
//! Only loopback addresses (127.0.0.0/8 and ::1) are ever contacted.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod dir;
pub mod foreign;
pub mod hostsync;
pub mod proxy;
pub mod sshd;
pub mod tier;
pub mod wait;

pub use agent::Agent;
pub use dir::Dir;
pub use proxy::{Fault, Proxy};
pub use sshd::{
    ATTACKER, ClientKey, Sshd, TEST_PASSWORD, TEST_USER, attacker_ids, client_key,
    ensure_test_user, is_root, root_or_skip, test_user, test_user_ids,
};
pub use wait::{holds_within, wait_for, wait_until};

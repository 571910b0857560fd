//! A small fault-injecting TCP proxy for network-fault tests.
//!
//! A [`Proxy`] listens on a random loopback address and forwards every
//! connection it accepts to one target (normally an [`super::Sshd`]). Its
//! [`Fault`] decides how: faithfully, cut off after some bytes, stalled
//! completely, or throttled. Pointing the tool under test at the proxy
//! instead of the server simulates a flaky or dead network path to a host.
//!
//! It counts what it forwards, in each direction ([`Proxy::bytes_up`],
//! [`Proxy::bytes_down`]), to cross-check what hostsync says it sent.
//!
//! Each connection is served by two copy threads (client→server and
//! server→client). Dropping the proxy stops accepting, closes every
//! connection and joins all its threads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::sshd::{assert_loopback, next_loopback_addr};

/// How the proxy treats a connection. Chosen when the connection is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything faithfully.
    None,
    /// Forward normally, but once this many client→server bytes have been
    /// forwarded, close both directions (FIN to both peers).
    CutAfter(u64),
    /// Accept the connection but forward nothing at all, not even connect
    /// to the target; the client's socket stays open (until the proxy is
    /// dropped), so the client sees a silent, hanging server.
    Stall,
    /// Forward both directions, each throttled to about this many bytes per
    /// second (must be > 0).
    Slow {
        /// The throughput limit per direction.
        bytes_per_sec: u64,
    },
}

/// A running fault-injecting proxy. See the module docs.
pub struct Proxy {
    /// The loopback address it listens on, e.g. `"127.0.0.88"`.
    pub addr: String,
    /// The port it listens on.
    pub port: u16,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle and its threads.
struct Shared {
    target: SocketAddr,
    fault: Mutex<Fault>,
    stopping: AtomicBool,
    forwarded: AtomicU64,
    /// Client→server bytes forwarded (the part of `forwarded` going up).
    upstream: AtomicU64,
    accepted: AtomicUsize,
    /// Forwarded connections; a connection is closed (its sockets dropped)
    /// when both of its copy threads are done.
    live: Mutex<Vec<Weak<Conn>>>,
    /// Stalled connections, kept open here until the proxy is dropped.
    stalled: Mutex<Vec<Arc<Conn>>>,
    copy_threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The two sockets of one proxied connection.
struct Conn {
    client: TcpStream,
    server: Option<TcpStream>,
}

impl Conn {
    /// Closes both directions of both sockets, waking up blocked threads.
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(server) = &self.server {
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking copy thread must not take
/// the whole proxy down with it).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn check_fault(fault: Fault) {
    if let Fault::Slow { bytes_per_sec } = fault {
        assert!(bytes_per_sec > 0, "Fault::Slow needs bytes_per_sec > 0");
    }
}

impl Proxy {
    /// Starts a proxy on a random loopback address and port that forwards
    /// to `target_addr:target_port` (which must be a loopback address) with
    /// the given fault.
    pub fn start(target_addr: &str, target_port: u16, fault: Fault) -> Proxy {
        check_fault(fault);
        let target = SocketAddr::from((assert_loopback(target_addr), target_port));
        let listener = (0..20)
            .find_map(|_| {
                let ip = assert_loopback(&next_loopback_addr());
                TcpListener::bind((ip, 0)).ok()
            })
            .expect("could not bind the proxy on any loopback address");
        let local = listener.local_addr().expect("proxy local address");

        let shared = Arc::new(Shared {
            target,
            fault: Mutex::new(fault),
            stopping: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            upstream: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            live: Mutex::new(Vec::new()),
            stalled: Mutex::new(Vec::new()),
            copy_threads: Mutex::new(Vec::new()),
        });
        let accept_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("proxy-accept-{local}"))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawning the proxy accept thread")
        };
        Proxy {
            addr: local.ip().to_string(),
            port: local.port(),
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// Changes the fault for connections accepted from now on; connections
    /// already open keep theirs.
    pub fn set_fault(&self, fault: Fault) {
        check_fault(fault);
        *lock(&self.shared.fault) = fault;
    }

    /// The fault new connections get.
    pub fn fault(&self) -> Fault {
        *lock(&self.shared.fault)
    }

    /// Total bytes forwarded so far, both directions and all connections.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Client→server bytes forwarded so far, all connections (issue 19: what a
    /// push sends, SSH framing included).
    pub fn bytes_up(&self) -> u64 {
        self.shared.upstream.load(Ordering::SeqCst)
    }

    /// Server→client bytes forwarded so far, all connections.
    pub fn bytes_down(&self) -> u64 {
        self.bytes_forwarded().saturating_sub(self.bytes_up())
    }

    /// How many connections the proxy has accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept thread up with a connection of our own; it sees
        // the flag and exits, closing the listener.
        let listen = SocketAddr::from((assert_loopback(&self.addr), self.port));
        let _ = TcpStream::connect_timeout(&listen, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        // No new connections can appear now: close the existing ones.
        for conn in lock(&self.shared.live).drain(..) {
            if let Some(conn) = conn.upgrade() {
                conn.close();
            }
        }
        for conn in lock(&self.shared.stalled).drain(..) {
            conn.close();
        }
        let threads: Vec<_> = lock(&self.shared.copy_threads).drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match incoming {
            Ok(client) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let fault = *lock(&shared.fault);
                handle(client, fault, shared);
            }
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Sets up forwarding of one accepted connection according to `fault`.
fn handle(client: TcpStream, fault: Fault, shared: &Arc<Shared>) {
    if fault == Fault::Stall {
        lock(&shared.stalled).push(Arc::new(Conn {
            client,
            server: None,
        }));
        return;
    }
    let server = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("proxy: cannot connect to {}: {e}", shared.target);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let conn = Arc::new(Conn {
        client,
        server: Some(server),
    });
    {
        let mut live = lock(&shared.live);
        live.retain(|conn| conn.strong_count() > 0);
        live.push(Arc::downgrade(&conn));
    }
    let mut threads = lock(&shared.copy_threads);
    threads.retain(|thread| !thread.is_finished());
    for upstream in [true, false] {
        let conn = Arc::clone(&conn);
        let shared = Arc::clone(shared);
        let thread = thread::Builder::new()
            .name(if upstream { "proxy-c2s" } else { "proxy-s2c" }.to_owned())
            .spawn(move || copy(&conn, upstream, fault, &shared))
            .expect("spawning a proxy copy thread");
        threads.push(thread);
    }
}

/// Copies one direction of `conn` until EOF, an error, or the fault says
/// stop. `upstream` is the client→server direction.
fn copy(conn: &Conn, upstream: bool, fault: Fault, shared: &Shared) {
    let server = conn.server.as_ref().expect("forwarded connection");
    let (mut from, mut to) = if upstream {
        (&conn.client, server)
    } else {
        (server, &conn.client)
    };
    let cut_after = match fault {
        Fault::CutAfter(limit) if upstream => Some(limit),
        _ => None,
    };
    let bytes_per_sec = match fault {
        Fault::Slow { bytes_per_sec } => Some(bytes_per_sec),
        _ => None,
    };
    let mut buf = [0u8; 16 * 1024];
    // Throttled: small chunks (~1/20 s worth each) so the rate is smooth.
    let chunk = bytes_per_sec.map_or(buf.len(), |rate| {
        usize::try_from(rate / 20)
            .unwrap_or(usize::MAX)
            .clamp(1, buf.len())
    });
    let started = Instant::now();
    let mut passed: u64 = 0;
    loop {
        let mut want = chunk;
        if let Some(limit) = cut_after {
            let left = limit.saturating_sub(passed);
            if left == 0 {
                conn.close();
                return;
            }
            want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n as u64;
        if upstream {
            shared.upstream.fetch_add(n as u64, Ordering::SeqCst);
        }
        shared.forwarded.fetch_add(n as u64, Ordering::SeqCst);
        if let Some(rate) = bytes_per_sec {
            let due = started + Duration::from_secs_f64(passed as f64 / rate as f64);
            // Sleep in slices so that dropping the proxy is not delayed.
            while !shared.stopping.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                thread::sleep((due - now).min(Duration::from_millis(50)));
            }
        }
    }
    // Pass the EOF (or failure) on; the other direction finishes by itself.
    let _ = to.shutdown(Shutdown::Write);
}

//! Acknowledging the server at once: TCP_QUICKACK after every receive.
//!
//! OpenSSH's sshd leaves Nagle on for non-interactive sessions. When it writes two
//! small packets back to back (right after login: its host-keys notice, then the
//! confirmation of our first channel), the second one waits in its kernel until
//! the first is acknowledged, and Linux delays our acknowledgement by 40 ms. Every
//! new session paid that once: the first `exec` took 46 ms instead of 5 ms
//! (measured against OpenSSH 9.2 on loopback; see BENCHMARKS.md). Linux turns
//! delayed ACKs back on by itself, so the option is set again after every receive,
//! through libssh2's receive callback. Elsewhere than Linux this does nothing.

use ssh2::Session;

/// Makes `session` set TCP_QUICKACK after each receive. Call before the handshake.
#[cfg(target_os = "linux")]
pub(crate) fn install(session: &Session) {
    /// libssh2.h: `LIBSSH2_CALLBACK_RECV`.
    const LIBSSH2_CALLBACK_RECV: libc::c_int = 6;
    unsafe extern "C" {
        // Deprecated in libssh2 1.11.1 for `_set2`, but present in every version,
        // including a system libssh2 older than the bundled one.
        fn libssh2_session_callback_set(
            session: *mut libc::c_void,
            cbtype: libc::c_int,
            callback: *mut libc::c_void,
        ) -> *mut libc::c_void;
    }
    let mut raw = session.raw();
    let raw: *mut libc::c_void = std::ptr::from_mut(&mut *raw).cast();
    // SAFETY: `raw` is a live session (its lock is held for the call), and
    // `recv_quickack` has libssh2's LIBSSH2_RECV_FUNC signature.
    unsafe {
        libssh2_session_callback_set(raw, LIBSSH2_CALLBACK_RECV, recv_quickack as *mut _);
    }
}

/// Not Linux: nothing to do.
#[cfg(not(target_os = "linux"))]
pub(crate) fn install(_session: &Session) {}

/// libssh2's own receive function (`ssh2_recv` in its misc.c: `-errno` on
/// failure, EINTR as EAGAIN), plus TCP_QUICKACK after each receive.
#[cfg(target_os = "linux")]
unsafe extern "C" fn recv_quickack(
    socket: libc::c_int,
    buffer: *mut libc::c_void,
    length: libc::size_t,
    flags: libc::c_int,
    _abstract: *mut *mut libc::c_void,
) -> libc::ssize_t {
    // SAFETY: libssh2 passes its own socket and a buffer of `length` bytes.
    let rc = unsafe { libc::recv(socket, buffer, length, flags) };
    if rc < 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return match errno {
            libc::EINTR | libc::EAGAIN => -(libc::EAGAIN as libc::ssize_t),
            e => -(e as libc::ssize_t),
        };
    }
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the right size. Failure
    // (not a TCP socket) only costs the 40 ms this saves, so it is ignored.
    unsafe {
        libc::setsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    rc
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn quickack(s: &TcpStream) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket and an out-parameter of the right size.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
        v
    }

    #[test]
    fn receives_like_recv_and_turns_quickack_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let call = |buf: &mut [u8]| unsafe {
            recv_quickack(
                rx.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::null_mut(),
            )
        };
        // Nothing sent yet: libssh2 expects -EAGAIN, not -1.
        assert_eq!(call(&mut buf), -(libc::EAGAIN as libc::ssize_t));
        // Turn delayed ACKs on, as Linux does by itself in an exchange.
        let zero: libc::c_int = 0;
        // SAFETY: as above.
        unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        assert_eq!(quickack(&rx), 0);
        tx.write_all(b"hello").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let n = loop {
            let n = call(&mut buf);
            if n != -(libc::EAGAIN as libc::ssize_t) || std::time::Instant::now() > deadline {
                break n;
            }
            std::thread::yield_now();
        };
        assert_eq!(n, 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(quickack(&rx), 1, "TCP_QUICKACK is on again after a receive");
    }

    #[test]
    fn errors_come_back_as_negative_errno() {
        // SAFETY: -1 is not a socket; recv fails with EBADF.
        let n = unsafe { recv_quickack(-1, std::ptr::null_mut(), 0, 0, std::ptr::null_mut()) };
        assert_eq!(n, -(libc::EBADF as libc::ssize_t));
    }
}

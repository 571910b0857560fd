//! Every panic is a bug, and none passes unseen, on any thread (issue 17 and the
//! house rule for threads).
//!
//! [`install`] (called when the logs start) sets a process-wide panic hook.
//! Whatever thread panics, error.log gets one line with the thread, the place
//! and the message, the logs are flushed, and the default hook prints the panic
//! on stderr as usual. What happens next depends on who will notice ([`fate`]):
//! - a connection worker (`xfer-<n>`) is joined by its pool, which stops the
//!   run in order and makes the command exit 1 (`crate::exec::pool`);
//! - the main thread unwinds to `main`, and the process exits 101;
//! - any other thread (the signal thread, a bastion's bridge, notify's watcher,
//!   a scan) would leave the daemon running without it, watching nothing or
//!   reaching no host behind that bastion, so the process exits 1 at once and
//!   systemd restarts it. A run cut short this way may leave temporaries on the
//!   remotes; they are named as this client's and removed by a later run.

use std::any::Any;

/// What becomes of the process after a thread panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Someone joins the thread and ends the run with a non-zero exit.
    Joined,
    /// Nobody would: the process exits 1 now.
    Exit,
}

/// Who notices a panic on the thread named `thread` (see the module docs).
pub(crate) fn fate(thread: Option<&str>) -> Fate {
    match thread {
        Some("main") => Fate::Joined,
        Some(name) if name.starts_with("xfer-") => Fate::Joined,
        _ => Fate::Exit,
    }
}

/// The error.log line of a panic: thread, place, message.
pub(crate) fn line(thread: Option<&str>, place: Option<(&str, u32)>, message: &str) -> String {
    let at = place.map_or(String::new(), |(file, line)| format!(" at {file}:{line}"));
    format!(
        "thread {} panicked{at}: {message}; this is a bug in hostsync",
        thread.unwrap_or("<unnamed>")
    )
}

/// The text a panic was raised with.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Installs the hook described in the module docs, in front of the default one.
pub(crate) fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let current = std::thread::current();
        let thread = current.name();
        let place = info.location().map(|l| (l.file(), l.line()));
        log::error!("{}", line(thread, place, &message(info.payload())));
        log::logger().flush();
        default(info);
        if fate(thread) == Fate::Exit {
            std::process::exit(1);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers and the main thread are joined; every other thread ends the process.
    #[test]
    fn only_joined_threads_let_the_process_run_on() {
        assert_eq!(fate(Some("xfer-0")), Fate::Joined);
        assert_eq!(fate(Some("xfer-12")), Fate::Joined);
        assert_eq!(fate(Some("main")), Fate::Joined);
        for other in ["signals", "jump-10.0.0.1", "notify-rs inotify loop", "scan"] {
            assert_eq!(fate(Some(other)), Fate::Exit, "{other}");
        }
        assert_eq!(fate(None), Fate::Exit);
    }

    /// The line names thread, place and message, and says it is a bug.
    #[test]
    fn the_line_names_thread_place_and_message() {
        assert_eq!(
            line(Some("xfer-1"), Some(("src/exec/live.rs", 42)), "boom"),
            "thread xfer-1 panicked at src/exec/live.rs:42: boom; this is a bug in hostsync"
        );
        assert_eq!(
            line(None, None, "x"),
            "thread <unnamed> panicked: x; this is a bug in hostsync"
        );
    }

    /// The hook itself, in a child process (this test binary run again, for this
    /// test only): a worker's panic is logged and the process runs on; a panic
    /// on any other thread is logged and ends the process with exit 1.
    #[test]
    fn the_hook_logs_every_panic_and_exits_on_an_unjoined_thread() {
        const CHILD: &str = "HOSTSYNC_TEST_PANIC_HOOK_LOGS";
        if let Some(dir) = std::env::var_os(CHILD) {
            let _logs = crate::log::start(std::path::Path::new(&dir), false).unwrap();
            install();
            let worker = std::thread::Builder::new().name("xfer-3".into());
            assert!(
                worker
                    .spawn(|| panic!("worker boom"))
                    .unwrap()
                    .join()
                    .is_err()
            );
            println!("still running after the worker's panic");
            let other = std::thread::Builder::new().name("signals".into());
            let _ = other.spawn(|| panic!("signal boom")).unwrap().join();
            println!("still running after the signal thread's panic");
            std::process::exit(0);
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "log::panic::tests::the_hook_logs_every_panic_and_exits_on_an_unjoined_thread",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let errors = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
        let said = format!("{}\n{stdout}\n{stderr}\nerror.log:\n{errors}", out.status);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(stdout.contains("after the worker's panic"), "{said}");
        assert!(
            !stdout.contains("after the signal thread's panic"),
            "{said}"
        );
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 2, "{said}");
        assert!(
            lines[0].contains("[xfer-3] thread xfer-3 panicked at src/log/panic.rs:")
                && lines[0].ends_with(": worker boom; this is a bug in hostsync"),
            "{said}"
        );
        assert!(
            lines[1].contains("[signals] thread signals panicked at src/log/panic.rs:")
                && lines[1].ends_with(": signal boom; this is a bug in hostsync"),
            "{said}"
        );
    }

    /// The message comes out of the payloads `panic!` makes, from a real panic.
    #[test]
    fn the_message_of_a_real_panic() {
        let literal = std::thread::spawn(|| panic!("literal")).join().unwrap_err();
        assert_eq!(message(literal.as_ref()), "literal");
        let n = 7;
        let formatted = std::thread::spawn(move || panic!("item {n}"))
            .join()
            .unwrap_err();
        assert_eq!(message(formatted.as_ref()), "item 7");
        let other = std::thread::spawn(|| std::panic::panic_any(5u8))
            .join()
            .unwrap_err();
        assert_eq!(message(other.as_ref()), "(no message)");
    }
}

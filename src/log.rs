//! Logging setup: `info.log` gets everything at info and above, `error.log` only
//! warnings and errors, so an operator can audit failures at a glance.
//!
//! Only this module knows about flexi_logger; the rest of the code calls the
//! `log` macros. Both files rotate by size (the rotated copies get a timestamp
//! infix, e.g. `info_20261121-154425.log`, and only the newest few are kept), so
//! a long-running daemon never fills the disk with logs. Lines look like
//! `2026-11-21 15:44:25.123 ERROR [xfer-0] 127.0.0.3: host unreachable: ...`.
//! Control characters in a message are escaped C-style ([`crate::escape::controls`]),
//! so every line is one line. A panic on any thread is logged by the hook of [`mod@panic`].

pub(crate) mod panic;

use std::path::Path;

use anyhow::{Context, Result};
use flexi_logger::writers::{FileLogWriter, LogWriter};
use flexi_logger::{
    Cleanup, Criterion, DeferredNow, FileSpec, LogSpecification, Logger, LoggerHandle, Naming,
    WriteMode,
};
use log::{Level, Record};

/// A log file is rotated when it passes this size.
pub(crate) const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
/// How many rotated files of each log are kept.
pub(crate) const KEEP_FILES: usize = 5;

/// Keeps the logger alive; dropping it flushes and closes the files.
pub(crate) struct Logs {
    /// flexi_logger's handle.
    _handle: LoggerHandle,
}

/// Starts logging into `dir` (created if missing). `verbose` adds debug lines to info.log.
pub(crate) fn start(dir: &Path, verbose: bool) -> Result<Logs> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the log folder (log_path)", dir.display()))?;
    // Both files exist from the start, so an empty error.log plainly means no failures.
    for name in ["info.log", "error.log"] {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .with_context(|| format!("{}: cannot create {name}", dir.display()))?;
    }
    let writer = SplitWriter {
        info: file_writer(dir, "info", ROTATE_BYTES)?,
        error: file_writer(dir, "error", ROTATE_BYTES)?,
    };
    let level = if verbose { "debug" } else { "info" };
    // Other crates stay at warn so their chatter does not drown ours.
    let spec = LogSpecification::parse(format!("warn, hostsync = {level}"))
        .context("internal error: bad log specification")?;
    let handle = Logger::with(spec)
        .log_to_writer(Box::new(writer))
        .write_mode(WriteMode::Direct)
        .start()
        .context("cannot start logging")?;
    Ok(Logs { _handle: handle })
}

/// One rotating log file `<dir>/<name>.log`.
fn file_writer(dir: &Path, name: &str, rotate_bytes: u64) -> Result<FileLogWriter> {
    FileLogWriter::builder(
        FileSpec::default()
            .directory(dir)
            .basename(name)
            .suppress_timestamp()
            .suffix("log"),
    )
    .format(format)
    .append()
    .rotate(
        Criterion::Size(rotate_bytes),
        Naming::TimestampsCustomFormat {
            current_infix: Some(""),
            format: "%Y%m%d-%H%M%S-%6f",
        },
        Cleanup::KeepLogFiles(KEEP_FILES),
    )
    // Clean up in the writing thread: no extra thread, and the file count is exact.
    .cleanup_in_background_thread(false)
    .write_mode(WriteMode::Direct)
    .try_build()
    .with_context(|| format!("{}: cannot open {name}.log", dir.display()))
}

/// `2026-11-21 15:44:25.123 INFO  [thread] message`.
fn format(
    w: &mut dyn std::io::Write,
    now: &mut DeferredNow,
    record: &Record,
) -> std::io::Result<()> {
    // Every log line is one line, and nothing in it can move a cursor or forge a
    // line of its own, whatever a name or a remote printed (issue 13).
    let message = record.args().to_string();
    write!(
        w,
        "{} {:<5} [{}] {}",
        now.format("%Y-%m-%d %H:%M:%S%.3f"),
        record.level(),
        std::thread::current().name().unwrap_or("-"),
        crate::escape::controls(&message)
    )
}

/// Sends every record to info.log and warnings and errors also to error.log.
struct SplitWriter {
    /// Everything.
    info: FileLogWriter,
    /// Warnings and errors only.
    error: FileLogWriter,
}

impl LogWriter for SplitWriter {
    fn write(&self, now: &mut DeferredNow, record: &Record) -> std::io::Result<()> {
        self.info.write(now, record)?;
        if record.level() <= Level::Warn {
            self.error.write(now, record)?;
        }
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        self.info.flush()?;
        self.error.flush()
    }

    fn max_log_level(&self) -> log::LevelFilter {
        log::LevelFilter::Trace
    }

    fn shutdown(&self) {
        self.info.shutdown();
        self.error.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotation keeps `info.log` as the live file and renames old content aside.
    #[test]
    fn rotates_by_size_and_keeps_the_live_name() {
        let d = tempfile::tempdir().unwrap();
        let w = file_writer(d.path(), "info", 200).unwrap();
        for i in 0..20 {
            let args = format!("line {i} with some padding to pass the size limit");
            w.write(
                &mut DeferredNow::new(),
                &Record::builder()
                    .args(format_args!("{args}"))
                    .level(Level::Info)
                    .build(),
            )
            .unwrap();
        }
        w.flush().unwrap();
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.contains(&"info.log".to_string()), "{names:?}");
        // flexi_logger cleans up after rotating, so one more may exist for a moment.
        assert!(
            names.len() > 1 && names.len() <= KEEP_FILES + 2,
            "{names:?}"
        );
        let live = std::fs::read_to_string(d.path().join("info.log")).unwrap();
        assert!(live.len() < 400 && live.contains("line 19"), "{live}");
    }
}

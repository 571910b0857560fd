//! The process exit codes, which scripts depend on.

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything arrived (or, for `sync --dry-run`, nothing failed).
    Success = 0,
    /// Some host or file failed; the others completed.
    Failure = 1,
    /// Bad usage or configuration; nothing was done.
    Usage = 2,
    /// `sync --dry-run --exit-code` found differences (and nothing failed); for
    /// `status`, no `watch` daemon runs for this config.ini.
    Differences = 3,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

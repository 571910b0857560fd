//! The process exit codes, which scripts depend on.

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything arrived.
    Success = 0,
    /// Some host or file failed; the others completed.
    Failure = 1,
    /// Bad usage or configuration; nothing was done.
    Usage = 2,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

//! `"post_sync"`: remote commands run after a batch of changes under a mapping
//! has landed on a host (issue 5; csync2's actions, Syncr's post commands).
//!
//! [`crate::exec::push`] calls [`run`] once per batch for each mapping under which
//! something changed (a file or symlink arrived, a remote path was removed, a
//! directory was made), after the commit step, over the same SSH session. Each
//! command is one exec request, so the remote user's login shell runs it, with
//! its usual environment, from the home directory, and with no stdin. Commands
//! run in order; the first one that exits non-zero (or cannot be started) stops
//! the rest of that mapping's list for that host. A command that prints nothing
//! for longer than `[ssh] io_timeout` counts as failed.
//!
//! info.log gets each command's exit status and its first [`LOG_LINES`] lines of
//! output (stdout, then stderr); a failure is also one error.log line with host,
//! mapping (src -> dest) and command.

use crate::config::Mapping;
use crate::failure::Failure;
use crate::report::{Event, HostReport};
use crate::transport::ssh::Connection;

/// The most output of one command that is read (issue 13, "Bounded"): more fails it.
pub(crate) const MAX_OUTPUT: u64 = 1 << 20;

/// How many lines of a command's output go to info.log.
pub(crate) const LOG_LINES: usize = 5;

/// Longest output line logged, in characters (longer ones are cut).
const LINE_CHARS: usize = 200;

/// Runs `mapping`'s post_sync commands in order over `conn`, stopping at the first
/// failure, which is recorded in `report` (and so in error.log and the exit code).
pub(crate) fn run(conn: &Connection, mapping: &Mapping, report: &mut HostReport) {
    let label = format!("{} -> {}", mapping.src.display(), mapping.dest);
    for (i, cmd) in mapping.post_sync.iter().enumerate() {
        let rest = mapping.post_sync.len() - i - 1;
        let stopped = if rest == 0 {
            String::new()
        } else {
            format!("; the {rest} later post_sync command(s) of this mapping were not run")
        };
        let what = format!("post_sync {label}: `{cmd}`");
        match conn.run_command(cmd, b"", MAX_OUTPUT) {
            Ok(out) => {
                log::info!(
                    "{}: {what}: exited with status {}",
                    report.address,
                    out.status
                );
                for line in first_lines(&out.stdout, out.stderr.as_bytes()) {
                    log::info!("{}: post_sync `{cmd}` | {line}", report.address);
                }
                report.event(Event::PostSync {
                    mapping: &label,
                    command: cmd,
                    status: Some(out.status),
                });
                if out.status != 0 {
                    report.fail(
                        Failure::Refused,
                        &what,
                        &format!("exited with status {}{stopped}", out.status),
                    );
                    return;
                }
            }
            Err(e) => {
                report.event(Event::PostSync {
                    mapping: &label,
                    command: cmd,
                    status: None,
                });
                report.fail(
                    Failure::Refused,
                    &what,
                    &format!("could not run: {e:#}{stopped}"),
                );
                return;
            }
        }
    }
}

/// The first [`LOG_LINES`] non-empty lines of stdout, then stderr, each cut to
/// [`LINE_CHARS`] characters; a last line says how many more there were.
fn first_lines(stdout: &[u8], stderr: &[u8]) -> Vec<String> {
    let text = [stdout, stderr]
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .join("\n");
    let all: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let mut out: Vec<String> = all
        .iter()
        .take(LOG_LINES)
        .map(|l| match l.char_indices().nth(LINE_CHARS) {
            Some((cut, _)) => format!("{}...", &l[..cut]),
            None => (*l).to_string(),
        })
        .collect();
    if all.len() > LOG_LINES {
        out.push(format!("({} more lines)", all.len() - LOG_LINES));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_to_the_first_lines() {
        assert!(first_lines(b"", b"").is_empty());
        assert_eq!(first_lines(b"a\n\nb\n", b"err\n"), ["a", "b", "err"]);
        let many: String = (1..=9).map(|i| format!("l{i}\n")).collect();
        let got = first_lines(many.as_bytes(), b"");
        assert_eq!(got, ["l1", "l2", "l3", "l4", "l5", "(4 more lines)"]);
        let long = "x".repeat(500);
        let got = first_lines(long.as_bytes(), b"");
        assert_eq!(got[0].len(), LINE_CHARS + 3);
        assert_eq!(first_lines(b"\xff\n", b""), ["\u{fffd}"]);
    }
}

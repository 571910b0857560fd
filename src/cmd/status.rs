//! `hostsync status [--json]`: what the `watch` daemon of this config.ini is
//! doing, read from `<log_path>/status.json` ([`crate::exec::status`]), which the
//! daemon keeps current (issue 17). One row per host (state, pending changes,
//! failing paths with why, last successful push, bytes sent since start), then
//! one line for the daemon. Whether a daemon runs is asked of its lock
//! ([`super::instance`]), so a status.json left by a crashed daemon is not shown.
//!
//! Exit 0 when every host is `ok` or `catching-up`, 1 when any is `down` or
//! `failing`, 3 when no daemon runs for this config.ini, 2 for a configuration
//! error (before this runs).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde_json::json;

use crate::config::Config;
use crate::exec::status::{self, Status};
use crate::exit::ExitCode;

/// Prints the daemon's status; `Err` is a problem reading it (exit 2).
pub(crate) fn run(config: &Config, json: bool) -> Result<ExitCode> {
    let Some(holder) = super::instance::running(&config.log_dir, &config.path) else {
        eprintln!(
            "hostsync: no hostsync watch is running for {}",
            super::instance::canonical(&config.path).display()
        );
        return Ok(ExitCode::Differences);
    };
    let st = status::read(&config.log_dir).with_context(|| {
        format!(
            "hostsync watch (pid {}) runs, but {} cannot be read",
            holder.pid,
            config.log_dir.join(status::STATUS_FILE).display()
        )
    })?;
    print!("{}", if json { render_json(&st) } else { render(&st) });
    Ok(verdict(&st))
}

/// 0 when every host is `ok` or `catching-up`, else 1.
fn verdict(st: &Status) -> ExitCode {
    if st
        .hosts
        .iter()
        .all(|h| h.state == "ok" || h.state == "catching-up")
    {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

/// The table: a row per host, an indented line per failing path, the daemon line.
fn render(st: &Status) -> String {
    let width = st
        .hosts
        .iter()
        .map(|h| h.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:11}  {:>7}  {:20}  {:>12}",
        "HOST", "STATE", "PENDING", "LAST_OK", "BYTES"
    );
    for h in &st.hosts {
        let last = h.last_ok.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:width$}  {:11}  {:>7}  {:20}  {:>12}",
            h.host, h.state, h.pending, last, h.bytes
        );
        for f in &h.failing {
            let _ = writeln!(
                out,
                "  failing: {}: {}",
                crate::escape::controls(&f.path),
                crate::escape::controls(&f.reason)
            );
        }
    }
    let d = &st.daemon;
    let _ = writeln!(
        out,
        "daemon: pid {}, started {}, config {}",
        d.pid, d.started, d.config
    );
    out
}

/// One JSON object per host, then `{"daemon": ...}`, one per line.
fn render_json(st: &Status) -> String {
    let mut out = String::new();
    for h in &st.hosts {
        let _ = writeln!(out, "{}", serde_json::to_string(h).unwrap_or_default());
    }
    let _ = writeln!(out, "{}", json!({ "daemon": st.daemon }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::status::{Daemon, Failing, HostStatus};

    fn sample(state: &str) -> Status {
        Status {
            hosts: vec![
                HostStatus {
                    host: "127.0.0.2".into(),
                    state: "ok".into(),
                    pending: 0,
                    failing: vec![],
                    last_ok: Some("2026-12-01T15:04:19Z".into()),
                    bytes: 12,
                },
                HostStatus {
                    host: "127.0.0.3".into(),
                    state: state.into(),
                    pending: 1,
                    failing: vec![Failing {
                        path: "/a -> /b".into(),
                        reason: "no space left on device".into(),
                    }],
                    last_ok: None,
                    bytes: 0,
                },
            ],
            daemon: Daemon {
                pid: 42,
                started: "2026-12-01T15:00:00Z".into(),
                config: "/etc/hostsync/config.ini".into(),
            },
        }
    }

    #[test]
    fn rows_failing_paths_daemon_line_and_exit_codes() {
        let t = render(&sample("failing"));
        assert!(
            t.starts_with("HOST       STATE        PENDING  LAST_OK"),
            "{t}"
        );
        assert!(
            t.contains("127.0.0.2  ok                 0  2026-12-01T15:04:19Z"),
            "{t}"
        );
        assert!(
            t.contains("  failing: /a -> /b: no space left on device\n"),
            "{t}"
        );
        assert!(t.ends_with(
            "daemon: pid 42, started 2026-12-01T15:00:00Z, config /etc/hostsync/config.ini\n"
        ));
        assert_eq!(verdict(&sample("failing")), ExitCode::Failure);
        assert_eq!(verdict(&sample("down")), ExitCode::Failure);
        assert_eq!(verdict(&sample("catching-up")), ExitCode::Success);
        let j = render_json(&sample("down"));
        let lines: Vec<serde_json::Value> = j
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["state"], "down");
        assert_eq!(lines[1]["failing"][0]["reason"], "no space left on device");
        assert_eq!(lines[0]["last_ok"], "2026-12-01T15:04:19Z");
        assert_eq!(lines[2]["daemon"]["pid"], 42);
        let keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }
}

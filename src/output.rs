//! What `sync` prints while it runs and when it ends (issue 5, "Progress and output").
//!
//! Three styles, chosen once per run ([`Style::choose`]):
//! - [`Style::Bars`]: stdout is a terminal and neither `--quiet`, `--verbose` nor
//!   `--json` was given: one `indicatif` progress bar per host (bytes and files
//!   done of those planned, rate, ETA), then the summary table;
//! - [`Style::Plain`]: no animation, just the summary table at the end (stdout is
//!   not a terminal, or `--quiet`); with `--verbose` also one plain line per
//!   file sent or removed, failure and post_sync command, as it happens;
//! - [`Style::Json`]: one JSON object per line on stdout for every file result,
//!   failure, post_sync command and host summary (see README, "JSON output").
//!
//! Events reach this module through each host's [`Observer`], from the worker
//! threads; every line is printed whole (stdout is locked per line).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::{Value, json};

use crate::report::{self, Event, HostReport, Observer};

/// How `sync` shows what happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Progress bars per host on a terminal.
    Bars,
    /// The summary table only; with `per_file`, also a line per event as it happens.
    Plain { per_file: bool },
    /// JSON lines.
    Json,
}

impl Style {
    /// The style for these flags, when stdout is (`tty`) or is not a terminal.
    pub(crate) fn choose(json: bool, quiet: bool, verbose: bool, tty: bool) -> Style {
        if json {
            Style::Json
        } else if verbose {
            Style::Plain { per_file: true }
        } else if quiet || !tty {
            Style::Plain { per_file: false }
        } else {
            Style::Bars
        }
    }
}

/// The output of one `sync` run.
pub(crate) struct Output {
    /// The style in force.
    style: Style,
    /// The bars' container (only for [`Style::Bars`]).
    multi: Option<MultiProgress>,
    /// A dry run: its result is the list of differences, not per-host summaries.
    dry_run: bool,
    /// The table's bytes read like `1.2 MiB` (stdout is a terminal, issue 14).
    human: bool,
}

/// One host's progress bar with its file counts (the bar itself counts bytes).
struct HostBar {
    /// The bar: position and length in bytes.
    bar: ProgressBar,
    /// Files uploaded so far.
    files_done: AtomicU64,
    /// Files planned.
    files_total: AtomicU64,
}

impl HostBar {
    /// Shows `done/total files` next to the bar.
    fn show_files(&self) {
        let done = self.files_done.load(Ordering::Relaxed);
        let total = self.files_total.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} files"));
    }
}

impl Output {
    /// An output in `style`; `dry_run` drops the per-host summaries; `human` shows
    /// the table's bytes for a person (on a terminal) instead of raw counts.
    pub(crate) fn new(style: Style, dry_run: bool, human: bool) -> Output {
        let multi = (style == Style::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Output {
            style,
            multi,
            dry_run,
            human,
        }
    }

    /// The observer for host `address`. Call it in host order: bars stack in that order.
    pub(crate) fn observer(&self, address: &str) -> Observer {
        let dry_run = self.dry_run;
        match (self.style, &self.multi) {
            (Style::Bars, Some(multi)) => {
                let bar = multi.add(ProgressBar::new(0));
                // No bar until the plan says how much there is to send.
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<15!} {spinner} {wide_msg}")
                        .expect("valid progress template"),
                );
                bar.set_prefix(address.to_string());
                bar.set_message("connecting");
                bar.enable_steady_tick(Duration::from_millis(200));
                let host = Arc::new(HostBar {
                    bar,
                    files_done: AtomicU64::new(0),
                    files_total: AtomicU64::new(0),
                });
                Observer::new(move |_, e| on_bar(&host, e))
            }
            (Style::Json, _) => Observer::new(move |host, e| {
                if let Some(v) = json_event(host, e, dry_run) {
                    print_line(&v.to_string());
                }
            }),
            (Style::Plain { per_file: true }, _) => Observer::new(move |host, e| {
                if let Some(line) = plain_event(host, e, dry_run) {
                    // Names and remote text may hold control characters (issue 13).
                    print_line(&crate::escape::controls(&line));
                }
            }),
            _ => Observer::default(),
        }
    }

    /// What is printed after every host finished: the summary table, except in JSON
    /// mode (the host lines were printed as each host finished) and in a dry run.
    /// Finished bars stay on screen, above the table.
    pub(crate) fn finish(&self, reports: &[HostReport]) -> String {
        if self.style == Style::Json || self.dry_run {
            String::new()
        } else if self.multi.is_some() {
            // The cursor is still at the end of the last bar.
            format!("\n{}", report::summary(reports, self.human))
        } else {
            report::summary(reports, self.human)
        }
    }
}

/// An observer that prints the `--verbose` line of each event as it happens (the
/// lines `watch` prints on a terminal).
pub(crate) fn plain_lines() -> Observer {
    Observer::new(|host, e| {
        if let Some(line) = plain_event(host, e, false) {
            print_line(&line);
        }
    })
}

/// Bars, at most 80 columns wide (issue 14) and never wider than the terminal:
/// `HOST            [===>    ]  1.2 MiB/4.0 MiB   11 MiB/s ETA  1s 3/10 files`.
/// The fixed part is 64 columns; the file count gets what is left.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:<15!} [{bar:8}] {done:>8}/{total:<8} {rate:>10} ETA {eta:>3} {wide_msg}",
    )
    .expect("valid progress template")
    .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&report::human_bytes(s.pos()));
    })
    .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&report::human_bytes(s.len().unwrap_or(0)));
    })
    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}/s", report::human_bytes(s.per_sec() as u64));
    })
    .progress_chars("=> ")
}

/// A bar that is done (or failed): the host and its message, cut to the terminal.
fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:<15!} {wide_msg}").expect("valid progress template")
}

/// Moves one host's bar.
fn on_bar(h: &HostBar, e: &Event<'_>) {
    match e {
        Event::Planned { files, bytes } => {
            h.bar.set_style(bar_style());
            h.files_total.fetch_add(*files, Ordering::Relaxed);
            h.bar.inc_length(*bytes);
            h.show_files();
        }
        Event::Uploaded { bytes } => {
            h.files_done.fetch_add(1, Ordering::Relaxed);
            h.bar.inc(*bytes);
            h.show_files();
        }
        Event::HostFailed { reason } => {
            h.bar.set_style(done_style());
            h.bar
                .abandon_with_message(format!("failed: {}", crate::escape::controls(reason)));
        }
        // A bar abandoned with the host's failure keeps that message.
        Event::Finished { report } if !h.bar.is_finished() => {
            let status = if report.ok() { "ok" } else { "failed" };
            h.bar.set_style(done_style());
            h.bar.finish_with_message(format!(
                "{status}: {} sent, {} skipped, {} removed, {} failed, {}",
                report.sent,
                report.skipped,
                report.removed,
                report.failed,
                report::human_bytes(report.bytes)
            ));
        }
        Event::Finished { .. } | Event::Sent { .. } | Event::Removed { .. } => {}
        Event::Failed { .. } => {}
        Event::PostSync { .. } => {}
    }
}

/// A `--verbose` line for an event, if it deserves one.
fn plain_event(host: &str, e: &Event<'_>, dry_run: bool) -> Option<String> {
    Some(match e {
        Event::Sent {
            local,
            remote,
            bytes,
            reused,
            why,
        } => format!(
            "{host}: sent {local} -> {remote} {}",
            report::amount(*bytes, *reused, why)
        ),
        Event::Removed { remote, .. } => format!("{host}: removed {remote}"),
        Event::Failed { what, reason } => format!("{host}: failed: {what}: {reason}"),
        Event::HostFailed { reason } => format!("{host}: failed: {reason}"),
        Event::PostSync {
            mapping,
            command,
            status: Some(s),
        } => format!("{host}: post_sync {mapping}: `{command}` exited with status {s}"),
        Event::PostSync {
            mapping,
            command,
            status: None,
        } => format!("{host}: post_sync {mapping}: `{command}` could not be run"),
        Event::Finished { report } if !dry_run => format!(
            "{host}: done: {} sent, {} skipped, {} removed, {} failed, {} bytes",
            report.sent, report.skipped, report.removed, report.failed, report.bytes
        ),
        Event::Finished { .. } | Event::Planned { .. } | Event::Uploaded { .. } => return None,
    })
}

/// A `--json` object for an event, if it deserves one (see README, "JSON output").
pub(crate) fn json_event(host: &str, e: &Event<'_>, dry_run: bool) -> Option<Value> {
    Some(match e {
        Event::Sent {
            local,
            remote,
            bytes,
            reused,
            ..
        } => json!({"type": "file", "host": host, "action": "sent",
                    "local": local, "remote": remote, "bytes": bytes, "reused": reused}),
        Event::Removed { local, remote } => json!({"type": "file", "host": host,
                    "action": "removed", "local": local, "remote": remote}),
        Event::Failed { what, reason } => {
            json!({"type": "error", "host": host, "item": what, "reason": reason})
        }
        Event::HostFailed { reason } => {
            json!({"type": "error", "host": host, "item": null, "reason": reason})
        }
        Event::PostSync {
            mapping,
            command,
            status,
        } => json!({"type": "post_sync", "host": host, "mapping": mapping,
                    "command": command, "status": status}),
        Event::Finished { report } if !dry_run => report::json_summary(report),
        Event::Finished { .. } | Event::Planned { .. } | Event::Uploaded { .. } => return None,
    })
}

/// Prints one whole line on stdout (a closed pipe is not an error worth a panic).
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_follows_flags_and_terminal() {
        assert_eq!(Style::choose(false, false, false, true), Style::Bars);
        assert_eq!(
            Style::choose(false, false, false, false),
            Style::Plain { per_file: false }
        );
        assert_eq!(
            Style::choose(false, true, false, true),
            Style::Plain { per_file: false }
        );
        assert_eq!(
            Style::choose(false, false, true, true),
            Style::Plain { per_file: true }
        );
        assert_eq!(Style::choose(true, false, true, true), Style::Json);
    }

    #[test]
    fn events_as_json_and_plain_lines() {
        let sent = Event::Sent {
            local: "/l/a",
            remote: "/r/a",
            bytes: 3,
            reused: 0,
            why: "size, mtime",
        };
        let v = json_event("h", &sent, false).unwrap();
        assert_eq!(v["type"], "file");
        assert_eq!(v["action"], "sent");
        assert_eq!(v["bytes"], 3);
        assert_eq!(
            plain_event("h", &sent, false).unwrap(),
            "h: sent /l/a -> /r/a (3 bytes; why: size, mtime)"
        );
        let delta = Event::Sent {
            local: "/l/a",
            remote: "/r/a",
            bytes: 41210,
            reused: 67100672,
            why: "",
        };
        assert_eq!(
            plain_event("h", &delta, false).unwrap(),
            "h: sent /l/a -> /r/a (41210 bytes, reused 67100672 bytes)"
        );
        assert_eq!(json_event("h", &delta, false).unwrap()["reused"], 67100672);
        let ps = Event::PostSync {
            mapping: "/s -> /d",
            command: "false",
            status: Some(1),
        };
        assert_eq!(json_event("h", &ps, false).unwrap()["status"], 1);
        let r = HostReport::new("h");
        let fin = Event::Finished { report: &r };
        assert_eq!(json_event("h", &fin, false).unwrap()["type"], "host");
        assert!(json_event("h", &fin, true).is_none());
        assert!(json_event("h", &Event::Uploaded { bytes: 1 }, false).is_none());
        let e = Event::HostFailed { reason: "down" };
        assert_eq!(json_event("h", &e, false).unwrap()["item"], Value::Null);
    }
}

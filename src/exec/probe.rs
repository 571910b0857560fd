//! Running the writability probe ([`crate::remote::probe`]) over a connection;
//! its answer also settles the host's tier ([`crate::exec::tier::after_probe`]).

use crate::remote::probe::{Answers, DirState, Probe, dir_state, parse_answers, probe_script};
use crate::transport::ssh::{Connection, ScriptOutput};

/// Runs the probe script for `probes` over `conn`; an `Err` means it could not run.
pub(crate) fn run_probes(
    conn: &Connection,
    probes: &[Probe],
) -> anyhow::Result<(Answers, ScriptOutput)> {
    let out = conn.run_script(
        &probe_script(probes, conn.strict_modes()),
        64 * 1024 + 8 * 1024 * probes.len() as u64,
    )?;
    Ok((parse_answers(&out.stdout), out))
}

/// The writability check of `check` for `sync --dry-run`: one [`DirState`] per
/// probe, in order, from one remote script, also settling the host's tier: `Ok(None)`
/// when no shell answered and the host is served over SFTP (its listing then
/// judges the destinations). An `Err` means neither could run.
pub(crate) fn probe_tier(
    conn: &Connection,
    probes: &[Probe],
    user: &str,
) -> anyhow::Result<Option<Vec<DirState>>> {
    let (answers, out) = run_probes(conn, probes)?;
    let tier = crate::exec::tier::after_probe(
        conn,
        shell_answered(&answers, &out),
        answers.perl,
        &crate::escape::first_line(&out.stdout, 200),
    )?;
    if tier == crate::transport::ssh::Tier::Sftp {
        return Ok(None);
    }
    Ok(Some(
        probes
            .iter()
            .enumerate()
            .map(|(i, p)| dir_state(&answers, (out.status, &out.stderr), i, p, user))
            .collect(),
    ))
}

/// Whether a shell ran the probe script: it answered a record, or exited 0.
/// An SFTP-only account answers any command with a line and exit status 1.
pub(crate) fn shell_answered(answers: &Answers, out: &ScriptOutput) -> bool {
    !answers.verdicts.is_empty() || answers.perl || out.status == 0
}

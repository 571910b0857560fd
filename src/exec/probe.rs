//! Running the writability probe ([`crate::remote::probe`]) over a connection.

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
/// probe, in order, from one remote script. An `Err` means it could not run.
pub(crate) fn probe_dirs(
    conn: &Connection,
    probes: &[Probe],
    user: &str,
) -> anyhow::Result<Vec<DirState>> {
    let (answers, out) = run_probes(conn, probes)?;
    Ok(probes
        .iter()
        .enumerate()
        .map(|(i, p)| dir_state(&answers, (out.status, &out.stderr), i, p, user))
        .collect())
}

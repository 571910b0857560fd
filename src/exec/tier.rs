//! Which tier serves a host (issue 16): the one boundary between "what to change
//! on this host" and "how this host is changed", settled once per session and
//! cached on the connection ([`Connection::tier`]).
//!
//! The probe adds no round trip where a shell answers: the first exec a session
//! makes anyway (the agent's start in `sync` and `watch`, the writability script
//! in `check` and `sync --dry-run`) shows whether perl is there (`gnu`), or only
//! a shell (`posix`), or whether no shell answered at all (an SFTP-only account:
//! sshd runs internal-sftp for every exec). Only then is the SFTP subsystem
//! asked for (`sftp`): one round trip, on such hosts alone. `[ssh] transfer`
//! narrows the choice; a tier that cannot work is one error line naming what is
//! missing.

use anyhow::{Result, bail};

use crate::config::Transfer;
use crate::transport::ssh::{Connection, Tier};

/// The tier once the agent did not serve the host (no perl, no shell, or not
/// allowed by `[ssh] transfer`), cached on `conn`. An `Err` is one line naming
/// what the host lacks.
pub(crate) fn without_agent(conn: &Connection) -> Result<Tier> {
    if let Some(t) = conn.tier() {
        return Ok(t);
    }
    let tier = match (conn.transfer(), conn.no_shell()) {
        (Transfer::Sftp, _) => sftp(conn, None)?,
        (Transfer::Gnu, None) => {
            bail!(
                "[ssh] transfer = gnu, but the remote has no perl for hostsync's agent; install perl, or set transfer = auto"
            )
        }
        (Transfer::Gnu | Transfer::Posix, Some(why)) => bail!(
            "[ssh] transfer = {}, but the remote runs no shell commands ({why}); set transfer = auto or sftp",
            if conn.transfer() == Transfer::Gnu {
                "gnu"
            } else {
                "posix"
            }
        ),
        (Transfer::Auto, Some(why)) => sftp(conn, Some(&why))?,
        (Transfer::Auto | Transfer::Posix, None) => Tier::Posix,
    };
    conn.set_tier(tier);
    Ok(tier)
}

/// The sftp tier, once the SFTP subsystem started; `no_shell`: why no shell
/// answered, for the error when SFTP is missing too.
fn sftp(conn: &Connection, no_shell: Option<&str>) -> Result<Tier> {
    match conn.with_sftp(|_| Ok(())) {
        Ok(()) => Ok(Tier::Sftp),
        Err(e) => match no_shell {
            Some(why) => bail!("no shell and no SFTP subsystem: {why}; {e:#}"),
            None => bail!("[ssh] transfer = sftp, but {e:#}"),
        },
    }
}

/// The tier after the writability script of `check` or `sync --dry-run` ran:
/// `ran` says whether a shell answered it (else `said` is what came back), `perl`
/// whether it found perl. Cached on `conn`.
pub(crate) fn after_probe(conn: &Connection, ran: bool, perl: bool, said: &str) -> Result<Tier> {
    if let Some(t) = conn.tier() {
        return Ok(t);
    }
    if !ran {
        conn.set_no_shell(said_or_default(said));
    } else if perl && matches!(conn.transfer(), Transfer::Auto | Transfer::Gnu) {
        conn.set_tier(Tier::Gnu);
        return Ok(Tier::Gnu);
    }
    without_agent(conn)
}

/// What a failed first exec said, or a default when it said nothing.
fn said_or_default(said: &str) -> String {
    if said.trim().is_empty() {
        "the remote ended the command without an answer".into()
    } else {
        said.trim().to_string()
    }
}

/// Whether `[ssh] transfer` lets the first exec be tried at all (`sftp` never
/// runs a command).
pub(crate) fn may_exec(conn: &Connection) -> bool {
    conn.transfer() != Transfer::Sftp && conn.tier() != Some(Tier::Sftp)
}

//! Talking to one host: the SSH session, the SCP sink, the tar stream, the
//! agent's channel, the SFTP client, pacing and bounded replies, and the
//! keepalive that finds a dead idle session.

pub(crate) mod agent;
pub(crate) mod bounded;
pub(crate) mod bwlimit;
pub(crate) mod delta;
pub(crate) mod delta_sh;
pub(crate) mod jump;
pub(crate) mod keepalive;
pub(crate) mod pace;
mod quickack;
pub(crate) mod scp;
pub(crate) mod sftp;
pub(crate) mod ssh;
pub(crate) mod tar;

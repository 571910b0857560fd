//! Talking to one host: the SSH session, the SCP sink, the tar stream, the
//! agent's channel, pacing and bounded replies.

pub mod agent;
pub mod bounded;
pub mod pace;
mod quickack;
pub mod scp;
pub mod ssh;
pub mod tar;

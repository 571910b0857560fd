//! A real OpenSSH `ssh-agent` for one test.
//!
//! [`Agent::start`] runs `ssh-agent -D -a SOCKET` with the socket inside the
//! test's own folder (never the developer's agent), waits until it accepts a
//! connection there, and kills the agent on drop. [`Agent::add`] loads a key into it with
//! `ssh-add`. Pass [`Agent::sock`] as `SSH_AUTH_SOCK` to the run under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ClientKey, wait_until};

/// A running ssh-agent, killed on drop.
pub struct Agent {
    /// The agent's socket, for `SSH_AUTH_SOCK`.
    pub socket: PathBuf,
    /// The `ssh-agent -D` process.
    child: Child,
}

impl Agent {
    /// Starts an agent listening on `dir/agent.sock`; panics if it does not come up in 10 s.
    pub fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start ssh-agent (apt-get install openssh-client): {e}")
            });
        let mut agent = Agent { socket, child };
        let sock = agent.socket.clone();
        // Ready means accepting: ssh-agent binds the socket (the file appears)
        // before it listens, and a connect in between is refused (seen under load).
        wait_until(
            Duration::from_secs(10),
            "ssh-agent accepting on its socket",
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        );
        assert!(
            matches!(agent.child.try_wait(), Ok(None)),
            "ssh-agent exited right after starting"
        );
        agent
    }

    /// `SSH_AUTH_SOCK` for this agent.
    pub fn sock(&self) -> &str {
        self.socket.to_str().expect("test paths are UTF-8")
    }

    /// Loads `key` (which must have no passphrase) into the agent with `ssh-add`.
    pub fn add(&self, key: &ClientKey) {
        let out = Command::new("ssh-add")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh-add: {e}"));
        assert!(
            out.status.success(),
            "ssh-add {} failed: {}",
            key.private.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

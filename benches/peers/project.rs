//! The system this bench is about: the real `chat-server`, built with the
//! bench profile (the release settings: LTO, one codegen unit, abort on
//! panic, stripped), reached the way every client reaches it.
//!
//! Two environment variables choose other builds of it:
//!
//! - `PORTAL_CHAT_SERVER=PATH`: the project's rows run this binary instead
//!   of the one Cargo built for the bench. A build without `--spin-us` or
//!   `--wire` loses the rows that need them.
//! - `PORTAL_CHAT_BASELINE=PATH`: a second build, measured in the same run
//!   as [`Kind::Baseline`](super::Kind::Baseline) and started with the flags
//!   every version has, for a before/after table.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use portal_chat::client::{RetryPolicy, Session};
use portal_chat::wire::Wire;

use super::{ChildProcess, Endpoint};

/// The server binary Cargo built for this bench.
const OWN_BINARY: &str = env!("CARGO_BIN_EXE_chat-server");

/// The binary the project's rows run: `PORTAL_CHAT_SERVER`, or the one Cargo
/// built for this bench.
pub fn server_binary() -> PathBuf {
    std::env::var_os("PORTAL_CHAT_SERVER").map_or_else(|| PathBuf::from(OWN_BINARY), PathBuf::from)
}

/// The binary to compare with, if `PORTAL_CHAT_BASELINE` names one.
pub fn baseline_binary() -> Option<PathBuf> {
    std::env::var_os("PORTAL_CHAT_BASELINE")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Whether `binary --help` mentions `flag`: how the bench tells an older
/// build, which would refuse the flag and not start.
pub fn has_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}

/// How to start one `chat-server`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Which binary.
    pub binary: PathBuf,
    /// `--wire`, passed only when it is not the default line wire.
    pub wire: Wire,
    /// `--spin-us`, passed only when set.
    pub spin_us: Option<u32>,
}

impl Server {
    /// `binary` as it starts by default.
    pub fn new(binary: PathBuf) -> Server {
        Server {
            binary,
            wire: Wire::Line,
            spin_us: None,
        }
    }

    /// Starts the server with `workers` worker ports, every port chosen by
    /// the OS, and an idle timeout no bench run comes near. Returns the
    /// process and the portal's address.
    pub fn start(&self, workers: usize) -> io::Result<(ChildProcess, SocketAddr)> {
        let workers_arg = workers.to_string();
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", "0", "--workers", &workers_arg])
            .args(["--idle-timeout", "100000", "--assign-timeout", "60"])
            // Warnings (an accept that failed, say) still reach the terminal.
            .env("RUST_LOG", "warn");
        // Only what differs from the defaults, so that a build that predates
        // a flag still starts for the rows that do not need it.
        if self.wire != Wire::Line {
            command.args(["--wire", self.wire.name()]);
        }
        if let Some(spin) = self.spin_us {
            command.args(["--spin-us", &spin.to_string()]);
        }
        let mut process = ChildProcess::spawn(&mut command)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.binary.display())))?;
        let portal = process.read_announcement("portal ")?;
        for n in 1..=workers {
            process.read_announcement(&format!("worker {n} "))?;
        }
        Ok((process, portal))
    }
}

/// Joins like any client, with the client library: asks the portal for a
/// port and a passcode (once: the bench's servers are never full), connects
/// to that port and presents the passcode, then takes the session's socket
/// over, with whatever it has already received.
pub fn join(portal: SocketAddr, wire: Wire) -> io::Result<Endpoint> {
    let no_retry = RetryPolicy {
        retries: Some(0),
        delay: Duration::ZERO,
    };
    let session =
        Session::join_any_with_wire(&[portal.ip()], portal.port(), no_retry, wire, |_| {})
            .map_err(io::Error::other)?;
    let (stream, inbox) = session.into_parts();
    Endpoint::taking_over(stream, wire, inbox.unread())
}

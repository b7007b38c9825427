//! The system this bench is about: the real `chat-server`, built with the
//! bench profile (the release settings: LTO, one codegen unit, abort on
//! panic, stripped), reached the way every client reaches it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use portal_chat::client::{self, RetryPolicy};

use super::{ChildProcess, Endpoint, STALL_TIMEOUT, invalid};

/// The server binary Cargo built for this bench.
pub const SERVER_BINARY: &str = env!("CARGO_BIN_EXE_chat-server");

/// Starts `chat-server` with `workers` worker ports, every port chosen by
/// the OS, and an idle timeout no bench run comes near. Returns the process
/// and the portal's address.
pub fn start(workers: usize) -> io::Result<(ChildProcess, SocketAddr)> {
    let workers_arg = workers.to_string();
    let mut command = Command::new(SERVER_BINARY);
    command
        .args(["--port", "0", "--workers", &workers_arg])
        .args(["--idle-timeout", "100000", "--assign-timeout", "60"])
        // Warnings (an accept that failed, say) still reach the terminal.
        .env("RUST_LOG", "warn");
    let mut process = ChildProcess::spawn(&mut command)?;
    let portal = process.read_announcement("portal ")?;
    for n in 1..=workers {
        process.read_announcement(&format!("worker {n} "))?;
    }
    Ok((process, portal))
}

/// Joins like any client: asks the portal for a port and a passcode (with
/// the client library), connects to that port and presents the passcode.
/// Returns once the server has answered "Connection successful"; the
/// partner status line that follows is left for [`super::Pair::sync`].
pub fn join(portal: SocketAddr) -> io::Result<Endpoint> {
    let no_retry = RetryPolicy {
        retries: Some(0),
        delay: Duration::ZERO,
    };
    let assignment = client::obtain_port(portal, no_retry, |_| {}).map_err(io::Error::other)?;
    let port = assignment.port;
    let stream = TcpStream::connect_timeout(&SocketAddr::new(portal.ip(), port), STALL_TIMEOUT)?;
    let mut endpoint = Endpoint::new(stream)?;
    let handshake = format!("CLIENT{port}>>>HandshakeCode={}\n", assignment.code);
    endpoint.write_all(handshake.as_bytes())?;
    let answer = endpoint.read_line()?;
    if answer != format!("SERVER{port}>>> Connection successful\n").as_bytes() {
        let answer = String::from_utf8_lossy(answer).into_owned();
        return Err(invalid(format!(
            "handshake on port {port} failed: {answer:?}"
        )));
    }
    Ok(endpoint)
}

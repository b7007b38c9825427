//! `chat-server`: parses the command line and hands over to the library.

use std::io::Write;
use std::process::ExitCode;

use portal_chat::config::{Command, USAGE, parse_args};
use portal_chat::server::{Role, Server};

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => return print(USAGE),
        Ok(Command::Version) => return print(concat!("chat-server ", env!("CARGO_PKG_VERSION"))),
        Err(message) => {
            eprintln!("chat-server: {message}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr; RUST_LOG picks the level (info by default).
    let _ = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Info)
        .env()
        .init();
    let server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("chat-server: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = announce(&server) {
        eprintln!("chat-server: {e}");
        return ExitCode::from(1);
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints one line per listener, portal first, and flushes, so that whoever
/// started the server (a person, a test) knows every address before the
/// first client arrives.
fn announce(server: &Server) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for (role, addr) in server.local_addrs()? {
        match role {
            Role::Portal => writeln!(out, "portal {addr}")?,
            Role::Worker(n) => writeln!(out, "worker {} {addr}", n + 1)?,
        }
    }
    out.flush()
}

/// Prints `text` and a newline for `--help` or `--version`. A closed stdout
/// (`chat-server --help | head -1`) is not an error worth reporting.
fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    ExitCode::SUCCESS
}

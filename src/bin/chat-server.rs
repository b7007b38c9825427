//! `chat-server`: parses the command line and hands over to the library.

use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use portal_chat::config::{Command, Config, USAGE, parse_args};
use portal_chat::rlimit;
use portal_chat::server::{Role, Server};

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => return print(USAGE),
        Ok(Command::Version) => return print(concat!("chat-server ", env!("CARGO_PKG_VERSION"))),
        Err(message) => return fail(2, message),
    };
    // Logs go to stderr; RUST_LOG picks the level (info by default).
    portal_chat::logging::init();
    if let Err(why) = open_file_limit(&config) {
        return fail(1, why);
    }
    let server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => return fail(1, e),
    };
    let addrs = match server.local_addrs() {
        Ok(addrs) => addrs,
        Err(e) => return fail(1, e),
    };
    if let Err(e) = announce(&addrs) {
        // `chat-server | head -1`: the reader took what it wanted and left.
        // The lines are a courtesy; the listeners are open and the portal
        // tells clients everything else, so the server goes on.
        log::warn!("could not print the listener addresses on stdout: {e}; serving anyway");
    }
    log::info!(
        "listening on {} (portal) and {} worker ports",
        addrs[0].1,
        addrs.len() - 1
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, format_args!("event loop failed: {e}")),
    }
}

/// Raises the soft open-file limit to the hard one, and checks it covers
/// what `config` needs: before binding, so that a server that cannot hold
/// its clients says so instead of binding thousands of listeners and then
/// stalling. With `--allow-low-nofile` a shortfall is a warning.
fn open_file_limit(config: &Config) -> Result<(), String> {
    let mut limits =
        rlimit::current().map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if limits.soft < limits.hard {
        match rlimit::raise_soft_to_hard(limits) {
            Ok(raised) => {
                log::debug!(
                    "open-file limit raised from {} to {}",
                    limits.soft,
                    raised.soft
                );
                limits = raised;
            }
            // Not fatal by itself: the check below decides.
            Err(e) => log::warn!(
                "could not raise the open-file limit from {}: {e}",
                limits.soft
            ),
        }
    }
    match rlimit::check(config.workers, limits) {
        Ok(()) => Ok(()),
        Err(short) if config.allow_low_nofile => {
            log::warn!(
                "{short}; starting anyway (--allow-low-nofile): once descriptors run out, \
                 new connections wait in the listen backlog until one is free"
            );
            Ok(())
        }
        Err(short) => Err(format!(
            "{short}; raise it (ulimit -n, prlimit --nofile, LimitNOFILE= for systemd) \
             or pass --allow-low-nofile"
        )),
    }
}

/// Prints one line per listener, portal first, and flushes, so that whoever
/// started the server (a person, a test) knows every address before the
/// first client arrives. Stops at the first failed write: Rust ignores
/// SIGPIPE, so a closed stdout is an `EPIPE` error here, not a signal.
fn announce(addrs: &[(Role, SocketAddr)]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for (role, addr) in addrs {
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

/// Says why on one line of stderr and exits with `status`. Unlike
/// `eprintln!`, a closed stderr does not turn this into a panic.
fn fail(status: u8, why: impl Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "chat-server: {why}");
    ExitCode::from(status)
}

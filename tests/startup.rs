//! The `chat-server` binary from the outside: its command line, and what it
//! does before and around its event loop (listener lines on stdout, logs on
//! stderr, the open-file limit).
//!
//! Every server here listens on loopback with OS-chosen ports, and every
//! wait has a limit.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TestServer, wait_until};

/// The longest any one start, answer or exit may take.
const LIMIT: Duration = Duration::from_secs(10);

fn server_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chat-server"))
}

/// Runs `chat-server` with `args` to completion, with stdin empty and both
/// outputs captured; killed if it is still running after [`LIMIT`].
fn run_to_end(args: &[&str]) -> Output {
    let mut child = server_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server");
    if !wait_until(LIMIT, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chat-server {args:?} did not exit");
    }
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_option_is_named_as_unknown_wherever_it_stands() {
    for args in [
        &["--bogus"][..],
        &["--bogus", "--workers", "4"],
        &["--workers", "4", "--bogus"],
        &["--workers", "--bogus"],
        &["--workers", "3", "--bogus"],
    ] {
        // `--port 0` first, so a wrongly accepted flag cannot take port 50000.
        let full = [&["--port", "0"], args].concat();
        let output = run_to_end(&full);
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "chat-server: unknown option --bogus (see --help)\n",
            "{args:?}"
        );
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn version_prints_the_name_and_version() {
    for flag in ["--version", "-V"] {
        let output = run_to_end(&[flag]);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("chat-server {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert!(output.stderr.is_empty());
        assert_eq!(output.status.code(), Some(0));
    }
}

/// `chat-server --help | head -1`: the reader is gone before the usage text
/// is written, which is no reason to fail.
#[test]
fn help_and_version_into_a_closed_pipe_still_exit_0() {
    for flag in ["--help", "--version"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut child = server_command()
            .arg(flag)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chat-server");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{flag}: {stderr}");
        assert_eq!(stderr, "", "{flag}");
    }
}

#[test]
fn bind_takes_a_host_name() {
    let server = TestServer::start(&["--bind", "localhost", "--workers", "2"]);
    assert!(server.host().is_loopback(), "{}", server.portal);
    // It serves: a pair joins on that address and chats.
    let mut a = common::Peer::join(&server);
    let mut b = common::Peer::join(&server);
    a.expect(&format!("SERVER{}>>> Partner {} connected", a.port, b.port));
    a.send_line(b"hello").unwrap();
    b.expect("hello");
}

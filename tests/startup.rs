//! The `chat-server` binary from the outside: its command line, and what it
//! does before and around its event loop (listener lines on stdout, logs on
//! stderr, the open-file limit).
//!
//! Every server here listens on loopback with OS-chosen ports, and every
//! wait has a limit.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{
    TestServer, chat, next, nofile_prefix_with, run_to_end, run_to_end_with, server_command,
    session_pair, session_pair_at, wait_until,
};
use portal_chat::client::{JoinError, PortalAnswer, Session, TERMINATE_LINE, request_port};

/// The longest any one start, answer or exit may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A running `chat-server`, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Sends SIGTERM and waits up to [`LIMIT`] for the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(
            wait_until(LIMIT, || self.0.try_wait().unwrap().is_some()),
            "the server did not stop"
        );
        self.0.wait().unwrap()
    }
}

/// Starts `chat-server --port 0 --tick-ms 20 ARGS` (later flags win) with
/// `RUST_LOG` set to `log_level` and stdin empty.
fn start(args: &[&str], log_level: &str, stdout: Stdio, stderr: Stdio) -> Running {
    start_with(&[], args, log_level, stdout, stderr)
}

/// [`start`] through a command `prefix`, as [`server_command`] takes it.
fn start_with(
    prefix: &[String],
    args: &[&str],
    log_level: &str,
    stdout: Stdio,
    stderr: Stdio,
) -> Running {
    let child = server_command(prefix)
        .args(["--port", "0", "--tick-ms", "20"])
        .args(args)
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start chat-server");
    Running(child)
}

/// The lines of `from`, as a thread reads them; the channel closes at the end.
fn lines_of(from: impl Read + Send + 'static) -> Receiver<String> {
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            if send.send(line.expect("read a line")).is_err() {
                break;
            }
        }
    });
    lines
}

/// The first line that `wanted` accepts, waiting at most [`LIMIT`] in all;
/// `None` at the end of the stream or the limit. The lines before it are
/// consumed.
fn first_line(lines: &Receiver<String>, wanted: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The portal's address from the server's own log line.
fn portal_from_log(lines: &Receiver<String>) -> SocketAddr {
    let line = first_line(lines, |line| line.contains("listening on"))
        .expect("the server logs where it listens");
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    addr.parse().unwrap()
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

fn assert_one_line(text: &str, what: &str) {
    assert!(
        text.ends_with('\n') && text.lines().count() == 1 && !text.trim().is_empty(),
        "{what}: expected exactly one line, got {text:?}"
    );
}

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
        let mut child = server_command::<&str>(&[])
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
    let (mut a, mut b) = session_pair(&server);
    a.send_line(b"hello").unwrap();
    assert_eq!(next(&mut b), chat("hello"));
}

#[test]
fn bad_flags_exit_2_with_one_line_on_stderr() {
    for args in [
        &["--workers", "3"][..],
        &["--workers", "0"],
        &["--port", "70000"],
        &["--idle-timeout", "-1"],
        &["--handshake-timeout", "soon"],
        &["--tick-ms", "0"],
        &["--max-line", "x"],
        &["--bind", "no-such-host.invalid"],
        &["--max-line", "16777217"],
        &["--frobnicate"],
        &["stray"],
        &["--port"],
    ] {
        // `--port 0` first, so a wrongly accepted flag cannot take port 50000.
        let mut full = vec!["--port", "0"];
        full.extend_from_slice(args);
        let output = run_to_end(&full);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_one_line(&stderr, &format!("stderr for {args:?}"));
        assert!(output.stdout.is_empty(), "{args:?}: printed on stdout");
    }
}

#[test]
fn a_port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = run_to_end(&["--port", &port, "--workers", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_one_line(&stderr, "stderr");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "the error does not name the address: {stderr:?}"
    );
    assert!(output.stdout.is_empty(), "announced despite failing");
    drop(taken);
}

#[test]
fn help_prints_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let output = run_to_end(&[flag]);
        assert_eq!(output.status.code(), Some(0));
        assert!(output.stderr.is_empty());
        let usage = String::from_utf8(output.stdout).unwrap();
        assert!(usage.starts_with("Usage: chat-server"), "{usage}");
        for option in [
            "--bind",
            "--port",
            "--workers",
            "--assign-timeout",
            "--handshake-timeout",
            "--idle-timeout",
            "--session-limit",
            "--tick-ms",
            "--max-line",
            "--help",
        ] {
            assert!(usage.contains(option), "usage lacks {option}");
        }
    }
}

// ---------------------------------------------------------------------------
// Stdout
// ---------------------------------------------------------------------------

/// `chat-server --workers 5000 | head -1`: the reader of stdout is gone
/// (here before the server starts, so every listener line fails), and the
/// server must serve anyway, saying so in its log.
#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut server = start(&["--workers", "2"], "info", writer.into(), Stdio::piped());
    let lines = lines_of(server.0.stderr.take().unwrap());
    let warning =
        first_line(&lines, |line| line.contains("WARN")).expect("a warning that stdout is closed");
    assert!(
        warning.contains("could not print the listener addresses on stdout")
            && warning.contains("Broken pipe"),
        "{warning:?}"
    );
    let portal = portal_from_log(&lines);
    let PortalAnswer::Assigned(assignment) = request_port(portal).expect("the portal answers")
    else {
        panic!("full")
    };
    let a = common::session(portal.ip(), &assignment);
    // Whatever the server says before it closes (a goodbye, say), it closes.
    a.terminate(LIMIT).expect("the server closes");
    assert_eq!(server.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------

/// Checks `line` starts with an RFC 3339 UTC time with `digits` fraction
/// digits, and returns the date part.
fn stamp_of(line: &str, digits: usize) -> &str {
    let len = "2000-01-01T00:00:00.".len() + digits + 1;
    let stamp = line
        .get(..len)
        .unwrap_or_else(|| panic!("too short: {line:?}"));
    let pattern = format!("dddd-dd-ddTdd:dd:dd.{}Z", "d".repeat(digits));
    let fits = stamp
        .chars()
        .zip(pattern.chars())
        .all(|(c, p)| if p == 'd' { c.is_ascii_digit() } else { c == p });
    assert!(
        fits,
        "not an RFC 3339 UTC time with {digits} digits: {line:?}"
    );
    assert_eq!(line.as_bytes()[len], b' ', "{line:?}");
    &stamp[..10]
}

/// Today's UTC date by the system's `date`, for a check that owes nothing
/// to the server's own arithmetic.
fn utc_date() -> String {
    let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn log_lines_carry_the_utc_time_with_microseconds_at_trace() {
    for (level, digits) in [("info", 3), ("trace", 6)] {
        let before = utc_date();
        let mut server = start(&["--workers", "2"], level, Stdio::null(), Stdio::piped());
        let lines = lines_of(server.0.stderr.take().unwrap());
        let line = first_line(&lines, |line| line.contains("listening on"))
            .unwrap_or_else(|| panic!("RUST_LOG={level}: no start-up line"));
        let after = utc_date();
        let date = stamp_of(&line, digits);
        assert!(
            date == before || date == after,
            "{line:?}, today is {after}"
        );
        assert!(
            line[digits + 22..].starts_with("INFO  [chat_server] listening on 127.0.0.1:"),
            "{line:?}"
        );
        // Every line has the same form, the loop's trace lines included.
        server.stop();
        for line in lines.iter() {
            stamp_of(&line, digits);
        }
    }
}

/// `chat-server 2>&1 | head`: once the reader of stderr is gone, every log
/// line fails to be written, which must not stop the server.
#[test]
fn a_closed_stderr_does_not_stop_the_server() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // At trace, the server logs from its first step to its last.
    let mut server = start(&["--workers", "2"], "trace", Stdio::piped(), writer.into());
    let stdout = lines_of(server.0.stdout.take().unwrap());
    let portal = first_line(&stdout, |line| line.starts_with("portal "))
        .expect("the server announces its portal");
    let portal: SocketAddr = portal["portal ".len()..].parse().unwrap();
    let (mut a, mut b) = session_pair_at(portal);
    a.send_line(b"still here").unwrap();
    assert_eq!(next(&mut b), chat("still here"));
    drop((a, b));
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Not a test of a fix but a guard: no passcode reaches the log at any
/// level, neither one the portal handed out nor one a client presented.
#[test]
fn no_passcode_is_logged_even_at_trace() {
    let mut server = start(&["--workers", "4"], "trace", Stdio::null(), Stdio::piped());
    let lines = lines_of(server.0.stderr.take().unwrap());
    let portal = portal_from_log(&lines);
    let mut secrets = Vec::new();
    // A pair that chats and leaves.
    let mut pair = Vec::new();
    for _ in 0..2 {
        let PortalAnswer::Assigned(assignment) = request_port(portal).unwrap() else {
            panic!("full")
        };
        secrets.push(assignment.code.clone());
        pair.push(common::session(portal.ip(), &assignment));
    }
    pair[0].send_line(b"hello").unwrap();
    assert_eq!(next(&mut pair[1]), chat("hello"));
    pair[0].send_line(TERMINATE_LINE.as_bytes()).unwrap();
    // A wrong passcode, close to the right one, on a port reserved for us.
    let PortalAnswer::Assigned(mut assignment) = request_port(portal).unwrap() else {
        panic!("full")
    };
    secrets.push(assignment.code.clone());
    // (Not always an `x`: a code that ends in one would stay right.)
    let other = match assignment.code.pop() {
        Some('x') => 'y',
        _ => 'x',
    };
    assignment.code.push(other);
    secrets.push(assignment.code.clone());
    let refused = Session::handshake(portal.ip(), &assignment);
    assert!(
        matches!(refused, Err(JoinError::Refused)),
        "{:?}",
        refused.err()
    );
    drop(pair);
    server.stop();
    let log: Vec<String> = lines.iter().collect();
    assert!(log.len() > 20, "the trace is there: {log:?}");
    for secret in &secrets {
        assert!(secret.len() >= 16, "{secret:?}");
        for line in &log {
            assert!(
                !line.contains(secret.as_str()),
                "a passcode in the log: {line:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The open-file limit
// ---------------------------------------------------------------------------

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let server = TestServer::start_with_prefix(&nofile_prefix_with(64, 4096), &["--workers", "2"]);
    assert_eq!(
        common::nofile_limits(server.pid()),
        ("4096".to_string(), "4096".to_string())
    );
}

/// `--workers 6` needs 7 listeners, 12 clients and the margin of 32: 51.
#[test]
fn a_limit_below_what_the_workers_need_is_refused_in_one_line() {
    let output = run_to_end_with(
        &nofile_prefix_with(50, 50),
        &["--port", "0", "--workers", "6"],
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "chat-server: --workers 6 needs 51 open files, but the limit is 50; raise it \
         (ulimit -n, prlimit --nofile, LimitNOFILE= for systemd) or pass --allow-low-nofile\n"
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "it bound its listeners");
    // Exactly enough is enough.
    let mut server = start_with(
        &nofile_prefix_with(51, 51),
        &["--workers", "6"],
        "info",
        Stdio::null(),
        Stdio::piped(),
    );
    let lines = lines_of(server.0.stderr.take().unwrap());
    request_port(portal_from_log(&lines)).expect("the portal answers");
}

#[test]
fn allow_low_nofile_warns_and_serves() {
    let mut server = start_with(
        &nofile_prefix_with(40, 40),
        &["--workers", "6", "--allow-low-nofile"],
        "info",
        Stdio::null(),
        Stdio::piped(),
    );
    let lines = lines_of(server.0.stderr.take().unwrap());
    let warning = first_line(&lines, |line| line.contains("WARN")).expect("a warning");
    assert!(
        warning.ends_with(
            "--workers 6 needs 51 open files, but the limit is 40; starting anyway \
             (--allow-low-nofile): once descriptors run out, new connections wait in the \
             listen backlog until one is free"
        ),
        "{warning:?}"
    );
    let (mut a, mut b) = session_pair_at(portal_from_log(&lines));
    b.send_line(b"few files, still fine").unwrap();
    assert_eq!(next(&mut a), chat("few files, still fine"));
}

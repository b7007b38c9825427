//! `chat-client` end to end: real client processes against a real
//! `chat-server`, checking their exact output and exit statuses.
//!
//! A client's stdout and stderr are read line by line by one thread per pipe,
//! into channels, so each test waits for the line it expects (with a time
//! limit) instead of sleeping. Where the other side of a chat is easier to
//! drive from the test itself, it is a library [`Session`].

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::TestServer;
use portal_chat::client::{Message, RetryPolicy, Session};

/// The longest wait for any one expected thing. Everything here happens in
/// milliseconds on loopback, or 2 s for a full portal's retry; the margin is
/// for loaded CI machines.
const LIMIT: Duration = Duration::from_secs(10);

/// A running `chat-client`. Killed if the test ends before it exits.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

/// How a client ended: its exit status and the lines not yet expected.
#[derive(Debug, PartialEq)]
struct Finished {
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Client {
    /// Starts `chat-client --port PORTAL ARGS...` with its stdin from `stdin`.
    fn start(portal: u16, args: &[&str], stdin: Stdio) -> Client {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
        command.args(["--port", &portal.to_string()]).args(args);
        Client::spawn(command, stdin)
    }

    /// Starts `command`, which runs `chat-client`, with its stdin from
    /// `stdin` and its stdout and stderr read by the test.
    fn spawn(mut command: Command, stdin: Stdio) -> Client {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chat-client");
        Client {
            stdin: child.stdin.take(),
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: lines_of(child.stderr.take().unwrap()),
            child,
        }
    }

    /// Starts a client of `server` whose stdin stays open until the test
    /// writes to it or closes it.
    fn of(server: &TestServer) -> Client {
        Client::start(server.portal.port(), &[], Stdio::piped())
    }

    /// Types `text` (lines with their `\n`) on the client's stdin.
    fn type_text(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the client's input.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn expect_stderr(&self, line: &str) {
        assert_eq!(next_line(&self.stderr).as_deref(), Some(line), "stderr");
    }

    fn expect_stdout(&self, line: &str) {
        assert_eq!(next_line(&self.stdout).as_deref(), Some(line), "stdout");
    }

    /// Waits for the client to exit and collects what it printed after the
    /// lines already expected.
    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + LIMIT;
        // Both pipes close when the process exits, which ends the channels.
        let rest = |lines: &Receiver<String>| {
            let mut rest = Vec::new();
            while let Ok(line) =
                lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                rest.push(line);
            }
            assert!(Instant::now() < deadline, "chat-client did not exit");
            rest
        };
        let stdout = rest(&self.stdout);
        let stderr = rest(&self.stderr);
        let code = self.child.wait().unwrap().code();
        Finished {
            code,
            stdout,
            stderr,
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A channel of the lines read from `pipe` (without their `\n`), fed by a
/// thread until the pipe closes.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line, or `None` if none comes within [`LIMIT`].
fn next_line(lines: &Receiver<String>) -> Option<String> {
    lines.recv_timeout(LIMIT).ok()
}

/// A library session's next message, waiting at most [`LIMIT`].
fn next_message(session: &mut Session) -> Message {
    session.set_read_timeout(Some(LIMIT)).unwrap();
    session
        .next_message()
        .expect("a message in time")
        .expect("connection open")
}

fn notice(text: &str) -> Message {
    Message::Notice(text.to_string())
}

fn chat(text: &str) -> Message {
    Message::Chat(text.as_bytes().to_vec())
}

/// Worker ports 1 and 2 of `server`, the first pair.
fn first_pair(server: &TestServer) -> (u16, u16) {
    (server.workers[0].port(), server.workers[1].port())
}

fn run_to_end(args: &[&str]) -> Finished {
    Client::start(50000, args, Stdio::null()).finish()
}

#[test]
fn help_lists_every_exit_status() {
    let help = run_to_end(&["--help"]);
    assert_eq!((help.code, help.stderr.len()), (Some(0), 0));
    assert_eq!(help.stdout[0], "Usage: chat-client [OPTIONS]");
    let status_lines: Vec<&str> = help
        .stdout
        .iter()
        .skip_while(|line| *line != "Exit status:")
        .skip(1)
        .map(|line| &line[..5])
        .collect();
    let expected: Vec<String> = (0..=7).map(|code| format!("  {code}  ")).collect();
    assert_eq!(status_lines, expected);
}

#[test]
fn version_is_the_one_in_cargo_toml() {
    let version = run_to_end(&["--version"]);
    assert_eq!(
        version,
        Finished {
            code: Some(0),
            stdout: vec![format!("chat-client {}", env!("CARGO_PKG_VERSION"))],
            stderr: vec![],
        }
    );
}

#[test]
fn bad_flags_are_one_line_errors_with_status_2() {
    for (args, message) in [
        (
            &["--frobnicate"][..],
            "chat-client: unknown option --frobnicate (see --help)",
        ),
        // Last, and where a value is expected (the run adds `--port N`
        // first).
        (
            &["--retries", "1", "--bogus"],
            "chat-client: unknown option --bogus (see --help)",
        ),
        (
            &["--max-line", "--bogus"],
            "chat-client: unknown option --bogus (see --help)",
        ),
        (
            &["--host"],
            "chat-client: missing value for --host (see --help)",
        ),
        (
            &["--max-line", "0"],
            "chat-client: invalid value \"0\" for --max-line: not a whole number above 0",
        ),
        (
            &["--retries", "x"],
            "chat-client: invalid value \"x\" for --retries: not a whole number",
        ),
    ] {
        assert_eq!(
            run_to_end(args),
            Finished {
                code: Some(2),
                stdout: vec![],
                stderr: vec![message.to_string()],
            },
            "{args:?}"
        );
    }
}

#[test]
fn two_clients_chat_in_order_and_quit_frees_the_port() {
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let mut a = Client::of(&server);
    a.expect_stderr(&format!(
        "chat-client: connected on port {p1}; waiting for partner {p2}"
    ));
    let mut b = Client::of(&server);
    b.expect_stderr(&format!(
        "chat-client: connected on port {p2}; partner {p1} is here"
    ));
    a.expect_stderr(&format!("SERVER{p1}>>> Partner {p2} connected"));

    a.type_text("one\ntwo\nthree\n");
    for line in ["one", "two", "three"] {
        b.expect_stdout(line);
    }
    // A has typed nothing since: its partner's lines arrive on their own.
    b.type_text("hi\nthere\n");
    a.expect_stdout("hi");
    a.expect_stdout("there");

    a.type_text("/quit\n");
    assert_eq!(
        a.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![format!("chat-client: left port {p1}")],
        }
    );
    b.expect_stderr(&format!("SERVER{p2}>>> Partner {p1} left"));

    // The port A held is free again: the next client is given it.
    let c = server.join();
    assert_eq!((c.port, c.partner_present), (p1, true));
    b.expect_stderr(&format!("SERVER{p2}>>> Partner {p1} connected"));
    b.close_stdin();
    assert_eq!(
        b.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![format!("chat-client: left port {p2}")],
        }
    );
}

#[test]
fn piped_input_is_sent_and_quit_leaves() {
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let mut partner = server.join();
    // What `printf 'hello\n/quit\n' | chat-client` does: all the input at
    // once, then its end.
    let mut client = Client::of(&server);
    client.type_text("hello\n/quit\n");
    client.close_stdin();
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![
                format!("chat-client: connected on port {p2}; partner {p1} is here"),
                format!("chat-client: left port {p2}"),
            ],
        }
    );
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    assert_eq!(next_message(&mut partner), chat("hello"));
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} left"))
    );
}

/// A file holding `contents`, open for reading, to be a client's stdin. Its
/// name is removed at once; the open file lives on until it is closed.
fn input_file(name: &str, contents: &str) -> std::fs::File {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chat-client-{name}-{}.txt", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

#[test]
fn end_of_input_from_a_file_leaves() {
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let mut partner = server.join();
    // A CRLF line, and a last line with no line ending at all.
    let input = input_file("input", "hello\r\nworld");
    let client = Client::start(server.portal.port(), &[], input.into());
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![
                format!("chat-client: connected on port {p2}; partner {p1} is here"),
                format!("chat-client: left port {p2}"),
            ],
        }
    );
    for expected in [
        notice(&format!("SERVER{p1}>>> Partner {p2} connected")),
        chat("hello"),
        chat("world"),
        notice(&format!("SERVER{p1}>>> Partner {p2} left")),
    ] {
        assert_eq!(next_message(&mut partner), expected);
    }
}

#[test]
fn a_line_over_1_mib_is_not_sent_and_the_next_one_is() {
    // The client's limit, `MAX_INPUT_LINE` in src/bin/chat-client.rs. The
    // unit tests there check lines around the limit.
    const MAX: usize = 1024 * 1024;
    // A server that takes longer lines than the client sends, so that a line
    // the client let through would reach the partner.
    let server = TestServer::start(&["--max-line", &(4 * MAX).to_string()]);
    let (p1, p2) = first_pair(&server);
    let mut partner = server.join();
    // Three times the limit: most of it is skipped, a buffer at a time.
    let input = input_file(
        "long-line",
        &format!("before\n{}\nhello\n", "x".repeat(3 * MAX)),
    );
    let client = Client::start(server.portal.port(), &[], input.into());
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![
                format!("chat-client: connected on port {p2}; partner {p1} is here"),
                format!("chat-client: line too long (limit {MAX} bytes); not sent"),
                format!("chat-client: left port {p2}"),
            ],
        }
    );
    for expected in [
        notice(&format!("SERVER{p1}>>> Partner {p2} connected")),
        chat("before"),
        chat("hello"),
        notice(&format!("SERVER{p1}>>> Partner {p2} left")),
    ] {
        assert_eq!(next_message(&mut partner), expected);
    }
}

#[test]
fn a_line_over_max_line_is_not_sent_and_the_session_goes_on() {
    // 20, not less: the server's limit applies to `CLIENT>>> TERMINATE`
    // too (19 bytes).
    for (limit, flags) in [(8192, &[][..]), (20, &["--max-line", "20"])] {
        let server = TestServer::start(flags);
        let (p1, p2) = first_pair(&server);
        let mut partner = server.join();
        let longest = "x".repeat(limit);
        let input = input_file("max-line", &format!("{longest}\n{longest}y\r\nafter\n"));
        let client = Client::start(server.portal.port(), flags, input.into());
        assert_eq!(
            client.finish(),
            Finished {
                code: Some(0),
                stdout: vec![],
                stderr: vec![
                    format!("chat-client: connected on port {p2}; partner {p1} is here"),
                    format!(
                        "chat-client: line too long ({} bytes; the server takes at most \
                         {limit}, see --max-line); not sent",
                        limit + 1
                    ),
                    format!("chat-client: left port {p2}"),
                ],
            },
            "{flags:?}"
        );
        for expected in [
            notice(&format!("SERVER{p1}>>> Partner {p2} connected")),
            chat(&longest),
            chat("after"),
            notice(&format!("SERVER{p1}>>> Partner {p2} left")),
        ] {
            assert_eq!(next_message(&mut partner), expected, "{flags:?}");
        }
    }
}

#[test]
fn ctrl_c_leaves_like_quit() {
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let mut partner = server.join();
    let client = Client::of(&server);
    // Printed only once Ctrl-C is caught.
    client.expect_stderr(&format!(
        "chat-client: connected on port {p2}; partner {p1} is here"
    ));
    client.interrupt();
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![format!("chat-client: left port {p2}")],
        }
    );
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} left"))
    );
}

#[test]
fn full_server_is_asked_again_every_2_s_until_a_port_frees() {
    let server = TestServer::start(&["--workers", "2"]);
    let (p1, p2) = first_pair(&server);
    let first = server.join();
    let mut second = server.join();
    let mut client = Client::of(&server);
    client.expect_stderr("chat-client: the server is full (attempt 1); asking again in 2 s");
    let told_full = Instant::now();
    first.terminate(LIMIT).unwrap();
    client.expect_stderr(&format!(
        "chat-client: connected on port {p1}; partner {p2} is here"
    ));
    // The retry waited its 2 s (less a margin for when the line was read).
    assert!(told_full.elapsed() >= Duration::from_millis(1500));
    for expected in [
        format!("SERVER{p2}>>> Partner {p1} left"),
        format!("SERVER{p2}>>> Partner {p1} connected"),
    ] {
        assert_eq!(next_message(&mut second), notice(&expected));
    }
    client.close_stdin();
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(0),
            stdout: vec![],
            stderr: vec![format!("chat-client: left port {p1}")],
        }
    );
}

#[test]
fn full_server_out_of_retries_exits_4() {
    let server = TestServer::start(&["--workers", "2"]);
    let _taken = [server.join(), server.join()];
    let client = Client::start(server.portal.port(), &["--retries", "1"], Stdio::piped());
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(4),
            stdout: vec![],
            stderr: vec![
                "chat-client: the server is full (attempt 1 of 2); asking again in 2 s".into(),
                "chat-client: the server is full (attempt 2 of 2)".into(),
                "chat-client: giving up: the server stayed full (2 attempt(s))".into(),
            ],
        }
    );
}

#[test]
fn refused_handshake_goes_back_to_the_portal_once_then_exits_5() {
    let server = TestServer::start(&[]);
    let (p1, _) = first_pair(&server);
    // A fake portal that assigns the real server's free port 1 with a
    // passcode the server never issued, so every handshake is refused.
    let portal = TcpListener::bind("127.0.0.1:0").unwrap();
    let portal_port = portal.local_addr().unwrap().port();
    let (asked, times_asked) = mpsc::channel();
    thread::spawn(move || {
        for stream in portal.incoming() {
            // Counted before answering, so every count is in before the
            // client can act on the answer, let alone exit.
            if asked.send(()).is_err() {
                return;
            }
            let mut stream = stream.unwrap();
            writeln!(stream, "SERVER>>>Port=>{p1},HandshakeCode=notIssued0").unwrap();
        }
    });
    let client = Client::start(portal_port, &[], Stdio::piped());
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(5),
            stdout: vec![],
            stderr: vec![
                format!(
                    "chat-client: port {p1} refused the passcode (the reservation may have \
                     lapsed); asking the portal again"
                ),
                "chat-client: giving up: the passcode was refused twice".into(),
            ],
        }
    );
    assert_eq!(times_asked.try_iter().count(), 2);
}

/// A port that was just free, and is closed again: connecting to it is
/// refused.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn unreachable_server_exits_3() {
    let port = closed_port();
    let finished = Client::start(port, &["--host", "127.0.0.1"], Stdio::piped()).finish();
    assert_eq!((finished.code, finished.stdout.len()), (Some(3), 0));
    let [message] = &finished.stderr[..] else {
        panic!("one line expected: {:?}", finished.stderr);
    };
    let expected = format!("chat-client: cannot reach the server at 127.0.0.1:{port}: ");
    assert!(message.starts_with(&expected), "{message}");
}

/// Where `localhost` is `::1` as well as `127.0.0.1`, as in the
/// `/etc/hosts` of Debian and most systems (this test machine's lists
/// `127.0.0.1` only): a hosts file that says so, seen by one process only.
/// `None` if this machine cannot give a process its own view of
/// `/etc/hosts` (a mount namespace needs root).
struct LocalhostBothWays {
    hosts_file: std::path::PathBuf,
}

impl LocalhostBothWays {
    fn new() -> Option<LocalhostBothWays> {
        let private_mounts = Command::new("unshare")
            .args(["--mount", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !private_mounts {
            eprintln!("skipped: `unshare --mount` is not permitted here");
            return None;
        }
        let hosts_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chat-client-hosts-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::write(&hosts_file, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        Some(LocalhostBothWays { hosts_file })
    }

    /// `chat-client --port PORTAL --host localhost ARGS...`, in a mount
    /// namespace of its own where the hosts file is `/etc/hosts`.
    fn client(&self, portal: u16, args: &[&str]) -> Client {
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "sh",
                "-c",
                r#"mount --bind "$0" /etc/hosts && exec "$@""#,
            ])
            .arg(&self.hosts_file)
            .arg(env!("CARGO_BIN_EXE_chat-client"))
            .args(["--port", &portal.to_string(), "--host", "localhost"])
            .args(args);
        Client::spawn(command, Stdio::piped())
    }
}

impl Drop for LocalhostBothWays {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.hosts_file);
    }
}

/// The client joins `server` and chats with a library session there.
fn chat_through(server: &TestServer, mut client: Client) {
    let (p1, p2) = first_pair(server);
    client.expect_stderr(&format!(
        "chat-client: connected on port {p1}; waiting for partner {p2}"
    ));
    let mut partner = server.join();
    client.expect_stderr(&format!("SERVER{p1}>>> Partner {p2} connected"));
    partner.send_line(b"over here").unwrap();
    client.expect_stdout("over here");
    client.type_text("found you\n");
    assert_eq!(next_message(&mut partner), chat("found you"));
    client.close_stdin();
    assert_eq!(client.finish().code, Some(0));
}

#[test]
fn localhost_reaches_a_server_on_either_loopback_address() {
    let Some(localhost) = LocalhostBothWays::new() else {
        return;
    };
    // The resolver puts `::1` first: a server there is reached at once, one
    // on `127.0.0.1` after `::1` refused.
    for bind in ["::1", "127.0.0.1"] {
        let server = TestServer::start(&["--bind", bind]);
        assert_eq!(server.host(), bind.parse::<std::net::IpAddr>().unwrap());
        chat_through(&server, localhost.client(server.portal.port(), &[]));
    }
}

#[test]
fn every_address_of_an_unreachable_name_is_named() {
    let Some(localhost) = LocalhostBothWays::new() else {
        return;
    };
    let port = closed_port();
    let finished = localhost.client(port, &[]).finish();
    assert_eq!((finished.code, finished.stdout.len()), (Some(3), 0));
    let [message] = &finished.stderr[..] else {
        panic!("one line expected: {:?}", finished.stderr);
    };
    let expected = format!(
        "chat-client: cannot reach the server at localhost, port {port}: \
         [::1]:{port}: Connection refused (os error 111); \
         127.0.0.1:{port}: Connection refused (os error 111)"
    );
    assert_eq!(message, &expected);
}

#[test]
fn the_library_joins_at_the_first_address_that_accepts() {
    let server = TestServer::start(&[]);
    let (p1, _) = first_pair(&server);
    // 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only.
    let hosts = [IpAddr::from([127, 0, 0, 2]), server.host()];
    let policy = RetryPolicy {
        retries: Some(0),
        delay: Duration::ZERO,
    };
    let session = Session::join_any(&hosts, server.portal.port(), policy, |_| {}).unwrap();
    assert_eq!(session.port, p1);
}

#[test]
fn timeouts_end_the_session_with_status_6() {
    for (flags, notice) in [
        (["--idle-timeout", "0.5"], "SERVER>>> TIMEOUT"),
        (["--session-limit", "0.5"], "SERVER>>> TOTAL TIME TIMEOUT"),
    ] {
        let server = TestServer::start(&flags);
        let (p1, p2) = first_pair(&server);
        // Stdin stays open and silent: the server's deadline ends it.
        let client = Client::of(&server);
        assert_eq!(
            client.finish(),
            Finished {
                code: Some(6),
                stdout: vec![],
                stderr: vec![
                    format!("chat-client: connected on port {p1}; waiting for partner {p2}"),
                    notice.to_string(),
                    "chat-client: the server ended the session".into(),
                ],
            },
            "{flags:?}"
        );
    }
}

#[test]
fn server_shutdown_exits_7() {
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let client = Client::of(&server);
    client.expect_stderr(&format!(
        "chat-client: connected on port {p1}; waiting for partner {p2}"
    ));
    server.signal("TERM");
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(7),
            stdout: vec![],
            stderr: vec![
                "SERVER>>> Server shutting down".into(),
                "chat-client: the server is shutting down".into(),
            ],
        }
    );
}

#[test]
fn server_killed_exits_7() {
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let client = Client::of(&server);
    client.expect_stderr(&format!(
        "chat-client: connected on port {p1}; waiting for partner {p2}"
    ));
    drop(server); // SIGKILL: the kernel closes its sockets, no notice
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(7),
            stdout: vec![],
            stderr: vec!["chat-client: the server closed the connection".into()],
        }
    );
}

//! `chat-client` end to end: real client processes against a real
//! `chat-server`, checking their exact output and exit statuses.
//!
//! A client's stdout and stderr are read line by line by one thread per pipe,
//! into channels, so each test waits for the line it expects (with a time
//! limit) instead of sleeping. Where the other side of a chat is easier to
//! drive from the test itself, it is a library [`Session`].
//!
//! With `--wire dotnet` the same client talks to `chat-server --wire dotnet`
//! and to a stand-in for the original C# server, written here: a listener
//! that frames its few messages by hand, as .NET's `BinaryWriter` does.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::TestServer;
use portal_chat::client::{Message, RetryPolicy, Session};
use portal_chat::wire::Wire;

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

/// Joins `server`, which speaks `wire`, through the library, failing at
/// once if it is full.
fn join_on(server: &TestServer, wire: Wire) -> Session {
    let policy = RetryPolicy {
        retries: Some(0),
        delay: Duration::ZERO,
    };
    Session::join_any_with_wire(&[server.host()], server.portal.port(), policy, wire, |_| {})
        .expect("join")
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
    assert!(
        help.stdout
            .iter()
            .any(|line| line == "  --wire line|dotnet")
    );
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
        (
            &["--wire", "json"],
            r#"chat-client: invalid value "json" for --wire: expected "line" or "dotnet""#,
        ),
        (
            &["--wire", "--bogus"],
            "chat-client: unknown option --bogus (see --help)",
        ),
        (
            &["--wire", "dotnet", "--bogus"],
            "chat-client: unknown option --bogus (see --help)",
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
            stderr: vec![
                format!("SERVER{p1}>>> Bye"),
                format!("chat-client: left port {p1}"),
            ],
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
            stderr: vec![
                format!("SERVER{p2}>>> Bye"),
                format!("chat-client: left port {p2}"),
            ],
        }
    );
}

#[test]
fn piped_input_is_sent_and_quit_leaves() {
    let server = TestServer::start(&[]);
    // What `printf 'hello\n/quit\n' | chat-client` does: all the input at
    // once, then its end.
    let (said, partner_got) = piped_session(&server, || {
        let mut client = Client::of(&server);
        client.type_text("hello\n/quit\n");
        client.close_stdin();
        client
    });
    assert_eq!(said, Vec::<String>::new());
    assert_eq!(partner_got, [chat("hello")]);
}

/// Starts a client with no terminal (`start`) beside a partner that joined
/// first, and lets it run to its end. Checks what every such session has:
/// status 0 and nothing on stdout; on stderr first the "connected" line
/// and last the server's `Bye` and "left port"; for the partner first the
/// arrival notice and last the leaving one. Returns what lies between: the
/// client's other stderr lines, and the partner's other messages.
fn piped_session(
    server: &TestServer,
    start: impl FnOnce() -> Client,
) -> (Vec<String>, Vec<Message>) {
    let (p1, p2) = first_pair(server);
    let mut partner = server.join();
    let finished = start().finish();
    assert_eq!((finished.code, &finished.stdout[..]), (Some(0), &[][..]));
    let stderr = &finished.stderr;
    assert!(stderr.len() >= 3, "{stderr:?}");
    let (first, rest) = stderr.split_first().unwrap();
    let (said, last) = rest.split_at(rest.len() - 2);
    assert_eq!(
        first,
        &format!("chat-client: connected on port {p2}; partner {p1} is here")
    );
    assert_eq!(
        last,
        [
            format!("SERVER{p2}>>> Bye"),
            format!("chat-client: left port {p2}")
        ]
    );
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    let left = notice(&format!("SERVER{p1}>>> Partner {p2} left"));
    let mut partner_got = Vec::new();
    loop {
        match next_message(&mut partner) {
            message if message == left => return (said.to_vec(), partner_got),
            message => partner_got.push(message),
        }
    }
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
    // A CRLF line, and a last line with no line ending at all.
    let input = input_file("input", "hello\r\nworld");
    let (said, partner_got) = piped_session(&server, || {
        Client::start(server.portal.port(), &[], input.into())
    });
    assert_eq!(said, Vec::<String>::new());
    assert_eq!(partner_got, [chat("hello"), chat("world")]);
}

#[test]
fn a_line_over_1_mib_is_not_sent_and_the_next_one_is() {
    // The client's limit, `MAX_INPUT_LINE` in src/bin/chat-client.rs. The
    // unit tests there check lines around the limit.
    const MAX: usize = 1024 * 1024;
    // A server that takes longer lines than the client sends, so that a line
    // the client let through would reach the partner.
    let server = TestServer::start(&["--max-line", &(4 * MAX).to_string()]);
    // Three times the limit: most of it is skipped, a buffer at a time.
    let input = input_file(
        "long-line",
        &format!("before\n{}\nhello\n", "x".repeat(3 * MAX)),
    );
    let (said, partner_got) = piped_session(&server, || {
        Client::start(server.portal.port(), &[], input.into())
    });
    assert_eq!(
        said,
        [format!(
            "chat-client: line too long (limit {MAX} bytes); not sent"
        )]
    );
    assert_eq!(partner_got, [chat("before"), chat("hello")]);
}

#[test]
fn a_line_over_max_line_is_not_sent_and_the_session_goes_on() {
    // 20, not less: the server's limit applies to `CLIENT>>> TERMINATE`
    // too (19 bytes).
    for (limit, flags) in [(8192, &[][..]), (20, &["--max-line", "20"])] {
        let server = TestServer::start(flags);
        let longest = "x".repeat(limit);
        let input = input_file("max-line", &format!("{longest}\n{longest}y\r\nafter\n"));
        let (said, partner_got) = piped_session(&server, || {
            Client::start(server.portal.port(), flags, input.into())
        });
        assert_eq!(
            said,
            [format!(
                "chat-client: line too long ({} bytes; --max-line is {limit}); not sent",
                limit + 1
            )],
            "{flags:?}"
        );
        assert_eq!(partner_got, [chat(&longest), chat("after")], "{flags:?}");
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
            stderr: vec![
                format!("SERVER{p2}>>> Bye"),
                format!("chat-client: left port {p2}"),
            ],
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
            stderr: vec![
                format!("SERVER{p1}>>> Bye"),
                format!("chat-client: left port {p1}"),
            ],
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
    for (wire, (flag, notice)) in Wire::ALL.into_iter().flat_map(|wire| {
        [
            ("--idle-timeout", "SERVER>>> TIMEOUT"),
            ("--session-limit", "SERVER>>> TOTAL TIME TIMEOUT"),
        ]
        .map(|case| (wire, case))
    }) {
        let flags = [flag, "0.5", "--wire", wire.name()];
        let server = TestServer::start(&flags);
        let (p1, p2) = first_pair(&server);
        // Stdin stays open and silent: the server's deadline ends it.
        let client = Client::start(server.portal.port(), &flags[2..], Stdio::piped());
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

// ---------------------------------------------------------------------------
// In a terminal: a pseudo-terminal, and a terminal emulator reading it.
// ---------------------------------------------------------------------------

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Condvar, Mutex};

/// The size of the test's terminal.
const ROWS: u16 = 30;
const COLS: u16 = 100;

/// What the terminal emulator was asked to do besides drawing text.
#[derive(Default)]
struct Requests {
    titles: Vec<Vec<u8>>,
}

impl vt100::Callbacks for Requests {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.titles.push(title.to_vec());
    }
}

/// Everything the client wrote to its terminal, and the screen it drew.
struct Output {
    parser: vt100::Parser<Requests>,
    bytes: Vec<u8>,
    /// The client closed its side (it exited).
    closed: bool,
}

/// A `chat-client` in a pseudo-terminal, as in a terminal window: its
/// stdin, stdout and stderr are the terminal (unless stdout is made a pipe),
/// it is the terminal's session leader, and what it writes goes through a
/// terminal emulator (the vt100 crate), so that a test looks at the screen
/// a person would see. Killed if the test ends before it exits.
struct TermClient {
    child: Child,
    /// The terminal's other side: keys are written here.
    master: File,
    output: Arc<(Mutex<Output>, Condvar)>,
    /// The terminal's settings before the client started.
    settings: libc::termios,
}

impl TermClient {
    /// Starts `chat-client --port PORTAL ARGS...` in a new terminal.
    fn start(portal: u16, args: &[&str]) -> TermClient {
        TermClient::start_with(portal, args, None)
    }

    /// Like [`start`](Self::start), with stdout sent to `stdout` instead of
    /// the terminal if given.
    fn start_with(portal: u16, args: &[&str], stdout: Option<Stdio>) -> TermClient {
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let (mut master_fd, mut slave_fd) = (-1, -1);
        // SAFETY: openpty writes two descriptors it opened; the null name
        // and settings pointers ask for no name and default settings.
        let opened = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are open and owned by nobody else.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let settings = termios_of(&master);
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
        command
            .args(["--port", &portal.to_string()])
            .args(args)
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(stdout.unwrap_or_else(|| Stdio::from(slave.try_clone().unwrap())))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec. The
        // client gets a session of its own with the terminal as its
        // controlling terminal, as a shell in a terminal window has.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chat-client");
        // The client's copies of the terminal are its own: closing ours (in
        // `command`) lets reading the master end when the client exits.
        drop(command);
        let master = File::from(master);
        let output = Arc::new((
            Mutex::new(Output {
                parser: vt100::Parser::new_with_callbacks(
                    ROWS.try_into().unwrap(),
                    COLS.try_into().unwrap(),
                    0,
                    Requests::default(),
                ),
                bytes: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let mut reader = master.try_clone().unwrap();
        let feed = output.clone();
        thread::spawn(move || {
            let mut buffer = [0; 4096];
            loop {
                // EIO once the client has exited and closed the terminal.
                let n = reader.read(&mut buffer).unwrap_or(0);
                let (output, changed) = &*feed;
                let mut output = output.lock().unwrap();
                if n == 0 {
                    output.closed = true;
                    changed.notify_all();
                    return;
                }
                output.parser.process(&buffer[..n]);
                output.bytes.extend_from_slice(&buffer[..n]);
                changed.notify_all();
            }
        });
        TermClient {
            child,
            master,
            output,
            settings,
        }
    }

    /// Presses keys: `keys` as the terminal sends them.
    fn press(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits until `condition` holds for the output so far, at most
    /// [`LIMIT`]; fails the test with `what` and the screen otherwise.
    fn wait_for(&self, what: &str, condition: impl Fn(&Output) -> bool) {
        let (output, changed) = &*self.output;
        let output = output.lock().unwrap();
        let (output, timeout) = changed
            .wait_timeout_while(output, LIMIT, |output| !condition(output))
            .unwrap();
        if timeout.timed_out() {
            let screen = output.parser.screen().contents();
            drop(output); // not poisoned for the reading thread
            panic!("{what}: not seen in time; the screen:\n{screen}");
        }
    }

    /// Waits until a row of the screen is `row`.
    fn wait_for_row(&self, row: &str) {
        self.wait_for(&format!("the row {row:?}"), |output| {
            rows(output).iter().any(|r| r == row)
        });
    }

    /// Waits until the partner's line `text` is on the screen, labelled
    /// with the time and `partner`.
    fn wait_for_partner_line(&self, partner: u16, text: &str) {
        self.wait_for(&format!("{partner}'s line {text:?}"), |output| {
            rows(output)
                .iter()
                .any(|row| is_partner_row(row, partner, text))
        });
    }

    /// Waits until the last row with anything on it is the prompt, followed
    /// by `typed` (ASCII), with the cursor right after it.
    fn wait_for_prompt(&self, typed: &str) {
        self.wait_for(&format!("the prompt with {typed:?}"), |output| {
            let rows = rows(output);
            let Some(last) = rows.iter().rposition(|row| !row.is_empty()) else {
                return false;
            };
            let row = &rows[last];
            let indent = row.len() - row.trim_start().len();
            let cursor = (last as u16, (indent + "you> ".len() + typed.len()) as u16);
            row.trim_start() == format!("you> {typed}").trim_end()
                && output.parser.screen().cursor_position() == cursor
        });
    }

    /// A copy of what is on the screen and everything written.
    fn output<T>(&self, read: impl FnOnce(&Output) -> T) -> T {
        read(&self.output.0.lock().unwrap())
    }

    /// Waits for the client to exit and for the terminal to show all it
    /// wrote; returns its exit status.
    fn finish(&mut self) -> Option<i32> {
        self.wait_for("the client's exit", |output| output.closed);
        self.child.wait().unwrap().code()
    }

    /// Whether the terminal's settings are back to what they were.
    fn settings_restored(&self) -> bool {
        let now = termios_of(&self.master);
        let before = &self.settings;
        (now.c_iflag, now.c_oflag, now.c_cflag, now.c_lflag, now.c_cc)
            == (
                before.c_iflag,
                before.c_oflag,
                before.c_cflag,
                before.c_lflag,
                before.c_cc,
            )
    }
}

impl Drop for TermClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The settings of the terminal `fd` is a side of.
fn termios_of(fd: &impl AsRawFd) -> libc::termios {
    // SAFETY: tcgetattr fills in a plain struct, checked for failure.
    unsafe {
        let mut settings: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut settings), 0);
        settings
    }
}

/// The rows of the screen, without trailing spaces.
fn rows(output: &Output) -> Vec<String> {
    output
        .parser
        .screen()
        .rows(0, COLS)
        .map(|row| row.trim_end().to_string())
        .collect()
}

/// Whether `row` is `[HH:MM:SS] PARTNER> TEXT`.
fn is_partner_row(row: &str, partner: u16, text: &str) -> bool {
    let Some(rest) = row.strip_suffix(&format!(" {partner}> {text}")) else {
        return false;
    };
    is_clock_label(rest)
}

/// Whether `label` is `[HH:MM:SS]`.
fn is_clock_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    bytes.len() == 10
        && bytes[0] == b'['
        && bytes[9] == b']'
        && bytes[3] == b':'
        && bytes[6] == b':'
        && [1, 2, 4, 5, 7, 8]
            .iter()
            .all(|&i| bytes[i].is_ascii_digit())
}

/// Keys as a terminal sends them.
const ENTER: &str = "\r";
const LEFT: &str = "\x1b[D";
const RIGHT: &str = "\x1b[C";
const HOME: &str = "\x1b[H";
const UP: &str = "\x1b[A";
const CTRL_C: &str = "\x03";
const CTRL_D: &str = "\x04";

/// A server, a partner joined there through the library, and a client in a
/// terminal joined after it, ready for keys.
fn terminal_chat(
    server_args: &[&str],
    client_args: &[&str],
) -> (TestServer, Session, TermClient, u16, u16) {
    terminal_chat_on(Wire::Line, server_args, client_args)
}

/// [`terminal_chat`] with the server, the partner and the client all on
/// `wire`.
fn terminal_chat_on(
    wire: Wire,
    server_args: &[&str],
    client_args: &[&str],
) -> (TestServer, Session, TermClient, u16, u16) {
    let on_wire = ["--wire", wire.name()];
    let server = TestServer::start(&[server_args, &on_wire].concat());
    let (p1, p2) = first_pair(&server);
    let mut partner = join_on(&server, wire);
    let client = TermClient::start(server.portal.port(), &[client_args, &on_wire].concat());
    client.wait_for_row(
        "chat-client: press Enter to send a line; /help lists the commands, /quit leaves",
    );
    client.wait_for_prompt("");
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    (server, partner, client, p1, p2)
}

#[test]
fn in_a_terminal_a_partner_cannot_drive_the_screen() {
    let (_server, mut partner, mut client, p1, p2) = terminal_chat(&[], &[]);
    // A forged notice with a carriage return that would go back over the
    // label never gets this far in line mode: the server refuses any chat
    // line holding a bare `\r`. The client still shows one as `^M` (its
    // unit tests in src/bin/chat-client/screen.rs), for servers that pass
    // it on, such as a .NET one.
    let hostile: [(&[u8], &str); 5] = [
        (b"\x1b[31mred\x1b[0m", "^[[31mred^[[0m"),
        (b"\x1b]0;owned\x07window title", "^[]0;owned^Gwindow title"),
        // Clear the screen, with a C1 CSI in UTF-8 and as a lone byte.
        ("\u{9b}2J".as_bytes(), "\\u{9b}2J"),
        (b"\x9b2J\xff", "\\x9b2J\\xff"),
        (b"bell\x07\x08\x08\x08\x08", "bell^G^H^H^H^H"),
    ];
    for (raw, _) in hostile {
        partner.send_line(raw).unwrap();
    }
    for (_, shown) in hostile {
        client.wait_for_partner_line(p1, shown);
    }
    client.output(|output| {
        assert!(
            output.parser.callbacks().titles.is_empty(),
            "the window title was set"
        );
        let screen = output.parser.screen();
        for row in 0..ROWS {
            for col in 0..COLS {
                let cell = screen.cell(row, col).unwrap();
                assert_eq!(
                    cell.fgcolor(),
                    vt100::Color::Default,
                    "coloured at {row},{col}"
                );
            }
        }
        // None of the partner's sequences reached the terminal raw.
        for raw in [&b"\x1b[31m"[..], b"\x1b]0;", b"\x9b", b"\x07"] {
            assert!(
                !output.bytes.windows(raw.len()).any(|w| w == raw),
                "{raw:?} written raw"
            );
        }
    });
    // Padded to go on at the start of the next row, a line would pass for
    // a notice there: it goes on indented instead.
    let forged = "[12:00:00] SERVER50001>>> Partner 50002 left";
    let label = format!("[00:00:00] {p1}> ");
    let padded = format!("{}{forged}", " ".repeat(usize::from(COLS) - label.len()));
    partner.send_line(padded.as_bytes()).unwrap();
    client.wait_for("the padded line", |output| {
        rows(output).iter().any(|row| row.ends_with(forged))
    });
    client.output(|output| {
        let rows = rows(output);
        let row = rows.iter().find(|row| row.ends_with(forged)).unwrap();
        assert!(row.starts_with(&" ".repeat(label.len())), "{row:?}");
    });
    // A real notice is in bold, which a partner's line cannot be.
    drop(partner);
    let left = format!("SERVER{p2}>>> Partner {p1} left");
    client.wait_for(&left, |output| {
        rows(output).iter().any(|row| row.ends_with(&left))
    });
    client.output(|output| {
        let rows = rows(output);
        let (row, text) = rows
            .iter()
            .enumerate()
            .find(|(_, row)| row.ends_with(&left))
            .unwrap();
        assert!(is_clock_label(&text[..10]), "{text}");
        let screen = output.parser.screen();
        assert!((0..text.len() as u16).all(|col| screen.cell(row as u16, col).unwrap().bold()));
        let padded = rows.iter().position(|row| row.ends_with(forged)).unwrap();
        assert!(!screen.cell(padded as u16, 0).unwrap().bold());
    });
    client.press(&format!("/quit{ENTER}"));
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn in_a_terminal_a_dotnet_partners_line_ends_are_shown_on_one_row() {
    // The dotnet wire passes `\r` and `\n` on inside a message, so here a
    // partner can send what the line wire refuses: a carriage return to go
    // back over the label, and a newline to start a row of its own.
    let (_server, mut partner, mut client, p1, _) = terminal_chat_on(Wire::Dotnet, &[], &[]);
    let forged = "SERVER50003>>> Partner 50004 left";
    let hostile: [(String, String); 3] = [
        (format!("x\r{forged}"), format!("x^M{forged}")),
        (
            format!("one\n[24:00:00] {forged}"),
            format!("one^J[24:00:00] {forged}"),
        ),
        ("\r\n\x1b[31m".into(), "^M^J^[[31m".into()),
    ];
    for (raw, _) in &hostile {
        partner.send_line(raw.as_bytes()).unwrap();
    }
    for (_, shown) in &hostile {
        client.wait_for_partner_line(p1, shown);
    }
    client.output(|output| {
        // No row begins with the forged label or notice: each stayed inside
        // the partner's own row, after its label (an hour of 24 is no
        // real label's).
        assert!(
            !rows(output)
                .iter()
                .any(|row| row.trim_start().starts_with("[24:00:00]")
                    || row.trim_start().starts_with("SERVER")),
            "{:?}",
            rows(output)
        );
        for raw in [&b"\x1b[31m"[..], b"\rSERVER", b"one\n"] {
            assert!(
                !output.bytes.windows(raw.len()).any(|w| w == raw),
                "{raw:?} written raw"
            );
        }
    });
    client.press(&format!("/quit{ENTER}"));
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn in_a_terminal_lines_are_edited_and_recalled_and_keys_are_not_sent() {
    let (_server, mut partner, mut client, _, _) = terminal_chat(&[], &[]);
    // Typed with a mistake, mended with the arrow keys and Home.
    client.press("hllo");
    client.wait_for_prompt("hllo");
    client.press(&format!("{HOME}{LEFT}{RIGHT}e{ENTER}"));
    assert_eq!(next_message(&mut partner), chat("hello"));
    client.wait_for_row(&format!("{}you> hello", " ".repeat(13)));
    // Up brings the line back; it is edited and sent again.
    client.press(UP);
    client.wait_for_prompt("hello");
    client.press(&format!(" again{ENTER}"));
    assert_eq!(next_message(&mut partner), chat("hello again"));
    // Empty and blank lines are not sent; commands are not sent.
    client.press(&format!("{ENTER}   {ENTER}/help{ENTER}"));
    client.wait_for_row("chat-client: commands:");
    client.press(&format!("/nope{ENTER}"));
    client.wait_for_row(
        "chat-client: unknown command /nope (see /help; // sends a line beginning with /)",
    );
    client.press(&format!("//nope is sent{ENTER}"));
    assert_eq!(next_message(&mut partner), chat("/nope is sent"));
    client.press(&format!("/quit{ENTER}"));
    assert_eq!(client.finish(), Some(0));
    assert_eq!(
        next_message(&mut partner),
        notice(&format!(
            "SERVER{}>>> Partner {} left",
            partner.port, partner.partner_port
        ))
    );
    // What the partner got had no escape codes in it: the lines above are
    // all it got.
}

#[test]
fn in_a_terminal_a_partner_line_is_printed_above_what_the_user_is_typing() {
    let (_server, mut partner, mut client, p1, _) = terminal_chat(&[], &[]);
    client.press("half a li");
    client.wait_for_prompt("half a li");
    partner.send_line(b"a line from the partner").unwrap();
    client.wait_for_partner_line(p1, "a line from the partner");
    // The line being typed is drawn again below it, cursor and all.
    client.wait_for_prompt("half a li");
    client.output(|output| {
        let rows = rows(output);
        let partner_row = rows
            .iter()
            .position(|row| is_partner_row(row, p1, "a line from the partner"))
            .unwrap();
        assert_eq!(rows[partner_row + 1].trim_start(), "you> half a li");
    });
    client.press(&format!("ne{ENTER}"));
    assert_eq!(next_message(&mut partner), chat("half a line"));
    // Ctrl-D only once the editor reads again: pressed between two reads,
    // while the terminal is briefly back in its own mode, the terminal
    // itself would swallow it.
    client.wait_for_prompt("");
    client.press(CTRL_D);
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn in_a_terminal_leaving_gives_the_terminal_back_as_it_was() {
    for (keys, status) in [
        (format!("/quit{ENTER}"), Some(0)),
        (CTRL_D.to_string(), Some(0)),
        (CTRL_C.to_string(), Some(0)),
    ] {
        let (_server, mut partner, mut client, _, p2) = terminal_chat(&[], &[]);
        client.press(&keys);
        assert_eq!(client.finish(), status, "{keys:?}");
        assert!(client.settings_restored(), "{keys:?}");
        // The last row is the farewell: no prompt is left behind it.
        client.output(|output| {
            let rows = rows(output);
            let last = rows.iter().rev().find(|row| !row.is_empty()).unwrap();
            assert_eq!(last, &format!("chat-client: left port {p2}"), "{keys:?}");
            assert!(!output.parser.screen().bracketed_paste(), "{keys:?}");
        });
        assert_eq!(
            next_message(&mut partner),
            notice(&format!("SERVER{}>>> Partner {p2} left", partner.port))
        );
    }
}

#[test]
fn in_a_terminal_the_server_ending_the_session_gives_the_terminal_back() {
    let (server, _partner, mut client, _, _) = terminal_chat(&[], &[]);
    client.press("not sent");
    client.wait_for_prompt("not sent");
    server.signal("TERM");
    assert_eq!(client.finish(), Some(7));
    assert!(client.settings_restored());
    client.wait_for_row("chat-client: the server is shutting down");
}

#[test]
fn in_a_terminal_a_line_over_max_line_is_not_sent() {
    let (_server, mut partner, mut client, _, _) =
        terminal_chat(&["--max-line", "20"], &["--max-line", "20"]);
    client.press(&format!("{}{ENTER}", "y".repeat(21)));
    client.wait_for_row("chat-client: line too long (21 bytes; --max-line is 20); not sent");
    client.press(&format!("{}{ENTER}", "z".repeat(20)));
    assert_eq!(next_message(&mut partner), chat(&"z".repeat(20)));
    client.press(&format!("/quit{ENTER}"));
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn a_terminal_without_the_editor_does_not_send_escape_codes() {
    // Stdout is a pipe: no line editor, so the terminal's own line editing
    // is all there is, and an arrow key is ESC [ D in the line.
    let server = TestServer::start(&[]);
    let (p1, p2) = first_pair(&server);
    let mut partner = server.join();
    let mut client = TermClient::start_with(server.portal.port(), &[], Some(Stdio::null()));
    client.wait_for_row(
        "chat-client: type a line and press Enter to send it; /quit, Ctrl-D or Ctrl-C leaves",
    );
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    client.press(&format!("ab{LEFT}c\r"));
    client.wait_for_row(
        "chat-client: not sent: an escape code in the line (arrow keys cannot edit here)",
    );
    client.press("plain\r");
    assert_eq!(next_message(&mut partner), chat("plain"));
    client.press(CTRL_D);
    assert_eq!(client.finish(), Some(0));
}

#[test]
fn in_a_pipe_a_partner_line_arrives_byte_for_byte() {
    let server = TestServer::start(&[]);
    let mut partner = server.join();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .args(["--port", &server.portal.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Every byte but the newline and the carriage return (a line holding a
    // bare one is refused by the server), and a hostile line of the
    // terminal test, then a last line to know that all has come.
    let every_byte: Vec<u8> = (0..=255u8).filter(|&b| b != b'\n' && b != b'\r').collect();
    let lines: [&[u8]; 3] = [&every_byte, b"\x1b]0;owned\x07\x9b2J\xff", b"end"];
    let (p1, p2) = first_pair(&server);
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    assert_printed_as_sent(&mut partner, child.stdout.take().unwrap(), &lines);
    drop(child.stdin.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Everything `pipe` gives until it ends with `end`, waiting at most
/// [`LIMIT`].
/// Sends `messages` from `partner`, the last one `end`, and checks that the
/// client wrote each one to `stdout` exactly as it came, then a newline.
fn assert_printed_as_sent(
    partner: &mut Session,
    stdout: impl Read + Send + 'static,
    messages: &[&[u8]],
) {
    assert_eq!(messages.last(), Some(&&b"end"[..]));
    for message in messages {
        partner.send_line(message).unwrap();
    }
    let bytes = bytes_until(stdout, b"\nend\n");
    let expected: Vec<u8> = messages
        .iter()
        .flat_map(|message| message.iter().copied().chain([b'\n']))
        .collect();
    assert_eq!(bytes, expected);
}

fn bytes_until(mut pipe: impl Read + Send + 'static, end: &'static [u8]) -> Vec<u8> {
    let (got_tx, got) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            bytes.extend_from_slice(&buffer[..n]);
            if bytes.ends_with(end) {
                break;
            }
        }
        let _ = got_tx.send(bytes);
    });
    got.recv_timeout(LIMIT).expect("every line in time")
}

// ---------------------------------------------------------------------------
// The dotnet wire: `chat-server --wire dotnet`, and the original server.
// ---------------------------------------------------------------------------

#[test]
fn on_the_dotnet_wire_a_partners_message_arrives_byte_for_byte_in_a_pipe() {
    // Room for the 256-byte message below, and for the client's check.
    let max_line = ["--max-line", "300"];
    let server = TestServer::start(&["--wire", "dotnet", max_line[0], max_line[1]]);
    let (p1, p2) = first_pair(&server);
    let mut partner = join_on(&server, Wire::Dotnet);
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .args([
            "--port",
            &server.portal.port().to_string(),
            "--wire",
            "dotnet",
        ])
        .args(max_line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let expect_stderr = |line: String| assert_eq!(next_line(&stderr), Some(line), "stderr");
    expect_stderr(format!(
        "chat-client: connected on port {p2}; partner {p1} is here"
    ));
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} connected"))
    );
    // Every byte, `\r` and `\n` among them, in one message; a bare `\r`
    // (what the line wire refuses); line ends of every kind; then a last
    // message to know that all has come.
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let messages: [&[u8]; 6] = [
        b"bare\rcr",
        &every_byte,
        b"two\nlines",
        b"\r\n",
        b"",
        b"end",
    ];
    assert_printed_as_sent(&mut partner, child.stdout.take().unwrap(), &messages);

    // Each line typed is one message, a bare `\r` and all; `--max-line`
    // counts its bytes (`é` is two).
    let at_limit = "\u{e9}".repeat(150);
    let mut stdin = child.stdin.take().unwrap();
    write!(stdin, "typed\rback\n{at_limit}x\n{at_limit}\n\n").unwrap();
    drop(stdin);
    for expected in [chat("typed\rback"), chat(&at_limit), chat("")] {
        assert_eq!(next_message(&mut partner), expected);
    }
    assert_eq!(
        next_message(&mut partner),
        notice(&format!("SERVER{p1}>>> Partner {p2} left"))
    );
    for line in [
        "chat-client: line too long (301 bytes; --max-line is 300); not sent".to_string(),
        format!("SERVER{p2}>>> Bye"),
        format!("chat-client: left port {p2}"),
    ] {
        expect_stderr(line);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `text` as .NET's `BinaryWriter.Write(string)` writes a string of fewer
/// than 128 bytes: its length in one byte, then its bytes. Framed by hand,
/// not by the library, so that the bytes on the wire are what is checked.
fn dotnet_short(text: &str) -> Vec<u8> {
    let length = u8::try_from(text.len()).ok().filter(|&n| n < 0x80);
    let length = length.expect("a one-byte prefix");
    [&[length][..], text.as_bytes()].concat()
}

/// Reads one message of fewer than 128 bytes, framed as [`dotnet_short`]
/// frames it.
fn read_dotnet_short(stream: &mut impl Read) -> std::io::Result<String> {
    let mut length = [0];
    stream.read_exact(&mut length)?;
    assert!(length[0] < 0x80, "a one-byte prefix: {length:?}");
    let mut text = vec![0; usize::from(length[0])];
    stream.read_exact(&mut text)?;
    Ok(String::from_utf8(text).expect("UTF-8"))
}

#[test]
fn on_the_dotnet_wire_the_original_servers_own_answers_are_understood() {
    // A stand-in for the original C# server: a portal that is full at
    // first, then hands out a decimal passcode, and a worker port that
    // takes the handshake, reads one line and times the session out.
    const CODE: &str = "0482913";
    // Only shown to the user: nothing connects to it.
    const PARTNER: u16 = 50002;
    let portal = TcpListener::bind("127.0.0.1:0").unwrap();
    let worker = TcpListener::bind("127.0.0.1:0").unwrap();
    let (portal_port, port) = (
        portal.local_addr().unwrap().port(),
        worker.local_addr().unwrap().port(),
    );
    let portal_thread = thread::spawn(move || {
        for answer in [
            "SERVER>>> FULL".to_string(),
            format!("SERVER>>>Port=>{port},HandshakeCode={CODE}"),
        ] {
            let (mut stream, _) = portal.accept().unwrap();
            stream.write_all(&dotnet_short(&answer)).unwrap();
        }
    });
    let (heard_tx, heard) = mpsc::channel();
    let worker_thread = thread::spawn(move || {
        let (mut stream, _) = worker.accept().unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let handshake = read_dotnet_short(&mut stream).unwrap();
        heard_tx.send(handshake).unwrap();
        for notice in [
            format!("SERVER{port}>>> Connection successful"),
            format!("SERVER{port}>>> Waiting for partner {PARTNER}"),
        ] {
            stream.write_all(&dotnet_short(&notice)).unwrap();
        }
        let line = read_dotnet_short(&mut stream).unwrap();
        heard_tx.send(line).unwrap();
        // The original's idle timeout: its notice, then the close.
        stream
            .write_all(&dotnet_short("SERVER>>> IDLE TIMEOUT"))
            .unwrap();
    });
    let mut client = Client::start(portal_port, &["--wire", "dotnet"], Stdio::piped());
    client.expect_stderr("chat-client: the server is full (attempt 1); asking again in 2 s");
    client.expect_stderr(&format!(
        "chat-client: connected on port {port}; waiting for partner {PARTNER}"
    ));
    assert_eq!(
        heard.recv_timeout(LIMIT).unwrap(),
        format!("CLIENT{port}>>>HandshakeCode={CODE}")
    );
    client.type_text("hello\n");
    assert_eq!(heard.recv_timeout(LIMIT).unwrap(), "hello");
    // As with this project's `SERVER>>> TIMEOUT`: status 6, and no
    // TERMINATE sent to a server that has closed.
    assert_eq!(
        client.finish(),
        Finished {
            code: Some(6),
            stdout: vec![],
            stderr: vec![
                "SERVER>>> IDLE TIMEOUT".into(),
                "chat-client: the server ended the session".into(),
            ],
        }
    );
    portal_thread.join().unwrap();
    worker_thread.join().unwrap();
}

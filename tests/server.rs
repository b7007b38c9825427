//! End-to-end tests of the wire protocol: the real `chat-server` binary,
//! started by `common::TestServer` (`--port 0 --tick-ms 20`), driven over
//! real loopback sockets.
//!
//! Every socket has a read timeout, so a missing answer fails the test
//! instead of hanging it; every deadline check has a lower bound (the server
//! may never act early) and a generous upper bound (the machine is shared).
//!
//! tests/wires.rs runs the rules common to every wire through both codecs,
//! line mode included; a test here that it repeated exactly has gone there.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{Peer, TestServer, wait_until};
use portal_chat::client::{Assignment, Message, PortalAnswer, Session, parse_portal_reply};

/// The longest any single read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connect may take. Longer than `IO_TIMEOUT`: when 400
/// connections arrive at once the listen backlog overflows and the kernel
/// retries the dropped ones after 1, 3, 7, 15 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A raw connection, for byte-level control over what is sent and read.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next line with its `\n`; `None` at end of stream.
    fn raw_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .unwrap_or_else(|e| {
                panic!(
                    "read failed: {e} (partial line {:?})",
                    String::from_utf8_lossy(&line)
                )
            });
        if n == 0 {
            return None;
        }
        assert!(
            line.ends_with(b"\n"),
            "stream ended inside a line: {:?}",
            String::from_utf8_lossy(&line)
        );
        Some(line)
    }

    /// The next line as text, without its `\n`; `None` at end of stream.
    fn line(&mut self) -> Option<String> {
        self.raw_line().map(|mut line| {
            line.pop();
            String::from_utf8(line).expect("server line is UTF-8")
        })
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.line().as_deref(), Some(want));
    }

    fn expect_eof(&mut self) {
        assert_eq!(self.line(), None, "expected the server to close");
    }

    /// Everything until the server closes.
    fn rest(&mut self) -> String {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("read to end failed: {e}"));
        String::from_utf8(rest).expect("server output is UTF-8")
    }
}

/// The worker port of worker `n` (1-based, as on the server's stdout).
fn worker(server: &TestServer, n: usize) -> u16 {
    server.workers[n - 1].port()
}

fn worker_addr(server: &TestServer, port: u16) -> SocketAddr {
    SocketAddr::new(server.host(), port)
}

/// One portal exchange: exactly one line, then the portal closes.
fn portal_line(server: &TestServer) -> String {
    let mut conn = Conn::connect(server.portal);
    let line = conn.line().expect("portal closed without answering");
    conn.expect_eof();
    line
}

fn ask_portal(server: &TestServer) -> PortalAnswer {
    let line = portal_line(server);
    parse_portal_reply(&line).unwrap_or_else(|| panic!("not a portal reply: {line:?}"))
}

fn assign(server: &TestServer) -> Assignment {
    match ask_portal(server) {
        PortalAnswer::Assigned(assignment) => assignment,
        PortalAnswer::Full => panic!("portal unexpectedly full"),
    }
}

fn prefixed(assignment: &Assignment) -> String {
    format!(
        "CLIENT{}>>>HandshakeCode={}\n",
        assignment.port, assignment.code
    )
}

/// Connects to the assigned port, sends `line` and checks the success
/// answer. The partner status line is left for the caller.
fn raw_handshake(server: &TestServer, assignment: &Assignment, line: &[u8]) -> Conn {
    let port = assignment.port;
    let mut conn = Conn::connect(worker_addr(server, port));
    conn.send(line);
    conn.expect(&format!("SERVER{port}>>> Connection successful"));
    conn
}

/// A client-library session with a read timeout.
fn handshake(server: &TestServer, assignment: &Assignment) -> Session {
    let session = Session::handshake(server.host(), assignment).expect("handshake");
    session.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    session
}

fn join(server: &TestServer) -> Session {
    let assignment = assign(server);
    handshake(server, &assignment)
}

fn next(session: &mut Session) -> Message {
    session
        .next_message()
        .expect("read from server")
        .expect("server closed unexpectedly")
}

/// Sends `line` from one session and checks it is the next thing the
/// other receives.
fn relay(from: &mut Session, to: &mut Session, line: &str) {
    from.send_line(line.as_bytes()).unwrap();
    assert_eq!(next(to), chat(line));
}

/// `session`, on port `own`, is told that its partner on `partner` joined.
fn expect_partner_joined(session: &mut Session, own: u16, partner: u16) {
    assert_eq!(
        next(session),
        notice(format!("SERVER{own}>>> Partner {partner} connected"))
    );
}

fn expect_closed(session: &mut Session) {
    assert_eq!(session.next_message().expect("read from server"), None);
}

fn notice(text: impl Into<String>) -> Message {
    Message::Notice(text.into())
}

fn chat(bytes: impl AsRef<[u8]>) -> Message {
    Message::Chat(bytes.as_ref().to_vec())
}

/// Connects to `port`, sends `line`, and checks that the whole answer is the
/// wrong-passcode notice followed by the close.
fn assert_refused(server: &TestServer, port: u16, line: &[u8]) {
    let mut conn = Conn::connect(worker_addr(server, port));
    conn.send(line);
    assert_eq!(
        conn.rest(),
        format!("SERVER{port}>>> Wrong handshake passcode\n"),
        "answer on port {port} to {:?}",
        String::from_utf8_lossy(line)
    );
}

/// Starts a thread that sends `line` every `every` on `stream` until told to
/// stop or a write fails. Returns the stop flag, a count of lines sent and
/// the thread.
fn pinger(
    mut stream: impl Write + Send + 'static,
    line: &'static [u8],
    every: Duration,
) -> (Arc<AtomicBool>, Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let handle = thread::spawn(move || {
        // Pacing of the simulated client, not a wait for a condition.
        while !stop2.load(Ordering::SeqCst) {
            if stream.write_all(line).is_err() {
                break;
            }
            sent2.fetch_add(1, Ordering::SeqCst);
            thread::sleep(every);
        }
    });
    (stop, sent, handle)
}

/// Runs `chat-server` with `args` to completion (killed after 10 s).
fn run_cli(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server");
    let exited = wait_until(IO_TIMEOUT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chat-server {args:?} did not exit");
    }
    child.wait_with_output().unwrap()
}

fn assert_one_line(text: &str, what: &str) {
    assert!(
        text.ends_with('\n') && text.lines().count() == 1 && !text.trim().is_empty(),
        "{what}: expected exactly one line, got {text:?}"
    );
}

// ---------------------------------------------------------------------------
// Portal
// ---------------------------------------------------------------------------

#[test]
fn ports_are_handed_out_lifo_first_worker_first() {
    let server = TestServer::start(&["--workers", "4", "--assign-timeout", "60"]);
    let w: Vec<u16> = (1..=4).map(|n| worker(&server, n)).collect();

    let assignments: Vec<Assignment> = (0..4).map(|_| assign(&server)).collect();
    let ports: Vec<u16> = assignments.iter().map(|a| a.port).collect();
    assert_eq!(
        ports, w,
        "a fresh server hands out worker 1 first, in order"
    );
    assert_eq!(portal_line(&server), "SERVER>>>full");
    let mut codes: Vec<&str> = assignments.iter().map(|a| a.code.as_str()).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 4, "every passcode is fresh");

    let mut sessions: Vec<Option<Session>> = assignments
        .iter()
        .map(|a| Some(handshake(&server, a)))
        .collect();
    assert_eq!(portal_line(&server), "SERVER>>>full");

    // Free worker 2, then 4, then 1: the stack hands them back 1, 4, 2.
    for index in [1, 3, 0] {
        sessions[index]
            .take()
            .unwrap()
            .terminate(IO_TIMEOUT)
            .expect("terminate");
    }
    let again: Vec<u16> = (0..3).map(|_| assign(&server).port).collect();
    assert_eq!(again, vec![w[0], w[3], w[1]], "last freed, first reissued");
    assert_eq!(portal_line(&server), "SERVER>>>full");
}

#[test]
fn four_hundred_simultaneous_portal_connections_are_all_answered() {
    let server = TestServer::start(&["--workers", "4", "--assign-timeout", "120"]);
    let portal = server.portal;
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                // Open all 100 first, so the 400 are in flight together.
                let mut conns: Vec<Conn> = (0..100).map(|_| Conn::connect(portal)).collect();
                conns.iter_mut().map(|c| c.rest()).collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("portal client thread"))
        .collect();
    assert_eq!(replies.len(), 400);

    let mut assigned = Vec::new();
    let mut full = 0;
    for reply in &replies {
        let line = reply
            .strip_suffix('\n')
            .filter(|l| !l.contains('\n'))
            .unwrap_or_else(|| panic!("not exactly one line: {reply:?}"));
        match parse_portal_reply(line) {
            Some(PortalAnswer::Assigned(a)) => assigned.push(a.port),
            Some(PortalAnswer::Full) => full += 1,
            None => panic!("not a portal reply: {line:?}"),
        }
    }
    assigned.sort();
    let mut expected: Vec<u16> = server.workers.iter().map(|a| a.port()).collect();
    expected.sort();
    assert_eq!(
        assigned, expected,
        "each worker port handed out exactly once"
    );
    assert_eq!(full, 396);
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

#[test]
fn a_stray_wrong_attempt_does_not_lock_out_the_holder() {
    let server = TestServer::start(&[
        "--workers",
        "2",
        "--assign-timeout",
        "30",
        "--handshake-timeout",
        "30",
    ]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let held = assign(&server);
    assert_eq!(held.port, w1);

    let mut wrong = held.code.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'x' { b'y' } else { b'x' };
    let wrong = String::from_utf8(wrong).unwrap();
    let strays = [
        format!("{wrong}\n"),
        format!("CLIENT{w1}>>>HandshakeCode={wrong}\n"),
        format!("{}\n", &held.code[..held.code.len() - 1]),
        format!("{}x\n", held.code),
        // The right code behind another port's prefix is not a handshake.
        format!("CLIENT{w2}>>>HandshakeCode={}\n", held.code),
        "\n".to_string(),
        // Over 128 bytes before any newline: refused at once (the handshake
        // timeout is 30 s, so this answer cannot be a timeout).
        "z".repeat(200),
        format!("{}\n", "z".repeat(129)),
    ];
    for stray in &strays {
        assert_refused(&server, w1, stray.as_bytes());
    }

    let mut holder = raw_handshake(&server, &held, prefixed(&held).as_bytes());
    holder.expect(&format!("SERVER{w1}>>> Waiting for partner {w2}"));
    // Single use: the same code again is now refused like any wrong code.
    assert_refused(&server, w1, prefixed(&held).as_bytes());
}

#[test]
fn slowloris_is_cut_off_at_the_handshake_deadline() {
    let server = TestServer::start(&[
        "--workers",
        "2",
        "--handshake-timeout",
        "1.5",
        "--assign-timeout",
        "30",
    ]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let held = assign(&server);
    assert_eq!(held.port, w1);

    let started = Instant::now();
    // Trickles a byte every 100 ms on the reserved port, never a newline.
    let mut slow = Conn::connect(worker_addr(&server, w1));
    // Says nothing at all on the free port.
    let mut silent = Conn::connect(worker_addr(&server, w2));
    let (stop, sent, trickler) = pinger(
        slow.stream.try_clone().unwrap(),
        b"a",
        Duration::from_millis(100),
    );

    slow.expect(&format!("SERVER{w1}>>> Handshake timeout"));
    let slow_cut = started.elapsed();
    slow.expect_eof();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    silent.expect(&format!("SERVER{w2}>>> Handshake timeout"));
    silent.expect_eof();

    assert!(
        slow_cut >= Duration::from_millis(1500),
        "cut off early: {slow_cut:?}"
    );
    assert!(
        slow_cut < Duration::from_secs(5),
        "trickling extended the deadline: cut off after {slow_cut:?}"
    );
    assert!(
        sent.load(Ordering::SeqCst) >= 5,
        "the trickle did not run: {} bytes",
        sent.load(Ordering::SeqCst)
    );

    // The reservation survived the siege.
    let mut holder = raw_handshake(&server, &held, prefixed(&held).as_bytes());
    holder.expect(&format!("SERVER{w1}>>> Waiting for partner {w2}"));
}

// ---------------------------------------------------------------------------
// Session timeouts
// ---------------------------------------------------------------------------

#[test]
fn idle_client_times_out_even_while_receiving() {
    let server = TestServer::start(&["--workers", "2", "--idle-timeout", "1.5"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));

    let started = Instant::now();
    let mut quiet = join(&server);
    let busy = join(&server);
    assert_eq!((quiet.port, busy.port), (w1, w2));
    expect_partner_joined(&mut quiet, w1, w2);
    let (mut busy_reader, busy_writer) = busy.split();
    let (stop, sent, talker) = pinger(
        SessionWriterAdapter(busy_writer),
        b"ping",
        Duration::from_millis(200),
    );

    // Receiving chat is not activity: only the client's own lines are.
    let mut pings = 0;
    let end = loop {
        // The partner's pings keep coming: bound the wait here too.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no idle timeout after {:?}",
            started.elapsed()
        );
        match next(&mut quiet) {
            m if m == chat("ping") => pings += 1,
            other => break other,
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(end, notice("SERVER>>> TIMEOUT"));
    expect_closed(&mut quiet);
    assert!(
        elapsed >= Duration::from_millis(1500),
        "idle timeout early: {elapsed:?}"
    );
    assert!(pings >= 3, "only {pings} pings arrived before the timeout");

    // The busy partner is told and stays connected.
    assert_eq!(
        busy_reader.next_message().unwrap(),
        Some(notice(format!("SERVER{w2}>>> Partner {w1} left")))
    );
    stop.store(true, Ordering::SeqCst);
    talker.join().unwrap();
    let pinged = sent.load(Ordering::SeqCst);
    // Every ping after the partner left is answered, none is a timeout.
    let late = notice(format!(
        "SERVER{w2}>>> Not delivered: partner {w1} is not connected"
    ));
    let mut answered = 0;
    while answered + pings < pinged {
        assert_eq!(busy_reader.next_message().unwrap(), Some(late.clone()));
        answered += 1;
    }
    // The port is free again.
    assert_eq!(assign(&server).port, w1);
}

/// `pinger` wants `Write`; the client library's writer sends whole lines.
struct SessionWriterAdapter(portal_chat::client::SessionWriter);

impl Write for SessionWriterAdapter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send_line(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn session_limit_ends_even_a_busy_session() {
    let server = TestServer::start(&[
        "--workers",
        "2",
        "--session-limit",
        "1.5",
        "--idle-timeout",
        "30",
    ]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));

    let started = Instant::now();
    let session = join(&server);
    assert_eq!(session.port, w1);
    let (mut reader, writer) = session.split();
    let (stop, _sent, talker) = pinger(
        SessionWriterAdapter(writer),
        b"still here",
        Duration::from_millis(200),
    );
    let undelivered = notice(format!(
        "SERVER{w1}>>> Not delivered: partner {w2} is not connected"
    ));
    let mut answers = 0;
    let end = loop {
        // The answers keep coming: bound the wait here too.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no session limit after {:?}",
            started.elapsed()
        );
        match reader.next_message().unwrap().expect("closed early") {
            m if m == undelivered => answers += 1,
            other => break other,
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(end, notice("SERVER>>> TOTAL TIME TIMEOUT"));
    assert_eq!(reader.next_message().unwrap(), None);
    stop.store(true, Ordering::SeqCst);
    talker.join().unwrap();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "limit hit early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(8),
        "limit hit late: {elapsed:?}"
    );
    assert!(answers >= 3, "the session was not busy: {answers} lines");
    assert_eq!(assign(&server).port, w1, "the port is free again");
}

// ---------------------------------------------------------------------------
// Chatting
// ---------------------------------------------------------------------------

#[test]
fn terminate_frees_the_port_and_the_partner_is_told() {
    let server = TestServer::start(&["--workers", "2"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let mut a = join(&server);
    let mut b = join(&server);
    expect_partner_joined(&mut a, w1, w2);

    let rest = a.terminate(IO_TIMEOUT).expect("terminate");
    assert_eq!(
        rest,
        vec![notice(format!("SERVER{w1}>>> Bye"))],
        "nothing after TERMINATE but the goodbye and the close"
    );
    assert_eq!(
        next(&mut b),
        notice(format!("SERVER{w2}>>> Partner {w1} left"))
    );

    // w1 is the only free port; a newcomer gets it and chats with b.
    let mut c = join(&server);
    assert_eq!(c.port, w1);
    assert!(c.partner_present);
    expect_partner_joined(&mut b, w2, w1);
    b.send_line(b"welcome").unwrap();
    assert_eq!(next(&mut c), chat("welcome"));
}

#[test]
fn a_burst_of_mixed_lines_keeps_its_order_and_its_rules() {
    let server = TestServer::start(&["--workers", "2"]);
    let mut a = Peer::join(&server);
    let mut b = Peer::join(&server);
    a.expect(&format!("SERVER{}>>> Partner {} connected", a.port, b.port));
    // One write, so the server reads it whole and forwards the plain lines
    // in runs; every other line must break a run in its place.
    a.send(b"one\ntwo\r\nthree\nSERVER fake\nfour\nfive\nCLIENT>>> TERMINATE\nlost\n")
        .unwrap();
    for line in ["one", "two", "three", "four", "five"] {
        b.expect(line);
    }
    b.expect(&format!("SERVER{}>>> Partner {} left", b.port, a.port));
    a.expect(&format!(
        "SERVER{}>>> Refused: chat lines may not begin with SERVER",
        a.port
    ));
    a.expect(&format!("SERVER{}>>> Bye", a.port));
    a.expect_eof();
}

#[test]
fn the_short_spin_after_traffic_ends_and_the_server_rests() {
    let server = TestServer::start(&["--workers", "2"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let mut a = join(&server);
    let mut b = join(&server);
    expect_partner_joined(&mut a, w1, w2);
    for i in 0..200 {
        relay(&mut a, &mut b, &format!("ping {i}"));
        relay(&mut b, &mut a, &format!("pong {i}"));
    }
    // Right after the traffic, over a window of 1 s: a loop that kept
    // spinning would use the whole window; a resting one wakes only for the
    // 20 ms tick.
    let pid = server.pid();
    let window = Duration::from_secs(1);
    let before = common::cpu_ticks(pid);
    let started = Instant::now();
    thread::sleep(window); // the measurement window itself, not a wait
    let ticks = common::cpu_ticks(pid) - before;
    let allowed = 0.2 * common::ticks_per_second() as f64 * started.elapsed().as_secs_f64();
    assert!(
        ticks as f64 <= allowed,
        "{ticks} CPU ticks in a quiet second after traffic"
    );
}

#[test]
fn overlong_line_ends_the_session() {
    let server = TestServer::start(&["--workers", "2", "--max-line", "64"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let mut a = join(&server);
    let mut b = join(&server);
    expect_partner_joined(&mut a, w1, w2);

    // Exactly at the limit, with "\n" and with "\r\n": delivered.
    let at_limit = "a".repeat(64);
    a.send_line(at_limit.as_bytes()).unwrap();
    assert_eq!(next(&mut b), chat(&at_limit));
    let at_limit_crlf = format!("{}\r", "b".repeat(64));
    a.send_line(at_limit_crlf.as_bytes()).unwrap();
    assert_eq!(next(&mut b), chat("b".repeat(64)));

    // One byte over: the sender is told and closed, the partner told.
    a.send_line("c".repeat(65).as_bytes()).unwrap();
    assert_eq!(
        next(&mut a),
        notice(format!(
            "SERVER{w1}>>> Line too long (limit 64 bytes); closing"
        ))
    );
    expect_closed(&mut a);
    assert_eq!(
        next(&mut b),
        notice(format!("SERVER{w2}>>> Partner {w1} left"))
    );

    // A long line with no newline at all is caught too, and the port was
    // freed by the first offender.
    let again = assign(&server);
    assert_eq!(again.port, w1);
    let mut c = raw_handshake(&server, &again, prefixed(&again).as_bytes());
    c.expect(&format!("SERVER{w1}>>> Partner {w2} connected"));
    expect_partner_joined(&mut b, w2, w1);
    c.send("d".repeat(10_000).as_bytes());
    assert_eq!(
        c.rest(),
        format!("SERVER{w1}>>> Line too long (limit 64 bytes); closing\n")
    );
    assert_eq!(
        next(&mut b),
        notice(format!("SERVER{w2}>>> Partner {w1} left"))
    );
}

#[test]
fn a_line_without_a_partner_is_not_delivered() {
    let server = TestServer::start(&["--workers", "4"]);
    let [w1, w2, w3, w4] = [1, 2, 3, 4].map(|n| worker(&server, n));

    let first = assign(&server);
    let mut a = raw_handshake(&server, &first, prefixed(&first).as_bytes());
    a.expect(&format!("SERVER{w1}>>> Waiting for partner {w2}"));
    a.send(b"anyone?\n");
    a.expect(&format!(
        "SERVER{w1}>>> Not delivered: partner {w2} is not connected"
    ));

    let mut b = join(&server);
    assert!(b.partner_present);
    a.expect(&format!("SERVER{w1}>>> Partner {w2} connected"));
    // The undelivered line is not replayed: B's first line is the next one.
    a.send(b"now you are here\n");
    assert_eq!(next(&mut b), chat("now you are here"));

    // Worker 3 is alone although 1 and 2 are connected.
    let third = assign(&server);
    assert_eq!(third.port, w3);
    let mut c = raw_handshake(&server, &third, prefixed(&third).as_bytes());
    c.expect(&format!("SERVER{w3}>>> Waiting for partner {w4}"));
    c.send(b"hello?\n");
    c.expect(&format!(
        "SERVER{w3}>>> Not delivered: partner {w4} is not connected"
    ));
}

#[test]
fn crlf_line_endings_are_handled() {
    let server = TestServer::start(&["--workers", "2"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));

    let first = assign(&server);
    let mut a = raw_handshake(&server, &first, format!("{}\r\n", first.code).as_bytes());
    a.expect(&format!("SERVER{w1}>>> Waiting for partner {w2}"));
    let second = assign(&server);
    let crlf_prefixed = format!("CLIENT{w2}>>>HandshakeCode={}\r\n", second.code);
    let mut b = raw_handshake(&server, &second, crlf_prefixed.as_bytes());
    b.expect(&format!("SERVER{w2}>>> Partner {w1} connected"));
    a.expect(&format!("SERVER{w1}>>> Partner {w2} connected"));

    // (sent, what the partner receives): only the `\r` of a final `\r\n`
    // is dropped.
    let cases: [(&[u8], &[u8]); 3] = [
        (b"hello\r\n", b"hello\n"),
        (b"plain\n", b"plain\n"),
        (b"\r\n", b"\n"),
    ];
    for (sent, received) in cases {
        a.send(sent);
        assert_eq!(
            b.raw_line().as_deref(),
            Some(received),
            "sent {:?}",
            String::from_utf8_lossy(sent)
        );
    }
    // Any other `\r` would let a `\r`-splitting reader see a second line, a
    // forged notice say: such a line is refused, and the partner gets nothing.
    for sent in [
        &b"a\rb\r\n"[..],
        b"x\r\r\n",
        b"\rlead\r\n",
        b"hi\rSERVER>>> x\n",
    ] {
        a.send(sent);
        a.expect(&format!(
            "SERVER{w1}>>> Refused: chat lines may not hold a carriage return"
        ));
    }
    a.send(b"after\n");
    b.expect("after");
    // Several lines in one write, and a `\r\n` split across writes.
    a.send(b"one\r\ntwo\nthree\r\n");
    for want in ["one", "two", "three"] {
        b.expect(want);
    }
    a.send(b"split\r");
    a.send(b"\n");
    b.expect("split");

    // A `\r\n` TERMINATE works too, and B is told.
    b.send(b"CLIENT>>> TERMINATE\r\n");
    b.expect(&format!("SERVER{w2}>>> Bye"));
    b.expect_eof();
    a.expect(&format!("SERVER{w1}>>> Partner {w2} left"));
}

#[test]
fn twenty_thousand_lines_reach_a_late_reader_complete_and_in_order() {
    const LINES: usize = 20_000;
    fn line(i: usize) -> Vec<u8> {
        // 100 to 200 bytes, numbered, with varying content.
        let len = 100 + (i * 37) % 101;
        let mut line = format!("{i:05}:").into_bytes();
        while line.len() < len {
            line.push(b'a' + ((i + line.len()) % 26) as u8);
        }
        line
    }
    let total: usize = (0..LINES).map(|i| line(i).len() + 1).sum();
    assert!(
        total > 2 * 1024 * 1024,
        "must exceed the 1 MiB output bound"
    );

    let server = TestServer::start(&["--workers", "2"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let first = assign(&server);
    let mut writer_conn = raw_handshake(&server, &first, prefixed(&first).as_bytes());
    writer_conn.expect(&format!("SERVER{w1}>>> Waiting for partner {w2}"));
    let mut reader = join(&server);
    writer_conn.expect(&format!("SERVER{w1}>>> Partner {w2} connected"));

    let mut out = writer_conn.stream.try_clone().unwrap();
    out.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (written2, done2) = (written.clone(), done.clone());
    let writer = thread::spawn(move || -> std::io::Result<()> {
        for batch in (0..LINES).collect::<Vec<_>>().chunks(50) {
            let mut bytes = Vec::new();
            for &i in batch {
                bytes.extend_from_slice(&line(i));
                bytes.push(b'\n');
            }
            out.write_all(&bytes)?;
            written2.fetch_add(bytes.len(), Ordering::SeqCst);
        }
        done2.store(true, Ordering::SeqCst);
        Ok(())
    });

    // The reader starts late: once the writer is done, or blocked.
    wait_for_done_or_stall(&done, &written);
    let stalled_at = (!done.load(Ordering::SeqCst)).then(|| written.load(Ordering::SeqCst));
    eprintln!("late reader starts; writer stalled at {stalled_at:?} of {total} bytes");

    for i in 0..LINES {
        let got = next(&mut reader);
        assert!(
            got == Message::Chat(line(i)),
            "line {i}: got {got:?}, want {:?}",
            String::from_utf8_lossy(&line(i))
        );
    }
    writer.join().unwrap().expect("writer");
    assert_eq!(written.load(Ordering::SeqCst), total);
    // Nothing more, nothing duplicated: the next thing is our own goodbye.
    assert_eq!(
        reader.terminate(IO_TIMEOUT).unwrap(),
        vec![notice(format!("SERVER{w2}>>> Bye"))]
    );
    writer_conn.expect(&format!("SERVER{w1}>>> Partner {w2} left"));
}

/// Resident memory of process `pid` in KiB (Linux).
fn rss_kib(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits until `done` is set or `progress` has not moved for half a second
/// (the writer is blocked in `write`), up to 60 s.
fn wait_for_done_or_stall(done: &AtomicBool, progress: &AtomicUsize) {
    let mut last = (usize::MAX, Instant::now());
    let settled = wait_until(Duration::from_secs(60), || {
        if done.load(Ordering::SeqCst) {
            return true;
        }
        let now = progress.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
            return false;
        }
        last.1.elapsed() >= Duration::from_millis(500)
    });
    assert!(settled, "the writer neither finished nor stalled");
}

#[test]
fn a_partner_that_does_not_read_stalls_the_writer_and_bounds_server_memory() {
    // Without backpressure the server would read all of this into memory.
    // With it, the writer stalls once the server's 1 MiB queue and the
    // kernel's socket buffers (about 12 MiB on loopback here) are full.
    const CAP: usize = 96 * 1024 * 1024;
    let mut server = TestServer::start(&["--workers", "2"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let first = assign(&server);
    let mut writer_conn = raw_handshake(&server, &first, prefixed(&first).as_bytes());
    writer_conn.expect(&format!("SERVER{w1}>>> Waiting for partner {w2}"));
    let mut reader = join(&server);
    writer_conn.expect(&format!("SERVER{w1}>>> Partner {w2} connected"));
    let rss_before = rss_kib(server.pid());

    let mut out = writer_conn.stream.try_clone().unwrap();
    out.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (written2, done2, stop2) = (written.clone(), done.clone(), stop.clone());
    let writer = thread::spawn(move || -> std::io::Result<usize> {
        let mut lines = 0;
        while !stop2.load(Ordering::SeqCst) && written2.load(Ordering::SeqCst) < CAP {
            let mut bytes = Vec::new();
            for _ in 0..100 {
                bytes.extend_from_slice(format!("{lines:08}:{}\n", "y".repeat(150)).as_bytes());
                lines += 1;
            }
            out.write_all(&bytes)?;
            written2.fetch_add(bytes.len(), Ordering::SeqCst);
        }
        out.write_all(b"END\n")?;
        done2.store(true, Ordering::SeqCst);
        Ok(lines)
    });

    wait_for_done_or_stall(&done, &written);
    let stalled_at = written.load(Ordering::SeqCst);
    let rss_stalled = rss_kib(server.pid());
    eprintln!(
        "writer stalled at {stalled_at} bytes; server RSS {rss_before} KiB -> {rss_stalled} KiB"
    );
    assert!(
        !done.load(Ordering::SeqCst) && stalled_at < CAP,
        "the writer was never slowed down: {stalled_at} bytes accepted"
    );
    assert!(
        rss_stalled < rss_before + 16 * 1024,
        "server memory grew from {rss_before} KiB to {rss_stalled} KiB"
    );

    // Drain: everything arrives, in order, then the writer's END.
    stop.store(true, Ordering::SeqCst);
    let mut count = 0;
    loop {
        match next(&mut reader) {
            Message::Chat(line) if line == b"END" => break,
            Message::Chat(line) => {
                let want = format!("{count:08}:{}", "y".repeat(150));
                assert!(line == want.as_bytes(), "line {count} is wrong");
                count += 1;
            }
            other => panic!("unexpected {other:?} after {count} lines"),
        }
    }
    let sent = writer.join().unwrap().expect("writer");
    assert_eq!(count, sent);
    assert!(server.wait_exit(Duration::ZERO).is_none(), "server died");
}

// ---------------------------------------------------------------------------
// Abrupt endings
// ---------------------------------------------------------------------------

#[test]
fn sigint_tells_the_client_and_exits_zero() {
    let mut server = TestServer::start(&["--workers", "2"]);
    let mut a = join(&server);
    server.signal("INT");
    assert_eq!(next(&mut a), notice("SERVER>>> Server shutting down"));
    expect_closed(&mut a);
    drop(a);
    let status = server.wait_exit(IO_TIMEOUT).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

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
        let output = run_cli(&full);
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
    let output = run_cli(&["--port", &port, "--workers", "2"]);
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
        let output = run_cli(&[flag]);
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

/// At the default log level the server tells the story of a session, one
/// line per event with the client's address, and never a passcode.
#[test]
fn the_info_log_tells_the_story_of_a_session_without_passcodes() {
    let (server, mut log) = TestServer::start_logged(&["--workers", "2"]);
    let mut codes = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..2 {
        let assignment = match common::ask_portal(&server) {
            PortalAnswer::Assigned(a) => a,
            PortalAnswer::Full => panic!("full"),
        };
        codes.push(assignment.code.clone());
        peers.push(Peer::handshake(server.host(), &assignment).expect("handshake"));
    }
    assert!(matches!(common::ask_portal(&server), PortalAnswer::Full));
    let (mut a, mut b) = (peers.remove(0), peers.remove(0));
    a.expect(&format!("SERVER{}>>> Partner {} connected", a.port, b.port));
    for n in 0..3 {
        a.send_line(format!("line {n}").as_bytes()).unwrap();
        b.expect(&format!("line {n}"));
    }
    a.send_line(b"CLIENT>>> TERMINATE").unwrap();
    b.expect(&format!("SERVER{}>>> Partner {} left", b.port, a.port));
    let want = [
        "portal: 127.0.0.1:".to_string(),
        format!(" given port {}", a.port),
        format!("port {}: 127.0.0.1:", a.port),
        " joined".to_string(),
        "told full: no port is free".to_string(),
        format!("port {}: 127.0.0.1:", a.port),
        " left (terminated) after ".to_string(),
        ", 3 line(s)".to_string(),
    ];
    let mut seen = String::new();
    let mut lines = 0;
    while !seen.contains("left (terminated)") {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "the log ended: {seen}"
        );
        assert!(line.contains("INFO "), "not an info line: {line:?}");
        for code in &codes {
            assert!(
                !line.contains(code.as_str()),
                "a passcode in the log: {line:?}"
            );
        }
        seen.push_str(&line);
        lines += 1;
    }
    for part in want {
        assert!(seen.contains(&part), "{part:?} not in the log:\n{seen}");
    }
    assert!(lines >= 6, "{seen}");
}

//! End-to-end tests of the wire protocol in line mode: the real
//! `chat-server` binary, started by `common::TestServer` (`--port 0
//! --tick-ms 20`), driven over real loopback sockets.
//!
//! Clients use the client library (`common::session` and friends); a test
//! that sends exact bytes on purpose uses `common::Peer`, or a bare socket
//! from `common::connect` where there is no session at all. Every read has a
//! timeout, so a missing answer fails the test instead of hanging it; every
//! deadline check has a lower bound (the server may never act early) and a
//! generous upper bound (the machine is shared).
//!
//! tests/wires.rs runs the rules common to every wire through both codecs,
//! line mode included, and tests/faults.rs the injected faults (slowloris,
//! a partner that never reads, signals under load); a test here that one of
//! them repeated has gone there. The command line is tested in
//! tests/startup.rs.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Got, IO_LIMIT, Peer, TestServer, ask_portal, assign, chat, connect, connect_within,
    handshake_line, next, notice, pinger, session,
};
use portal_chat::client::{Assignment, PortalAnswer, Session, parse_portal_reply};

/// The longest a connect may take. Longer than `IO_LIMIT`: when 400
/// connections arrive at once the listen backlog overflows and the kernel
/// retries the dropped ones after 1, 3, 7, 15 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The worker port of worker `n` (1-based, as on the server's stdout).
fn worker(server: &TestServer, n: usize) -> u16 {
    server.workers[n - 1].port()
}

fn worker_addr(server: &TestServer, port: u16) -> SocketAddr {
    SocketAddr::new(server.host(), port)
}

/// Whether the portal's next answer is "full".
fn portal_is_full(server: &TestServer) -> bool {
    ask_portal(server) == PortalAnswer::Full
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

/// Connects to `port`, sends `line`, and checks that the whole answer is the
/// wrong-passcode notice followed by the close.
fn assert_refused(server: &TestServer, port: u16, line: &[u8]) {
    let mut stray = connect(worker_addr(server, port)).expect("connect");
    stray.write_all(line).expect("send");
    let mut answer = Vec::new();
    stray.read_to_end(&mut answer).expect("read to the end");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("SERVER{port}>>> Wrong handshake passcode\n"),
        "answer on port {port} to {:?}",
        String::from_utf8_lossy(line)
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
    assert!(portal_is_full(&server));
    let mut codes: Vec<&str> = assignments.iter().map(|a| a.code.as_str()).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 4, "every passcode is fresh");

    let mut sessions: Vec<Option<Session>> = assignments
        .iter()
        .map(|a| Some(session(server.host(), a)))
        .collect();
    assert!(portal_is_full(&server));

    // Free worker 2, then 4, then 1: the stack hands them back 1, 4, 2.
    for index in [1, 3, 0] {
        sessions[index]
            .take()
            .unwrap()
            .terminate(IO_LIMIT)
            .expect("terminate");
    }
    let again: Vec<u16> = (0..3).map(|_| assign(&server).port).collect();
    assert_eq!(again, vec![w[0], w[3], w[1]], "last freed, first reissued");
    assert!(portal_is_full(&server));
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
                let conns: Vec<_> = (0..100)
                    .map(|_| connect_within(portal, CONNECT_TIMEOUT).expect("connect"))
                    .collect();
                conns
                    .into_iter()
                    .map(|mut conn| {
                        let mut reply = String::new();
                        conn.read_to_string(&mut reply).expect("read to the end");
                        reply
                    })
                    .collect::<Vec<_>>()
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

/// A complete handshake line over the 128-byte limit is refused at once,
/// like a wrong code (the handshake timeout is 30 s, so the answer cannot be
/// a timeout), and the reservation is still its holder's. The other wrong
/// and overlong handshakes are tests/wires.rs's, on both wires.
#[test]
fn a_complete_handshake_line_over_the_limit_is_refused_and_the_holder_gets_in() {
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
    assert_refused(&server, w1, format!("{}\n", "z".repeat(129)).as_bytes());

    let holder = session(server.host(), &held);
    assert_eq!((holder.partner_port, holder.partner_present), (w2, false));
}

// ---------------------------------------------------------------------------
// Session timeouts
// ---------------------------------------------------------------------------

#[test]
fn idle_client_times_out_even_while_receiving() {
    let server = TestServer::start(&["--workers", "2", "--idle-timeout", "1.5"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));

    let started = Instant::now();
    let mut quiet = server.join();
    let busy = server.join();
    assert_eq!((quiet.port, busy.port), (w1, w2));
    expect_partner_joined(&mut quiet, w1, w2);
    let (mut busy_reader, mut busy_writer) = busy.split();
    let (stop, sent, talker) = pinger(Duration::from_millis(200), move || {
        busy_writer.send_line(b"ping")
    });

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
    let session = server.join();
    assert_eq!(session.port, w1);
    let (mut reader, mut writer) = session.split();
    let (stop, _sent, talker) = pinger(Duration::from_millis(200), move || {
        writer.send_line(b"still here")
    });
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
fn a_burst_of_mixed_lines_keeps_its_order_and_its_rules() {
    let server = TestServer::start(&["--workers", "2"]);
    // Raw on purpose: the burst must reach the server in one write.
    let (mut a, mut b) = Peer::pair(&server);
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
    let mut a = server.join();
    let mut b = server.join();
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
fn a_line_without_a_partner_is_not_delivered() {
    let server = TestServer::start(&["--workers", "4"]);
    let [w1, w2, w3, w4] = [1, 2, 3, 4].map(|n| worker(&server, n));

    let mut a = server.join();
    assert_eq!((a.port, a.partner_port, a.partner_present), (w1, w2, false));
    a.send_line(b"anyone?").unwrap();
    assert_eq!(
        next(&mut a),
        notice(format!(
            "SERVER{w1}>>> Not delivered: partner {w2} is not connected"
        ))
    );

    let mut b = server.join();
    assert!(b.partner_present);
    expect_partner_joined(&mut a, w1, w2);
    // The undelivered line is not replayed: B's first line is the next one.
    relay(&mut a, &mut b, "now you are here");

    // Worker 3 is alone although 1 and 2 are connected.
    let mut c = server.join();
    assert_eq!((c.port, c.partner_port, c.partner_present), (w3, w4, false));
    c.send_line(b"hello?").unwrap();
    assert_eq!(
        next(&mut c),
        notice(format!(
            "SERVER{w3}>>> Not delivered: partner {w4} is not connected"
        ))
    );
}

/// Raw on purpose: the line endings are the point.
#[test]
fn crlf_line_endings_are_handled() {
    let server = TestServer::start(&["--workers", "2", "--max-line", "64"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let claim = |assignment: &Assignment, line: String| {
        let stream = connect(worker_addr(&server, assignment.port)).expect("connect");
        Peer::handshake_with(stream, assignment, line.as_bytes()).expect("handshake")
    };

    let first = assign(&server);
    let mut a = claim(&first, format!("{}\r\n", first.code));
    assert_eq!((a.port, a.partner, a.partner_present), (w1, w2, false));
    let second = assign(&server);
    let crlf_prefixed = handshake_line(&second).replace('\n', "\r\n");
    let mut b = claim(&second, crlf_prefixed);
    assert_eq!((b.port, b.partner, b.partner_present), (w2, w1, true));
    a.expect(&format!("SERVER{w1}>>> Partner {w2} connected"));

    // (sent, the line the partner receives): only the `\r` of a final
    // `\r\n` is dropped, and it does not count against the 64-byte limit.
    let at_limit = "b".repeat(64);
    let at_limit_crlf = format!("{at_limit}\r\n");
    let cases: [(&[u8], &[u8]); 4] = [
        (b"hello\r\n", b"hello"),
        (b"plain\n", b"plain"),
        (b"\r\n", b""),
        (at_limit_crlf.as_bytes(), at_limit.as_bytes()),
    ];
    for (sent, received) in cases {
        a.send(sent).unwrap();
        assert_eq!(
            b.next().unwrap(),
            Got::Line(received.to_vec()),
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
        a.send(sent).unwrap();
        a.expect(&format!(
            "SERVER{w1}>>> Refused: chat lines may not hold a carriage return"
        ));
    }
    a.send(b"after\n").unwrap();
    b.expect("after");
    // Several lines in one write, and a `\r\n` split across writes.
    a.send(b"one\r\ntwo\nthree\r\n").unwrap();
    for want in ["one", "two", "three"] {
        b.expect(want);
    }
    a.send(b"split\r").unwrap();
    a.send(b"\n").unwrap();
    b.expect("split");

    // A `\r\n` TERMINATE works too, and B is told.
    b.send(b"CLIENT>>> TERMINATE\r\n").unwrap();
    b.expect(&format!("SERVER{w2}>>> Bye"));
    b.expect_eof();
    a.expect(&format!("SERVER{w1}>>> Partner {w2} left"));
}

// ---------------------------------------------------------------------------
// The log
// ---------------------------------------------------------------------------

/// At the default log level the server tells the story of a session, one
/// line per event with the client's address, and never a passcode.
#[test]
fn the_info_log_tells_the_story_of_a_session_without_passcodes() {
    let (server, mut log) = TestServer::start_logged(&["--workers", "2"]);
    let mut codes = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let assignment = assign(&server);
        codes.push(assignment.code.clone());
        sessions.push(session(server.host(), &assignment));
    }
    assert!(portal_is_full(&server));
    let (mut a, mut b) = (sessions.remove(0), sessions.remove(0));
    let (a_port, b_port) = (a.port, b.port);
    expect_partner_joined(&mut a, a_port, b_port);
    for n in 0..3 {
        relay(&mut a, &mut b, &format!("line {n}"));
    }
    a.terminate(IO_LIMIT).expect("terminate");
    assert_eq!(
        next(&mut b),
        notice(format!("SERVER{b_port}>>> Partner {a_port} left"))
    );
    let want = [
        "portal: 127.0.0.1:".to_string(),
        format!(" given port {a_port}"),
        format!("port {a_port}: 127.0.0.1:"),
        " joined".to_string(),
        "told full: no port is free".to_string(),
        format!("port {a_port}: 127.0.0.1:"),
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

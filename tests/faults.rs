//! Fault injection against the real `chat-server` binary: descriptor
//! exhaustion, a partner that never reads, slowloris, half-close, resets,
//! signals under load and garbage on every port.
//!
//! Each test measures what it claims through `/proc` (CPU ticks, resident
//! memory, open descriptors) or through the protocol itself (every chat line
//! is numbered and checked by its receiver, see `common::seq_line`), and ends
//! by checking that every worker port can be obtained from the portal again.
//! Every socket has a time limit; every wait is for a condition, with a
//! generous bound, because the machine is shared. Run with `--nocapture` to
//! see the figures.
//!
//! Clients that behave (the pairs that chat beside a fault, a reservation's
//! holder) are client-library sessions; the clients that are the fault, or
//! whose bytes and socket buffers are measured, are raw `common::Peer`s.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Drain, End, Got, IO_LIMIT, Peer, Pump, PumpEnd, PumpPlan, Received, Rng, Sampler, TestServer,
    assign, connect, cpu_ticks, fd_count, fd_numbers, handshake_line, next, nofile_limits,
    nofile_prefix, notice, read_got, rss_kib, session, session_pair, settled_fds, tcp_queues,
    ticks_per_second, wait_every_port_free, wait_until,
};
use portal_chat::client::{
    Message, PortalAnswer, Session, TERMINATE_LINE, parse_portal_reply, request_port,
};

/// The bound for anything the server should do "soon".
const SOON: Duration = Duration::from_secs(10);

/// Sends `count` numbered lines each way and checks every one of them.
fn chat_both_ways(a: &mut Session, b: &mut Session, first_seq: u64, count: u64) {
    chat_one_way(a, b, first_seq, count);
    chat_one_way(b, a, first_seq, count);
}

fn chat_one_way(from: &mut Session, to: &mut Session, first_seq: u64, count: u64) {
    for seq in first_seq..first_seq + count {
        from.send_line(&common::seq_line(from.port, to.port, seq, 40))
            .expect("send");
    }
    for seq in first_seq..first_seq + count {
        match next(to) {
            Message::Chat(line) => common::check_seq_line(&line, from.port, to.port, seq).unwrap(),
            other => panic!("port {}: expected chat line {seq}, got {other:?}", to.port),
        }
    }
}

/// Ends a session with `CLIENT>>> TERMINATE` and reads until the server
/// closes; checks that the last line was the server's goodbye and returns
/// what came before it.
fn terminate(session: Session) -> Vec<Message> {
    let port = session.port;
    let mut rest = session
        .terminate(SOON)
        .unwrap_or_else(|e| panic!("port {port}: reading until the close: {e}"));
    assert_eq!(
        rest.pop(),
        Some(notice(bye(port))),
        "port {port}: the last line before the close"
    );
    rest
}

fn left(me: u16, partner: u16) -> String {
    format!("SERVER{me}>>> Partner {partner} left")
}

/// The server's answer to `CLIENT>>> TERMINATE` on port `me`.
fn bye(me: u16) -> String {
    format!("SERVER{me}>>> Bye")
}

/// Every port can be had again, and the server holds the descriptors it
/// held before the test ([`settled_fds`]).
fn assert_back_where_it_started(server: &TestServer, idle_fds: usize) {
    wait_every_port_free(server, SOON).unwrap();
    let pid = server.pid();
    assert!(
        wait_until(SOON, || fd_count(pid) == idle_fds),
        "descriptors: {} open at the end, {idle_fds} at the start",
        fd_count(pid)
    );
}

/// Starts `from` writing numbered lines of 1000 bytes to its partner,
/// `lines` of them or until stopped.
fn pump_kib_lines(from: &Peer, lines: Option<u64>) -> Pump {
    Pump::start(
        &from.stream,
        PumpPlan {
            from: from.port,
            to: from.partner,
            len: |_| 1000,
            lines,
            end: PumpEnd::Nothing,
        },
    )
}

fn assert_clean(who: &str, log: &Received) {
    assert!(log.bad.is_empty(), "{who}: damaged chat: {:?}", log.bad);
}

// ---------------------------------------------------------------------------
// Descriptor exhaustion
// ---------------------------------------------------------------------------

/// With 64 descriptors and a flood three times that size, the server runs
/// out: it must not spin on the listener that keeps reporting the backlog,
/// established pairs must go on chatting, a portal request made meanwhile
/// must wait in the backlog and be answered once descriptors are free, and
/// the server must end up exactly where it started.
#[test]
fn descriptor_exhaustion_does_not_spin_keeps_pairs_chatting_and_recovers() {
    const LIMIT: usize = 64;
    const FLOOD: usize = 3 * LIMIT;
    let prefix = nofile_prefix(LIMIT as u32);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let server = TestServer::start_with_prefix(
        &prefix,
        &[
            "--workers",
            "6",
            "--handshake-timeout",
            "60",
            "--assign-timeout",
            "60",
        ],
    );
    let pid = server.pid();
    assert_eq!(
        nofile_limits(pid),
        (LIMIT.to_string(), LIMIT.to_string()),
        "the limit applies to the server process itself"
    );
    let idle_fds = settled_fds(&server);
    let idle_rss = rss_kib(pid);
    // Descriptors inherited above the limit (the test harness's, say) count
    // too: the most the server can hold is every number below the limit
    // plus those.
    let inherited = fd_numbers(pid)
        .into_iter()
        .filter(|&n| n as usize >= LIMIT)
        .count();
    let ceiling = LIMIT + inherited;

    let (mut a, mut b) = session_pair(&server);
    let (mut c, mut d) = session_pair(&server);
    chat_both_ways(&mut a, &mut b, 0, 10);
    chat_both_ways(&mut c, &mut d, 0, 10);

    // The flood: connections the kernel completes into the listeners'
    // backlogs whether or not the server can accept them.
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let worker = server.workers[i % server.workers.len()];
        flood.push(connect(worker).expect("the backlog takes the connection"));
    }
    assert!(
        wait_until(SOON, || fd_count(pid) >= ceiling),
        "the server never ran out of descriptors: {} open",
        fd_count(pid)
    );

    // A newcomer asks the portal while no descriptor is left.
    let portal = server.portal;
    let newcomer = thread::spawn(move || {
        let asked = Instant::now();
        (request_port(portal), asked.elapsed())
    });

    // CPU over a quiet window: a spinning loop would use the whole window.
    let tps = ticks_per_second();
    let window = Duration::from_millis(1500);
    let before = cpu_ticks(pid);
    let started = Instant::now();
    thread::sleep(window); // the measurement window itself, not a wait
    let quiet_ticks = cpu_ticks(pid) - before;
    let quiet_secs = started.elapsed().as_secs_f64();
    // Then while the pairs chat, still out of descriptors.
    let before = cpu_ticks(pid);
    let started = Instant::now();
    chat_both_ways(&mut a, &mut b, 10, 200);
    chat_both_ways(&mut c, &mut d, 10, 200);
    let chat_ticks = cpu_ticks(pid) - before;
    let chat_secs = started.elapsed().as_secs_f64();
    println!(
        "fd exhaustion: limit {LIMIT} ({inherited} inherited above it), {} fds open; CPU {quiet_ticks} ticks in a quiet \
         {quiet_secs:.2} s, {chat_ticks} ticks in {chat_secs:.2} s of chat \
         ({tps} ticks/s)",
        fd_count(pid)
    );
    assert!(
        (quiet_ticks as f64) <= 0.1 * tps as f64 * quiet_secs,
        "the server spins while out of descriptors: {quiet_ticks} ticks in {quiet_secs:.2} s"
    );
    assert_eq!(fd_count(pid), ceiling, "still out of descriptors");
    assert!(
        !newcomer.is_finished(),
        "the portal cannot have answered without a descriptor"
    );

    // Descriptors come back: the newcomer is answered, and can chat.
    let freed = Instant::now();
    drop(flood);
    let (answer, waited) = newcomer.join().unwrap();
    let answered_after = freed.elapsed();
    let assignment = match answer.expect("the portal answers the newcomer") {
        PortalAnswer::Assigned(assignment) => assignment,
        PortalAnswer::Full => panic!("two ports were free"),
    };
    println!(
        "fd exhaustion: the newcomer waited {waited:.2?} in all, answered {answered_after:.2?} \
         after the flood went away"
    );
    let mut e = session(server.host(), &assignment);
    let mut f = server.join();
    assert_eq!(f.partner_port, e.port);
    let joined = format!("SERVER{}>>> Partner {} connected", e.port, f.port);
    assert_eq!(next(&mut e), notice(joined));
    chat_both_ways(&mut e, &mut f, 0, 10);
    chat_both_ways(&mut a, &mut b, 210, 10);

    for session in [a, b, c, d, e, f] {
        terminate(session);
    }
    assert_back_where_it_started(&server, idle_fds);
    println!(
        "fd exhaustion: fds {idle_fds} -> {}; RSS {idle_rss} KiB -> {} KiB",
        fd_count(pid),
        rss_kib(pid)
    );
}

// ---------------------------------------------------------------------------
// Slow consumer
// ---------------------------------------------------------------------------

/// A partner that does not read while 48 MiB are sent to it: the server's
/// memory stays bounded, the sender is held back (its writes stall far from
/// the end), and once the partner reads, every line arrives, in order.
#[test]
fn a_partner_that_never_reads_costs_bounded_memory_and_loses_nothing() {
    const LINES: u64 = 48 * 1024; // of about 1 KiB: 48 MiB
    let server = TestServer::start(&["--workers", "2"]);
    let pid = server.pid();
    let (mut a, b) = Peer::pair(&server);
    let rss_before = rss_kib(pid);

    let sampler = Sampler::start(pid, Duration::from_millis(5));

    let pump = pump_kib_lines(&a, Some(LINES));
    // Held back: ten times in a row, a write made no progress for 100 ms.
    assert!(
        pump.wait_for_stalls(10, Duration::from_secs(60)) || pump.is_finished(),
        "the sender was never held back"
    );
    let held_at = pump.sent.load(Ordering::SeqCst);
    assert!(
        pump.wait_for_stalls(10, SOON),
        "the sender got going again with nobody reading"
    );
    let held_later = pump.sent.load(Ordering::SeqCst);
    let rss_held = rss_kib(pid);
    println!(
        "slow consumer: sender held at {held_at} then {held_later} of {LINES} lines \
         (~{} MiB in flight); server RSS {rss_before} KiB before, {rss_held} KiB while held, \
         peak {} KiB",
        held_later / 1024,
        sampler.peak_rss_kib()
    );
    assert!(
        held_later < LINES / 2,
        "the sender got {held_later} of {LINES} lines out with nobody reading"
    );
    assert!(
        held_later - held_at < 2048,
        "the sender kept going while held: {held_at} -> {held_later} lines"
    );

    // The reader comes back: everything arrives, in order.
    let drain = Drain::start(b.reader, b.port, a.port);
    let all = drain.wait_for(Duration::from_secs(60), |r| r.chat >= LINES);
    let (peak, _) = sampler.stop();
    assert!(
        all,
        "only {} of {LINES} lines arrived",
        drain.snapshot().chat
    );
    assert_eq!(pump.join().expect("the sender finishes"), LINES);
    println!("slow consumer: peak RSS {peak} KiB ({rss_before} KiB before)");
    assert!(
        peak <= rss_before + 8 * 1024,
        "server memory grew by {} KiB for a partner that does not read",
        peak - rss_before
    );

    let mut b_stream = b.stream;
    a.send_line(b"CLIENT>>> TERMINATE").unwrap();
    a.expect(&bye(a.port));
    a.expect_eof();
    assert!(drain.wait_for(SOON, |r| r.notices.len() == 1));
    b_stream.write_all(b"CLIENT>>> TERMINATE\n").unwrap();
    let log = drain.join();
    assert_clean("reader", &log);
    assert_eq!(log.chat, LINES);
    assert_eq!(
        log.notices,
        vec![(LINES, left(b.port, a.port)), (LINES, bye(b.port))]
    );
    assert_eq!(log.end, Some(End::Eof));
    wait_every_port_free(&server, SOON).unwrap();
}

/// A client alone in its session that sends short lines and never reads:
/// each line earns it a "not delivered" notice about 30 times its size, all
/// queued for the client itself. That queue must be bounded like any other
/// (the client held back), and once the client reads, every notice arrives.
#[test]
fn a_client_that_never_reads_its_own_notices_costs_bounded_memory() {
    const LINES: u64 = 512 * 1024; // "x\n": 1 MiB sent, 31 MiB of notices
    let server = TestServer::start(&["--workers", "2"]);
    let pid = server.pid();
    let mut a = Peer::join(&server);
    assert!(!a.partner_present);
    let rss_before = rss_kib(pid);
    let sampler = Sampler::start(pid, Duration::from_millis(5));

    let stalls = Arc::new(AtomicU64::new(0));
    let mut stream = a.stream.try_clone().unwrap();
    stream.set_write_timeout(Some(common::POLL)).unwrap();
    let writer = {
        let stalls = stalls.clone();
        thread::spawn(move || {
            let chunk = b"x\n".repeat(32 * 1024);
            for _ in 0..LINES / (32 * 1024) {
                common::write_patiently(&mut stream, &chunk, &stalls)?;
            }
            Ok::<_, std::io::Error>(())
        })
    };
    // Everything written and taken in by the server, or the writer held
    // back for a second.
    let (local, port) = (a.local_port(), a.port);
    let taken_in = || {
        writer.is_finished()
            && tcp_queues(local, port).is_some_and(|(tx, _)| tx == 0)
            && tcp_queues(port, local).is_some_and(|(_, rx)| rx == 0)
    };
    // The server stops reading: what it has not taken in sits, unchanged,
    // in its receive queue (the writer may well have finished into the
    // kernel's buffers without ever blocking).
    let mut last_unread = None;
    let mut unchanged_polls = 0;
    let mut server_stopped_reading = || {
        let unread = tcp_queues(port, local).map(|(_, rx)| rx);
        if unread.is_some_and(|rx| rx > 0) && unread == last_unread {
            unchanged_polls += 1;
        } else {
            unchanged_polls = 0;
        }
        last_unread = unread;
        unchanged_polls >= 50 // 500 ms at wait_until's 10 ms polls
    };
    assert!(
        wait_until(Duration::from_secs(60), || taken_in()
            || stalls.load(Ordering::SeqCst) >= 10
            || server_stopped_reading()),
        "the writer neither finished nor was held back"
    );
    let held = !taken_in();
    let peak_unread = sampler.peak_rss_kib();
    println!(
        "own notices: writer {}; server RSS {rss_before} KiB before, peak {peak_unread} KiB \
         with nothing read",
        if held { "held back" } else { "done" }
    );
    assert!(
        peak_unread <= rss_before + 8 * 1024,
        "server memory grew by {} KiB for a client that does not read its notices",
        peak_unread - rss_before
    );

    let want = format!(
        "SERVER{}>>> Not delivered: partner {} is not connected",
        a.port, a.partner
    );
    for n in 0..LINES {
        match a.next() {
            Ok(Got::Line(line)) if line == want.as_bytes() => {}
            other => panic!("notice {n} of {LINES}: got {other:?}"),
        }
    }
    writer.join().unwrap().expect("the writer finishes");
    let (peak, _) = sampler.stop();
    println!("own notices: peak RSS {peak} KiB");
    a.send_line(TERMINATE_LINE.as_bytes()).unwrap();
    a.expect(&bye(a.port));
    a.expect_eof();
    wait_every_port_free(&server, SOON).unwrap();
}

/// A sender held back by a partner that reads, but slowly, must not be timed
/// out as idle, and its held lines must not be thrown away: what it sends
/// is moving. Once the partner reads at full speed, every line arrives.
#[test]
fn a_sender_held_back_by_a_slow_reader_is_not_timed_out_as_idle() {
    const IDLE: Duration = Duration::from_secs(3);
    let server = TestServer::start(&["--workers", "2", "--idle-timeout", "3"]);
    let (a, b) = Peer::pair(&server);
    let pump = pump_kib_lines(&a, None);
    let a_drain = Drain::start(a.reader, a.port, b.port);
    // The partner reads about 500 KB per beat, far slower than A sends, and
    // speaks every 500 ms, so that it is not idle itself.
    let b_drain = Drain::start_slow(b.reader, b.port, a.port, 500);
    let quit = Arc::new(AtomicBool::new(false));
    let talker = {
        let quit = quit.clone();
        let mut stream = b.stream.try_clone().unwrap();
        let (from, to) = (b.port, a.port);
        thread::spawn(move || {
            let mut seq = 0;
            while !quit.load(Ordering::SeqCst) {
                let mut line = common::seq_line(from, to, seq, 10);
                line.push(b'\n');
                stream.write_all(&line).expect("the partner speaks");
                seq += 1;
                thread::sleep(Duration::from_millis(500)); // its pace
            }
            seq
        })
    };
    assert!(
        pump.wait_for_stalls(10, Duration::from_secs(60)),
        "the sender was never held back"
    );
    let held = Instant::now();
    // Held back for longer than the idle timeout: any notice now is wrong.
    let noticed = a_drain.wait_for(IDLE + Duration::from_secs(2), |r| !r.notices.is_empty());
    let log = a_drain.snapshot();
    assert!(
        !noticed,
        "the held-back sender got {:?} {:.2?} after it was held (idle timeout {IDLE:?})",
        log.notices,
        held.elapsed()
    );

    // The partner reads at full speed at last: everything arrives.
    b_drain.full_speed();
    quit.store(true, Ordering::SeqCst);
    let spoken = talker.join().unwrap();
    pump.stop();
    let sent = pump.join().expect("the sender finishes");
    assert!(
        b_drain.wait_for(SOON, |r| r.chat == sent),
        "{} of {sent} lines arrived",
        b_drain.snapshot().chat
    );
    assert!(a_drain.wait_for(SOON, |r| r.chat == spoken));
    let mut b_stream = b.stream;
    b_stream.write_all(b"CLIENT>>> TERMINATE\n").unwrap();
    let mut a_stream = a.stream;
    a_stream.write_all(b"CLIENT>>> TERMINATE\n").unwrap();
    for log in [a_drain.join(), b_drain.join()] {
        assert_clean("pair", &log);
        assert!(
            log.count(|n| n.contains("TIMEOUT")) == 0,
            "{:?}",
            log.notices
        );
    }
    wait_every_port_free(&server, SOON).unwrap();
}

/// Two clients that stream at each other and never read are both held
/// back, and nothing moves: that pair is idle, and both are timed out, so
/// they cannot hold their ports forever with no traffic at all.
#[test]
fn a_pair_that_only_sends_and_never_reads_is_timed_out() {
    let server = TestServer::start(&["--workers", "2", "--idle-timeout", "2"]);
    let (a, b) = Peer::pair(&server);
    let pumps: Vec<Pump> = [&a, &b]
        .into_iter()
        .map(|from| pump_kib_lines(from, None))
        .collect();
    for pump in &pumps {
        assert!(
            pump.wait_for_stalls(5, Duration::from_secs(60)),
            "both are held back"
        );
    }
    // Both ports come free without either client doing anything more.
    wait_every_port_free(&server, Duration::from_secs(30)).unwrap();
    for pump in pumps {
        pump.stop();
        let _ = pump.join(); // the server closed on them: a write error is expected
    }
}

// ---------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------

/// What a slowloris connection saw.
struct Dribble {
    port: u16,
    sent: usize,
    received: Vec<u8>,
    /// From before `connect` to the first byte from the server.
    notice_after: Option<Duration>,
    /// From before `connect` to the end of stream.
    closed_after: Option<Duration>,
}

/// How often a slowloris connection sends its next byte.
const DRIBBLE_PACE: Duration = Duration::from_millis(100);

/// Sends one byte of `line` every [`DRIBBLE_PACE`] (the pace is set by a
/// read timeout of that length) and records what comes back, until the
/// server closes. An empty `line` is a connection that says nothing at all.
fn dribble(addr: SocketAddr, line: Vec<u8>) -> Dribble {
    let began = Instant::now();
    let mut stream = connect(addr).expect("connect");
    stream.set_read_timeout(Some(DRIBBLE_PACE)).unwrap();
    let mut seen = Dribble {
        port: addr.port(),
        sent: 0,
        received: Vec::new(),
        notice_after: None,
        closed_after: None,
    };
    let mut buf = [0; 256];
    while began.elapsed() < 4 * IO_LIMIT {
        if seen.received.is_empty() && seen.sent < line.len() {
            stream
                .write_all(&line[seen.sent..=seen.sent])
                .expect("dribble");
            seen.sent += 1;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                seen.closed_after = Some(began.elapsed());
                break;
            }
            Ok(n) => {
                seen.notice_after.get_or_insert(began.elapsed());
                seen.received.extend_from_slice(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("port {}: read failed: {e}", seen.port),
        }
    }
    seen
}

/// One byte every 100 ms on every worker port, one of them dribbling the
/// very passcode of a live reservation, and one more connection that says
/// nothing at all: each is cut off with the timeout notice at the 1.5 s
/// deadline (a fractional one; the trickle does not extend it), a pair
/// chats meanwhile, and the reservation still works for its holder
/// afterwards.
#[test]
fn slowloris_on_every_worker_port_is_closed_at_the_handshake_deadline() {
    const DEADLINE: Duration = Duration::from_millis(1500);
    let server = TestServer::start(&[
        "--workers",
        "4",
        "--handshake-timeout",
        "1.5",
        "--assign-timeout",
        "30",
    ]);
    let (mut a, mut b) = session_pair(&server);
    let reserved = assign(&server);
    let lorises: Vec<_> = server
        .workers
        .iter()
        .map(|&addr| {
            let port = addr.port();
            let line = if port == reserved.port {
                handshake_line(&reserved)
            } else {
                format!("CLIENT{port}>>>HandshakeCode=slowly-slowly\n")
            };
            thread::spawn(move || dribble(addr, line.into_bytes()))
        })
        .collect();
    let silent_at = server.workers[server.workers.len() - 1];
    let silent = thread::spawn(move || dribble(silent_at, Vec::new()));

    // Meanwhile the server serves a pair as usual.
    chat_both_ways(&mut a, &mut b, 0, 20);

    let cut_off_at_the_deadline = |seen: &Dribble| {
        let port = seen.port;
        println!(
            "slowloris on {port}: {} bytes sent, notice after {:.2?}, closed after {:.2?}",
            seen.sent, seen.notice_after, seen.closed_after
        );
        assert_eq!(
            String::from_utf8_lossy(&seen.received),
            format!("SERVER{port}>>> Handshake timeout\n")
        );
        let noticed = seen.notice_after.unwrap();
        let closed = seen.closed_after.expect("the server closes");
        assert!(
            noticed >= DEADLINE,
            "port {port}: cut off early, at {noticed:?}"
        );
        assert!(
            closed <= DEADLINE + Duration::from_millis(1500),
            "port {port}: still open at {closed:?}, deadline {DEADLINE:?}"
        );
    };
    for loris in lorises {
        let seen = loris.join().unwrap();
        cut_off_at_the_deadline(&seen);
        assert!(
            seen.sent >= 5,
            "port {}: the trickle did not run: {} bytes",
            seen.port,
            seen.sent
        );
    }
    let seen = silent.join().unwrap();
    cut_off_at_the_deadline(&seen);
    assert_eq!(seen.sent, 0);

    // The reservation the slowloris dribbled at is intact.
    let mut holder = session(server.host(), &reserved);
    let mut partner = server.join();
    assert_eq!(partner.partner_port, holder.port);
    let joined = format!(
        "SERVER{}>>> Partner {} connected",
        holder.port, partner.port
    );
    assert_eq!(next(&mut holder), notice(joined));
    chat_both_ways(&mut holder, &mut partner, 0, 5);
    for session in [a, b, holder, partner] {
        terminate(session);
    }
    wait_every_port_free(&server, SOON).unwrap();
}

// ---------------------------------------------------------------------------
// Half-close
// ---------------------------------------------------------------------------

/// A client sends lines, the last one unterminated, and shuts down its write
/// side. Its partner gets every line, in order, and only then the notice
/// that it left; the client itself sees the server close. Once with the
/// partner reading along, once with 16 MiB sent to a partner that reads only
/// after the sender was held back.
#[test]
fn half_close_delivers_every_line_before_the_partner_is_told() {
    let server = TestServer::start(&["--workers", "4"]);
    let cases = [(1000, false), (16 * 1024, true)];
    let mut pairs = Vec::new();
    for (lines, late) in cases {
        let (writer, reader) = Peer::pair(&server);
        let pump = Pump::start(
            &writer.stream,
            PumpPlan {
                from: writer.port,
                to: reader.port,
                len: |seq| 1 + (seq as usize * 37) % 2000,
                lines: Some(lines),
                end: PumpEnd::HalfClose,
            },
        );
        pairs.push((writer, reader, pump, lines, late));
    }
    for (mut writer, reader, pump, lines, late) in pairs {
        if late {
            assert!(
                pump.wait_for_stalls(5, Duration::from_secs(60)) || pump.is_finished(),
                "the sender was never held back"
            );
        }
        let stalls = pump.stalls.load(Ordering::SeqCst);
        let drain = Drain::start(reader.reader, reader.port, writer.port);
        assert_eq!(pump.join().expect("all lines written"), lines);
        // The writer's side: nothing but the close.
        writer.expect_eof();
        assert!(
            drain.wait_for(Duration::from_secs(60), |r| !r.notices.is_empty()),
            "the partner was never told"
        );
        let mut reader_stream = reader.stream;
        reader_stream.write_all(b"CLIENT>>> TERMINATE\n").unwrap();
        let log = drain.join();
        println!(
            "half-close: {lines} lines (sender stalled {stalls} x 100 ms before the reader \
             started), {} delivered before {:?}",
            log.chat, log.notices
        );
        assert_clean("partner", &log);
        assert_eq!(log.chat, lines);
        assert_eq!(
            log.notices,
            vec![
                (lines, left(reader.port, writer.port)),
                (lines, bye(reader.port))
            ],
            "every line, then the notice, then the goodbye"
        );
        assert_eq!(log.end, Some(End::Eof));
    }
    wait_every_port_free(&server, SOON).unwrap();
}

// ---------------------------------------------------------------------------
// Reset mid-stream
// ---------------------------------------------------------------------------

/// One client of a busy pair, both directions streaming.
struct Side {
    port: u16,
    local: u16,
    stream: TcpStream,
    pump: Pump,
    drain: Drain,
}

/// Starts both sides streaming; each pump ends as told.
fn stream_both_ways((a, b): (Peer, Peer), ends: [PumpEnd; 2]) -> (Side, Side) {
    let start = |peer: Peer, end: PumpEnd| {
        let pump = Pump::start(
            &peer.stream,
            PumpPlan {
                from: peer.port,
                to: peer.partner,
                len: |seq| 20 + (seq as usize * 101) % 1000,
                lines: None,
                end,
            },
        );
        Side {
            port: peer.port,
            local: peer.local_port(),
            drain: Drain::start(peer.reader, peer.port, peer.partner),
            stream: peer.stream,
            pump,
        }
    };
    (start(a, ends[0]), start(b, ends[1]))
}

/// Resets `victim`: it stops reading and writing, and is closed while its
/// receive queue holds unread bytes, which makes the kernel send a reset.
fn reset(victim: Side, partner: &Side) {
    victim.drain.stop();
    victim.pump.stop();
    let _ = victim.pump.join();
    let victim_log = victim.drain.join();
    assert_eq!(
        victim_log.end,
        Some(End::Stopped),
        "port {}: the session ended before the reset: {:?}",
        victim.port,
        victim_log.notices
    );
    assert!(
        wait_until(SOON, || tcp_queues(victim.local, victim.port)
            .is_some_and(|(_, rx)| rx > 0)),
        "port {}: no unread bytes, so closing would not reset. Victim queues {:?}, \
         server's side {:?}; partner's pump: {} lines sent, {} stalls, finished {}; \
         partner's queues {:?}, server's side {:?}; victim read {} lines, {:?}; \
         partner read {:?}",
        victim.port,
        tcp_queues(victim.local, victim.port),
        tcp_queues(victim.port, victim.local),
        partner.pump.sent.load(Ordering::SeqCst),
        partner.pump.stalls.load(Ordering::SeqCst),
        partner.pump.is_finished(),
        tcp_queues(partner.local, partner.port),
        tcp_queues(partner.port, partner.local),
        victim_log.chat,
        (&victim_log.end, &victim_log.notices, &victim_log.bad),
        {
            let r = partner.drain.snapshot();
            (
                r.chat,
                r.notices.len(),
                r.notices.first().cloned(),
                r.end,
                r.bad,
            )
        }
    );
    drop(victim.stream);
}

/// The survivor is told, its lines then get "not delivered" (so it is read
/// again even if it was held back), and it can leave normally.
fn survive(side: Side, victim: u16) -> Received {
    let gone = left(side.port, victim);
    let goodbye = bye(side.port);
    let not_delivered = format!(
        "SERVER{}>>> Not delivered: partner {victim} is not connected",
        side.port
    );
    let told = side.drain.wait_for(SOON, |r| {
        r.notices.iter().any(|(_, n)| *n == gone)
            && r.notices.iter().any(|(_, n)| *n == not_delivered)
    });
    let snapshot = side.drain.snapshot();
    assert!(
        told,
        "port {}: not told of the reset partner, or its lines are not read: {:?}",
        side.port,
        &snapshot.notices[..snapshot.notices.len().min(3)]
    );
    side.pump.stop();
    side.pump
        .join()
        .expect("the survivor writes on and terminates");
    let log = side.drain.join();
    drop(side.stream);
    assert_clean("survivor", &log);
    assert_eq!(log.end, Some(End::Eof));
    assert_eq!(log.count(|n| n == gone), 1);
    let (chat_before, _) = log.notices.iter().find(|(_, n)| *n == gone).unwrap();
    assert_eq!(*chat_before, log.chat, "no chat after the partner left");
    assert_eq!(
        log.notices.last().map(|(_, n)| n),
        Some(&goodbye),
        "the survivor's last notice"
    );
    assert!(
        log.notices
            .iter()
            .all(|(_, n)| *n == gone || *n == not_delivered || *n == goodbye),
        "unexpected notices: {:?}",
        log.notices
            .iter()
            .find(|(_, n)| *n != gone && *n != not_delivered && *n != goodbye)
    );
    log
}

/// A busy pair, both directions streaming, loses one side to a reset: the
/// first side while reading along, and (in the second pair) the second side
/// after it stopped reading long enough for its partner to be held back.
#[test]
fn a_reset_on_either_side_of_a_busy_pair_is_told_and_frees_the_port() {
    let server = TestServer::start(&["--workers", "4"]);
    // The victims' pumps just stop: a TERMINATE would end them gracefully.
    let (a, b) = stream_both_ways(Peer::pair(&server), [PumpEnd::Nothing, PumpEnd::Terminate]);
    let (c, d) = stream_both_ways(Peer::pair(&server), [PumpEnd::Terminate, PumpEnd::Nothing]);
    for side in [&a, &b, &c, &d] {
        assert!(
            side.drain.wait_for(SOON, |r| r.chat >= 100),
            "port {}: the stream never got going",
            side.port
        );
    }

    // First side, reading along until the reset.
    let victim = a.port;
    reset(a, &b);
    let log = survive(b, victim);
    println!(
        "reset of {victim} while reading: partner got {} lines, then {} notices",
        log.chat,
        log.notices.len()
    );

    // Second side, after its partner was held back by it.
    d.drain.stop();
    assert!(
        c.pump.wait_for_stalls(5, Duration::from_secs(60)),
        "the partner of a client that stopped reading was never held back"
    );
    let held_at = c.pump.sent.load(Ordering::SeqCst);
    let victim = d.port;
    reset(d, &c);
    let log = survive(c, victim);
    println!(
        "reset of {victim} while its partner was held back at line {held_at}: partner got {} \
         lines, then {} notices",
        log.chat,
        log.notices.len()
    );
    wait_every_port_free(&server, SOON).unwrap();
}

// ---------------------------------------------------------------------------
// A closing connection with a long backlog
// ---------------------------------------------------------------------------

/// A client that terminates and goes on sending, with megabytes still
/// unread in the server's socket when its end of stream arrives, is closed
/// at that end of stream, before the 2 s linger deadline could close it.
/// The loop reads a closing connection a few buffers per turn, and
/// edge-triggered readiness announces the end of stream only once: the loop
/// must come back for the rest by itself.
#[test]
fn a_closing_client_is_closed_at_its_end_of_stream_behind_a_long_backlog() {
    const LINGER: Duration = Duration::from_secs(2);
    // More than the server reads from a closing connection per turn (4
    // reads of 64 KiB); seen here: 448 to 640 KiB.
    const BACKLOG: u64 = 5 * 64 * 1024;
    let server = TestServer::start(&["--workers", "2"]);
    let pid = server.pid();
    let (mut a, mut b) = Peer::pair(&server);
    let fds_in_session = fd_count(pid);
    let terminated = Instant::now();
    a.send(b"CLIENT>>> TERMINATE\n").unwrap();
    b.expect(&format!("SERVER{}>>> Partner {} left", b.port, a.port));
    // The server discards what A goes on sending; streaming some megabytes
    // lets the kernel grow the server socket's receive window.
    let junk = vec![b'x'; 64 * 1024];
    for _ in 0..256 {
        a.send(&junk).unwrap();
    }
    // With the server stopped, the backlog piles up in its socket.
    server.signal("STOP");
    a.stream.set_nonblocking(true).unwrap();
    while a.stream.write(&junk).is_ok() {}
    let backlog = tcp_queues(a.port, a.local_port()).map_or(0, |(_, rx)| rx);
    a.stream.shutdown(Shutdown::Write).unwrap();
    server.signal("CONT");
    assert!(
        backlog >= BACKLOG,
        "only {backlog} bytes queued at the server: the test shows nothing"
    );
    assert!(
        wait_until(SOON, || fd_count(pid) < fds_in_session),
        "the closing connection was never closed"
    );
    let closed_after = terminated.elapsed();
    println!(
        "closing connection with a {backlog}-byte backlog closed {closed_after:.2?} after TERMINATE"
    );
    assert!(
        closed_after < LINGER - Duration::from_millis(200),
        "closed {closed_after:?} after TERMINATE: by the linger deadline, not at the end of stream"
    );
    drop(b);
    wait_every_port_free(&server, SOON).unwrap();
}

// ---------------------------------------------------------------------------
// Signals during load
// ---------------------------------------------------------------------------

fn signal_during_load(signal: &str) {
    const GRACE: Duration = Duration::from_secs(2);
    let mut server = TestServer::start(&["--workers", "6"]);
    let (a, b) = stream_both_ways(Peer::pair(&server), [PumpEnd::Nothing; 2]);
    let (c, d) = stream_both_ways(Peer::pair(&server), [PumpEnd::Nothing; 2]);
    // A client alone in its session, on the client library.
    let mut lone = server.join();
    assert!(!lone.partner_present);
    // And one client that has not handshaken yet.
    let mut waiting = connect(server.workers[0]).expect("connect");
    let sides = [a, b, c, d];
    for side in &sides {
        assert!(
            side.drain.wait_for(SOON, |r| r.chat >= 200),
            "port {}: the stream never got going",
            side.port
        );
    }

    let exit = common::watch_exit(server.pid(), GRACE + SOON);
    let signalled = Instant::now();
    server.signal(signal);
    let mut logs = Vec::new();
    for side in sides {
        let ended = side.drain.wait_for(SOON, |r| r.end.is_some());
        // Done reading: stop writing and close, as a client would.
        side.pump.stop();
        let _ = side.stream.shutdown(Shutdown::Both);
        let _ = side.pump.join();
        assert!(ended, "port {}: the server never closed", side.port);
        logs.push((side.port, side.drain.join()));
    }
    assert_eq!(next(&mut lone), notice("SERVER>>> Server shutting down"));
    assert_eq!(lone.next_message().expect("read to the end"), None);
    drop(lone);
    let mut rest = Vec::new();
    waiting.read_to_end(&mut rest).expect("read to the end");
    drop(waiting);
    let status = server.wait_exit(GRACE + SOON).expect("the server exits");
    let exit_after = exit
        .join()
        .unwrap()
        .expect("the server ended")
        .duration_since(signalled);
    println!(
        "SIG{signal}: {status}, {exit_after:.2?} after the signal; lines received: {:?}",
        logs.iter()
            .map(|(port, log)| (*port, log.chat))
            .collect::<Vec<_>>()
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        exit_after <= GRACE + Duration::from_millis(1500),
        "took {exit_after:?} to exit"
    );
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "SERVER>>> Server shutting down\n"
    );
    for (port, log) in logs {
        assert_clean(&format!("port {port}"), &log);
        assert_eq!(
            log.end,
            Some(End::Eof),
            "port {port}: the stream did not end cleanly after a whole line"
        );
        assert_eq!(
            log.notices,
            vec![(log.chat, "SERVER>>> Server shutting down".to_string())],
            "port {port}: the notice, last"
        );
    }
}

/// SIGTERM while two pairs stream both ways: every client, including one
/// alone in its session and one still before its handshake, gets the notice
/// as its last, whole line; no chat line is cut; the server exits 0 within
/// its 2 s grace.
#[test]
fn sigterm_during_load_tells_every_client_and_exits_zero() {
    signal_during_load("TERM");
}

/// The same with SIGINT.
#[test]
fn sigquit_during_load_tells_every_client_and_exits_zero() {
    signal_during_load("QUIT");
}

/// SIGHUP (a closed terminal, a reload request) must not stop the server,
/// and SIGUSR1 asks it for a summary of its state in the log.
#[test]
fn sighup_is_ignored_and_sigusr1_logs_the_state() {
    let (mut server, mut log) = TestServer::start_logged(&["--workers", "2"]);
    let (mut a, mut b) = session_pair(&server);
    server.signal("HUP");
    server.signal("USR1");
    let mut state = String::new();
    let mut hup = false;
    while state.is_empty() {
        let mut line = String::new();
        if log.read_line(&mut line).expect("read the log") == 0 {
            panic!("the log ended before the state was written");
        }
        hup |= line.contains("SIGHUP received and ignored");
        if line.contains("state: ") {
            state = line;
        }
    }
    assert!(hup, "SIGHUP is logged before the state");
    for part in [
        "worker ports: 0 free, 0 reserved, 2 occupied",
        "0 awaiting a passcode, 2 chatting",
        "bytes queued",
        "listeners paused: none",
    ] {
        assert!(state.contains(part), "{part:?} not in {state:?}");
    }
    // Still serving: the pair chats on.
    chat_both_ways(&mut a, &mut b, 0, 3);
    assert!(server.wait_exit(Duration::from_millis(10)).is_none());
}

#[test]
fn sigint_during_load_tells_every_client_and_exits_zero() {
    signal_during_load("INT");
}

// ---------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------

fn garbage_kinds(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("random bytes", rng.bytes(4096)),
        ("NULs", b"\0\0\0\0\0\0\0\0\n".to_vec()),
        ("many NULs", vec![0; 300]),
        (
            "invalid UTF-8",
            b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xf8\xa1\xa1\xa1\xa1\n".to_vec(),
        ),
        ("CR without LF", vec![b'\r'; 20]),
        ("many CR without LF", vec![b'\r'; 300]),
        ("a megabyte without a newline", vec![b'x'; 1 << 20]),
    ]
}

/// Writes `bytes` from a thread (errors are expected once the server has
/// had enough) and returns the socket for reading.
fn spray(addr: SocketAddr, bytes: Vec<u8>) -> (TcpStream, thread::JoinHandle<()>) {
    let stream = connect(addr).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    let handle = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    (stream, handle)
}

/// Reads one whole line, then expects the end of the stream (or a reset: our
/// unread garbage may make the server's close a reset, after the line).
fn line_then_close(stream: TcpStream, what: &str) -> String {
    let mut reader = std::io::BufReader::new(stream);
    let line = match read_got(&mut reader) {
        Ok(Got::Line(line)) => String::from_utf8(line).expect("UTF-8 notice"),
        other => panic!("{what}: expected a whole line, got {other:?}"),
    };
    match read_got(&mut reader) {
        Ok(Got::Eof) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the close after {line:?}, got {other:?}"),
    }
    line
}

/// Random bytes, NULs, invalid UTF-8, `\r` without `\n` and a megabyte
/// without a newline, on the portal, on every worker port before the
/// handshake, and in a session on every worker port. Every answer is a whole
/// protocol line; garbage that is a line is relayed byte for byte; nothing
/// disturbs a reservation, a session or the server.
#[test]
fn garbage_on_every_port_gets_protocol_answers_and_breaks_nothing() {
    let seed = 0x5eed_0005;
    let mut rng = Rng::new(seed);
    println!("garbage: seed {seed:#x}");
    let server = TestServer::start(&["--workers", "4", "--handshake-timeout", "2"]);
    let idle_fds = settled_fds(&server);
    let kinds = garbage_kinds(&mut rng);

    // The portal answers each connection before reading anything, and
    // reserves a port for it: four reservations, then "full".
    let mut reservations = Vec::new();
    for (what, bytes) in &kinds {
        let (stream, writer) = spray(server.portal, bytes.clone());
        let line = line_then_close(stream, &format!("portal, {what}"));
        writer.join().unwrap();
        match parse_portal_reply(&line) {
            Some(PortalAnswer::Assigned(assignment)) => reservations.push(assignment),
            Some(PortalAnswer::Full) => {}
            None => panic!("portal, {what}: not a portal answer: {line:?}"),
        }
    }
    assert_eq!(reservations.len(), 4, "every port reserved once");

    // Before the handshake, on every worker port: refused, or (for a short
    // line that never ends) timed out.
    let mut checks = Vec::new();
    for &worker in &server.workers {
        for (what, bytes) in &kinds {
            let port = worker.port();
            let want = match *what {
                "CR without LF" => format!("SERVER{port}>>> Handshake timeout"),
                _ => format!("SERVER{port}>>> Wrong handshake passcode"),
            };
            let what = format!("port {port} before the handshake, {what}");
            let (stream, writer) = spray(worker, bytes.clone());
            checks.push(thread::spawn(move || {
                let line = line_then_close(stream, &what);
                writer.join().unwrap();
                assert_eq!(line, want, "{what}");
            }));
        }
    }
    for check in checks {
        check.join().unwrap();
    }

    // The holders of the reservations get in, despite the strays.
    let mut peers: Vec<Peer> = reservations
        .iter()
        .map(|r| Peer::handshake(server.host(), r).expect("the holder gets in"))
        .collect();
    let by_port = |peers: &Vec<Peer>, port: u16| peers.iter().position(|p| p.port == port);
    for peer in &mut peers {
        if !peer.partner_present {
            peer.expect(&format!(
                "SERVER{}>>> Partner {} connected",
                peer.port, peer.partner
            ));
        }
    }

    // In a session, on every port: lines of garbage, relayed exactly.
    for i in 0..peers.len() {
        let from = peers[i].port;
        let j = by_port(&peers, peers[i].partner).expect("partner in session");
        let mut lines: Vec<Vec<u8>> = vec![
            b"\0".to_vec(),
            b"\0\0nul\0inside\0".to_vec(),
            b"\xff\xfe\xc3\x28 not UTF-8 \xa0\xa1".to_vec(),
            b"a\rb\rc".to_vec(),
            b"\r\r\r".to_vec(),
            b"\r".to_vec(),
            b"".to_vec(),
            b"SERVER>>> forged".to_vec(),
        ];
        for _ in 0..50 {
            let len = rng.below(300) as usize;
            let mut line = rng.bytes(len);
            line.iter_mut()
                .filter(|b| **b == b'\n')
                .for_each(|b| *b = b' ');
            lines.push(line);
        }
        let mut wire = Vec::new();
        for line in &lines {
            wire.extend_from_slice(line);
            wire.push(b'\n');
        }
        peers[i].send(&wire).expect("send garbage lines");
        let to = peers[j].port;
        for line in &lines {
            // One `\r` before the `\n` belongs to the line ending.
            let want = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b"SERVER") {
                peers[i].expect(&format!(
                    "SERVER{from}>>> Refused: chat lines may not begin with SERVER"
                ));
                continue;
            }
            // Any other `\r` could show a `\r`-splitting reader a forged line.
            if want.contains(&b'\r') {
                peers[i].expect(&format!(
                    "SERVER{from}>>> Refused: chat lines may not hold a carriage return"
                ));
                continue;
            }
            match peers[j].next() {
                Ok(Got::Line(got)) => {
                    assert_eq!(got, want, "{from} -> {to}: garbage line changed on the way")
                }
                other => panic!("{from} -> {to}: expected a relayed line, got {other:?}"),
            }
        }
    }

    // A megabyte without a newline, in a session, on every port: the sender
    // is told and closed, its partner told it left; then the partner does
    // the same alone.
    let second_pair = (0..peers.len())
        .find(|&k| peers[k].port != peers[0].port && peers[k].port != peers[0].partner)
        .expect("two pairs");
    for i in [0, second_pair] {
        let j = by_port(&peers, peers[i].partner).unwrap();
        let (sender, partner) = (peers[i].port, peers[j].port);
        for (who, other) in [(i, Some(j)), (j, None)] {
            let port = peers[who].port;
            let mut writer = peers[who].stream.try_clone().unwrap();
            let spray = thread::spawn(move || {
                let _ = writer.write_all(&vec![b'y'; 1 << 20]);
            });
            let line = match peers[who].next() {
                Ok(Got::Line(line)) => String::from_utf8(line).unwrap(),
                other => panic!("port {port}: expected the notice, got {other:?}"),
            };
            assert_eq!(
                line,
                format!("SERVER{port}>>> Line too long (limit 8192 bytes); closing")
            );
            match peers[who].next() {
                Ok(Got::Eof) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("port {port}: expected the close, got {other:?}"),
            }
            spray.join().unwrap();
            if let Some(other) = other {
                peers[other].expect(&left(partner, sender));
            }
        }
    }
    drop(peers);

    // Still serving, and back where it started.
    let (mut a, mut b) = session_pair(&server);
    chat_both_ways(&mut a, &mut b, 0, 10);
    terminate(a);
    terminate(b);
    assert_back_where_it_started(&server, idle_fds);
}

/// `--max-queued-mib` bounds the output queued for all clients together:
/// ten senders whose partners never read would queue 1 MiB each, but with a
/// 4 MiB total they are held back once the total is reached, and the
/// server's own count (SIGUSR1) stays within one line per sender of it.
#[test]
fn the_total_queued_for_all_clients_is_bounded() {
    const PAIRS: usize = 10;
    let (server, mut log) = TestServer::start_logged(&["--workers", "20", "--max-queued-mib", "4"]);
    let mut pumps = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..PAIRS {
        let (a, b) = Peer::pair(&server);
        pumps.push(pump_kib_lines(&a, None));
        readers.push((a, b)); // kept open, never read
    }
    for pump in &pumps {
        assert!(
            pump.wait_for_stalls(5, Duration::from_secs(60)),
            "every sender is held back"
        );
    }
    server.signal("USR1");
    let queued = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "the log ended");
        if let Some(rest) = line.split("held back; ").nth(1) {
            break rest.split(' ').next().unwrap().parse::<usize>().unwrap();
        }
    };
    let bound = (4 << 20) + PAIRS * 1100;
    println!("{queued} bytes queued for {PAIRS} never-reading clients (bound {bound})");
    assert!(queued <= bound, "{queued} bytes queued, over {bound}");
    assert!(
        queued >= 2 << 20,
        "{queued}: the limit, not the clients, held them"
    );
    for pump in pumps {
        pump.stop();
        let _ = pump.join();
    }
}

//! The relay's rules, driven in-process: a fake clock, a seeded core, and
//! simulated peers that read and write in chosen chunk sizes
//! ([`crate::sim`]). Each test says which rule it pins. F1, F2 and F3 are
//! the faults that once needed the real binary and `/proc` to be seen.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Io, Limits, Role};
use crate::core::{Action, ConnId, Core, PortState, PortalReply, Timeouts};
use crate::output::{OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER};
use crate::sim::{PeerId, Seen, Sim, WORKER_PORTS};
use crate::wire::{Codec, DecodeError, Inbox, Wire};

fn sim() -> Sim {
    Sim::new(7, Timeouts::default(), Limits::default())
}

fn with_idle(idle: Duration) -> Sim {
    let timeouts = Timeouts {
        idle,
        ..Timeouts::default()
    };
    Sim::new(7, timeouts, Limits::default())
}

/// `count` chat lines of `len` bytes each, newline included, numbered from
/// `first`, so that a loss or a swap shows in a comparison.
fn numbered(first: usize, count: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * len);
    for n in first..first + count {
        let start = out.len();
        out.extend_from_slice(format!("line {n:08} ").as_bytes());
        out.resize(start + len - 1, b'.');
        out.push(b'\n');
    }
    out
}

/// What `peer` received after the first `skip` bytes.
fn received_since(s: &Sim, peer: PeerId, skip: usize) -> &[u8] {
    &s.peer(peer).received[skip..]
}

/// The complete lines `peer` received after the first `skip` bytes.
fn lines_since(s: &Sim, peer: PeerId, skip: usize) -> Vec<String> {
    let lines = s.peer(peer).lines_since(skip);
    lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

// ------------------------------------------------------------ backpressure

/// A sender whose partner stops reading is paused once the partner's queue
/// reaches OUTPUT_HIGH_WATER (overshooting by less than one line), stays
/// paused down to one byte above OUTPUT_LOW_WATER, and goes on as soon as
/// the queue is at OUTPUT_LOW_WATER. Nothing is lost and the order is kept.
#[test]
fn a_partner_that_stops_reading_pauses_the_sender_between_the_marks() {
    let mut s = sim();
    let (a, b) = s.pair();
    let skip = s.peer(b).received.len();
    const LINE: usize = 1000;
    let stream = numbered(0, 3 * OUTPUT_HIGH_WATER / LINE, LINE);
    s.peer_mut(b).window_cap = 64 * 1024;
    s.send(a, &stream);
    s.settle();

    let queued = s.queued(b);
    assert!(
        (OUTPUT_HIGH_WATER..OUTPUT_HIGH_WATER + LINE).contains(&queued),
        "partner's queue {queued}"
    );
    // `settle` returned, so A has no turn coming although bytes wait in its
    // socket (`check_invariants` would have caught a forgotten connection):
    // it is paused. More rounds read nothing.
    let unread = s.peer(a).unread.len();
    assert!(unread > 0);
    for _ in 0..5 {
        s.run_round();
    }
    assert_eq!(s.peer(a).unread.len(), unread);

    // Let B take exactly enough to bring its queue to one above the low mark.
    while s.queued(b) > OUTPUT_LOW_WATER + 1 {
        let excess = s.queued(b) - (OUTPUT_LOW_WATER + 1);
        s.drain(b, excess);
        s.settle();
    }
    assert_eq!(s.queued(b), OUTPUT_LOW_WATER + 1, "nothing more forwarded");
    assert_eq!(s.peer(a).unread.len(), unread, "still paused");

    // One more byte out: at the low mark, A goes on.
    s.drain(b, 1);
    s.settle();
    assert!(
        s.queued(b) > OUTPUT_LOW_WATER,
        "A's held lines were forwarded"
    );
    assert!(s.peer(a).unread.len() < unread, "A is read again");

    s.pump();
    assert_eq!(
        received_since(&s, b, skip),
        &stream[..],
        "lost or reordered"
    );
    assert!(
        s.peer(a)
            .notices()
            .iter()
            .all(|n| !n.contains("Not delivered"))
    );
}

/// F1 (unbounded own notices): a client whose lines only earn it notices
/// ("not delivered", here: it has no partner) and that never reads them is
/// paused on its own queue once that reaches OUTPUT_HIGH_WATER. Its lines
/// wait in its socket, and once it reads, every one of them gets its notice.
#[test]
fn f1_a_client_that_never_reads_its_notices_is_paused_on_its_own_queue() {
    let mut s = sim();
    let a = s.join();
    let skip = s.peer(a).received.len();
    let notice = "SERVER50001>>> Not delivered: partner 50002 is not connected";
    s.peer_mut(a).window_cap = 4096;
    const LINES: usize = 40_000; // 2.4 MiB of notices
    s.send(a, &b"x\n".repeat(LINES));
    s.settle();

    // The queue and what was written of it (the window is never drained).
    let queued = s.queued(a) + s.peer(a).window.len();
    assert!(
        (OUTPUT_HIGH_WATER..OUTPUT_HIGH_WATER + notice.len() + 1).contains(&queued),
        "own queue {queued}"
    );
    assert!(!s.peer(a).unread.is_empty(), "its lines wait in its socket");

    s.peer_mut(a).window_cap = 1 << 20;
    s.pump();
    let notices = lines_since(&s, a, skip);
    assert_eq!(notices.len(), LINES);
    assert!(notices.iter().all(|n| n == notice));
}

/// F2 (a held sender timed out): a sender held back by a partner that
/// reads, only slowly, is sending, not idle, as long as what it sent moves
/// at all, even while it stays paused for longer than the idle timeout.
#[test]
fn f2_a_held_sender_whose_partner_drains_slowly_is_not_timed_out() {
    let idle = Duration::from_secs(10);
    let mut s = with_idle(idle);
    let (a, b) = s.pair();
    let skip = s.peer(b).received.len();
    const LINE: usize = 1000;
    // More than B takes in the time the test runs: A never runs dry.
    let stream = numbered(0, 4 * OUTPUT_HIGH_WATER / LINE, LINE);
    s.send(a, &stream);
    s.settle();

    // B takes 32 KiB a second and says something every 5 s, or it would be
    // the idle one; A reads whatever it gets. Half the queue (the gap
    // between the marks) takes 16 s to drain: longer than the idle timeout.
    const RATE: usize = 32 * 1024;
    let seconds = 6 * idle.as_secs();
    let mut longest_hold = Duration::ZERO;
    let mut held_since = Duration::ZERO;
    let mut last_unread = s.peer(a).unread.len();
    for second in 1..=seconds {
        s.advance(Duration::from_secs(1));
        s.drain(b, RATE);
        if second % 5 == 0 {
            s.send(b, b"still reading\n");
        }
        s.tick();
        s.settle();
        s.drain(a, usize::MAX);
        assert!(
            s.relay.core().partner(s.peer(a).conn) == Some(s.peer(b).conn),
            "the session ended after {second} s, A held since {held_since:?}: {:?}",
            s.peer(a).notices().last()
        );
        let unread = s.peer(a).unread.len();
        assert!(unread > 0, "A ran dry: the test shows nothing");
        if unread == last_unread {
            longest_hold = longest_hold.max(s.elapsed() - held_since);
        } else {
            held_since = s.elapsed();
        }
        last_unread = unread;
    }
    assert!(
        longest_hold > idle,
        "A was held for {longest_hold:?} at most: the test shows nothing"
    );
    s.drain_all();
    for peer in [a, b] {
        assert!(
            !s.peer(peer).notices().iter().any(|n| n.contains("TIMEOUT")),
            "{:?} timed out: {:?}",
            s.peer(peer).port(),
            s.peer(peer).notices()
        );
    }
    let got = received_since(&s, b, skip);
    assert!(got.len() >= seconds as usize * RATE && stream.starts_with(got));
}

/// The other side of F2: when neither partner reads and nothing moves for
/// the idle timeout, both are timed out, and both get `SERVER>>> TIMEOUT`
/// once they read again.
#[test]
fn a_pair_where_nothing_moves_is_timed_out_and_both_are_told() {
    let idle = Duration::from_secs(10);
    let mut s = with_idle(idle);
    let (a, b) = s.pair();
    s.send(a, &numbered(0, 2 * OUTPUT_HIGH_WATER / 1000, 1000));
    s.settle();
    for _ in 1..idle.as_secs() {
        s.advance(Duration::from_secs(1));
        s.tick();
    }
    assert!(s.conn(a).is_some() && s.conn(b).is_some(), "too early");
    assert!(s.relay.core().partner(s.peer(a).conn).is_some());
    s.advance(Duration::from_secs(1));
    s.tick();
    assert_eq!(s.relay.core().port_state(0), PortState::Free);
    assert_eq!(s.relay.core().port_state(1), PortState::Free);
    s.pump();
    for peer in [a, b] {
        assert_eq!(
            s.peer(peer).notices().last().map(String::as_str),
            Some("SERVER>>> TIMEOUT"),
            "{:?}",
            s.peer(peer).port()
        );
        assert_eq!(s.peer(peer).log.last(), Some(&Seen::ShutdownWrite));
    }
}

// ------------------------------------------------------- closing lifecycle

/// A connection the server ends gets its final notice, then our end of
/// stream (ShutdownWrite, only once the notice is all written, however
/// slowly the peer reads), and is closed only once the peer's own end of
/// stream has been read, so no unread byte turns the close into a reset.
#[test]
fn a_closing_connection_gets_its_notice_then_shutdown_then_close_at_the_peers_end() {
    let mut s = sim();
    let (a, b) = s.pair();
    let notice = "SERVER50001>>> Line too long (limit 8192 bytes); closing";
    s.peer_mut(a).window_cap = 10;
    let mut long = vec![b'x'; 9000];
    long.push(b'\n');
    s.send(a, &long);
    s.send_fin(a); // the client gives up at once
    s.settle();
    assert_eq!(s.relay.core().port_state(0), PortState::Free);
    assert!(
        !s.peer(a).write_shut && !s.peer(a).closed,
        "not before the notice is out"
    );

    while !s.peer(a).write_shut {
        s.drain(a, 3);
        s.settle();
    }
    s.drain(a, usize::MAX);
    assert_eq!(s.peer(a).notices().last().map(String::as_str), Some(notice));
    assert!(
        matches!(
            s.peer(a).log[..],
            [Seen::Bytes(_), Seen::ShutdownWrite, Seen::Close]
        ),
        "the end of stream was read before, so the close follows the shutdown: {:?}",
        s.peer(a).log
    );
    s.pump();
    assert_eq!(
        s.peer(b).notices().last().map(String::as_str),
        Some("SERVER50002>>> Partner 50001 left")
    );

    // The same with the peer's end of stream coming after our shutdown.
    let portal = s.accept(Role::Portal);
    s.settle();
    assert!(matches!(
        s.peer(portal).log[..],
        [Seen::Bytes(_), Seen::ShutdownWrite]
    ));
    s.send_fin(portal);
    s.settle();
    assert!(matches!(
        s.peer(portal).log[..],
        [Seen::Bytes(_), Seen::ShutdownWrite, Seen::Close]
    ));
}

/// Linger: a closing connection whose peer never closes is closed at the
/// linger deadline, not before, and not never.
#[test]
fn a_closing_connection_whose_peer_never_closes_is_closed_at_the_linger_deadline() {
    let mut s = sim();
    let linger = s.limits.linger;
    let portal = s.accept(Role::Portal);
    s.settle();
    s.drain(portal, usize::MAX);
    assert!(s.peer(portal).lines()[0].starts_with(b"SERVER>>>Port=>50001,"));
    let reply = s.peer(portal).received.len();
    assert_eq!(
        s.peer(portal).log,
        [Seen::Bytes(reply), Seen::ShutdownWrite]
    );

    s.advance(linger - Duration::from_millis(1));
    s.tick();
    assert!(!s.peer(portal).closed, "closed before the linger deadline");
    s.advance(Duration::from_millis(1));
    s.tick();
    assert_eq!(
        s.peer(portal).log,
        [Seen::Bytes(reply), Seen::ShutdownWrite, Seen::Close]
    );
    assert_eq!(s.relay.core().port_state(0), PortState::Reserved);
    assert!(s.relay.is_empty());
}

/// F3 (a closing connection stuck behind its backlog): a client that
/// terminates and goes on sending, with far more than one turn's read
/// budget still unread when its end of stream comes, is read to that end
/// over the next rounds (without any new event) and closed there, with no
/// reset, and long before the linger deadline.
#[test]
fn f3_a_closing_connection_behind_a_long_backlog_is_closed_at_its_end_of_stream() {
    let mut s = sim();
    let (a, b) = s.pair();
    s.send(a, b"CLIENT>>> TERMINATE\n");
    s.settle();
    assert_eq!(s.relay.core().port_state(0), PortState::Free);
    // The backlog piles up in the socket, then the end of stream.
    s.send(a, &vec![b'x'; 5 * s.limits.read_budget + 100]);
    s.send_fin(a);
    let rounds = s.rounds();
    s.settle();
    assert_eq!(s.peer(a).unread.len(), 0, "not read to its end of stream");
    assert_eq!(s.peer(a).log.last(), Some(&Seen::Close), "not closed");
    assert!(!s.peer(a).log.contains(&Seen::Reset));
    assert_eq!(s.elapsed(), Duration::ZERO);
    assert!(s.rounds() - rounds >= 6, "more than one budget per turn");
    s.pump();
    assert_eq!(
        s.peer(b).notices().last().map(String::as_str),
        Some("SERVER50002>>> Partner 50001 left")
    );
}

// ------------------------------------------------------------- half-close

/// Half-close: a client that shuts down its sending side has its last,
/// unterminated line delivered (with the newline) before its partner is
/// told it left; it is then closed without a reset.
#[test]
fn a_half_close_delivers_the_last_unterminated_line_before_the_partner_is_told() {
    let mut s = sim();
    let (a, b) = s.pair();
    let skip = s.peer(b).received.len();
    s.peer_mut(a).read_chunk = 3;
    s.send(a, b"hello\nlast words\r");
    s.send_fin(a);
    s.pump();
    assert_eq!(
        received_since(&s, b, skip),
        b"hello\nlast words\nSERVER50002>>> Partner 50001 left\n"
    );
    assert_eq!(s.peer(a).log.last(), Some(&Seen::Close));
    assert!(!s.peer(a).log.contains(&Seen::Reset));
    assert_eq!(s.relay.core().port_state(0), PortState::Free);
}

// ------------------------------------------------------------------ reset

/// A reset on the reading side of a busy pair: the sender is told its
/// partner left (after what was already queued for it), the port is free,
/// and the reset connection is closed at once.
#[test]
fn a_reset_of_the_reader_in_a_busy_pair_tells_the_sender_and_frees_the_port() {
    let mut s = sim();
    let (a, b) = s.pair();
    let skip = s.peer(a).received.len();
    s.send(a, &numbered(0, 4000, 1000));
    for _ in 0..5 {
        s.drain_all();
        s.run_round();
    }
    assert!(!s.peer(a).unread.is_empty(), "still busy");
    s.send(b, b"going down\n");
    s.run_round();
    s.reset(b);
    s.pump();
    assert_eq!(s.peer(b).log.last(), Some(&Seen::Close));
    assert_eq!(s.relay.core().port_state(1), PortState::Free);
    // A then goes on sending to no one.
    let lines = lines_since(&s, a, skip);
    assert_eq!(
        lines[..2],
        ["going down", "SERVER50001>>> Partner 50002 left"]
    );
    assert!(lines.len() > 2);
    assert!(lines[2..].iter().all(|l| l.contains("Not delivered")));
}

/// A pair where A streams 2 MiB and B does not read (its window holds
/// 1000 bytes): A is held back on B's queue. Returns A, B and the stream.
fn held_back(s: &mut Sim) -> (PeerId, PeerId, Vec<u8>) {
    let (a, b) = s.pair();
    s.drain(b, usize::MAX);
    s.peer_mut(b).window_cap = 1000;
    let stream = numbered(0, 2 * OUTPUT_HIGH_WATER / 1000, 1000);
    s.send(a, &stream);
    s.settle();
    assert!(!s.peer(a).unread.is_empty(), "A is held back");
    (a, b, stream)
}

/// A reset of a partner that stopped reading, while the sender is paused
/// on its queue: the sender is told, no longer paused, and its next lines
/// earn "not delivered" instead of waiting.
#[test]
fn a_reset_of_the_partner_a_sender_waits_on_tells_and_releases_the_sender() {
    let mut s = sim();
    let (a, b, _) = held_back(&mut s);
    let skip = s.peer(a).received.len();
    s.reset(b);
    s.pump();
    assert_eq!(s.peer(b).log.last(), Some(&Seen::Close));
    assert_eq!(s.relay.core().port_state(1), PortState::Free);
    assert!(s.peer(a).unread.is_empty(), "A is read again");
    let lines = lines_since(&s, a, skip);
    assert_eq!(lines[0], "SERVER50001>>> Partner 50002 left");
    assert!(lines.len() > 1);
    assert!(lines[1..].iter().all(|n| n.contains("Not delivered")));
}

/// A reset of the sender while it is paused on its partner's queue: the
/// relay does not read a paused connection, so it learns of the reset when
/// the sender is resumed, and then the partner is told after everything
/// that was already queued, and the port is freed.
#[test]
fn a_reset_of_a_paused_sender_is_told_to_its_partner_after_the_queued_lines() {
    let mut s = sim();
    let (a, b, stream) = held_back(&mut s);
    let skip = s.peer(b).received.len();
    let forwarded = s.queued(b) + s.peer(b).window.len();
    s.reset(a);
    s.peer_mut(b).window_cap = 1 << 20;
    s.pump();
    assert_eq!(s.peer(a).log.last(), Some(&Seen::Close));
    assert_eq!(s.relay.core().port_state(0), PortState::Free);
    let got = received_since(&s, b, skip);
    let (chat, notice) = got.split_at(got.len() - "SERVER50002>>> Partner 50001 left\n".len());
    assert_eq!(notice, b"SERVER50002>>> Partner 50001 left\n");
    assert!(chat.len() >= forwarded && stream.starts_with(chat));
}

// --------------------------------------------------------------- fairness

/// Fairness: a connection with more than a budget of input reads one
/// budget per round and keeps the rest for later rounds, and another
/// connection's line is read and delivered in the same round, after it.
/// Writing is bounded the same way.
#[test]
fn a_flood_gets_one_budget_per_round_and_another_line_goes_through_meanwhile() {
    let mut s = sim();
    let budget = s.limits.read_budget;
    let (a, b) = s.pair();
    let (c, d) = s.pair();
    s.peer_mut(b).window_cap = 4 * budget;
    let skip_d = s.peer(d).received.len();
    s.send(a, &numbered(0, 4 * budget / 100, 100));
    s.send(c, b"ping\n");
    s.run_round();
    assert_eq!(s.peer(a).read_this_round, budget);
    assert_eq!(s.peer(c).read_this_round, 5);
    let ios = s.last_round_ios();
    let first = |io: Io| ios.iter().position(|&x| x == io).unwrap();
    let (conn_a, conn_c) = (s.peer(a).conn, s.peer(c).conn);
    assert!(
        first(Io::Read(conn_a)) < first(Io::Read(conn_c)),
        "the flood came first and still the ping went through"
    );
    assert_eq!(s.peer(d).window, b"ping\n");
    assert!(s.peer(b).window.len() <= s.limits.write_budget);
    assert!(s.relay.has_work());
    s.run_round();
    assert_eq!(s.peer(a).read_this_round, budget);
    s.drain(d, usize::MAX);
    assert_eq!(received_since(&s, d, skip_d), b"ping\n");
}

// ------------------------------------------------ fast path and slow path

fn worker_of(port: u16) -> usize {
    WORKER_PORTS.iter().position(|&p| p == port).unwrap()
}

/// What the partner and the sender should receive when `a`, already in a
/// session (with a partner if `partner`), sends `stream` (and then, if
/// `fin`, its end of stream): computed from a bare core, message by
/// message through `handle_line`, the slow path, with no relay at all.
fn expected(stream: &[u8], fin: bool, partner: bool, max_line: usize) -> (Vec<u8>, Vec<u8>) {
    let now = Instant::now();
    let mut core = Core::new(
        WORKER_PORTS.to_vec(),
        Timeouts::default(),
        StdRng::seed_from_u64(1),
    );
    for conn in if partner { vec![A, B] } else { vec![A] } {
        let PortalReply::Assigned { port, code } = core.handle_portal_request(PEER, now) else {
            panic!("full")
        };
        core.handle_worker_connect(conn, worker_of(port), PEER, now);
        core.handle_line(conn, code.as_bytes(), now);
    }
    while core.poll_action().is_some() {}

    let mut out = Outcome::default();
    let mut inbox = Inbox::new();
    inbox.extend(stream);
    while out.open {
        match inbox.next_message(&Wire::Line, max_line) {
            Ok(Some((text, hidden))) => {
                let text = inbox.get(text).to_vec();
                out.deliver(&mut core, &text, hidden, now);
            }
            Ok(None) => break,
            Err(DecodeError::TooLong) => core.handle_line_too_long(A, max_line, now),
            Err(DecodeError::Malformed) => unreachable!("lines are never malformed"),
        }
        out.apply(&mut core);
    }
    if fin && out.open {
        if let Some((text, hidden)) = inbox.take_final(&Wire::Line) {
            let text = inbox.get(text).to_vec();
            out.deliver(&mut core, &text, hidden, now);
            out.apply(&mut core);
        }
        if out.open {
            core.handle_disconnect(A, now);
            out.apply(&mut core);
        }
    }
    (out.to_b, out.to_a)
}

/// The reference's sender and partner, and what each has been sent.
/// Where every simulated client comes from.
const PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

const A: ConnId = ConnId(0);
const B: ConnId = ConnId(1);

struct Outcome {
    to_a: Vec<u8>,
    to_b: Vec<u8>,
    /// The sender's session has not ended.
    open: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            to_a: Vec::new(),
            to_b: Vec::new(),
            open: true,
        }
    }
}

impl Outcome {
    fn deliver(&mut self, core: &mut Core<StdRng>, text: &[u8], hidden: bool, now: Instant) {
        let to = if hidden {
            core.handle_hidden_break(A, text, now)
        } else {
            core.handle_line(A, text, now)
        };
        if to == Some(B) {
            Wire::Line.encode(text, &mut self.to_b);
        }
    }

    fn apply(&mut self, core: &mut Core<StdRng>) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Send { to: A, line } => Wire::Line.encode(line.as_bytes(), &mut self.to_a),
                Action::Send { line, .. } => Wire::Line.encode(line.as_bytes(), &mut self.to_b),
                Action::Close { .. } => self.open = false,
            }
        }
    }
}

/// Lines that leave the session on: plain chat and every kind of line the
/// fast path must leave to the slow one (forged, with a hidden break), at
/// and under the length limit, with either line end.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        8 => Just(b"hello".to_vec()),
        4 => Just(b"".to_vec()),
        4 => Just(b"0123456789abcdefghijklmn".to_vec()), // exactly the limit below
        3 => Just(b"SERVER>>> forged".to_vec()),
        2 => Just(b"SERVER".to_vec()),
        2 => Just(b"SERVE".to_vec()),
        2 => Just(b" SERVER".to_vec()),
        3 => Just(b"a\rb".to_vec()),
        2 => Just(b"x\r".to_vec()),
        2 => Just(b"\0\xff".to_vec()),
        6 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |&b| b != b'\n'), 0..=24),
    ];
    (text, any::<bool>()).prop_map(|(mut text, crlf)| {
        text.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        text
    })
}

/// A line that ends the session, if any: what follows it must be ignored.
fn ending() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        1 => Just(b"0123456789abcdefghijklmno\n".to_vec()), // one past the limit
        1 => Just(b"0123456789abcdefghijklmnopq".to_vec()), // too long, with no end yet
        1 => Just(b"CLIENT>>> TERMINATE\r\n".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        rng_seed: RngSeed::Fixed(0x5eed_7e1a),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The fast path agrees with the slow path: whatever the stream and
    /// however it is cut into reads (down to one byte at a time, or all at
    /// once, where runs of plain lines go through `take_run` in one copy),
    /// the partner gets byte for byte what message-by-message handling by
    /// the core gives it, and the sender exactly the same notices.
    #[test]
    fn the_fast_path_agrees_with_the_slow_path_however_the_stream_is_cut(
        lines in proptest::collection::vec(line(), 0..40),
        ending in ending(),
        after in proptest::collection::vec(line(), 0..3),
        tail in proptest::collection::vec(b'a'..=b'z', 0..4),
        fin in any::<bool>(),
        partner in any::<bool>(),
        read_chunk in prop_oneof![Just(1usize), Just(2), Just(7), Just(64 * 1024)],
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
    ) {
        let max_line = 24;
        let mut stream = lines.concat();
        stream.extend_from_slice(&ending);
        stream.extend_from_slice(&after.concat());
        stream.extend_from_slice(&tail);
        let (want_b, want_a) = expected(&stream, fin, partner, max_line);

        let limits = Limits { max_line, ..Limits::default() };
        let mut s = Sim::new(7, Timeouts::default(), limits);
        let a = s.join();
        let b = partner.then(|| s.join());
        s.pump();
        let skip_a = s.peer(a).received.len();
        let skip_b = b.map(|b| s.peer(b).received.len());
        s.peer_mut(a).read_chunk = read_chunk;
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut from = 0;
        for cut in cuts {
            s.send(a, &stream[from..cut]);
            from = cut;
            s.pump();
        }
        if fin {
            s.send_fin(a);
        }
        s.pump();
        prop_assert_eq!(received_since(&s, a, skip_a), &want_a[..]);
        if let (Some(b), Some(skip)) = (b, skip_b) {
            prop_assert_eq!(received_since(&s, b, skip), &want_b[..]);
        }
    }
}

/// The property test's reference, checked by hand on one stream, so that
/// a mistake in it cannot make the property vacuous.
#[test]
fn the_slow_path_reference_gives_what_the_protocol_says() {
    let stream = b"hi\nSERVER x\na\rb\r\n0123456789abc\nnot read";
    let (to_b, to_a) = expected(stream, true, true, 12);
    assert_eq!(to_b, b"hi\nSERVER50002>>> Partner 50001 left\n");
    assert_eq!(
        String::from_utf8(to_a).unwrap(),
        "SERVER50001>>> Refused: chat lines may not begin with SERVER\n\
         SERVER50001>>> Refused: chat lines may not hold a carriage return\n\
         SERVER50001>>> Line too long (limit 12 bytes); closing\n"
    );
    let (to_b, to_a) = expected(b"a\nCLIENT>>> TERMINATE\nb\n", false, true, 24);
    assert_eq!(to_b, b"a\nSERVER50002>>> Partner 50001 left\n");
    assert_eq!(to_a, b"SERVER50001>>> Bye\n");
}

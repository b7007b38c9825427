//! The relay's rules, driven in-process: a fake clock, a seeded core, and
//! simulated peers that read and write in chosen chunk sizes
//! ([`crate::sim`]). Each test says which rule it pins. F1, F2 and F3 are
//! the faults that once needed the real binary and `/proc` to be seen.

use std::time::Duration;

use super::{Limits, Role};
use crate::core::{PortState, Timeouts};
use crate::output::{OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER};
use crate::sim::{PeerId, Seen, Sim};

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

/// A reset of a partner that stopped reading, while the sender is paused
/// on its queue: the sender is told, no longer paused, and its next lines
/// earn "not delivered" instead of waiting.
#[test]
fn a_reset_of_the_partner_a_sender_waits_on_tells_and_releases_the_sender() {
    let mut s = sim();
    let (a, b) = s.pair();
    let skip = s.peer(a).received.len();
    s.peer_mut(b).window_cap = 1000;
    s.send(a, &numbered(0, 2 * OUTPUT_HIGH_WATER / 1000, 1000));
    s.settle();
    assert!(!s.peer(a).unread.is_empty(), "A is held back");
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
    let (a, b) = s.pair();
    let skip = s.peer(b).received.len();
    s.peer_mut(b).window_cap = 1000;
    let stream = numbered(0, 2 * OUTPUT_HIGH_WATER / 1000, 1000);
    s.send(a, &stream);
    s.settle();
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

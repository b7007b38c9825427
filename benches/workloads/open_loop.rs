//! Open-loop latency: messages leave at a fixed rate whatever happens to
//! earlier ones, and each message's latency is taken from the moment it was
//! *meant* to be sent. A system that stalls therefore shows every message the
//! stall delayed, not just the one that was in flight: no coordinated
//! omission.
//!
//! One schedule drives any number of pairs: message `k` is due at
//! `start + k / rate` and goes from A to B on pair `k mod pairs`, so the rate
//! is the aggregate over all pairs. One thread sends for every pair; each
//! pair's B has a thread of its own that reads.
//!
//! The latency is one way, A to B through the system. The sender sleeps
//! between sends rather than spinning (on a two-core machine a spinning
//! sender would take a core from the system under test); the OS's wake-up
//! slack, some tens of microseconds, is therefore in every sample, the same
//! for every system, and visible in the `direct` row. A receiver takes the
//! time once per `read`: every message that read brought arrived then. The
//! schedule starts once every thread is running, so starting fifty threads
//! on a busy machine does not show as latency.

use std::io;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{latency_histogram, message_of};
use crate::peers::{Endpoint, Pair, invalid};

/// Bytes per message, newline or prefix included.
pub const LINE_LEN: usize = 64;

/// Hex digits of the sequence number at the start of each message's text.
const SEQ_DIGITS: usize = 16;

/// What one run of the schedule gave.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Messages sent and received.
    pub messages: u64,
    /// The time the system took to deliver them, from the first to the
    /// last: the schedule's own span, plus how far the system fell behind
    /// meanwhile. A system that keeps up delivers the messages as they were
    /// sent, whatever its latency; one that falls behind takes longer, and
    /// its latency grows through the run. The growth is taken from the
    /// median latency of the schedule's first tenth to that of its last
    /// tenth (which lie 90 % of the span apart, hence the `/ 0.9`), so that
    /// one late message at either end does not count as falling behind.
    pub delivery: Duration,
}

/// The latencies of the first and the last tenth of a schedule.
struct Ends {
    first: Histogram<u64>,
    last: Histogram<u64>,
}

impl Ends {
    fn new() -> Ends {
        // Two significant digits are plenty for a median, and keep the
        // fifty receivers' histograms small.
        let coarse = || Histogram::new_with_bounds(1, 100_000_000_000, 2).expect("valid bounds");
        Ends {
            first: coarse(),
            last: coarse(),
        }
    }
}

/// Sends `rate` messages per second, all pairs together, for `duration`,
/// and records, for each message received, the time since it was meant to
/// be sent (ns).
pub fn run(
    pairs: &mut [Pair],
    rate: f64,
    duration: Duration,
    histogram: &mut Histogram<u64>,
) -> io::Result<Run> {
    let total = ((rate * duration.as_secs_f64()).round() as u64).max(20);
    let count = pairs.len() as u64;
    let (senders, receivers): (Vec<&mut Endpoint>, Vec<&mut Endpoint>) =
        pairs.iter_mut().map(|p| (&mut p.a, &mut p.b)).unzip();
    // Every thread waits at `ready`; then this one fixes the start and lets
    // them go at `go`.
    let ready = Barrier::new(receivers.len() + 2);
    let go = Barrier::new(receivers.len() + 2);
    let start = OnceLock::new();
    let (ready, go, start) = (&ready, &go, &start);
    let schedule = move || {
        ready.wait();
        go.wait();
        Schedule {
            start: *start.get().expect("set before go"),
            rate,
            pairs: count,
        }
    };
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || send_on_schedule(senders, total, schedule()));
        let readers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(p, b)| scope.spawn(move || receive(b, p as u64, total, schedule())))
            .collect();
        ready.wait();
        let _ = start.set(Instant::now() + Duration::from_millis(1));
        go.wait();
        let mut ends = Ends::new();
        let mut result = Ok(());
        for reader in readers {
            match reader.join().expect("receiver thread panicked") {
                Ok((received, their_ends)) => {
                    histogram.add(&received).expect("same histogram bounds");
                    ends.first.add(&their_ends.first).expect("same bounds");
                    ends.last.add(&their_ends.last).expect("same bounds");
                }
                Err(e) => result = result.and(Err(e)),
            }
        }
        let sent = sender.join().expect("sender thread panicked");
        result.and(sent)?;
        let span = (total - 1) as f64 / rate;
        let growth =
            ends.last.value_at_quantile(0.5) as f64 - ends.first.value_at_quantile(0.5) as f64;
        Ok(Run {
            messages: total,
            delivery: Duration::from_secs_f64((span + growth / 0.9 / 1e9).max(1e-9)),
        })
    })
}

/// When each message is meant to leave, and on which pair.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: f64,
    pairs: u64,
}

impl Schedule {
    fn intended(self, seq: u64) -> Instant {
        self.start + Duration::from_secs_f64(seq as f64 / self.rate)
    }
}

/// Sends messages `0..total` on `schedule`. Whatever is due when the sender
/// wakes goes out at once, one `write` per pair, so a sender that woke late
/// catches up; the lateness still counts in those messages' latency.
fn send_on_schedule(mut to: Vec<&mut Endpoint>, total: u64, schedule: Schedule) -> io::Result<()> {
    let wire = to.first().map(|a| a.wire()).unwrap_or_default();
    let (template, text_at) = message_of(wire, LINE_LEN, &[b'0'; SEQ_DIGITS]);
    let mut batches: Vec<Vec<u8>> = to.iter().map(|_| Vec::new()).collect();
    let mut sent = 0;
    while sent < total {
        let now = Instant::now();
        let next = schedule.intended(sent);
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        while sent < total && schedule.intended(sent) <= now {
            let batch = &mut batches[(sent % schedule.pairs) as usize];
            let at = batch.len() + text_at;
            batch.extend_from_slice(&template);
            write_hex(sent, &mut batch[at..at + SEQ_DIGITS]);
            sent += 1;
        }
        for (a, batch) in to.iter_mut().zip(&mut batches) {
            if !batch.is_empty() {
                a.write_all(batch)?;
                batch.clear();
            }
        }
    }
    Ok(())
}

/// Reads pair `pair`'s share of messages `0..total` on B: they must come in
/// order. Returns their latencies, all of them and those of the schedule's
/// first and last tenths.
fn receive(
    b: &mut Endpoint,
    pair: u64,
    total: u64,
    schedule: Schedule,
) -> io::Result<(Histogram<u64>, Ends)> {
    let mut histogram = latency_histogram();
    let mut ends = Ends::new();
    let (first_tenth, last_tenth) = (total / 10, total - total / 10);
    let mut expected = pair;
    while expected < total {
        b.fill()?;
        let arrived = Instant::now();
        while let Some((_, text)) = b.buffered()? {
            let seq = text
                .get(..SEQ_DIGITS)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u64::from_str_radix(digits, 16).ok());
            if seq != Some(expected) {
                return Err(invalid(format!(
                    "pair {pair}: expected message {expected}, got {seq:?}"
                )));
            }
            let latency = arrived.saturating_duration_since(schedule.intended(expected));
            let ns = latency.as_nanos() as u64;
            histogram.saturating_record(ns);
            if expected < first_tenth {
                ends.first.saturating_record(ns);
            } else if expected >= last_tenth {
                ends.last.saturating_record(ns);
            }
            expected += schedule.pairs;
        }
    }
    Ok((histogram, ends))
}

/// Writes `value` as `out.len()` lowercase hex digits, zero-padded.
fn write_hex(mut value: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

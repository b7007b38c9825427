//! Open-loop latency: A sends at a fixed rate whatever happens to earlier
//! lines, and each line's latency is taken from the moment it was *meant* to
//! be sent. A system that stalls therefore shows every line the stall
//! delayed, not just the one that was in flight: no coordinated omission.
//!
//! The latency is one way, A to B through the system. The sender sleeps
//! between sends rather than spinning (on a two-core machine a spinning
//! sender would take a core from the system under test); the OS's wake-up
//! slack, some tens of microseconds, is therefore in every sample, the same
//! for every system, and visible in the `direct` row.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::peers::{Endpoint, Pair, invalid};

/// Bytes per line, newline included.
pub const LINE_LEN: usize = 64;

/// Hex digits of the sequence number at the start of each line.
const SEQ_DIGITS: usize = 16;

/// Sends `rate` lines per second for `duration` from A and records, for each
/// line B receives, the time since it was meant to be sent (ns).
pub fn run(
    pair: &mut Pair,
    rate: f64,
    duration: Duration,
    histogram: &mut Histogram<u64>,
) -> io::Result<()> {
    let total = ((rate * duration.as_secs_f64()).round() as u64).max(1);
    let start = Instant::now() + Duration::from_millis(1);
    let schedule = Schedule { start, rate };
    let Pair { a, b } = pair;
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || send_on_schedule(a, total, schedule));
        let received = (0..total).try_for_each(|expected| {
            let line = b.read_line()?;
            let arrived = Instant::now();
            let seq = std::str::from_utf8(&line[..SEQ_DIGITS.min(line.len())])
                .ok()
                .and_then(|digits| u64::from_str_radix(digits, 16).ok());
            if seq != Some(expected) {
                return Err(invalid(format!("expected line {expected}, got {seq:?}")));
            }
            let latency = arrived.saturating_duration_since(schedule.intended(expected));
            histogram.saturating_record(latency.as_nanos() as u64);
            Ok(())
        });
        let sent = sender.join().expect("sender thread panicked");
        received.and(sent)
    })
}

/// When each line is meant to leave.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    fn intended(self, seq: u64) -> Instant {
        self.start + Duration::from_secs_f64(seq as f64 / self.rate)
    }
}

/// Sends lines `0..total` on `schedule`. Whatever is due when the sender
/// wakes goes out in one `write`, so a sender that woke late catches up at
/// once; the lateness still counts in those lines' latency.
fn send_on_schedule(a: &mut Endpoint, total: u64, schedule: Schedule) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut sent = 0;
    while sent < total {
        let now = Instant::now();
        let next = schedule.intended(sent);
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        batch.clear();
        while sent < total && schedule.intended(sent) <= now {
            write!(batch, "{sent:0width$x}", width = SEQ_DIGITS)?;
            batch.resize(batch.len() + LINE_LEN - SEQ_DIGITS - 1, b'x');
            batch.push(b'\n');
            sent += 1;
        }
        a.write_all(&batch)?;
    }
    Ok(())
}

/// Where a system's p99 reaches the threshold in a rate sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossing {
    /// Between two measured rates, at about this rate.
    At(f64),
    /// Already at or above the threshold at this, the lowest rate.
    Below(f64),
    /// Still below the threshold at this, the highest rate measured.
    Above(f64),
}

/// Finds where p99 crosses `threshold_ns` in a sweep of `(rate, p99 ns)`
/// points in increasing rate. The crossing is taken after the last point
/// below the threshold (so one noisy point lower down does not count) and
/// interpolated on log scales between that point and the next.
pub fn crossing(points: &[(f64, f64)], threshold_ns: f64) -> Option<Crossing> {
    let last_below = points.iter().rposition(|&(_, p99)| p99 < threshold_ns);
    match last_below {
        None => points.first().map(|&(rate, _)| Crossing::Below(rate)),
        Some(i) if i + 1 == points.len() => Some(Crossing::Above(points[i].0)),
        Some(i) => {
            let ((r1, p1), (r2, p2)) = (points[i], points[i + 1]);
            let t = (threshold_ns.ln() - p1.ln()) / (p2.ln() - p1.ln());
            Some(Crossing::At((r1.ln() + t * (r2.ln() - r1.ln())).exp()))
        }
    }
}

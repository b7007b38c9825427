//! Ping-pong beside a stream: one pair streams flat out (a writer that never
//! waits and a reader that keeps pace, as in [`streaming`](super::streaming)),
//! while a second pair ping-pongs 64-byte messages at a fixed pace. A relay
//! that served the busy pair until it ran out of work, which it never does,
//! would leave the pinger's messages unread, and its round trips would show
//! it: this is the relay bench's form of the reliability issue's livelock
//! test.
//!
//! The pinger is closed-loop: it sends a ping on every tick of its pace, or
//! at once if the previous answer came back late, and times each round trip
//! from its own send. A stall therefore shows as one long round trip and as
//! fewer pings than planned, both reported.

use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::message_of;
use super::streaming::{self, Throughput};
use crate::peers::{Pair, invalid};

/// Bytes per ping, newline or prefix included.
pub const PING_LEN: usize = 64;

/// Untimed pings before the timed ones.
const WARMUP_PINGS: u64 = 20;

/// What one run gave, beside the round trips themselves.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The stream's rate while the pinger pinged.
    pub stream: Throughput,
    /// Round trips timed.
    pub pings: u64,
    /// How long the timed pings took, against `pings × pace` planned.
    pub elapsed: Duration,
}

/// Streams on `streamers` and, once `warmup` has passed, pings on `pinger`
/// every `pace` for `duration`, recording each round trip (ns).
pub fn run(
    pinger: &mut Pair,
    streamers: &mut [Pair],
    warmup: Duration,
    duration: Duration,
    pace: Duration,
    histogram: &mut Histogram<u64>,
) -> io::Result<Outcome> {
    let pings = (duration.as_nanos() / pace.as_nanos()) as u64;
    let (stream, elapsed) = streaming::run_during(streamers, warmup, || {
        ping_paced(pinger, WARMUP_PINGS + pings, pace, histogram)
    })?;
    Ok(Outcome {
        stream,
        pings,
        elapsed,
    })
}

/// Sends `count` pings, one per `pace`, waiting for each echo; records all
/// but the first [`WARMUP_PINGS`]. Returns the time the timed ones took.
fn ping_paced(
    pair: &mut Pair,
    count: u64,
    pace: Duration,
    histogram: &mut Histogram<u64>,
) -> io::Result<Duration> {
    let (ping, _) = message_of(pair.a.wire(), PING_LEN, b"ping");
    let Pair { a, b } = pair;
    std::thread::scope(|scope| {
        let echo = scope.spawn(move || (0..count).try_for_each(|_| b.echo()));
        let start = Instant::now();
        let mut timed_from = start;
        let result = (0..count).try_for_each(|seq| {
            let due = start + pace * seq as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if seq == WARMUP_PINGS {
                timed_from = Instant::now();
            }
            let sent = Instant::now();
            a.write_all(&ping)?;
            let answer = a.read_frame()?;
            let rtt = sent.elapsed();
            if answer != ping {
                let shown = String::from_utf8_lossy(&answer[..answer.len().min(80)]);
                return Err(invalid(format!("the echo is not the ping: {shown:?}")));
            }
            if seq >= WARMUP_PINGS {
                histogram.saturating_record(rtt.as_nanos() as u64);
            }
            Ok(())
        });
        let echoed = echo.join().expect("echo thread panicked");
        result.and(echoed).map(|()| timed_from.elapsed())
    })
}

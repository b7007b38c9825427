//! Ping-pong: A sends a message, B echoes it, A times the round trip. One
//! message is in flight at a time, so this is the system's latency with no
//! load.

use std::io;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::message_of;
use crate::peers::{Pair, invalid};

/// Runs `warmup` untimed round trips, then `samples` timed ones of messages
/// framed in `len` bytes, recording each round trip (ns) in `histogram`.
pub fn run(
    pair: &mut Pair,
    len: usize,
    warmup: usize,
    samples: usize,
    histogram: &mut Histogram<u64>,
) -> io::Result<()> {
    let (ping, _) = message_of(pair.a.wire(), len, b"ping");
    let Pair { a, b } = pair;
    let rounds = warmup + samples;
    std::thread::scope(|scope| {
        let echo = scope.spawn(move || (0..rounds).try_for_each(|_| b.echo()));
        let result = (0..rounds).try_for_each(|round| {
            let sent = Instant::now();
            a.write_all(&ping)?;
            let answer = a.read_frame()?;
            let rtt = sent.elapsed();
            if answer.len() != ping.len() {
                let shown = String::from_utf8_lossy(&answer[..answer.len().min(80)]);
                return Err(invalid(format!(
                    "sent a {}-byte message, got back {shown:?}",
                    ping.len()
                )));
            }
            if round >= warmup {
                histogram.saturating_record(rtt.as_nanos() as u64);
            }
            Ok(())
        });
        let echoed = echo.join().expect("echo thread panicked");
        result.and(echoed)
    })
}

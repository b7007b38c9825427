//! Ping-pong: A sends a line, B echoes it, A times the round trip. One line
//! is in flight at a time, so this is the system's latency with no load.

use std::io;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::line_of;
use crate::peers::{Pair, invalid};

/// Runs `warmup` untimed round trips, then `samples` timed ones of
/// `line_len`-byte lines, recording each round trip (ns) in `histogram`.
pub fn run(
    pair: &mut Pair,
    line_len: usize,
    warmup: usize,
    samples: usize,
    histogram: &mut Histogram<u64>,
) -> io::Result<()> {
    let line = line_of(line_len, b"ping");
    let Pair { a, b } = pair;
    let rounds = warmup + samples;
    std::thread::scope(|scope| {
        let echo = scope.spawn(move || (0..rounds).try_for_each(|_| b.echo_line()));
        let result = (0..rounds).try_for_each(|round| {
            let sent = Instant::now();
            a.write_all(&line)?;
            let answer = a.read_line()?;
            let rtt = sent.elapsed();
            if answer.len() != line.len() {
                let shown = String::from_utf8_lossy(&answer[..answer.len().min(80)]);
                return Err(invalid(format!(
                    "sent a {}-byte line, got back {shown:?}",
                    line.len()
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

//! The client workloads. Each one drives a [`Pair`](crate::peers::Pair) (or
//! a server process) and knows nothing about which system is behind it.

pub mod footprint;
pub mod open_loop;
pub mod ping_pong;
pub mod scale;
pub mod setup;
pub mod streaming;

use hdrhistogram::Histogram;

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant
/// digits (every recorded value is kept within 0.1 %).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A chat line of exactly `len` bytes, newline included: `prefix`, then
/// filler letters, then `\n`.
pub fn line_of(len: usize, prefix: &[u8]) -> Vec<u8> {
    assert!(
        len > prefix.len(),
        "a line needs room for its prefix and newline"
    );
    let mut line = prefix.to_vec();
    line.resize(len - 1, b'x');
    line.push(b'\n');
    line
}

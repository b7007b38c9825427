//! The client workloads. Each one drives a [`Pair`](crate::peers::Pair) (or
//! a server process) and knows nothing about which system is behind it.

pub mod beside_stream;
pub mod footprint;
pub mod newline;
pub mod open_loop;
pub mod ping_pong;
pub mod scale;
pub mod setup;
pub mod streaming;

use hdrhistogram::Histogram;
use portal_chat::wire::{Codec, Wire};

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant
/// digits (every recorded value is kept within 0.1 %).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A chat message whose frame on `wire` is exactly `len` bytes (a line's
/// newline, or a length prefix, included): `prefix`, then filler letters.
/// Returns the frame and where its text starts in it.
///
/// # Panics
///
/// If no text gives a frame of that length (a length-prefixed frame of 129
/// bytes, say, since a 128-byte text needs a 2-byte prefix).
pub fn message_of(wire: Wire, len: usize, prefix: &[u8]) -> (Vec<u8>, usize) {
    let mut text = prefix.to_vec();
    text.resize(len, b'x');
    let mut frame = Vec::new();
    while text.len() > prefix.len() {
        text.pop();
        frame.clear();
        wire.encode(&text, &mut frame);
        if frame.len() <= len {
            break;
        }
    }
    assert_eq!(frame.len(), len, "no {wire} frame of {len} bytes");
    let text_at = frame.len() - text.len() - usize::from(wire == Wire::Line);
    (frame, text_at)
}

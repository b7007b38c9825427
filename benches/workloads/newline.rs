//! The newline search, old against new, on the same bytes in this process:
//! the hand-written SWAR loop the line framing used up to commit `ed29771`
//! (`src/framing.rs`, copied below from the project's own history) against
//! the `memchr` crate that `src/wire/line.rs` uses now.
//!
//! The input is what the relay's fast path sees in streaming: a buffer of
//! 64 KiB of complete lines (of 32 to 1024 bytes). Four scans walk it
//! line by line, each as one of the two versions does:
//!
//! - *find the newline*: the bare search, once per line: `find_newline`
//!   (SWAR) against `memchr(b'\n', …)`, what `LineCodec::decode` calls;
//! - *the run scan*: the whole fast-path loop over the buffer: ed29771's
//!   `take_run` (a SWAR search for `\n`, then a look at the byte before it
//!   for a `\r`) against today's `LineCodec::run_len` (a `memchr` for
//!   `\n` per line, and one for `\r` per 4 KiB stretch ahead, since a bare
//!   `\r` anywhere now disqualifies a line).

use std::hint::black_box;
use std::time::{Duration, Instant};

use portal_chat::wire::{Codec, LineCodec};

/// Bytes in the scanned buffer: one read's worth for the relay.
const BUFFER: usize = 64 * 1024;

/// A way of walking a buffer of lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// ed29771's `find_newline`, once per line.
    SwarFind,
    /// `memchr`, once per line.
    MemchrFind,
    /// ed29771's `take_run` loop over the whole buffer.
    SwarRun,
    /// Today's `LineCodec::run_len` over the whole buffer.
    MemchrRun,
}

impl Scan {
    /// Every scan, in table order.
    pub const ALL: [Scan; 4] = [
        Scan::SwarFind,
        Scan::MemchrFind,
        Scan::SwarRun,
        Scan::MemchrRun,
    ];

    /// The row name.
    pub fn name(self) -> &'static str {
        match self {
            Scan::SwarFind => "find the newline: SWAR loop (ed29771)",
            Scan::MemchrFind => "find the newline: memchr (now)",
            Scan::SwarRun => "run scan: take_run with SWAR (ed29771)",
            Scan::MemchrRun => "run scan: LineCodec::run_len, memchr (now)",
        }
    }

    /// How many bytes of whole lines at the start of `buf` the scan walks
    /// over: all of them, for a buffer of plain lines.
    fn covered(self, buf: &[u8]) -> usize {
        match self {
            Scan::SwarFind => line_by_line(buf, find_newline),
            Scan::MemchrFind => line_by_line(buf, |b| memchr::memchr(b'\n', b)),
            Scan::SwarRun => old_run_len(buf, usize::MAX, usize::MAX, &mut |_| true),
            Scan::MemchrRun => LineCodec.run_len(buf, usize::MAX, usize::MAX, &mut |_| true),
        }
    }
}

/// `BUFFER` bytes of `line_len`-byte lines (newline included).
pub fn buffer_of_lines(line_len: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_len - 1];
    line.push(b'\n');
    line.repeat(BUFFER / line_len)
}

/// Scans `buf` with `scan` over and over for about `window`; returns the
/// nanoseconds per line.
pub fn time_scan(scan: Scan, buf: &[u8], line_len: usize, window: Duration) -> f64 {
    let lines = buf.len() / line_len;
    // Every scan must walk the whole buffer, or it measures something else.
    assert_eq!(
        scan.covered(buf),
        buf.len(),
        "{} stopped early",
        scan.name()
    );
    let started = Instant::now();
    let mut passes = 0u64;
    while started.elapsed() < window {
        for _ in 0..16 {
            black_box(scan.covered(black_box(buf)));
        }
        passes += 16;
    }
    started.elapsed().as_nanos() as f64 / (passes as f64 * lines as f64)
}

/// Walks `buf` line by line, finding each newline with `find`; returns
/// where the last complete line ends.
fn line_by_line(buf: &[u8], find: impl Fn(&[u8]) -> Option<usize>) -> usize {
    let mut at = 0;
    while let Some(newline) = find(&buf[at..]) {
        at += newline + 1;
    }
    at
}

/// ed29771's `LineBuffer::take_run`, as a function of the unread bytes: the
/// length of the run of plain lines at the start of `buf`. Two changes, so
/// that it differs from `LineCodec::run_len` in the search alone: the
/// original also moved the buffer's start (that is the caller's business
/// here, as it is `Inbox`'s for `run_len`), and it took `accept` as a
/// generic closure where `run_len` takes `&mut dyn FnMut`.
fn old_run_len(
    buf: &[u8],
    max_len: usize,
    budget: usize,
    accept: &mut dyn FnMut(&[u8]) -> bool,
) -> usize {
    let mut end = 0;
    while end < budget {
        let Some(newline) = find_newline(&buf[end..]) else {
            break;
        };
        let line = &buf[end..end + newline];
        if line.len() > max_len || line.last() == Some(&b'\r') || !accept(line) {
            break;
        }
        end += newline + 1;
    }
    end
}

/// ed29771's `find_newline`: the index of the first `\n` in `bytes`, eight
/// bytes at a time. XOR with eight copies of `\n` turns each newline into a
/// zero byte; `(w - 0x01..01) & !w & 0x80..80` then sets the top bit of
/// every zero byte (and maybe of a byte just above one, never below the
/// first), so the lowest flag is exact.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ NEWLINES;
        let zero_bytes = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero_bytes != 0 {
            return Some(offset + zero_bytes.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == b'\n').map(|i| offset + i)
}

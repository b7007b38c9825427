//! A connection's queued output, written as far as the socket takes it.
//!
//! A non-blocking `write` may take only part of what is offered. What is left
//! stays here, in order, until the socket reports `WRITABLE` again. The queue
//! is bounded by policy, not by this type: [`OutputBuffer::is_full`] tells the
//! event loop to stop reading from whoever feeds it (backpressure), and
//! [`OutputBuffer::has_room`] tells it when to start again. Two thresholds
//! instead of one keep a sender from being paused and resumed on every line.

use std::io::{self, Write};

/// Above this many queued bytes the sender is paused. Large enough for many
/// lines in flight, small enough that a never-reading client costs at most
/// this (plus one line) of memory.
pub const OUTPUT_HIGH_WATER: usize = 1024 * 1024;

/// Once a paused sender's partner has drained to this many queued bytes, the
/// sender is resumed.
pub const OUTPUT_LOW_WATER: usize = OUTPUT_HIGH_WATER / 2;

/// Bytes accepted for a client but not yet taken by its socket.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    bytes: Vec<u8>,
    /// How much of `bytes` the socket has already taken.
    written: usize,
}

impl OutputBuffer {
    /// An empty queue. It allocates nothing until output is queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues one line and its `\n`.
    pub fn push_line(&mut self, line: &[u8]) {
        self.bytes.reserve(line.len() + 1);
        self.bytes.extend_from_slice(line);
        self.bytes.push(b'\n');
    }

    /// Queues bytes that are already complete lines, each ending in `\n`.
    pub fn push_lines(&mut self, lines: &[u8]) {
        self.bytes.extend_from_slice(lines);
    }

    /// Bytes still waiting to be written.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the sender feeding this queue must be paused.
    pub fn is_full(&self) -> bool {
        self.len() >= OUTPUT_HIGH_WATER
    }

    /// Whether a paused sender may be resumed.
    pub fn has_room(&self) -> bool {
        self.len() <= OUTPUT_LOW_WATER
    }

    /// Writes until the queue is empty, the writer would block, or `budget`
    /// bytes have been written in this call.
    ///
    /// `WouldBlock` is not an error here: it is [`Flushed::WouldBlock`], and
    /// the rest waits for `WRITABLE`. All queued lines go out in as few
    /// `write` calls as the socket allows; that batching is most of the
    /// relay's throughput.
    pub fn write_to(&mut self, writer: &mut impl Write, budget: usize) -> io::Result<Flushed> {
        let mut outcome = Flushed::Drained;
        let mut spent = 0;
        while self.written < self.bytes.len() {
            if spent >= budget {
                outcome = Flushed::BudgetSpent;
                break;
            }
            let end = self
                .bytes
                .len()
                .min(self.written.saturating_add(budget - spent));
            match writer.write(&self.bytes[self.written..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    spent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    outcome = Flushed::WouldBlock;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.bytes.len() {
            // Reuse the allocation while a conversation is busy, but hand
            // back anything large once the queue empties.
            self.bytes.clear();
            self.written = 0;
            if self.bytes.capacity() > 64 * 1024 {
                self.bytes = Vec::new();
            }
            return Ok(Flushed::Drained);
        }
        if self.written > self.bytes.len() / 2 {
            // Most of the queue is written: drop that part so a long-lived
            // busy queue does not grow without end.
            self.bytes.drain(..self.written);
            self.written = 0;
        }
        Ok(outcome)
    }
}

/// How far [`OutputBuffer::write_to`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    Drained,
    /// The socket is full: the rest waits for `WRITABLE`.
    WouldBlock,
    /// The budget ran out while the socket still took bytes: the rest waits
    /// for the connection's next turn, which no readiness event announces.
    BudgetSpent,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket stand-in that takes at most `take` bytes per call, then
    /// reports `WouldBlock` once its `budget` is spent.
    struct Trickle {
        taken: Vec<u8>,
        take: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.take).min(self.budget);
            self.taken.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_finish_later() {
        let mut out = OutputBuffer::new();
        out.push_line(b"alpha");
        out.push_line(b"beta");
        let mut sock = Trickle {
            taken: Vec::new(),
            take: 3,
            budget: 4,
        };
        assert_eq!(
            out.write_to(&mut sock, usize::MAX).unwrap(),
            Flushed::WouldBlock
        );
        assert_eq!(out.len(), 11 - 4);
        out.push_line(b"gamma");
        sock.budget = usize::MAX;
        assert_eq!(
            out.write_to(&mut sock, usize::MAX).unwrap(),
            Flushed::Drained
        );
        assert_eq!(sock.taken, b"alpha\nbeta\ngamma\n");
        assert!(out.is_empty());
    }

    #[test]
    fn backpressure_thresholds() {
        let mut out = OutputBuffer::new();
        let line = vec![b'x'; 1023];
        for _ in 0..(OUTPUT_HIGH_WATER / 1024 - 1) {
            out.push_line(&line);
        }
        assert!(!out.is_full(), "one line short of the high-water mark");
        out.push_line(&line);
        assert!(out.is_full());
        assert!(!out.has_room());
        // Drain down to just above the low-water mark: still no room.
        let mut sock = Trickle {
            taken: Vec::new(),
            take: usize::MAX,
            budget: OUTPUT_HIGH_WATER - OUTPUT_LOW_WATER - 1,
        };
        assert_eq!(
            out.write_to(&mut sock, usize::MAX).unwrap(),
            Flushed::WouldBlock
        );
        assert!(!out.is_full());
        assert!(!out.has_room(), "between the marks the sender stays paused");
        sock.budget = 1;
        assert_eq!(
            out.write_to(&mut sock, usize::MAX).unwrap(),
            Flushed::WouldBlock
        );
        assert!(out.has_room());
    }

    #[test]
    fn a_write_stops_at_its_budget_and_the_rest_stays_in_order() {
        let mut out = OutputBuffer::new();
        out.push_line(b"alpha");
        out.push_line(b"beta");
        let mut sock = Trickle {
            taken: Vec::new(),
            take: 4,
            budget: usize::MAX,
        };
        assert_eq!(out.write_to(&mut sock, 7).unwrap(), Flushed::BudgetSpent);
        assert_eq!(sock.taken, b"alpha\nb", "no write goes past the budget");
        assert_eq!(out.write_to(&mut sock, 100).unwrap(), Flushed::Drained);
        assert_eq!(sock.taken, b"alpha\nbeta\n");
    }

    #[test]
    fn write_zero_is_an_error() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = OutputBuffer::new();
        out.push_line(b"x");
        assert!(out.write_to(&mut Zero, usize::MAX).is_err());
    }
}

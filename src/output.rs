//! A connection's queued output, written as far as the socket takes it.
//!
//! A non-blocking `write` may take only part of what is offered. What is left
//! stays here, in order, until the socket reports `WRITABLE` again. The queue
//! is bounded by policy, not by this type: [`OutputBuffer::is_full`] tells the
//! event loop to stop reading from whoever feeds it (backpressure), and
//! [`OutputBuffer::has_room`] tells it when to start again. Two thresholds
//! instead of one keep a sender from being paused and resumed on every line.

use crate::wire::Codec;

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

    /// Queues one message, framed by `codec`.
    pub fn push_message(&mut self, codec: &impl Codec, text: &[u8]) {
        codec.encode(text, &mut self.bytes);
    }

    /// Queues bytes that are already complete, framed messages.
    pub fn push_encoded(&mut self, messages: &[u8]) {
        self.bytes.extend_from_slice(messages);
    }

    /// The first bytes waiting to be written, at most `limit` of them.
    pub fn pending(&self, limit: usize) -> &[u8] {
        let end = self.bytes.len().min(self.written.saturating_add(limit));
        &self.bytes[self.written..end]
    }

    /// The socket took the first `n` bytes of [`pending`](Self::pending).
    pub fn consume(&mut self, n: usize) {
        self.written += n;
        debug_assert!(self.written <= self.bytes.len());
        if self.written == self.bytes.len() {
            // Reuse the allocation while a conversation is busy, but hand
            // back anything large once the queue empties.
            self.bytes.clear();
            self.written = 0;
            if self.bytes.capacity() > 64 * 1024 {
                self.bytes = Vec::new();
            }
        } else if self.written > self.bytes.len() / 2 {
            // Most of the queue is written: drop that part so a long-lived
            // busy queue does not grow without end.
            self.bytes.drain(..self.written);
            self.written = 0;
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn partial_writes_keep_order_and_finish_later() {
        let mut out = OutputBuffer::new();
        out.push_message(&Wire::Line, b"alpha");
        out.push_message(&Wire::Line, b"beta");
        assert_eq!(out.pending(4), b"alph");
        out.consume(4);
        assert_eq!(out.len(), 11 - 4);
        out.push_message(&Wire::Line, b"gamma");
        assert_eq!(out.pending(usize::MAX), b"a\nbeta\ngamma\n");
        out.consume(3);
        out.consume(out.len());
        assert!(out.is_empty());
        assert_eq!(out.pending(usize::MAX), b"");
    }

    #[test]
    fn backpressure_thresholds() {
        let mut out = OutputBuffer::new();
        let line = vec![b'x'; 1023];
        for _ in 0..(OUTPUT_HIGH_WATER / 1024 - 1) {
            out.push_message(&Wire::Line, &line);
        }
        assert!(!out.is_full(), "one line short of the high-water mark");
        out.push_message(&Wire::Line, &line);
        assert!(out.is_full());
        assert!(!out.has_room());
        // Drain down to just above the low-water mark: still no room.
        out.consume(OUTPUT_HIGH_WATER - OUTPUT_LOW_WATER - 1);
        assert!(!out.is_full());
        assert!(!out.has_room(), "between the marks the sender stays paused");
        out.consume(1);
        assert!(out.has_room());
    }

    #[test]
    fn a_queue_that_drains_hands_back_a_large_allocation() {
        let mut out = OutputBuffer::new();
        out.push_encoded(&vec![b'x'; 200 * 1024]);
        out.consume(out.len());
        assert_eq!(out.bytes.capacity(), 0);
    }
}

//! Line framing on plain bytes: no sockets, so it can be tested and fuzzed alone.
//!
//! A client's bytes arrive in arbitrary pieces. [`LineBuffer`] collects them and
//! hands back one complete line at a time; an incomplete line is simply "not yet"
//! (`Ok(None)`), an expected condition rather than an error. A line that cannot
//! fit the limit is an error, found as soon as the buffered bytes prove it, so a
//! client cannot make the server hold more than one limit's worth of a line.

use std::ops::Range;

/// The line grew past the limit the caller gave: the connection must be ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Bytes received from one client that have not yet been handled as lines.
#[derive(Debug, Default)]
pub struct LineBuffer {
    bytes: Vec<u8>,
    /// Where the first unconsumed byte is. Consumed lines are not removed one by
    /// one (that would move the tail on every line); the buffer is compacted
    /// only when new bytes are appended.
    start: usize,
}

impl LineBuffer {
    /// An empty buffer. It allocates nothing until bytes arrive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start == self.bytes.len() {
            // Everything was consumed: start over without moving anything.
            self.bytes.clear();
            self.start = 0;
        } else if self.start > 0 {
            // Move the partial line to the front, once per read, not per line.
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Number of bytes held that are not yet consumed.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Releases the memory of an empty buffer, so an idle connection costs little.
    pub fn shrink_if_empty(&mut self) {
        if self.pending() == 0 && self.bytes.capacity() > 0 {
            self.bytes = Vec::new();
            self.start = 0;
        }
    }

    /// Finds the next complete line and returns its byte range (without the
    /// `\n` and without a `\r` right before it), consuming it.
    ///
    /// `max_len` is the longest line content allowed. Returning a range rather
    /// than a slice lets the caller keep the buffer borrowed only briefly.
    pub fn next_line(&mut self, max_len: usize) -> Result<Option<Range<usize>>, LineTooLong> {
        let unread = &self.bytes[self.start..];
        match find_newline(unread) {
            Some(newline) => {
                let begin = self.start;
                let mut end = begin + newline;
                if end > begin && self.bytes[end - 1] == b'\r' {
                    end -= 1;
                }
                if end - begin > max_len {
                    return Err(LineTooLong);
                }
                self.start = begin + newline + 1;
                Ok(Some(begin..end))
            }
            // Without a newline the line can still end in "\r\n", so it only
            // proves too long once it holds more than max_len + 1 bytes.
            None if unread.len() > max_len.saturating_add(1) => Err(LineTooLong),
            None => Ok(None),
        }
    }

    /// Consumes a run of complete lines that can be passed on byte for byte,
    /// and returns its range, newlines included; `None` if the next line
    /// does not qualify or is not complete.
    ///
    /// A line qualifies if it ends in a bare `\n` (a `\r` before it would
    /// have to be dropped), is at most `max_len` bytes long and `accept`s
    /// it. The run ends before the first line that does not qualify, which
    /// [`next_line`](Self::next_line) then handles, or as soon as it holds
    /// `budget` bytes or more.
    pub fn take_run(
        &mut self,
        max_len: usize,
        budget: usize,
        mut accept: impl FnMut(&[u8]) -> bool,
    ) -> Option<Range<usize>> {
        let begin = self.start;
        let mut end = begin;
        while end - begin < budget {
            let Some(newline) = find_newline(&self.bytes[end..]) else {
                break;
            };
            let line = &self.bytes[end..end + newline];
            if line.len() > max_len || line.last() == Some(&b'\r') || !accept(line) {
                break;
            }
            end += newline + 1;
        }
        if end == begin {
            return None;
        }
        self.start = end;
        Some(begin..end)
    }

    /// Takes whatever is left as a final, unterminated line (used when the
    /// client has closed its side: its last words are delivered, not lost).
    pub fn take_rest(&mut self) -> Option<Range<usize>> {
        if self.pending() == 0 {
            return None;
        }
        let mut range = self.start..self.bytes.len();
        if self.bytes[range.end - 1] == b'\r' {
            range.end -= 1;
        }
        self.start = self.bytes.len();
        Some(range)
    }

    /// The bytes of a range returned by [`next_line`](Self::next_line) or
    /// [`take_rest`](Self::take_rest).
    pub fn get(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range]
    }
}

/// The index of the first `\n` in `bytes`.
///
/// This is the relay's innermost loop: every byte of every chat line passes
/// through it. Looking at eight bytes at a time ("SWAR") makes it about three
/// times faster than a byte-by-byte search on 64-byte lines, without a
/// dependency. XOR with eight copies of `\n` turns each newline into a zero
/// byte; `(w - 0x01..01) & !w & 0x80..80` then sets the top bit of every zero
/// byte. It can also flag a byte just above a real zero (the subtraction
/// borrows), but never one below the first zero, so the lowest flag is exact.
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
            // Little-endian: the lowest bits are the first bytes in memory.
            return Some(offset + zero_bytes.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == b'\n').map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &mut LineBuffer, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = buf.next_line(max).unwrap() {
            out.push(buf.get(r).to_vec());
        }
        out
    }

    #[test]
    fn find_newline_agrees_with_a_plain_search() {
        // Every position in and around a word, with every byte value as the
        // filler, including the ones next to '\n' that trip naive tricks.
        for filler in 0..=255u8 {
            if filler == b'\n' {
                continue;
            }
            for len in 0..20 {
                assert_eq!(find_newline(&vec![filler; len]), None);
                for at in 0..len {
                    let mut bytes = vec![filler; len];
                    bytes[at] = b'\n';
                    assert_eq!(find_newline(&bytes), Some(at), "filler {filler}, at {at}");
                    bytes[len - 1] = b'\n'; // a second newline changes nothing
                    assert_eq!(find_newline(&bytes), Some(at), "filler {filler}, at {at}");
                }
            }
        }
    }

    #[test]
    fn splits_lines_arriving_in_pieces() {
        let mut buf = LineBuffer::new();
        buf.extend(b"hel");
        assert!(lines(&mut buf, 100).is_empty());
        buf.extend(b"lo\nwor");
        assert_eq!(lines(&mut buf, 100), vec![b"hello".to_vec()]);
        buf.extend(b"ld\r\n\n");
        assert_eq!(lines(&mut buf, 100), vec![b"world".to_vec(), b"".to_vec()]);
        assert_eq!(buf.pending(), 0);
    }

    #[test]
    fn keeps_bytes_exact_including_inner_cr_and_nul() {
        let mut buf = LineBuffer::new();
        buf.extend(b"a\rb\0\xff\r\r\n");
        assert_eq!(lines(&mut buf, 100), vec![b"a\rb\0\xff\r".to_vec()]);
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let mut buf = LineBuffer::new();
        buf.extend(b"abcd\r\n");
        assert_eq!(lines(&mut buf, 4), vec![b"abcd".to_vec()]);
    }

    #[test]
    fn terminated_line_over_the_limit_is_refused() {
        let mut buf = LineBuffer::new();
        buf.extend(b"abcde\n");
        assert_eq!(buf.next_line(4), Err(LineTooLong));
    }

    #[test]
    fn unterminated_line_is_refused_as_soon_as_it_cannot_fit() {
        let mut buf = LineBuffer::new();
        buf.extend(b"abcd\r");
        assert_eq!(buf.next_line(4), Ok(None), "may still end in \\r\\n");
        buf.extend(b"x");
        assert_eq!(buf.next_line(4), Err(LineTooLong));
    }

    #[test]
    fn run_stops_before_the_first_line_that_does_not_qualify() {
        let mut buf = LineBuffer::new();
        buf.extend(b"a\nbb\nskip\ncc\n");
        let run = buf
            .take_run(10, usize::MAX, |line| line != b"skip")
            .unwrap();
        assert_eq!(buf.get(run), b"a\nbb\n");
        assert_eq!(buf.take_run(10, usize::MAX, |line| line != b"skip"), None);
        assert_eq!(lines(&mut buf, 10), vec![b"skip".to_vec(), b"cc".to_vec()]);
    }

    /// A run of any lines, as bytes.
    fn run_of_any(buf: &mut LineBuffer, max: usize, budget: usize) -> Option<Vec<u8>> {
        let run = buf.take_run(max, budget, |_| true)?;
        Some(buf.get(run).to_vec())
    }

    #[test]
    fn run_stops_at_a_line_ending_in_crlf() {
        let mut buf = LineBuffer::new();
        buf.extend(b"ok\ncr\r\nok\n");
        assert_eq!(run_of_any(&mut buf, 4, usize::MAX), Some(b"ok\n".to_vec()));
        assert_eq!(run_of_any(&mut buf, 4, usize::MAX), None, "its \\r must go");
        assert_eq!(lines(&mut buf, 4), vec![b"cr".to_vec(), b"ok".to_vec()]);
    }

    #[test]
    fn run_stops_at_a_line_over_the_limit_and_at_an_incomplete_one() {
        let mut buf = LineBuffer::new();
        buf.extend(b"ok\ntoolong\nok\npart");
        assert_eq!(run_of_any(&mut buf, 4, usize::MAX), Some(b"ok\n".to_vec()));
        assert_eq!(run_of_any(&mut buf, 4, usize::MAX), None, "over the limit");
        assert_eq!(buf.next_line(4), Err(LineTooLong));
        buf.next_line(10).unwrap();
        assert_eq!(run_of_any(&mut buf, 4, usize::MAX), Some(b"ok\n".to_vec()));
        assert_eq!(run_of_any(&mut buf, 4, usize::MAX), None, "incomplete");
        assert_eq!(buf.pending(), 4);
    }

    #[test]
    fn run_ends_once_it_reaches_the_budget() {
        let mut buf = LineBuffer::new();
        buf.extend(b"aaa\nbbb\nccc\n");
        assert_eq!(run_of_any(&mut buf, 10, 5), Some(b"aaa\nbbb\n".to_vec()));
        assert_eq!(run_of_any(&mut buf, 10, 1), Some(b"ccc\n".to_vec()));
    }

    #[test]
    fn rest_is_taken_as_a_final_line() {
        let mut buf = LineBuffer::new();
        buf.extend(b"one\ntwo\r");
        assert_eq!(lines(&mut buf, 10), vec![b"one".to_vec()]);
        let rest = buf.take_rest().unwrap();
        assert_eq!(buf.get(rest), b"two");
        assert_eq!(buf.take_rest(), None);
    }

    #[test]
    fn compaction_keeps_the_partial_line() {
        let mut buf = LineBuffer::new();
        buf.extend(b"first\nsec");
        assert_eq!(lines(&mut buf, 10), vec![b"first".to_vec()]);
        buf.extend(b"ond\n");
        assert_eq!(lines(&mut buf, 10), vec![b"second".to_vec()]);
        buf.shrink_if_empty();
        assert_eq!(buf.pending(), 0);
    }
}

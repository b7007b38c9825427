//! Wire codecs: how messages are framed on a socket, on plain bytes.
//!
//! The protocol ([`crate::core`]) speaks in messages: a passcode, a chat
//! line, a notice. A *wire* is how those messages are cut out of a byte
//! stream and put back into one. This module holds the [`Codec`] trait, one
//! type per wire format, and [`Inbox`], a connection's received bytes with
//! the codec-agnostic bookkeeping (what is consumed, how far the search got).
//!
//! The wires, chosen per server with [`Wire`]:
//!
//! - [`LineCodec`] (`line`): text ending in `\n`, what `nc` speaks;
//! - [`DotnetCodec`] (`dotnet`): a 7-bit encoded length, then the text, what
//!   .NET's `BinaryWriter.Write(string)` sends, so the original C# clients
//!   can connect.
//!
//! Nothing here touches a socket, so every codec is tested and fuzzed alone.
//! An incomplete message is `Ok(None)`, an expected condition, not an error;
//! a message over the limit is [`DecodeError::TooLong`] as soon as the
//! buffered bytes (or a length prefix) prove it, so a client can never make
//! the server hold more than one limit's worth of a message.

mod dotnet;
mod line;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use dotnet::DotnetCodec;
pub use line::LineCodec;

/// One complete message found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the message's text is, within the buffer given to the codec.
    pub text: Range<usize>,
    /// How many bytes the whole frame takes (prefix, text, terminator): what
    /// the caller consumes.
    pub len: usize,
    /// The text holds a byte that some readers of this wire take as the end
    /// of a message (a bare `\r` in line mode). Forwarded, it could show the
    /// partner a second, forged message, so the protocol refuses it.
    pub hidden_break: bool,
}

/// Why the bytes at the start of a buffer are not, and cannot become, a
/// message the server accepts. Either ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The message is, or announces itself as, longer than the limit.
    TooLong,
    /// The bytes cannot be a message of this wire at all.
    Malformed,
}

/// One wire format.
pub trait Codec {
    /// Finds the first complete message at the start of `buf`.
    ///
    /// `scanned` says that the first `scanned` bytes of `buf` were offered
    /// before and no message ended inside them; a codec that searches for a
    /// terminator starts there, so a long message arriving in many reads is
    /// scanned once, not once per read. `max_len` is the longest text allowed.
    fn decode(
        &self,
        buf: &[u8],
        scanned: usize,
        max_len: usize,
    ) -> Result<Option<Frame>, DecodeError>;

    /// At end of stream, the last, incomplete message, if this wire delivers
    /// one (line mode delivers an unterminated last line; a length-prefixed
    /// wire does not deliver half a message).
    fn decode_final(&self, buf: &[u8]) -> Option<Frame>;

    /// Appends `text`, framed, to `out`.
    fn encode(&self, text: &[u8], out: &mut Vec<u8>);

    /// The length of the longest run of complete messages at the start of
    /// `buf` that can be forwarded byte for byte, frames and all: each one
    /// at most `max_len` long, without a hidden break, framed exactly as
    /// [`encode`](Self::encode) frames its text (so the partner gets the
    /// bytes that sending the messages one by one would give: no `\r\n` in
    /// line mode), and `accept`ed. The run ends before the first message
    /// that does not qualify, or as soon as it holds `budget` bytes or more.
    /// This is the relay's fast path.
    fn run_len(
        &self,
        buf: &[u8],
        max_len: usize,
        budget: usize,
        accept: &mut dyn FnMut(&[u8]) -> bool,
    ) -> usize;
}

/// The wire formats a listener can speak, chosen at bind time. Partners
/// always share one, so a run of one's messages is valid on the other's
/// socket as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wire {
    /// Lines ending in `\n` (a `\r` before it is dropped): what `nc` speaks.
    #[default]
    Line,
    /// Length-prefixed strings, as .NET's `BinaryWriter.Write(string)` and
    /// `BinaryReader.ReadString()` frame them: what the original C# design's
    /// clients speak. A text may hold any byte, newlines included.
    Dotnet,
}

impl Wire {
    /// Every wire, the default first.
    pub const ALL: [Wire; 2] = [Wire::Line, Wire::Dotnet];

    /// The wire's name on the command line: `line` or `dotnet`.
    pub fn name(self) -> &'static str {
        match self {
            Wire::Line => "line",
            Wire::Dotnet => "dotnet",
        }
    }

    fn codec(self) -> &'static dyn Codec {
        match self {
            Wire::Line => &LineCodec,
            Wire::Dotnet => &DotnetCodec,
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a name that is no wire's. Its message is written to follow
/// the flag and the value: `invalid value "x" for --wire: expected ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWire;

impl fmt::Display for UnknownWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"expected "line" or "dotnet""#)
    }
}

impl std::error::Error for UnknownWire {}

impl FromStr for Wire {
    type Err = UnknownWire;

    /// Parses a name as [`Wire::name`] spells it, exactly (no other case).
    fn from_str(name: &str) -> Result<Wire, UnknownWire> {
        Wire::ALL
            .into_iter()
            .find(|wire| wire.name() == name)
            .ok_or(UnknownWire)
    }
}

impl Codec for Wire {
    fn decode(
        &self,
        buf: &[u8],
        scanned: usize,
        max_len: usize,
    ) -> Result<Option<Frame>, DecodeError> {
        self.codec().decode(buf, scanned, max_len)
    }

    fn decode_final(&self, buf: &[u8]) -> Option<Frame> {
        self.codec().decode_final(buf)
    }

    fn encode(&self, text: &[u8], out: &mut Vec<u8>) {
        self.codec().encode(text, out)
    }

    fn run_len(
        &self,
        buf: &[u8],
        max_len: usize,
        budget: usize,
        accept: &mut dyn FnMut(&[u8]) -> bool,
    ) -> usize {
        self.codec().run_len(buf, max_len, budget, accept)
    }
}

/// Bytes received from one connection that are not yet handled, and the
/// bookkeeping every codec needs.
#[derive(Debug, Default)]
pub struct Inbox {
    bytes: Vec<u8>,
    /// Where the first unconsumed byte is. Consumed messages are not removed
    /// one by one (that would move the tail every time); the buffer is
    /// compacted only when new bytes are appended.
    start: usize,
    /// How many unconsumed bytes the codec has seen end no message.
    scanned: usize,
}

impl Inbox {
    /// An empty inbox. It allocates nothing until bytes arrive.
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
            // Move the partial message to the front, once per read, not per
            // message.
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Number of bytes held that are not yet consumed.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// The bytes held that are not yet consumed.
    pub fn unread(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Forgets everything held and releases the memory.
    pub fn clear(&mut self) {
        *self = Inbox::new();
    }

    /// Releases the memory of an empty inbox, so an idle connection costs
    /// little.
    pub fn shrink_if_empty(&mut self) {
        if self.pending() == 0 && self.bytes.capacity() > 0 {
            self.clear();
        }
    }

    /// Decodes and consumes the next complete message; returns its text's
    /// range for [`get`](Self::get), and whether it holds a hidden break.
    pub fn next_message(
        &mut self,
        codec: &impl Codec,
        max_len: usize,
    ) -> Result<Option<(Range<usize>, bool)>, DecodeError> {
        let unread = &self.bytes[self.start..];
        match codec.decode(unread, self.scanned, max_len)? {
            Some(frame) => Ok(Some(self.consume(frame))),
            None => {
                self.scanned = unread.len();
                Ok(None)
            }
        }
    }

    /// Consumes a run of messages to forward byte for byte (see
    /// [`Codec::run_len`]) and returns its range; `None` if the next
    /// message does not qualify or is not complete.
    pub fn take_run(
        &mut self,
        codec: &impl Codec,
        max_len: usize,
        budget: usize,
        mut accept: impl FnMut(&[u8]) -> bool,
    ) -> Option<Range<usize>> {
        let len = codec.run_len(&self.bytes[self.start..], max_len, budget, &mut accept);
        if len == 0 {
            return None;
        }
        let run = self.start..self.start + len;
        self.start = run.end;
        self.scanned = 0;
        Some(run)
    }

    /// At end of stream: takes what is left as a final message, if the
    /// codec delivers one.
    pub fn take_final(&mut self, codec: &impl Codec) -> Option<(Range<usize>, bool)> {
        let frame = codec.decode_final(&self.bytes[self.start..]);
        let taken = frame.map(|frame| self.consume(frame));
        self.start = self.bytes.len();
        self.scanned = 0;
        taken
    }

    /// The bytes of a range returned by this inbox.
    pub fn get(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    fn consume(&mut self, frame: Frame) -> (Range<usize>, bool) {
        let text = self.start + frame.text.start..self.start + frame.text.end;
        self.start += frame.len;
        self.scanned = 0;
        (text, frame.hidden_break)
    }
}

/// Feeds `stream` to an inbox in pieces that end at `cuts` (any order; cuts
/// past the end count as the end), reads every message after each piece,
/// and returns them all. Panics if bytes are left over or a decode fails.
#[cfg(test)]
fn messages_in_pieces(codec: &impl Codec, stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    let mut inbox = Inbox::new();
    let mut got = Vec::new();
    let mut from = 0;
    for end in ends {
        inbox.extend(&stream[from..end]);
        from = end;
        while let Some((text, _)) = inbox.next_message(codec, usize::MAX).unwrap() {
            got.push(inbox.get(text).to_vec());
        }
    }
    assert_eq!(inbox.pending(), 0, "bytes left over");
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(inbox: &mut Inbox, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((text, _)) = inbox.next_message(&Wire::Line, max).unwrap() {
            out.push(inbox.get(text).to_vec());
        }
        out
    }

    #[test]
    fn messages_arriving_in_pieces_come_out_whole() {
        let mut inbox = Inbox::new();
        inbox.extend(b"hel");
        assert!(messages(&mut inbox, 100).is_empty());
        inbox.extend(b"lo\nwor");
        assert_eq!(messages(&mut inbox, 100), vec![b"hello".to_vec()]);
        inbox.extend(b"ld\r\n\n");
        assert_eq!(
            messages(&mut inbox, 100),
            vec![b"world".to_vec(), b"".to_vec()]
        );
        assert_eq!(inbox.pending(), 0);
    }

    #[test]
    fn compaction_keeps_the_partial_message() {
        let mut inbox = Inbox::new();
        inbox.extend(b"first\nsec");
        assert_eq!(messages(&mut inbox, 10), vec![b"first".to_vec()]);
        inbox.extend(b"ond\n");
        assert_eq!(messages(&mut inbox, 10), vec![b"second".to_vec()]);
        inbox.shrink_if_empty();
        assert_eq!(inbox.pending(), 0);
    }

    #[test]
    fn a_long_message_is_scanned_once_however_many_reads_it_takes() {
        // The codec is told how far it looked; a codec that ignored it would
        // still be correct, so check the bookkeeping itself.
        let mut inbox = Inbox::new();
        inbox.extend(b"abc");
        assert_eq!(inbox.next_message(&Wire::Line, 100), Ok(None));
        assert_eq!(inbox.scanned, 3);
        inbox.extend(b"def");
        assert_eq!(inbox.next_message(&Wire::Line, 100), Ok(None));
        assert_eq!(inbox.scanned, 6);
        inbox.extend(b"\nx");
        assert_eq!(messages(&mut inbox, 100), vec![b"abcdef".to_vec()]);
        assert_eq!(inbox.scanned, 1, "only the new partial message");
    }

    #[test]
    fn a_run_then_the_rest_one_by_one() {
        let mut inbox = Inbox::new();
        inbox.extend(b"a\nbb\nskip\ncc\n");
        let run = inbox
            .take_run(&Wire::Line, 10, usize::MAX, |m| m != b"skip")
            .unwrap();
        assert_eq!(inbox.get(run), b"a\nbb\n");
        assert_eq!(
            inbox.take_run(&Wire::Line, 10, usize::MAX, |m| m != b"skip"),
            None
        );
        assert_eq!(
            messages(&mut inbox, 10),
            vec![b"skip".to_vec(), b"cc".to_vec()]
        );
    }

    #[test]
    fn a_wire_is_named_on_the_command_line_by_its_name() {
        for wire in Wire::ALL {
            assert_eq!(wire.name().parse(), Ok(wire));
            assert_eq!(wire.to_string(), wire.name());
        }
        assert_eq!("dotnet".parse(), Ok(Wire::Dotnet));
        assert_eq!("line".parse(), Ok(Wire::Line));
        for bad in ["", "Line", "DOTNET", " line", "net"] {
            assert_eq!(bad.parse::<Wire>(), Err(UnknownWire), "{bad:?}");
        }
        assert_eq!(UnknownWire.to_string(), r#"expected "line" or "dotnet""#);
    }

    #[test]
    fn both_wires_carry_the_same_messages() {
        let texts: [&[u8]; 3] = [b"hello", b"", b"SERVER>>> x"];
        for wire in Wire::ALL {
            let mut stream = Vec::new();
            for text in texts {
                wire.encode(text, &mut stream);
            }
            let cuts: Vec<usize> = (0..stream.len()).collect();
            assert_eq!(messages_in_pieces(&wire, &stream, &cuts), texts, "{wire}");
        }
    }

    #[test]
    fn the_rest_at_end_of_stream_is_a_final_line() {
        let mut inbox = Inbox::new();
        inbox.extend(b"one\ntwo\r");
        assert_eq!(messages(&mut inbox, 10), vec![b"one".to_vec()]);
        let (rest, _) = inbox.take_final(&Wire::Line).unwrap();
        assert_eq!(inbox.get(rest), b"two");
        assert_eq!(inbox.take_final(&Wire::Line), None);
        assert_eq!(inbox.pending(), 0);
    }
}

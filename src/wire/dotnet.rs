//! The .NET wire: every message is what `System.IO.BinaryWriter.Write(string)`
//! sends and `BinaryReader.ReadString()` reads, so the original C# clients
//! (and any .NET program written the same way) can talk to the server.
//!
//! A message is the UTF-8 byte length of its text as a 7-bit encoded unsigned
//! integer (.NET's `Write7BitEncodedInt`: base 128, the low 7 bits first, the
//! high bit of a byte set when another byte follows, 1 to 5 bytes), then
//! exactly that many bytes of text:
//!
//! ```text
//! "hi"                 02 68 69
//! a 200-byte text      C8 01 ...
//! a 16,384-byte text   80 80 01 ...
//! ```
//!
//! The text may hold any byte, `\n` and `\r` included: the reader knows where
//! it ends from its length alone, so nothing in it can pose as a second
//! message.

use super::{Codec, DecodeError, Frame};

/// The most bytes a length prefix takes: 5 × 7 bits cover 32.
const MAX_PREFIX: usize = 5;

/// Length-prefixed messages, as .NET's `BinaryWriter.Write(string)` frames
/// them. A text never holds a [hidden break](Frame::hidden_break).
#[derive(Debug, Clone, Copy, Default)]
pub struct DotnetCodec;

impl DotnetCodec {
    /// The longest text a prefix may announce: .NET reads the length as an
    /// `Int32` and refuses a negative one, so anything above `i32::MAX` is
    /// not a message of this wire, whatever the limit.
    pub const MAX_TEXT: usize = i32::MAX as usize;
}

impl Codec for DotnetCodec {
    /// `scanned` is not needed: the prefix says where the message ends, so
    /// nothing is searched, and a partial message costs one look at its (at
    /// most 5-byte) prefix per read.
    fn decode(
        &self,
        buf: &[u8],
        _scanned: usize,
        max_len: usize,
    ) -> Result<Option<Frame>, DecodeError> {
        let Some((text_len, prefix_len)) = read_prefix(buf)? else {
            return Ok(None);
        };
        // Checked before the body arrives, so a client that announces a huge
        // message is turned away without the server holding any of it.
        if text_len > max_len {
            return Err(DecodeError::TooLong);
        }
        let len = prefix_len + text_len;
        if buf.len() < len {
            return Ok(None);
        }
        Ok(Some(Frame {
            text: prefix_len..len,
            len,
            hidden_break: false,
        }))
    }

    /// Half a message is not a message: .NET's `ReadString` throws on it, so
    /// the server drops it too.
    fn decode_final(&self, _buf: &[u8]) -> Option<Frame> {
        None
    }

    /// # Panics
    ///
    /// If `text` is longer than [`DotnetCodec::MAX_TEXT`]: no .NET reader
    /// could read it, and the server never has such a text to send (it
    /// refuses longer messages on the way in).
    fn encode(&self, text: &[u8], out: &mut Vec<u8>) {
        assert!(
            text.len() <= DotnetCodec::MAX_TEXT,
            "a .NET string holds at most {} bytes, not {}",
            DotnetCodec::MAX_TEXT,
            text.len()
        );
        out.reserve(MAX_PREFIX + text.len());
        write_prefix(text.len() as u32, out);
        out.extend_from_slice(text);
    }

    fn run_len(
        &self,
        buf: &[u8],
        max_len: usize,
        budget: usize,
        accept: &mut dyn FnMut(&[u8]) -> bool,
    ) -> usize {
        let mut end = 0;
        while end < budget {
            // An error stops the run just as an incomplete message does: the
            // caller's next decode reports it.
            let Ok(Some(frame)) = self.decode(&buf[end..], 0, max_len) else {
                break;
            };
            // A run must be exactly what sending its messages one by one
            // would write, so a prefix longer than it needs to be (which
            // .NET reads, but never writes) is left to the slow path, which
            // re-encodes it.
            let text = &buf[end + frame.text.start..end + frame.text.end];
            if frame.text.start != prefix_len(text.len()) || !accept(text) {
                break;
            }
            end += frame.len;
        }
        end
    }
}

/// Reads the length prefix at the start of `buf`: the text's length and the
/// prefix's own, or `None` while it is incomplete.
///
/// A prefix is malformed as soon as its fifth byte arrives if that byte has
/// its high bit set (a sixth byte would follow) or brings the value above
/// [`DotnetCodec::MAX_TEXT`]; .NET refuses both. A prefix longer than it
/// needs to be (`80 00` for 0) is read as .NET reads it: as its value.
fn read_prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_PREFIX).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        let last = byte & 0x80 == 0;
        if i == MAX_PREFIX - 1 && (!last || value > DotnetCodec::MAX_TEXT as u64) {
            return Err(DecodeError::Malformed);
        }
        if last {
            // At most 4 × 7 bits, or checked against MAX_TEXT above: fits.
            return Ok(Some((value as usize, i + 1)));
        }
    }
    Ok(None)
}

/// How many bytes [`write_prefix`] takes for `value`: one per 7 bits, and
/// one for 0.
fn prefix_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

/// Appends `value` as a 7-bit encoded integer, in as few bytes as it takes.
fn write_prefix(mut value: u32, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::messages_in_pieces;

    fn encoded(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        DotnetCodec.encode(text, &mut out);
        out
    }

    fn prefix(value: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_prefix(value, &mut out);
        out
    }

    fn decode(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, DecodeError> {
        let frame = DotnetCodec.decode(buf, 0, max)?;
        Ok(frame.map(|f| {
            assert!(!f.hidden_break);
            (buf[f.text].to_vec(), f.len)
        }))
    }

    fn run(buf: &[u8], max: usize, budget: usize) -> &[u8] {
        &buf[..DotnetCodec.run_len(buf, max, budget, &mut |_| true)]
    }

    #[test]
    fn the_byte_vectors_of_the_format() {
        assert_eq!(encoded(b"hi"), [0x02, b'h', b'i']);
        assert_eq!(encoded(&[b'x'; 200])[..2], [0xc8, 0x01]);
        assert_eq!(encoded(&[b'x'; 16_384])[..3], [0x80, 0x80, 0x01]);
        assert_eq!(
            decode(&[0x02, b'h', b'i'], 10),
            Ok(Some((b"hi".to_vec(), 3)))
        );
    }

    #[test]
    fn the_prefix_grows_a_byte_every_seven_bits() {
        for (len, want) in [
            (0, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xff, 0xff, 0x7f]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (268_435_455, vec![0xff, 0xff, 0xff, 0x7f]),
            (268_435_456, vec![0x80, 0x80, 0x80, 0x80, 0x01]),
            (
                DotnetCodec::MAX_TEXT as u32,
                vec![0xff, 0xff, 0xff, 0xff, 0x07],
            ),
        ] {
            assert_eq!(prefix(len), want, "prefix of {len}");
            assert_eq!(prefix_len(len as usize), want.len(), "width of {len}");
            assert_eq!(
                read_prefix(&want),
                Ok(Some((len as usize, want.len()))),
                "read back {len}"
            );
            // Not one byte short of it.
            assert_eq!(read_prefix(&want[..want.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn whole_messages_at_the_prefix_boundaries() {
        for len in [127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let text: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let stream = encoded(&text);
            let width = stream.len() - len;
            assert_eq!(width, prefix(len as u32).len());
            assert_eq!(decode(&stream, len), Ok(Some((text, stream.len()))));
            assert_eq!(decode(&stream[..stream.len() - 1], len), Ok(None));
        }
    }

    #[test]
    fn a_prefix_dotnet_rejects_is_malformed_from_its_fifth_byte() {
        // A fifth byte with its high bit set: a sixth would follow.
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x80], 100),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0x8f, 0x01], 100),
            Err(DecodeError::Malformed)
        );
        // 2^31, one above what an Int32 holds; and 2^32 - 1.
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x08], 100),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0x0f], usize::MAX),
            Err(DecodeError::Malformed),
            "whatever the limit"
        );
        // Four bytes of it prove nothing yet.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff], 100), Ok(None));
    }

    #[test]
    fn too_long_is_known_from_the_prefix_alone() {
        assert_eq!(decode(&[0x05], 4), Err(DecodeError::TooLong));
        assert_eq!(decode(&[0xc8, 0x01], 199), Err(DecodeError::TooLong));
        assert_eq!(decode(&[0xc8], 199), Ok(None), "prefix not complete yet");
        assert_eq!(decode(&[0xc8, 0x01], 200), Ok(None), "fits: wait for it");
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0x07], 8192),
            Err(DecodeError::TooLong)
        );
        assert_eq!(decode(b"\x04abcd", 4), Ok(Some((b"abcd".to_vec(), 5))));
    }

    #[test]
    fn the_empty_message_is_one_zero_byte() {
        assert_eq!(encoded(b""), [0x00]);
        assert_eq!(decode(&[0x00, 0x02], 0), Ok(Some((Vec::new(), 1))));
        assert_eq!(decode(&[], 10), Ok(None));
    }

    #[test]
    fn newlines_and_carriage_returns_are_text() {
        let text = b"one\ntwo\r\nSERVER>>> three\r";
        let stream = encoded(text);
        assert_eq!(stream[0] as usize, text.len());
        assert_eq!(
            decode(&stream, 100),
            Ok(Some((text.to_vec(), stream.len())))
        );
    }

    #[test]
    fn a_longer_than_needed_prefix_is_read_as_dotnet_reads_it() {
        assert_eq!(decode(&[0x80, 0x00], 10), Ok(Some((Vec::new(), 2))));
        assert_eq!(decode(b"\x82\x80\x00hi", 10), Ok(Some((b"hi".to_vec(), 5))));
    }

    #[test]
    fn half_a_message_is_not_delivered_at_the_end() {
        assert_eq!(DotnetCodec.decode_final(b"\x05ab"), None);
        assert_eq!(DotnetCodec.decode_final(b""), None);
    }

    #[test]
    fn a_run_stops_at_a_message_over_the_limit_an_incomplete_one_or_a_refused_one() {
        let mut stream = [encoded(b"ok"), encoded(b"toolong"), encoded(b"ok")].concat();
        assert_eq!(run(&stream, 4, usize::MAX), encoded(b"ok"));
        stream = [encoded(b"ok"), encoded(b"part")].concat();
        assert_eq!(
            run(&stream[..stream.len() - 1], 4, usize::MAX),
            encoded(b"ok")
        );
        stream = [encoded(b"a"), vec![0x80; 5]].concat();
        assert_eq!(run(&stream, 4, usize::MAX), encoded(b"a"), "malformed");
        stream = [encoded(b"a"), encoded(b"skip"), encoded(b"b")].concat();
        let len = DotnetCodec.run_len(&stream, 10, usize::MAX, &mut |m| m != b"skip");
        assert_eq!(&stream[..len], encoded(b"a"));
    }

    #[test]
    fn a_run_stops_at_a_longer_than_needed_prefix() {
        // Forwarded as it is, it would not be what the server writes for
        // the same text; one by one, it is re-encoded.
        let stream = [encoded(b"a"), b"\x81\x00b".to_vec(), encoded(b"c")].concat();
        assert_eq!(run(&stream, 10, usize::MAX), encoded(b"a"));
        assert_eq!(run(&stream[2..], 10, usize::MAX), b"");
        assert_eq!(decode(&stream[2..], 10), Ok(Some((b"b".to_vec(), 3))));
    }

    #[test]
    fn a_run_holds_any_bytes_and_ends_once_it_reaches_the_budget() {
        let stream = [encoded(b"a\nb"), encoded(b"\r\r"), encoded(b"ccc")].concat();
        assert_eq!(run(&stream, 10, usize::MAX), stream);
        assert_eq!(run(&stream, 10, 5), &stream[..7]);
        assert_eq!(run(&stream, 10, 1), &stream[..4]);
        assert_eq!(run(&stream, 10, 0), b"");
    }

    #[test]
    fn a_stream_split_one_byte_at_a_time() {
        let texts: [&[u8]; 4] = [b"hi", b"", &[0xaa; 300], b"x\ny"];
        let stream: Vec<u8> = texts.iter().flat_map(|t| encoded(t)).collect();
        let cuts: Vec<usize> = (0..stream.len()).collect();
        assert_eq!(messages_in_pieces(&DotnetCodec, &stream, &cuts), texts);
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_identity(text in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let stream = encoded(&text);
            prop_assert_eq!(decode(&stream, text.len()), Ok(Some((text.clone(), stream.len()))));
        }

        #[test]
        fn any_split_of_a_stream_gives_the_same_messages(
            texts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let stream: Vec<u8> = texts.iter().flat_map(|t| encoded(t)).collect();
            let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            prop_assert_eq!(messages_in_pieces(&DotnetCodec, &stream, &cuts), texts);
        }
    }
}

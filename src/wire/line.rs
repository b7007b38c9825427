//! The line wire: every message ends in `\n`; a `\r` just before it is
//! dropped. This is what `nc` and `telnet` speak.

use memchr::memchr;

use super::{Codec, DecodeError, Frame};

/// Lines ending in `\n`. A line's text may hold any byte but `\n`; a `\r`
/// anywhere but just before the `\n` is a [hidden break](Frame::hidden_break),
/// because readers that end lines at a bare `\r` (Python's text-mode
/// sockets, .NET's `StreamReader.ReadLine`) would see two lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineCodec;

impl Codec for LineCodec {
    fn decode(
        &self,
        buf: &[u8],
        scanned: usize,
        max_len: usize,
    ) -> Result<Option<Frame>, DecodeError> {
        let from = scanned.min(buf.len());
        let Some(newline) = memchr(b'\n', &buf[from..]).map(|i| from + i) else {
            // Without its newline the line may still end in "\r\n", so it
            // only proves too long once it holds more than max_len + 1 bytes.
            return if buf.len() > max_len.saturating_add(1) {
                Err(DecodeError::TooLong)
            } else {
                Ok(None)
            };
        };
        let text = 0..without_cr(buf, newline);
        if text.len() > max_len {
            return Err(DecodeError::TooLong);
        }
        let hidden_break = memchr(b'\r', &buf[text.clone()]).is_some();
        Ok(Some(Frame {
            text,
            len: newline + 1,
            hidden_break,
        }))
    }

    fn decode_final(&self, buf: &[u8]) -> Option<Frame> {
        if buf.is_empty() {
            return None;
        }
        let text = 0..without_cr(buf, buf.len());
        let hidden_break = memchr(b'\r', &buf[text.clone()]).is_some();
        Some(Frame {
            text,
            len: buf.len(),
            hidden_break,
        })
    }

    fn encode(&self, text: &[u8], out: &mut Vec<u8>) {
        out.reserve(text.len() + 1);
        out.extend_from_slice(text);
        out.push(b'\n');
    }

    fn run_len(
        &self,
        buf: &[u8],
        max_len: usize,
        budget: usize,
        accept: &mut dyn FnMut(&[u8]) -> bool,
    ) -> usize {
        // A line that qualifies for the run holds no `\r` at all (one just
        // before its `\n` would have to be dropped). Rather than search
        // each line for both bytes, which costs a call per line either way,
        // `\r` is searched for ahead, a stretch at a time: `buf[..clean]`
        // holds none, and `clean < buf.len()` at a `\r` once one is found.
        let mut clean = 0;
        let mut end = 0;
        while end < budget {
            let Some(newline) = memchr(b'\n', &buf[end..]).map(|i| end + i) else {
                break;
            };
            while clean < newline && clean < buf.len() && buf[clean] != b'\r' {
                let stretch = &buf[clean..buf.len().min(clean + CR_STRETCH)];
                clean += memchr(b'\r', stretch).unwrap_or(stretch.len());
            }
            let line = &buf[end..newline];
            if clean < newline || line.len() > max_len || !accept(line) {
                break;
            }
            end = newline + 1;
        }
        end
    }
}

/// How far ahead [`LineCodec::run_len`] looks for a `\r` at a time: far
/// enough to cover many short lines in one search, short enough that a run
/// cut short by some other message (every other line a refused one, say)
/// does not search the whole buffer each time.
const CR_STRETCH: usize = 4096;

/// The end of the text of a line whose terminator (or end) is at `end`:
/// a `\r` just before it is not part of the text.
fn without_cr(buf: &[u8], end: usize) -> usize {
    if end > 0 && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::messages_in_pieces;

    fn decode(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize, bool)>, DecodeError> {
        let frame = LineCodec.decode(buf, 0, max)?;
        Ok(frame.map(|f| (buf[f.text].to_vec(), f.len, f.hidden_break)))
    }

    fn run(buf: &[u8], max: usize, budget: usize) -> &[u8] {
        &buf[..LineCodec.run_len(buf, max, budget, &mut |_| true)]
    }

    #[test]
    fn a_line_ends_at_its_newline_and_drops_one_cr_before_it() {
        assert_eq!(
            decode(b"hi\nrest", 10),
            Ok(Some((b"hi".to_vec(), 3, false)))
        );
        assert_eq!(decode(b"hi\r\n", 10), Ok(Some((b"hi".to_vec(), 4, false))));
        assert_eq!(decode(b"\n", 10), Ok(Some((b"".to_vec(), 1, false))));
        assert_eq!(decode(b"hi", 10), Ok(None));
    }

    #[test]
    fn bytes_are_kept_exactly_and_an_inner_cr_is_a_hidden_break() {
        assert_eq!(
            decode(b"a\0\xff\r\n", 10),
            Ok(Some((b"a\0\xff".to_vec(), 5, false)))
        );
        assert_eq!(
            decode(b"hi\rSERVER>>> x\n", 100),
            Ok(Some((b"hi\rSERVER>>> x".to_vec(), 15, true)))
        );
        assert_eq!(
            decode(b"a\r\r\n", 10),
            Ok(Some((b"a\r".to_vec(), 4, true))),
            "only the last \\r goes"
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        assert_eq!(
            decode(b"abcd\r\n", 4),
            Ok(Some((b"abcd".to_vec(), 6, false)))
        );
        assert_eq!(decode(b"abcde\n", 4), Err(DecodeError::TooLong));
    }

    #[test]
    fn an_unterminated_line_is_refused_as_soon_as_it_cannot_fit() {
        assert_eq!(decode(b"abcd\r", 4), Ok(None), "may still end in \\r\\n");
        assert_eq!(decode(b"abcd\rx", 4), Err(DecodeError::TooLong));
    }

    #[test]
    fn the_search_resumes_where_it_stopped() {
        // A caller that says it scanned past a newline is believed: the
        // newline is not found again, which proves the search starts there.
        assert_eq!(LineCodec.decode(b"ab\ncd", 3, 10), Ok(None));
        let frame = LineCodec.decode(b"abcd\n", 4, 10).unwrap().unwrap();
        assert_eq!(frame.text, 0..4);
        assert_eq!(LineCodec.decode(b"ab", 9, 10), Ok(None), "past the end");
    }

    #[test]
    fn the_final_line_needs_no_newline() {
        let frame = LineCodec.decode_final(b"two\r").unwrap();
        assert_eq!((frame.text, frame.len), (0..3, 4));
        assert!(LineCodec.decode_final(b"x\ry").unwrap().hidden_break);
        assert_eq!(LineCodec.decode_final(b""), None);
    }

    #[test]
    fn encode_adds_the_newline() {
        let mut out = b"x\n".to_vec();
        LineCodec.encode(b"hello", &mut out);
        assert_eq!(out, b"x\nhello\n");
    }

    #[test]
    fn a_run_stops_before_any_line_with_a_cr() {
        assert_eq!(run(b"ok\ncr\r\nok\n", 4, usize::MAX), b"ok\n");
        assert_eq!(run(b"ok\na\rb\nok\n", 4, usize::MAX), b"ok\n");
        assert_eq!(run(b"cr\r\n", 4, usize::MAX), b"");
    }

    #[test]
    fn a_run_stops_at_a_line_over_the_limit_an_incomplete_one_or_a_refused_one() {
        assert_eq!(run(b"ok\ntoolong\nok\n", 4, usize::MAX), b"ok\n");
        assert_eq!(run(b"ok\npart", 4, usize::MAX), b"ok\n");
        let buf = b"a\nskip\nb\n";
        let len = LineCodec.run_len(buf, 10, usize::MAX, &mut |m| m != b"skip");
        assert_eq!(&buf[..len], b"a\n");
    }

    #[test]
    fn a_run_ends_once_it_reaches_the_budget() {
        assert_eq!(run(b"aaa\nbbb\nccc\n", 10, 5), b"aaa\nbbb\n");
        assert_eq!(run(b"aaa\nbbb\nccc\n", 10, 1), b"aaa\n");
    }

    /// Any byte but the two that end or hide a line end.
    fn line_text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no \\n or \\r", |b| !b"\n\r".contains(b)),
            0..300,
        )
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_gives_the_same_lines(
            texts in proptest::collection::vec(line_text(), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for text in &texts {
                LineCodec.encode(text, &mut stream);
            }
            let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            prop_assert_eq!(messages_in_pieces(&LineCodec, &stream, &cuts), texts);
        }
    }

    proptest! {
        // Each case is a few stretches long, so fewer of them.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The run is the longest prefix of whole lines, taken one by one
        /// while the run is under the budget, each one short enough,
        /// accepted and free of `\r`: the same rule as deciding line by
        /// line with `decode`, whatever the `\r`s, the lengths and the
        /// stretch boundaries.
        #[test]
        fn a_run_is_what_deciding_line_by_line_gives(
            mut bytes in proptest::collection::vec(
                // Lines of some 16 bytes; one in a thousand is refused.
                proptest::sample::select(b"\n\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxn".to_vec()),
                0..3 * CR_STRETCH,
            ),
            // A few `\r`s, far apart: anywhere, or at the edges of where
            // the search stretches begin and end.
            crs in proptest::collection::vec(
                prop_oneof![any::<usize>(), (1usize..3, 0usize..3).prop_map(|(k, d)| k * CR_STRETCH + d - 1)],
                0..4,
            ),
            max in 0usize..CR_STRETCH,
            budget in 0usize..4 * CR_STRETCH,
        ) {
            for at in crs {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b'\r';
                }
            }
            let refuse = |line: &[u8]| line.starts_with(b"nn");
            let mut expected = 0;
            while expected < budget {
                let Some(newline) = bytes[expected..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = &bytes[expected..expected + newline];
                if line.contains(&b'\r') || line.len() > max || refuse(line) {
                    break;
                }
                expected += newline + 1;
            }
            let got = LineCodec.run_len(&bytes, max, budget, &mut |line| !refuse(line));
            prop_assert_eq!(got, expected);
        }
    }
}

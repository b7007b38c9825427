//! Reading the user's lines from standard input when it is a pipe or a
//! file, byte for byte.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::Sender;
use std::thread;

use crate::Event;

/// Reports each line of standard input, then its end. A line longer than
/// `max` bytes is reported as [`Event::TooLong`] instead.
pub fn read_stdin(max: usize, events: Sender<Event>) {
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let end = loop {
            let event = match next_line(&mut stdin, max) {
                Ok(Some(Line::Text(line))) => Event::Typed(line),
                Ok(Some(Line::TooLong)) => Event::TooLong(max),
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            if events.send(event).is_err() {
                return; // the main thread has finished
            }
        };
        // If the main thread has finished, nobody needs to know.
        let _ = events.send(Event::InputEnded(end));
    });
}

/// A line of input, as [`next_line`] returns it.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// The line, without its line ending.
    Text(Vec<u8>),
    /// A line longer than the limit, read but not kept.
    TooLong,
}

/// Reads the next line of `input`, or `None` at its end. A line is whatever
/// ends in `\n`, with `\r\n` accepted, or the last bytes before the end.
///
/// A line longer than `max` bytes (not counting its line ending) is
/// [`Line::TooLong`]; its bytes are dropped as they are read, so however
/// long the line, at most `max` bytes and a `\r\n` of it are held.
pub fn next_line(input: &mut impl BufRead, max: usize) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    // Reads up to the next `\n`, but never more than `max` bytes and a
    // `\r\n`: a line that fills all of that without ending is too long.
    let limit = max as u64 + 2;
    if input.by_ref().take(limit).read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    // Without its `\n`, `line` was cut short by the limit, or is the last
    // bytes before the end of input.
    let ended = line.ends_with(b"\n");
    if ended {
        line.pop();
    }
    if line.ends_with(b"\r") {
        line.pop();
    }
    if line.len() <= max {
        return Ok(Some(Line::Text(line)));
    }
    // Too long: drop the rest of it too, if there is any, so that the next
    // line starts after it.
    if !ended {
        skip_line(input)?;
    }
    Ok(Some(Line::TooLong))
}

/// Reads `input` up to and including its next `\n`, or to its end, and
/// throws it away. It looks at the bytes already in the buffer, one buffer
/// at a time, so memory stays the same however long the line is.
fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buffered = match input.fill_buf() {
            Ok(buffered) => buffered,
            // A signal interrupted the read: try again, as `read_until` does.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffered.is_empty() {
            return Ok(()); // the end of input
        }
        match buffered.iter().position(|&byte| byte == b'\n') {
            Some(newline) => {
                input.consume(newline + 1);
                return Ok(());
            }
            None => {
                let all = buffered.len();
                input.consume(all);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// Every line of `input`, read through a buffer of `capacity` bytes,
    /// with lines of at most 4 bytes.
    fn lines(input: &[u8], capacity: usize) -> Vec<Line> {
        let mut input = io::BufReader::with_capacity(capacity, input);
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut input, 4).unwrap() {
            lines.push(line);
        }
        lines
    }

    #[test]
    fn lines_over_the_limit_are_skipped_whole() {
        let text = |line: &str| Line::Text(line.as_bytes().to_vec());
        let input = b"abcd\r\nabcde\nabcde\r\nabcd\rx\nab\n0123456789\r\nlast\r\nabcdefgh";
        // The same lines however the input is split into buffers.
        for capacity in [1, 3, 64] {
            assert_eq!(
                lines(input, capacity),
                [
                    text("abcd"), // the limit, `\r\n` and all
                    Line::TooLong,
                    Line::TooLong,
                    Line::TooLong, // a `\r` inside a line counts
                    text("ab"),
                    Line::TooLong, // the rest of it is skipped
                    text("last"),
                    Line::TooLong, // cut off by the end of input
                ],
                "capacity {capacity}"
            );
        }
        // The last bytes before the end of input are a line.
        assert_eq!(lines(b"ab\r\n\ncd", 64), [text("ab"), text(""), text("cd")]);
    }
}

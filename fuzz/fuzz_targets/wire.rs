//! Fuzzes every wire codec through `Inbox`, as the relay drives it: bytes
//! arrive in arbitrary pieces, and after each piece the harness alternates
//! `take_run` (accepting every message) and `next_message` until neither
//! makes progress. Everything is checked against a plain reference decoder
//! of each format, written here from its description and applied to all the
//! bytes not yet consumed:
//!
//! - a message comes out exactly when the reference finds one, with the same
//!   text and the same hidden-break flag, and consumes the same frame;
//! - "not yet" and each error (`TooLong`, `Malformed`) come exactly when the
//!   reference says so; an error ends the connection (the harness starts a
//!   new one on the rest of the input);
//! - a run is exactly the concatenation of the frames of the messages it
//!   holds: the next complete messages, each within the limit, without a
//!   hidden break, and framed exactly as the codec itself would frame its
//!   text (so forwarding the run sends what sending the messages one by one
//!   would: line mode takes no `\r\n`, .NET mode no longer-than-needed
//!   prefix), taken until one does not qualify or the run holds the budget
//!   or more; `accept` sees each of their texts, in order;
//! - `pending()` is what was fed minus what was consumed;
//! - at end of stream, the final message is the reference's (line mode: the
//!   unterminated rest; .NET mode: none).
//!
//! The first input byte picks the codec.
#![no_main]

use std::ops::Range;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portal_chat::wire::{Codec, DecodeError, Inbox, Wire};

#[derive(Debug, Arbitrary)]
struct Input {
    /// `Wire::ALL[wire % 2]`; first, so it is the first input byte.
    wire: u8,
    /// The longest text; `u16::MAX` stands for no limit at all.
    max: u16,
    /// The run budget in bytes.
    budget: u16,
    /// The stream, before it is cut into pieces.
    parts: Vec<Part>,
    /// Where the stream is cut (each taken modulo its length + 1).
    cuts: Vec<u16>,
}

#[derive(Debug, Arbitrary)]
enum Part {
    /// Bytes as they are: anything a client could send.
    Raw(Vec<u8>),
    /// A text framed by the codec: what a well-behaved client sends.
    Text(Vec<u8>),
}

/// What the reference decoder finds at the start of the pending bytes.
#[derive(Debug, PartialEq)]
enum Expected {
    NotYet,
    Error(DecodeError),
    Message {
        /// Within the pending bytes.
        text: Range<usize>,
        /// The whole frame's length.
        len: usize,
        hidden_break: bool,
    },
}

/// The bytes of one connection as the reference sees them.
#[derive(Default)]
struct Connection {
    inbox: Inbox,
    fed: Vec<u8>,
    consumed: usize,
}

impl Connection {
    fn pending(&self) -> &[u8] {
        &self.fed[self.consumed..]
    }
}

fuzz_target!(|input: Input| {
    let wire = Wire::ALL[usize::from(input.wire) % Wire::ALL.len()];
    let max = match input.max {
        u16::MAX => usize::MAX,
        max => usize::from(max),
    };
    let budget = usize::from(input.budget);

    let mut stream = Vec::new();
    for part in &input.parts {
        match part {
            Part::Raw(bytes) => stream.extend_from_slice(bytes),
            Part::Text(text) => wire.encode(text, &mut stream),
        }
    }
    let mut ends: Vec<usize> = input
        .cuts
        .iter()
        .map(|&cut| usize::from(cut) % (stream.len() + 1))
        .collect();
    ends.push(stream.len());
    ends.sort_unstable();

    let mut conn = Connection::default();
    let mut from = 0;
    for end in ends {
        let piece = &stream[from..end];
        from = end;
        conn.inbox.extend(piece);
        conn.fed.extend_from_slice(piece);
        loop {
            let ran = check_run(&mut conn, wire, max, budget);
            match check_next_message(&mut conn, wire, max) {
                Step::Message => {}
                Step::NotYet if !ran => break,
                Step::NotYet => {}
                Step::Closed => {
                    conn = Connection::default();
                    break;
                }
            }
        }
        assert_eq!(conn.inbox.pending(), conn.pending().len(), "pending count");
        conn.inbox.shrink_if_empty();
    }

    // End of stream: everything complete was taken above.
    let want = reference_final(wire, conn.pending());
    let got = conn
        .inbox
        .take_final(&wire)
        .map(|(text, hidden)| (conn.inbox.get(text).to_vec(), hidden));
    assert_eq!(got, want, "final message ({wire})");
    assert_eq!(
        conn.inbox.pending(),
        0,
        "bytes left after the final message"
    );
});

enum Step {
    Message,
    NotYet,
    Closed,
}

fn check_next_message(conn: &mut Connection, wire: Wire, max: usize) -> Step {
    let want = reference(wire, conn.pending(), max);
    let got = conn.inbox.next_message(&wire, max);
    match (got, want) {
        (Ok(None), Expected::NotYet) => Step::NotYet,
        (
            Ok(Some((range, hidden))),
            Expected::Message {
                text,
                len,
                hidden_break,
            },
        ) => {
            let pending = conn.pending();
            assert_eq!(conn.inbox.get(range), &pending[text], "text ({wire})");
            assert_eq!(hidden, hidden_break, "hidden break ({wire})");
            conn.consumed += len;
            Step::Message
        }
        (Err(got), Expected::Error(want)) if got == want => Step::Closed,
        (got, want) => panic!(
            "{wire}, limit {max}: decoded {got:?}, reference says {want:?} for {:?}",
            conn.pending()
        ),
    }
}

/// Takes a run and checks it; returns whether it took one.
fn check_run(conn: &mut Connection, wire: Wire, max: usize, budget: usize) -> bool {
    // The run the reference expects: whole frames while they qualify.
    let pending = &conn.fed[conn.consumed..];
    let mut want_len = 0;
    let mut want_texts = Vec::new();
    while want_len < budget {
        let rest = &pending[want_len..];
        let Expected::Message {
            text,
            len,
            hidden_break: false,
        } = reference(wire, rest, max)
        else {
            break;
        };
        let mut framed = Vec::new();
        wire.encode(&rest[text.clone()], &mut framed);
        if framed != rest[..len] {
            break;
        }
        want_texts.push(rest[text].to_vec());
        want_len += len;
    }

    let mut seen = Vec::new();
    let run = conn.inbox.take_run(&wire, max, budget, |text| {
        seen.push(text.to_vec());
        true
    });
    let got = run.map_or(&[][..], |range| conn.inbox.get(range));
    assert_eq!(
        got,
        &pending[..want_len],
        "{wire}, limit {max}, budget {budget}: run differs for {pending:?}"
    );
    assert_eq!(seen, want_texts, "{wire}: accept saw other texts");
    conn.consumed += want_len;
    want_len > 0
}

fn reference(wire: Wire, pending: &[u8], max: usize) -> Expected {
    match wire {
        Wire::Line => reference_line(pending, max),
        Wire::Dotnet => reference_dotnet(pending, max),
    }
}

/// A line is everything up to the first `\n`, less one `\r` just before it.
/// Without a `\n` yet, the line may still end in `\r\n`, so it is known to
/// be too long only once it holds more than `max + 1` bytes.
fn reference_line(pending: &[u8], max: usize) -> Expected {
    let Some(newline) = pending.iter().position(|&b| b == b'\n') else {
        return if pending.len() > max.saturating_add(1) {
            Expected::Error(DecodeError::TooLong)
        } else {
            Expected::NotYet
        };
    };
    let mut text = 0..newline;
    if pending[..newline].ends_with(b"\r") {
        text.end -= 1;
    }
    if text.len() > max {
        return Expected::Error(DecodeError::TooLong);
    }
    Expected::Message {
        hidden_break: pending[text.clone()].contains(&b'\r'),
        text,
        len: newline + 1,
    }
}

/// A .NET string: the prefix runs to the first byte below 0x80, at most 5
/// bytes; its value is those bytes' low 7 bits, the first byte lowest. It
/// must fit an `Int32`. Then come exactly that many bytes of text.
fn reference_dotnet(pending: &[u8], max: usize) -> Expected {
    let head = &pending[..pending.len().min(5)];
    let Some(last) = head.iter().position(|&b| b < 0x80) else {
        return if head.len() == 5 {
            Expected::Error(DecodeError::Malformed)
        } else {
            Expected::NotYet
        };
    };
    let prefix = &head[..=last];
    let value = prefix
        .iter()
        .rev()
        .fold(0u64, |value, &b| value * 128 + u64::from(b & 0x7f));
    if value > i32::MAX as u64 {
        return Expected::Error(DecodeError::Malformed);
    }
    let text_len = value as usize;
    if text_len > max {
        return Expected::Error(DecodeError::TooLong);
    }
    let len = prefix.len() + text_len;
    if pending.len() < len {
        return Expected::NotYet;
    }
    Expected::Message {
        text: prefix.len()..len,
        len,
        hidden_break: false,
    }
}

/// What the connection's last, unterminated bytes deliver at end of stream.
fn reference_final(wire: Wire, pending: &[u8]) -> Option<(Vec<u8>, bool)> {
    match wire {
        Wire::Dotnet => None,
        Wire::Line if pending.is_empty() => None,
        Wire::Line => {
            let text = pending.strip_suffix(b"\r").unwrap_or(pending);
            Some((text.to_vec(), text.contains(&b'\r')))
        }
    }
}

//! Fuzzes the line framer: arbitrary byte chunks, arbitrary (small) limits,
//! in an arbitrary interleaving of appends, line reads, end-of-stream reads
//! and shrinks, checked against a plain reference on the bytes fed so far.
//!
//! Invariants:
//! - every line returned has no `\n` and is at most the limit in force;
//! - lines plus their terminators (`\n`, or `\r\n` with the `\r` stripped)
//!   reproduce exactly the prefix of the input consumed so far;
//! - "not yet" (`Ok(None)`) and `LineTooLong` are each returned exactly when
//!   the bytes pending justify it;
//! - `pending()` is what was fed minus what was consumed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portal_chat::framing::{LineBuffer, LineTooLong};

#[derive(Debug, Arbitrary)]
enum Op {
    Extend(Vec<u8>),
    /// Read lines until "not yet" or an error, with limit `max % 33`.
    Lines {
        max: u8,
    },
    /// Lines as above, then the rest as the final line.
    TakeRest {
        max: u8,
    },
    Shrink,
}

struct Reference {
    fed: Vec<u8>,
    consumed: usize,
}

impl Reference {
    fn pending(&self) -> &[u8] {
        &self.fed[self.consumed..]
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut buffer = LineBuffer::new();
    let mut reference = Reference {
        fed: Vec::new(),
        consumed: 0,
    };
    for op in ops {
        match op {
            Op::Extend(bytes) => {
                buffer.extend(&bytes);
                reference.fed.extend_from_slice(&bytes);
            }
            Op::Lines { max } => {
                lines(&mut buffer, &mut reference, max);
            }
            Op::TakeRest { max } => {
                // As the server does at end of stream: complete lines first,
                // then whatever is left is the last line.
                if !lines(&mut buffer, &mut reference, max) {
                    continue;
                }
                let pending = reference.pending();
                match buffer.take_rest() {
                    None => assert!(pending.is_empty(), "rest of {pending:?} not taken"),
                    Some(range) => {
                        let mut content = pending;
                        if content.last() == Some(&b'\r') {
                            content = &content[..content.len() - 1];
                        }
                        assert!(!pending.is_empty(), "rest taken from nothing");
                        assert_eq!(buffer.get(range), content, "rest differs");
                        reference.consumed = reference.fed.len();
                    }
                }
            }
            Op::Shrink => buffer.shrink_if_empty(),
        }
        assert_eq!(buffer.pending(), reference.pending().len(), "pending count");
    }
});

/// Reads lines until "not yet" or an error (limit `max % 33`), checking each.
/// Returns false if the line was too long and everything was reset.
fn lines(buffer: &mut LineBuffer, reference: &mut Reference, max: u8) -> bool {
    let max = usize::from(max % 33);
    loop {
        let result = buffer.next_line(max);
        let pending = reference.pending();
        let newline = pending.iter().position(|&b| b == b'\n');
        match (result, newline) {
            (Ok(Some(range)), Some(newline)) => {
                let line = buffer.get(range).to_vec();
                let mut content = &pending[..newline];
                if content.last() == Some(&b'\r') {
                    content = &content[..content.len() - 1];
                }
                assert!(!line.contains(&b'\n'), "line holds a newline");
                assert!(line.len() <= max, "line of {} > {max}", line.len());
                assert_eq!(line, content, "line differs from the input");
                reference.consumed += newline + 1;
            }
            (Ok(Some(range)), None) => {
                panic!("line {:?} without a newline", buffer.get(range))
            }
            (Ok(None), Some(_)) => panic!("a complete line was not returned"),
            (Ok(None), None) => {
                assert!(
                    pending.len() <= max + 1,
                    "{} bytes without newline held under limit {max}",
                    pending.len()
                );
                return true;
            }
            (Err(LineTooLong), newline) => {
                let justified = match newline {
                    Some(newline) => {
                        let content = &pending[..newline];
                        let len = content.len() - usize::from(content.last() == Some(&b'\r'));
                        len > max
                    }
                    None => pending.len() > max + 1,
                };
                assert!(justified, "LineTooLong for {pending:?} under limit {max}");
                // The server ends such a connection: start afresh.
                *buffer = LineBuffer::new();
                *reference = Reference {
                    fed: Vec::new(),
                    consumed: 0,
                };
                return false;
            }
        }
    }
}

//! Fuzzes the line framer: arbitrary byte chunks, arbitrary (small) limits,
//! in an arbitrary interleaving of appends, line reads, runs of lines passed
//! on byte for byte (`take_run`), end-of-stream reads and shrinks, checked
//! against a plain reference on the bytes fed so far.
//!
//! Invariants:
//! - every line returned has no `\n` and is at most the limit in force;
//! - lines plus their terminators (`\n`, or `\r\n` with the `\r` stripped)
//!   and runs reproduce exactly the prefix of the input consumed so far;
//! - a run is the next k >= 1 complete lines, `\n` included, each ending in
//!   a bare `\n`, at most the limit and accepted; it is maximal: it stops
//!   only at a line that is incomplete or does not qualify, or once it holds
//!   the budget or more (and not a line later); no run (`None`) exactly when
//!   the first pending line is incomplete or does not qualify, or the budget
//!   is 0;
//! - `accept` sees only the pending lines, in order, without their `\n`;
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
    /// A run of lines with limit `max % 33` and budget `budget`, accepting
    /// the lines that do not contain `reject`.
    Run {
        max: u8,
        budget: u8,
        reject: Option<u8>,
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
            Op::Run {
                max,
                budget,
                reject,
            } => run(&mut buffer, &mut reference, max, budget, reject),
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

/// The first line of `pending` with its `\n`, if it is complete.
fn first_line(pending: &[u8]) -> Option<&[u8]> {
    let newline = pending.iter().position(|&b| b == b'\n')?;
    Some(&pending[..=newline])
}

/// Takes a run (limit `max % 33`, budget `budget`, lines holding `reject`
/// refused) and checks it against the pending input.
fn run(
    buffer: &mut LineBuffer,
    reference: &mut Reference,
    max: u8,
    budget: u8,
    reject: Option<u8>,
) {
    let max = usize::from(max % 33);
    let budget = usize::from(budget);
    let accepts = |line: &[u8]| reject.is_none_or(|reject| !line.contains(&reject));
    // Whether a complete line, `\n` included, may be passed on as it is.
    let qualifies = |line: &[u8]| {
        let content = &line[..line.len() - 1];
        content.len() <= max && content.last() != Some(&b'\r') && accepts(content)
    };
    let mut seen = Vec::new();
    let result = buffer.take_run(max, budget, |line| {
        seen.push(line.to_vec());
        accepts(line)
    });
    let pending = reference.pending();

    let taken = result.as_ref().map_or(0, |range| range.len());
    // `accept` saw the pending lines in order, and none past the run's end
    // but the one that stopped it.
    let mut at = 0;
    for (i, line) in seen.iter().enumerate() {
        let expected = first_line(&pending[at..])
            .unwrap_or_else(|| panic!("accept saw {line:?}, not a pending line"));
        assert_eq!(
            &expected[..expected.len() - 1],
            line,
            "accept saw another line"
        );
        at += expected.len();
        assert!(
            at <= taken || i == seen.len() - 1,
            "accept called past the line that ended the run"
        );
    }

    let Some(range) = result else {
        let refused = match first_line(pending) {
            None => true,
            Some(line) => !qualifies(line),
        };
        assert!(
            budget == 0 || refused,
            "no run, yet {pending:?} starts with a line that qualifies \
             (limit {max}, budget {budget}, reject {reject:?})"
        );
        return;
    };
    let got = buffer.get(range);
    assert!(budget > 0, "a run under a budget of 0");
    assert!(!got.is_empty(), "an empty run");
    assert_eq!(got, &pending[..got.len()], "run differs from the input");
    assert_eq!(got.last(), Some(&b'\n'), "run ends in a partial line");
    // Its lines, each qualifying; all but the last under the budget.
    let mut at = 0;
    while at < got.len() {
        assert!(at < budget, "run goes on past its budget of {budget}");
        let line = first_line(&got[at..]).expect("ends in \\n");
        assert!(
            qualifies(line),
            "{line:?} in a run (limit {max}, reject {reject:?})"
        );
        at += line.len();
    }
    // Maximal: it stopped at the budget or at a line it could not take.
    if got.len() < budget
        && let Some(next) = first_line(&pending[got.len()..])
    {
        assert!(
            !qualifies(next),
            "run stopped before {next:?} (limit {max}, budget {budget}, reject {reject:?})"
        );
    }
    reference.consumed += got.len();
}

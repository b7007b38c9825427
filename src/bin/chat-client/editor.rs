//! The line editor, used when standard input and output are both a
//! terminal: a prompt, editing, history (Up, Down, Ctrl-R), and lines from
//! the partner printed above the prompt while the user types.
//!
//! It is rustyline's editor, run by the **editor thread**, which reports
//! each line to the main thread as the stdin thread does for a pipe
//! ([`Event::Typed`]). The main thread has lines printed above the prompt
//! through rustyline's external printer, from a **printer thread** of its
//! own, so that a slow terminal never holds up the chat.
//!
//! # Printing without a race
//!
//! The external printer hands a line to the editor while the editor is
//! reading keys (the terminal in raw mode), and writes it straight out
//! otherwise. Around the moment a line is accepted neither is safe: a line
//! handed over just before `readline` returns waits, unseen, for the next
//! `readline`, and one written out just after lands in the middle of the
//! accepted line. So the printer thread prints only while a [`Gate`] is
//! open. The keys that end a `readline` (Enter, Ctrl-D on an empty line,
//! Ctrl-C) close it before they act, and the first drawing of the next
//! prompt opens it again: rustyline draws the prompt only in raw mode,
//! when a handed-over line is shown at once.
//!
//! # Stopping
//!
//! At the end, [`Editor::finish`] has everything given to the printer
//! shown, then interrupts the `readline` under way with SIGINT (which
//! rustyline catches while it reads, as Ctrl-C), so that rustyline itself
//! puts the terminal back as it found it. Should that fail, the terminal
//! settings saved at the start are put back instead.

use std::borrow::Cow;
use std::io::{self, Write};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::MemHistory;
use rustyline::validate::Validator;
use rustyline::{
    Cmd, ColorMode, ConditionalEventHandler, Config, EventContext, EventHandler, ExternalPrinter,
    Helper, KeyCode, KeyEvent, Modifiers, RepeatCount,
};

use crate::{Event, is_quit};

/// How many earlier lines Up and Ctrl-R can reach.
const HISTORY: usize = 1000;

/// How long [`Editor::finish`] waits for the printer to empty and then for
/// the editor to stop, each. Both take microseconds; the bound is only for
/// a terminal that stopped taking output.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// How often [`Editor::finish`] sends SIGINT until the editor has stopped.
/// More than once, as a SIGINT that comes between two `readline` calls is
/// not seen by the editor.
const INTERRUPT_EVERY: Duration = Duration::from_millis(50);

/// What [`Editor::finish`] has the printer print to know that everything
/// before it is on the screen: cursor up a row, then a newline, which is no
/// change at all.
const NOTHING: &str = "\x1b[A\n";

/// Turns bracketed paste off; rustyline turns it on while it reads.
const BRACKETED_PASTE_OFF: &[u8] = b"\x1b[?2004l";

/// Whether the printer thread may print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Open,
    /// A key is ending the `readline` under way.
    Closed,
    /// Opens when the next prompt is drawn.
    OpenAtPrompt,
}

/// The gate the printer thread waits at (see the module's documentation).
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn set(&self, state: GateState) {
        *self.state.lock().unwrap() = state;
        self.changed.notify_all();
    }

    /// Called at every drawing of the prompt: opens the gate if it waits
    /// for that. A drawing after a key closed the gate (rustyline draws the
    /// accepted line once more) leaves it closed.
    fn prompt_drawn(&self) {
        let mut state = self.state.lock().unwrap();
        if *state == GateState::OpenAtPrompt {
            *state = GateState::Open;
            self.changed.notify_all();
        }
    }

    fn wait_open(&self) {
        let state = self.state.lock().unwrap();
        let _open = self
            .changed
            .wait_while(state, |state| *state != GateState::Open)
            .unwrap();
    }
}

/// What the printer thread is asked to do.
enum ToPrint {
    /// A line of text, without its newline.
    Line(String),
    /// Report, once everything before is on the screen.
    Flush(Sender<()>),
}

/// The running line editor and its printer.
pub struct Editor {
    to_print: Sender<ToPrint>,
    /// Set when the editor must stop, before it is interrupted.
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// Reports once the editor thread has ended.
    ended: Receiver<()>,
    /// The terminal's settings before the editor changed them.
    saved: libc::termios,
}

impl Editor {
    /// Starts the editor with `prompt`, reporting to `events`. Fails if the
    /// terminal cannot be edited (`TERM=dumb`, say): the caller then reads
    /// standard input as lines, as from a pipe.
    pub fn start(prompt: String, events: Sender<Event>) -> io::Result<Editor> {
        // SAFETY: `tcgetattr` fills in `saved`, plain data, or fails, in
        // which case it is not used.
        let saved = unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            saved
        };
        let config = Config::builder()
            .max_history_size(HISTORY)
            .map_err(io::Error::other)?
            .history_ignore_dups(true)
            .map_err(io::Error::other)?
            // Colours on, whatever the environment says, so that rustyline
            // calls the helper's `highlight_prompt` at every drawing of the
            // prompt (the gate needs it). The helper adds no colour.
            .color_mode(ColorMode::Forced)
            .build();
        let gate = Arc::new(Gate {
            state: Mutex::new(GateState::OpenAtPrompt),
            changed: Condvar::new(),
        });
        let mut editor =
            rustyline::Editor::<PromptWatch, MemHistory>::with_history(config, MemHistory::new())
                .map_err(io::Error::other)?;
        editor.set_helper(Some(PromptWatch(gate.clone())));
        let enter = [
            KeyEvent(KeyCode::Enter, Modifiers::NONE),
            KeyEvent::ctrl('M'),
            KeyEvent::ctrl('J'),
        ];
        for key in enter {
            editor.bind_sequence(key, closing(&gate, Ends::Accept));
        }
        editor.bind_sequence(KeyEvent::ctrl('D'), closing(&gate, Ends::EndOfInput));
        editor.bind_sequence(KeyEvent::ctrl('C'), closing(&gate, Ends::Interrupt));
        let printer = editor.create_external_printer().map_err(io::Error::other)?;

        let (to_print, printer_queue) = mpsc::channel();
        let printer_gate = gate.clone();
        thread::spawn(move || print_all(printer, printer_queue, &printer_gate));

        let stop = Arc::new(AtomicBool::new(false));
        let (ended_tx, ended) = mpsc::channel();
        let editor_stop = stop.clone();
        let thread = thread::spawn(move || {
            edit(editor, &prompt, &events, &editor_stop);
            // Nothing will draw a prompt again: print straight out.
            gate.set(GateState::Open);
            let _ = ended_tx.send(());
        });
        Ok(Editor {
            to_print,
            stop,
            thread,
            ended,
            saved,
        })
    }

    /// Prints `text` above the prompt.
    pub fn print(&self, text: String) {
        // The printer thread runs until the editor is finished.
        let _ = self.to_print.send(ToPrint::Line(text));
    }

    /// Stops the editor once everything printed is shown, and leaves the
    /// terminal as it was before.
    pub fn finish(self) {
        let (shown_tx, shown) = mpsc::channel();
        let _ = self.to_print.send(ToPrint::Flush(shown_tx));
        let _ = shown.recv_timeout(FINISH_WAIT);
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + FINISH_WAIT;
        let stopped = loop {
            // SAFETY: the thread is not joined, so its id is still valid
            // even if it has ended. SIGINT only wakes it: rustyline's
            // handler while it reads, signal-hook's (the Ctrl-C watcher)
            // otherwise.
            unsafe {
                libc::pthread_kill(self.thread.as_pthread_t(), libc::SIGINT);
            }
            match self.ended.recv_timeout(INTERRUPT_EVERY) {
                Ok(()) => break true,
                Err(_) if Instant::now() >= deadline => break false,
                Err(_) => {}
            }
        };
        if !stopped {
            // SAFETY: `saved` came from `tcgetattr` on the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
            }
            let mut stdout = io::stdout();
            let _ = stdout.write_all(BRACKETED_PASTE_OFF);
            let _ = stdout.write_all(b"\r\n");
            let _ = stdout.flush();
        }
    }
}

/// Runs `readline` until told to stop, reporting each line. After a line
/// that leaves (or Ctrl-D, Ctrl-C), it goes on with an empty prompt: lines
/// printed while the client leaves still go through the editor, and the
/// empty row is taken away at the end.
fn edit(
    mut editor: rustyline::Editor<PromptWatch, MemHistory>,
    prompt: &str,
    events: &Sender<Event>,
    stop: &AtomicBool,
) {
    let mut leaving = false;
    let gate = editor.helper().expect("the helper is set").0.clone();
    while !stop.load(Ordering::SeqCst) {
        gate.set(GateState::OpenAtPrompt);
        let event = match editor.readline(if leaving { "" } else { prompt }) {
            Ok(_) | Err(ReadlineError::Interrupted) if stop.load(Ordering::SeqCst) => {
                if leaving {
                    // Back onto the empty prompt's row, and clear it of
                    // anything typed after leaving.
                    let mut stdout = io::stdout();
                    let _ = stdout.write_all(b"\x1b[A\r\x1b[K");
                    let _ = stdout.flush();
                }
                return;
            }
            Ok(text) => {
                if !text.trim().is_empty() {
                    let _ = editor.add_history_entry(text.as_str());
                }
                // A paste of several lines is accepted as one text.
                for line in text.split('\n') {
                    leaving |= is_quit(line.as_bytes());
                    if events.send(Event::Typed(line.as_bytes().to_vec())).is_err() {
                        return; // the main thread has finished
                    }
                }
                continue;
            }
            Err(ReadlineError::Interrupted) => Event::Interrupted,
            Err(ReadlineError::Eof) => Event::InputEnded(None),
            Err(e) => {
                let _ = events.send(Event::InputEnded(Some(io::Error::other(e))));
                return;
            }
        };
        leaving = true;
        if events.send(event).is_err() {
            return;
        }
    }
}

/// Prints each line given, when the gate is open.
fn print_all(mut printer: impl ExternalPrinter, queue: Receiver<ToPrint>, gate: &Gate) {
    for item in queue {
        match item {
            ToPrint::Line(mut text) => {
                gate.wait_open();
                // With its newline: printed straight out (no editor
                // reading), the text is written exactly as given.
                text.push('\n');
                let _ = printer.print(text);
            }
            ToPrint::Flush(shown) => {
                // The second print is taken only once the first has been,
                // which the editor does after it has shown everything
                // before. (Printed straight out, each is shown at once.)
                for _ in 0..2 {
                    gate.wait_open();
                    let _ = printer.print(NOTHING.to_string());
                }
                let _ = shown.send(());
            }
        }
    }
}

/// What a key that ends a `readline` does.
#[derive(Debug, Clone, Copy)]
enum Ends {
    /// Enter: accept the line.
    Accept,
    /// Ctrl-D: the end of input, on an empty line (elsewhere it deletes).
    EndOfInput,
    /// Ctrl-C.
    Interrupt,
}

/// A key binding that closes the gate, then does what the key does.
struct Closing {
    gate: Arc<Gate>,
    ends: Ends,
}

fn closing(gate: &Arc<Gate>, ends: Ends) -> EventHandler {
    EventHandler::Conditional(Box::new(Closing {
        gate: gate.clone(),
        ends,
    }))
}

impl ConditionalEventHandler for Closing {
    fn handle(
        &self,
        _: &rustyline::Event,
        _: RepeatCount,
        _: bool,
        ctx: &EventContext,
    ) -> Option<Cmd> {
        let cmd = match self.ends {
            Ends::Accept => Cmd::AcceptLine,
            Ends::EndOfInput if ctx.line().is_empty() => Cmd::EndOfFile,
            // Not the end: rustyline's own binding (delete a character).
            Ends::EndOfInput => return None,
            Ends::Interrupt => Cmd::Interrupt,
        };
        self.gate.set(GateState::Closed);
        Some(cmd)
    }
}

/// The editor's helper: it completes, hints and colours nothing, and tells
/// the gate each time the prompt is drawn.
struct PromptWatch(Arc<Gate>);

impl Highlighter for PromptWatch {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        self.0.prompt_drawn();
        Cow::Borrowed(prompt)
    }
}

impl Completer for PromptWatch {
    type Candidate = String;
}

impl Hinter for PromptWatch {
    type Hint = String;
}

impl Validator for PromptWatch {}

impl Helper for PromptWatch {}

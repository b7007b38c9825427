//! `chat-client`: chat through a portal-chat server from a terminal or a
//! script.
//!
//! Joining (portal, retries while full, handshake) is done by the library's
//! [`Session::join_any`]. Chatting then needs to wait for three things at
//! once, so three small threads each block on one of them and report to the
//! main thread over one channel:
//!
//! - the **stdin thread** reads the user's lines (in a terminal, the line
//!   editor's thread does, see [`editor`]);
//! - the **server thread** reads the server's messages;
//! - the **signal thread** waits for Ctrl-C (SIGINT), and in the line editor
//!   for SIGTERM too.
//!
//! The main thread takes the [`Event`]s in the order they arrive: it sends the
//! user's lines, prints the server's, and decides when to leave and with which
//! [`Exit`] status. Why threads, when the server is one mio loop: a blocking
//! read is the simplest way to read stdin whether it is a terminal, a pipe or
//! a file (epoll refuses regular files), and a client has only three things to
//! wait for.
//!
//! # Wires
//!
//! `--wire` picks how messages are framed, as the server's own `--wire`
//! does: `line` (the default) or `dotnet`. The library frames them
//! ([`Session::join_any_with_wire`]); here, a line typed is one message
//! whatever the wire, and a message from the partner is shown as one line
//! (see [`screen`] for one that holds a newline).
//!
//! # Pipes and terminals
//!
//! With pipes and files the client is for scripts: each line of stdin is
//! sent as it is (`/quit` leaves), each partner line is written to stdout
//! byte for byte, and nothing else changes. When stdin and stdout are a
//! terminal, a person is typing: the line editor gives a prompt, editing
//! and history, a few commands (`/help`), and keeps empty lines and lines
//! over `--max-line` from being sent. Whatever is shown on a terminal is
//! shown safely ([`screen`]).
//!
//! # Layout
//!
//! - `main.rs` (here): joining, the events and the chat loop, exit statuses.
//! - [`args`]: the command line.
//! - [`input`]: reading lines from a pipe or a file.
//! - [`editor`]: the line editor, when stdin and stdout are a terminal.
//! - [`screen`]: showing what arrives, as bytes in a pipe and as safe,
//!   labelled text in a terminal.

mod args;
mod editor;
mod input;
mod screen;

use std::io::{self, IsTerminal, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use portal_chat::client::{
    self, FULL_RETRY_DELAY, JoinError, JoinEvent, Message, RetryPolicy, Session, SessionReader,
    SessionWriter,
};
use portal_chat::wire::Wire;
use signal_hook::consts::{SIGINT, SIGTERM};

use args::{Command, Options, parse_args};
use editor::Editor;
use input::read_stdin;
use screen::Screen;

/// Usage text printed by `chat-client --help`.
const USAGE: &str = "\
Usage: chat-client [OPTIONS]

Chat through a portal-chat server. Asks the portal for a port, proves itself
there, then sends each line of standard input to the partner and prints the
partner's lines on standard output as they arrive. Server notices (lines
beginning with SERVER) and the client's own messages (beginning with
chat-client:) go to standard error.

In a terminal, lines are edited with a prompt and history, /help lists the
commands, and what the partner sends is shown with its control characters
made visible (^M, ^J, ^[, \\xNN), labelled with the time and the partner's
port. With pipes and files every byte is passed on as it is.

Options:
  --host HOST    server address or name; every address of a
                 name is tried, in order                    [127.0.0.1]
  --port PORT    the server's portal port                   [50000]
  --retries N    while the server is full, ask again at most
                 N times, 2 s apart                         [no limit]
  --max-line BYTES
                 the server's --max-line: a longer line is
                 not sent (the server would end the
                 session), and the client says so           [8192]
  --wire line|dotnet
                 the server's --wire: lines, or .NET's
                 length-prefixed strings (each line typed
                 is one message; the original C# server's
                 FULL and IDLE TIMEOUT are understood)      [line]
  -h, --help     print this help
  --version      print the version

Leave with /quit, end of input (Ctrl-D) or Ctrl-C (in the line editor,
SIGTERM too). Ctrl-C while still joining stops the program at once (the
shell reports the signal).

Exit status:
  0  left: /quit, end of input or Ctrl-C
  1  unexpected answer from the server, or stdin/stdout failed
  2  bad flag or value
  3  cannot resolve HOST or reach the server
  4  the server stayed full after every retry
  5  the handshake was refused twice
  6  the server ended the session: SERVER>>> TIMEOUT or TOTAL TIME TIMEOUT
  7  the server went away: closed, reset or SERVER>>> Server shutting down";

/// The line that leaves, when typed on its own.
const QUIT: &[u8] = b"/quit";

/// The longest line of standard input that is read whole, in bytes, not
/// counting its line ending, unless `--max-line` is larger. A longer line
/// is skipped as it is read, with a message (see [`input::next_line`]).
///
/// The bound is there so that input without a newline (`head -c 100M
/// /dev/zero | chat-client`) cannot make the client hold more and more
/// memory. It is far above the server's default `--max-line`, and small
/// enough that holding one line costs the client little. A line under it
/// but over `--max-line` is read, then refused by [`Options::max_line`]'s
/// check, with a message that gives its length.
const MAX_INPUT_LINE: usize = 1024 * 1024;

/// The server's default `--max-line`, the client's default too.
const DEFAULT_MAX_LINE: usize = 8192;

/// How long to wait, after sending `CLIENT>>> TERMINATE`, for the server to
/// close the connection. The server closes at once; the wait only lets the
/// partner's last lines in flight be printed.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// How the program ends. Each way has its own exit status, listed in
/// [`USAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Left the chat: `/quit`, end of input or Ctrl-C.
    Left = 0,
    /// The server broke the protocol, or stdin or stdout failed.
    Failed = 1,
    /// A bad flag or value.
    Usage = 2,
    /// The host name did not resolve, or a connection could not be made.
    Unreachable = 3,
    /// The portal was full on every try.
    Full = 4,
    /// The handshake was refused, and refused again with a fresh port.
    Refused = 5,
    /// The server ended the session: idle or total-time timeout.
    TimedOut = 6,
    /// The server closed or reset the connection, or is shutting down.
    ServerGone = 7,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Something the main thread must react to while chatting.
enum Event {
    /// A line from standard input, without its line ending, or from the
    /// line editor.
    Typed(Vec<u8>),
    /// A line from standard input longer than this many bytes, skipped as
    /// it was read.
    TooLong(usize),
    /// Standard input ended, or failed with the error.
    InputEnded(Option<io::Error>),
    /// Ctrl-C (or SIGTERM, in the line editor).
    Interrupted,
    /// A message from the server.
    FromServer(Message),
    /// The server closed the connection, or it failed with the error.
    ServerClosed(Option<io::Error>),
}

fn main() -> ExitCode {
    match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => run(&options).into(),
        Ok(Command::Help) => {
            println!("{USAGE}");
            Exit::Left.into()
        }
        Ok(Command::Version) => {
            println!("chat-client {}", env!("CARGO_PKG_VERSION"));
            Exit::Left.into()
        }
        Err(message) => {
            say(message);
            Exit::Usage.into()
        }
    }
}

/// Resolves, joins and chats; returns how it ended.
fn run(options: &Options) -> Exit {
    let hosts = match client::resolve(&options.host) {
        Ok(hosts) => hosts,
        Err(e) => {
            say(format!("cannot resolve {}: {e}", options.host));
            return Exit::Unreachable;
        }
    };
    let session = match join(&hosts, options) {
        Ok(session) => session,
        Err(exit) => return exit,
    };
    let (events_tx, events) = mpsc::channel();
    // Ctrl-C is caught only from here on: while joining, the default action
    // (stop at once) is right, as there is no session to leave yet. It is
    // caught before "connected" is printed, so whoever waits for that line
    // knows that Ctrl-C will leave cleanly.
    if let Err(e) = watch_signal(SIGINT, events_tx.clone()) {
        say(format!("cannot catch Ctrl-C: {e}"));
        return Exit::Failed;
    }
    let (port, partner) = (session.port, session.partner_port);
    if session.partner_present {
        say(format!(
            "connected on port {port}; partner {partner} is here"
        ));
    } else {
        say(format!(
            "connected on port {port}; waiting for partner {partner}"
        ));
    }
    let editor = if io::stdin().is_terminal() && io::stdout().is_terminal() {
        // If the terminal cannot be edited, it is read as lines instead.
        Editor::start(Screen::prompt(partner), events_tx.clone()).ok()
    } else {
        None
    };
    let input = match &editor {
        Some(_) => Input::Editor,
        None if io::stdin().is_terminal() => Input::Terminal,
        None => Input::Script,
    };
    if input == Input::Editor {
        // Also SIGTERM leaves cleanly, so that the terminal is handed back
        // in the state it was in (the line editor changes it).
        if let Err(e) = watch_signal(SIGTERM, events_tx.clone()) {
            say(format!("cannot catch SIGTERM: {e}"));
        }
    } else {
        read_stdin(options.max_line.max(MAX_INPUT_LINE), events_tx.clone());
    }
    let mut screen = Screen::new(partner, editor);
    match input {
        Input::Editor => {
            screen.say("press Enter to send a line; /help lists the commands, /quit leaves")
        }
        Input::Terminal => {
            screen.say("type a line and press Enter to send it; /quit, Ctrl-D or Ctrl-C leaves")
        }
        Input::Script => {}
    }
    let (reader, writer) = session.split();
    read_server(reader, events_tx);
    Chat {
        writer,
        events,
        screen,
        port,
        max_line: options.max_line,
        wire: options.wire,
        input,
    }
    .run()
}

/// Joins through the portal at `hosts` (the addresses of `--host`), telling
/// the user about every setback. On failure, says why and returns the exit
/// status.
fn join(hosts: &[IpAddr], options: &Options) -> Result<Session, Exit> {
    let policy = RetryPolicy {
        retries: options.retries,
        delay: FULL_RETRY_DELAY,
    };
    // Counted in u64 so that `--retries 4294967295` cannot overflow.
    let attempts = options.retries.map(|retries| u64::from(retries) + 1);
    let on_event = |event| match event {
        JoinEvent::Full { attempt } => match attempts {
            Some(last) if u64::from(attempt) >= last => {
                say(format!("the server is full (attempt {attempt} of {last})"))
            }
            Some(last) => say(format!(
                "the server is full (attempt {attempt} of {last}); asking again in {} s",
                FULL_RETRY_DELAY.as_secs()
            )),
            None => say(format!(
                "the server is full (attempt {attempt}); asking again in {} s",
                FULL_RETRY_DELAY.as_secs()
            )),
        },
        JoinEvent::Refused { port } => say(format!(
            "port {port} refused the passcode (the reservation may have lapsed); \
             asking the portal again"
        )),
    };
    let joined = Session::join_any_with_wire(hosts, options.port, policy, options.wire, on_event);
    joined.map_err(|e| match e {
        JoinError::Full { .. } => {
            say(format!("giving up: {e}"));
            Exit::Full
        }
        JoinError::Refused => {
            say("giving up: the passcode was refused twice");
            Exit::Refused
        }
        JoinError::Io(e) => {
            match hosts {
                [host] => say(format!(
                    "cannot reach the server at {}: {e}",
                    SocketAddr::new(*host, options.port)
                )),
                // The error names each address and what it said.
                _ => say(format!(
                    "cannot reach the server at {}, port {}: {e}",
                    options.host, options.port
                )),
            }
            Exit::Unreachable
        }
        JoinError::Protocol(_) => {
            say(e);
            Exit::Failed
        }
    })
}

/// Reports each `signal` (SIGINT: Ctrl-C) as [`Event::Interrupted`], from
/// now on.
///
/// The signal handler may do almost nothing (no locks, no allocation), so it
/// only writes a byte into a socket pair (signal-hook's self-pipe); a thread
/// blocked on the other end turns each byte into an event.
fn watch_signal(signal: libc::c_int, events: Sender<Event>) -> io::Result<()> {
    let (mut read_end, write_end) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal, write_end)?;
    thread::spawn(move || {
        let mut byte = [0];
        // One byte per signal (several quick ones may share a byte). The
        // loop ends only if the socket pair fails or the main thread has
        // finished.
        while read_end.read_exact(&mut byte).is_ok() && events.send(Event::Interrupted).is_ok() {}
    });
    Ok(())
}

/// Reports each message from the server, then how the connection ended.
fn read_server(mut reader: SessionReader, events: Sender<Event>) {
    thread::spawn(move || {
        loop {
            let event = match reader.next_message() {
                Ok(Some(message)) => Event::FromServer(message),
                Ok(None) => Event::ServerClosed(None),
                Err(e) => Event::ServerClosed(Some(e)),
            };
            let last = matches!(event, Event::ServerClosed(_));
            // A failed send means the main thread has finished: stop too.
            if events.send(event).is_err() || last {
                return;
            }
        }
    });
}

/// The chat itself, once joined.
struct Chat {
    /// Where the user's lines go.
    writer: SessionWriter,
    /// Everything the threads report.
    events: Receiver<Event>,
    /// Where everything is shown.
    screen: Screen,
    /// Our port, for the farewell message.
    port: u16,
    /// The longest line sent ([`Options::max_line`]), in bytes: on either
    /// wire, the length of the message's text.
    max_line: usize,
    /// The wire, which decides which notices end the session.
    wire: Wire,
    /// Where the user's lines come from.
    input: Input,
}

/// Where the user's lines come from, which decides how they are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// A pipe or a file: every line is sent as it is, but `/quit`.
    Script,
    /// The line editor: commands, and empty lines are not sent.
    Editor,
    /// A terminal without the line editor (stdout is not a terminal, or the
    /// terminal cannot be edited): as a script, but a line with an escape
    /// sequence in it (an arrow key, which cannot edit here) is not sent.
    Terminal,
}

/// What a line typed at the line editor asks for.
#[derive(Debug, PartialEq)]
enum Typed<'a> {
    /// Send this line.
    Send(&'a [u8]),
    /// Nothing: the line is empty, or only spaces.
    Nothing,
    /// `/quit`.
    Quit,
    /// `/help`.
    Help,
    /// A command that does not exist.
    Unknown(&'a [u8]),
}

impl<'a> Typed<'a> {
    /// Reads a line typed at the line editor. A line beginning with `/` is
    /// a command; `//` sends the line without its first `/`.
    fn read(line: &'a [u8]) -> Typed<'a> {
        let command = line.trim_ascii();
        if command.is_empty() {
            return Typed::Nothing;
        }
        if line.starts_with(b"//") {
            return Typed::Send(&line[1..]);
        }
        match command {
            QUIT => Typed::Quit,
            b"/help" => Typed::Help,
            _ if command.starts_with(b"/") => Typed::Unknown(command),
            _ => Typed::Send(line),
        }
    }
}

/// Whether `line`, typed at the line editor, leaves.
fn is_quit(line: &[u8]) -> bool {
    Typed::read(line) == Typed::Quit
}

/// What `/help` prints, after `chat-client: `.
const COMMANDS: &str = "\
commands:
  /quit     leave (so do Ctrl-D on an empty line, and Ctrl-C)
  /help     this list
  //text    send \"/text\" (a line beginning with / is a command)
  Enter sends the line; empty lines are not sent. Up and Down bring back
  earlier lines, Ctrl-R searches them, and the keys of a shell edit.";

impl Chat {
    /// Handles events until the user leaves or the server ends the
    /// session, then hands the terminal back.
    fn run(mut self) -> Exit {
        let exit = self.chat();
        self.screen.finish();
        exit
    }

    /// Handles events until the user leaves or the server ends the session.
    fn chat(&mut self) -> Exit {
        loop {
            // The signal thread holds a sender as long as the program runs,
            // so the channel never disconnects.
            let event = self.events.recv().expect("the signal thread never ends");
            match event {
                Event::Typed(line) => {
                    if let Some(exit) = self.typed(&line) {
                        return exit;
                    }
                }
                Event::TooLong(limit) => self
                    .screen
                    .say(format!("line too long (limit {limit} bytes); not sent")),
                Event::InputEnded(None) | Event::Interrupted => return self.leave(Exit::Left),
                Event::InputEnded(Some(e)) => {
                    self.screen.say(format!("cannot read standard input: {e}"));
                    return self.leave(Exit::Failed);
                }
                Event::FromServer(message) => {
                    if let Err(e) = self.show(&message) {
                        self.screen
                            .say(format!("cannot write standard output: {e}"));
                        return self.leave(Exit::Failed);
                    }
                    // The server closes right after these notices; there is
                    // nothing left to wait for.
                    if message.is_timeout_with_wire(self.wire) {
                        self.screen.say("the server ended the session");
                        return Exit::TimedOut;
                    }
                    if message.is_shutdown() {
                        self.screen.say("the server is shutting down");
                        return Exit::ServerGone;
                    }
                }
                Event::ServerClosed(None) => {
                    self.screen.say("the server closed the connection");
                    return Exit::ServerGone;
                }
                Event::ServerClosed(Some(e)) => {
                    self.screen
                        .say(format!("lost the connection to the server: {e}"));
                    return Exit::ServerGone;
                }
            }
        }
    }

    /// Acts on a line the user typed: sends it, or runs the command.
    /// Returns how the program ends, if it does.
    fn typed(&mut self, line: &[u8]) -> Option<Exit> {
        let to_send = match self.input {
            Input::Editor => match Typed::read(line) {
                Typed::Send(line) => line,
                Typed::Nothing => return None,
                Typed::Quit => return Some(self.leave(Exit::Left)),
                Typed::Help => {
                    self.screen.say(COMMANDS);
                    return None;
                }
                Typed::Unknown(command) => {
                    self.screen.say(format!(
                        "unknown command {} (see /help; // sends a line beginning with /)",
                        screen::visible(command)
                    ));
                    return None;
                }
            },
            _ if line == QUIT => return Some(self.leave(Exit::Left)),
            Input::Terminal if line.contains(&0x1b) => {
                self.screen
                    .say("not sent: an escape code in the line (arrow keys cannot edit here)");
                return None;
            }
            Input::Script | Input::Terminal => line,
        };
        // Sent, it would end the session: the server closes the connection
        // of a client whose line is over its limit.
        if to_send.len() > self.max_line {
            self.screen.say(format!(
                "line too long ({} bytes; --max-line is {}); not sent",
                to_send.len(),
                self.max_line
            ));
            return None;
        }
        if let Err(e) = self.writer.send_line(to_send) {
            self.screen
                .say(format!("lost the connection to the server: {e}"));
            return Some(Exit::ServerGone);
        }
        None
    }

    /// Sends `CLIENT>>> TERMINATE`, then waits up to [`LEAVE_WAIT`] for the
    /// server to close, still showing what arrives (the partner's last
    /// lines). Returns `status`, unless the server was already gone.
    fn leave(&mut self, status: Exit) -> Exit {
        if let Err(e) = self.writer.terminate() {
            self.screen
                .say(format!("lost the connection to the server: {e}"));
            return Exit::ServerGone;
        }
        let deadline = Instant::now() + LEAVE_WAIT;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                // Leaving anyway: a failing stdout changes nothing now.
                Ok(Event::FromServer(message)) => {
                    let _ = self.show(&message);
                }
                // A second Ctrl-C stops the wait.
                Ok(Event::ServerClosed(_) | Event::Interrupted) => break,
                // Input after leaving is not sent.
                Ok(Event::Typed(_) | Event::TooLong(_) | Event::InputEnded(_)) => {}
                // Only a timeout: the signal thread keeps the channel open.
                Err(_) => {
                    self.screen
                        .say("the server did not close the connection; leaving anyway");
                    break;
                }
            }
        }
        self.screen.say(format!("left port {}", self.port));
        status
    }

    /// Shows a message from the server: a partner's line or a notice.
    fn show(&mut self, message: &Message) -> io::Result<()> {
        match message {
            Message::Chat(line) => self.screen.partner_line(line),
            Message::Notice(notice) => {
                self.screen.notice(notice);
                Ok(())
            }
        }
    }
}

/// Prints one of the client's own messages on stderr, before the chat
/// (from then on, [`Screen::say`]).
fn say(message: impl std::fmt::Display) {
    eprintln!("chat-client: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_typed_at_the_editor_are_text_commands_or_nothing() {
        for (line, typed) in [
            (&b"hello"[..], Typed::Send(b"hello")),
            (b"  hello ", Typed::Send(b"  hello ")),
            (b"", Typed::Nothing),
            (b" \t ", Typed::Nothing),
            (b"/quit", Typed::Quit),
            (b" /quit ", Typed::Quit),
            (b"/help", Typed::Help),
            (b"/quit now", Typed::Unknown(b"/quit now")),
            (b"/", Typed::Unknown(b"/")),
            (b"//quit", Typed::Send(b"/quit")),
            (b"//", Typed::Send(b"/")),
        ] {
            assert_eq!(Typed::read(line), typed, "{line:?}");
        }
        assert!(is_quit(b"/quit") && !is_quit(b"//quit"));
    }
}

//! `chat-client`: chat through a portal-chat server from a terminal or a
//! script.
//!
//! Joining (portal, retries while full, handshake) is done by the library's
//! [`Session::join_observed`]. Chatting then needs to wait for three things at
//! once, so three small threads each block on one of them and report to the
//! main thread over one channel:
//!
//! - the **stdin thread** reads the user's lines;
//! - the **server thread** reads the server's lines;
//! - the **signal thread** waits for Ctrl-C (SIGINT).
//!
//! The main thread takes the [`Event`]s in the order they arrive: it sends the
//! user's lines, prints the server's, and decides when to leave and with which
//! [`Exit`] status. Why threads, when the server is one mio loop: a blocking
//! read is the simplest way to read stdin whether it is a terminal, a pipe or
//! a file (epoll refuses regular files), and a client has only three things to
//! wait for.
//!
//! # Layout
//!
//! - `main.rs` (here): joining, the events and the chat loop, exit statuses.
//! - [`args`]: the command line.
//! - [`input`]: reading lines from a pipe or a file.

mod args;
mod input;

use std::io::{self, IsTerminal, Read, Write};
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
use signal_hook::consts::SIGINT;

use args::{Command, Options, parse_args};
use input::read_stdin;

/// Usage text printed by `chat-client --help`.
const USAGE: &str = "\
Usage: chat-client [OPTIONS]

Chat through a portal-chat server. Asks the portal for a port, proves itself
there, then sends each line of standard input to the partner and prints the
partner's lines on standard output as they arrive. Server notices (lines
beginning with SERVER) and the client's own messages (beginning with
chat-client:) go to standard error.

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
  -h, --help     print this help
  --version      print the version

Leave with /quit, end of input (Ctrl-D) or Ctrl-C. Ctrl-C while still joining
stops the program at once (the shell reports the signal).

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
    /// A line from standard input, without its line ending.
    Typed(Vec<u8>),
    /// A line from standard input longer than this many bytes, skipped as
    /// it was read.
    TooLong(usize),
    /// Standard input ended, or failed with the error.
    InputEnded(Option<io::Error>),
    /// Ctrl-C.
    Interrupted,
    /// A line from the server.
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
    if let Err(e) = watch_ctrl_c(events_tx.clone()) {
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
    if io::stdin().is_terminal() {
        say("type a line and press Enter to send it; /quit, Ctrl-D or Ctrl-C leaves");
    }
    let (reader, writer) = session.split();
    read_server(reader, events_tx.clone());
    read_stdin(options.max_line.max(MAX_INPUT_LINE), events_tx);
    Chat {
        writer,
        events,
        port,
        max_line: options.max_line,
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
    Session::join_any(hosts, options.port, policy, on_event).map_err(|e| match e {
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

/// Reports each Ctrl-C as [`Event::Interrupted`], from now on.
///
/// The signal handler may do almost nothing (no locks, no allocation), so it
/// only writes a byte into a socket pair (signal-hook's self-pipe); a thread
/// blocked on the other end turns each byte into an event.
fn watch_ctrl_c(events: Sender<Event>) -> io::Result<()> {
    let (mut read_end, write_end) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(SIGINT, write_end)?;
    thread::spawn(move || {
        let mut byte = [0];
        // One byte per Ctrl-C (several quick ones may share a byte). The
        // loop ends only if the socket pair fails or the main thread has
        // finished.
        while read_end.read_exact(&mut byte).is_ok() && events.send(Event::Interrupted).is_ok() {}
    });
    Ok(())
}

/// Reports each line from the server, then how the connection ended.
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
    /// Our port, for the farewell message.
    port: u16,
    /// The longest line sent ([`Options::max_line`]).
    max_line: usize,
}

impl Chat {
    /// Handles events until the user leaves or the server ends the session.
    fn run(mut self) -> Exit {
        loop {
            // The signal thread holds a sender as long as the program runs,
            // so the channel never disconnects.
            let event = self.events.recv().expect("the signal thread never ends");
            match event {
                Event::Typed(line) if line == QUIT => return self.leave(Exit::Left),
                // Sent, it would end the session: the server closes the
                // connection of a client whose line is over its limit.
                Event::Typed(line) if line.len() > self.max_line => say(format!(
                    "line too long ({} bytes; the server takes at most {}, see --max-line); \
                     not sent",
                    line.len(),
                    self.max_line
                )),
                Event::Typed(line) => {
                    if let Err(e) = self.writer.send_line(&line) {
                        say(format!("lost the connection to the server: {e}"));
                        return Exit::ServerGone;
                    }
                }
                Event::TooLong(limit) => {
                    say(format!("line too long (limit {limit} bytes); not sent"))
                }
                Event::InputEnded(None) | Event::Interrupted => return self.leave(Exit::Left),
                Event::InputEnded(Some(e)) => {
                    say(format!("cannot read standard input: {e}"));
                    return self.leave(Exit::Failed);
                }
                Event::FromServer(message) => {
                    if let Err(e) = show(&message) {
                        say(format!("cannot write standard output: {e}"));
                        return self.leave(Exit::Failed);
                    }
                    // The server closes right after these notices; there is
                    // nothing left to wait for.
                    if message.is_timeout() {
                        say("the server ended the session");
                        return Exit::TimedOut;
                    }
                    if message.is_shutdown() {
                        say("the server is shutting down");
                        return Exit::ServerGone;
                    }
                }
                Event::ServerClosed(None) => {
                    say("the server closed the connection");
                    return Exit::ServerGone;
                }
                Event::ServerClosed(Some(e)) => {
                    say(format!("lost the connection to the server: {e}"));
                    return Exit::ServerGone;
                }
            }
        }
    }

    /// Sends `CLIENT>>> TERMINATE`, then waits up to [`LEAVE_WAIT`] for the
    /// server to close, still showing what arrives (the partner's last
    /// lines). Returns `status`, unless the server was already gone.
    fn leave(mut self, status: Exit) -> Exit {
        if let Err(e) = self.writer.terminate() {
            say(format!("lost the connection to the server: {e}"));
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
                    let _ = show(&message);
                }
                // A second Ctrl-C stops the wait.
                Ok(Event::ServerClosed(_) | Event::Interrupted) => break,
                // Input after leaving is not sent.
                Ok(Event::Typed(_) | Event::TooLong(_) | Event::InputEnded(_)) => {}
                // Only a timeout: the signal thread keeps the channel open.
                Err(_) => {
                    say("the server did not close the connection; leaving anyway");
                    break;
                }
            }
        }
        say(format!("left port {}", self.port));
        status
    }
}

/// Prints a partner's line on stdout at once, or a server notice, as it
/// is, on stderr.
fn show(message: &Message) -> io::Result<()> {
    match message {
        Message::Chat(line) => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(line)?;
            stdout.write_all(b"\n")?;
            // Flushed here rather than left to the buffering rules: a person
            // or a script reading stdout must see each line as it arrives.
            stdout.flush()
        }
        Message::Notice(notice) => {
            eprintln!("{notice}");
            Ok(())
        }
    }
}

/// Prints one of the client's own messages on stderr.
fn say(message: impl std::fmt::Display) {
    eprintln!("chat-client: {message}");
}

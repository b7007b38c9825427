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

use std::io::{self, BufRead, IsTerminal, Read, Write};
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
/// is skipped as it is read, with a message (see [`next_line`]).
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

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    /// Chat with these options.
    Run(Options),
    /// Print [`USAGE`] and exit.
    Help,
    /// Print the name and version and exit.
    Version,
}

/// Where the server is and how patient to be with it.
#[derive(Debug, PartialEq)]
struct Options {
    /// An IP address or a host name.
    host: String,
    /// The portal port.
    port: u16,
    /// Retries while the portal is full; `None` retries without limit.
    retries: Option<u32>,
    /// The longest line sent, in bytes, without its line ending: the
    /// server's `--max-line`, past which it would end the session.
    max_line: usize,
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

/// The flags [`parse_args`] knows, for telling a missing value from an
/// unknown flag.
const FLAGS: [&str; 7] = [
    "--host",
    "--port",
    "--retries",
    "--max-line",
    "-h",
    "--help",
    "--version",
];

/// Parses the arguments after the program name. The error is one line,
/// ready to print.
fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let mut options = Options {
        host: "127.0.0.1".to_string(),
        port: 50000,
        retries: None,
        max_line: DEFAULT_MAX_LINE,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("version") => return Ok(Command::Version),
            Long("host") => {
                let value = flag_value(&mut parser, "--host")?;
                if value.is_empty() {
                    return Err(invalid(&value, "--host", "empty"));
                }
                options.host = value;
            }
            Long("port") => {
                let value = flag_value(&mut parser, "--port")?;
                options.port = match value.parse() {
                    Ok(0) | Err(_) => {
                        return Err(invalid(&value, "--port", "not a port number (1-65535)"));
                    }
                    Ok(port) => port,
                };
            }
            Long("retries") => {
                let value = flag_value(&mut parser, "--retries")?;
                let retries = value
                    .parse()
                    .map_err(|_| invalid(&value, "--retries", "not a whole number"))?;
                options.retries = Some(retries);
            }
            Long("max-line") => {
                let value = flag_value(&mut parser, "--max-line")?;
                options.max_line = match value.parse() {
                    Ok(0) | Err(_) => {
                        return Err(invalid(&value, "--max-line", "not a whole number above 0"));
                    }
                    Ok(bytes) => bytes,
                };
            }
            Long(name) => return Err(unknown(&format!("--{name}"))),
            Short(c) => return Err(unknown(&format!("-{c}"))),
            Value(v) => return Err(format!("unexpected argument {v:?}")),
        }
    }
    Ok(Command::Run(options))
}

/// The value of `flag`, which must be UTF-8: what follows `=` in
/// `--flag=VALUE`, or else the next argument, unless that is a flag itself.
/// `--port --bogus` is then an unknown flag, as `--bogus` is anywhere, and
/// `--port --host x` a missing value.
fn flag_value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let value = match parser.optional_value() {
        Some(value) => value,
        None => {
            let mut rest = parser.raw_args().map_err(|e| e.to_string())?;
            if let Some(next) = rest.peek().and_then(|next| next.to_str())
                && looks_like_a_flag(next)
            {
                let name = next.split_once('=').map_or(next, |(name, _)| name);
                return Err(if FLAGS.contains(&name) {
                    missing(flag)
                } else {
                    unknown(name)
                });
            }
            rest.next().ok_or_else(|| missing(flag))?
        }
    };
    value
        .into_string()
        .map_err(|_| format!("invalid value for {flag}: not UTF-8"))
}

/// Whether an argument is a flag rather than a value: `--name`, or `-x`
/// with a letter. `-1` is a value (a wrong one for every flag here, which
/// the flag's own check says), and so is `-`.
fn looks_like_a_flag(arg: &str) -> bool {
    match arg.as_bytes() {
        [b'-', b'-', _, ..] => true,
        [b'-', second, ..] => !second.is_ascii_digit(),
        _ => false,
    }
}

/// The one-line message for an unknown flag.
fn unknown(flag: &str) -> String {
    format!("unknown option {flag} (see --help)")
}

/// The one-line message for a flag given without its value.
fn missing(flag: &str) -> String {
    format!("missing value for {flag} (see --help)")
}

/// The one-line message for a value that `flag` does not accept.
fn invalid(value: &str, flag: &str, why: &str) -> String {
    format!("invalid value {value:?} for {flag}: {why}")
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

/// Reports each line of standard input, then its end. A line longer than
/// `max` bytes is reported as [`Event::TooLong`] instead.
fn read_stdin(max: usize, events: Sender<Event>) {
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
enum Line {
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
fn next_line(input: &mut impl BufRead, max: usize) -> io::Result<Option<Line>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Result<Options, String> {
        match parse_args(args.iter().copied())? {
            Command::Run(options) => Ok(options),
            Command::Help => Err("help".into()),
            Command::Version => Err("version".into()),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        assert_eq!(
            options(&[]).unwrap(),
            Options {
                host: "127.0.0.1".into(),
                port: 50000,
                retries: None,
                max_line: 8192,
            }
        );
    }

    #[test]
    fn every_flag_is_read() {
        assert_eq!(
            options(&[
                "--host",
                "example.org",
                "--port",
                "6000",
                "--retries=3",
                "--max-line",
                "100"
            ])
            .unwrap(),
            Options {
                host: "example.org".into(),
                port: 6000,
                retries: Some(3),
                max_line: 100,
            }
        );
        assert_eq!(parse_args(["--version"]).unwrap(), Command::Version);
        assert_eq!(parse_args(["-h"]).unwrap(), Command::Help);
        assert_eq!(
            parse_args(["--port", "1", "--help"]).unwrap(),
            Command::Help
        );
    }

    #[test]
    fn bad_input_is_a_one_line_error() {
        for args in [
            &["--port", "0"][..],
            &["--port", "65536"],
            &["--port"],
            &["--retries", "-1"],
            &["--retries", "x"],
            &["--host", ""],
            &["--max-line", "0"],
            &["--max-line", "x"],
            &["--frobnicate"],
            &["-x"],
            &["stray"],
        ] {
            let err = options(args).unwrap_err();
            assert!(!err.contains('\n') && !err.is_empty(), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_unknown_flag_is_unknown_wherever_it_stands() {
        let unknown = Err("unknown option --bogus (see --help)".to_string());
        for flag in ["--host", "--port", "--retries", "--max-line"] {
            // Last, first, and where a value is expected.
            assert_eq!(options(&[flag, "1", "--bogus"]), unknown, "{flag}");
            assert_eq!(options(&["--bogus", flag, "1"]), unknown, "{flag}");
            assert_eq!(options(&[flag, "--bogus"]), unknown, "{flag}");
            assert_eq!(options(&[flag, "--bogus=1"]), unknown, "{flag}");
            // A known flag where a value is expected: the value is missing.
            let missing = Err(format!("missing value for {flag} (see --help)"));
            assert_eq!(options(&[flag, "--version"]), missing, "{flag}");
            assert_eq!(options(&[flag, "-h"]), missing, "{flag}");
            assert_eq!(options(&[flag]), missing, "{flag}");
        }
        assert_eq!(
            options(&["-x"]),
            Err("unknown option -x (see --help)".to_string())
        );
        // `--flag=VALUE` takes the value as it is, and `-1` is a value.
        assert_eq!(
            options(&["--host=--bogus"]).unwrap().host,
            "--bogus".to_string()
        );
        assert_eq!(
            options(&["--retries", "-1"]),
            Err("invalid value \"-1\" for --retries: not a whole number".to_string())
        );
    }

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

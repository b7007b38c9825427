//! The systems under test, all seen through one shape: a [`Pair`] of TCP
//! endpoints A and B on loopback, where a line written on A comes out on B
//! and a line written on B comes out on A.
//!
//! - [`Kind::Project`]: the real `chat-server` binary, joined through the
//!   portal and the passcode handshake like any client ([`project`]); the
//!   same server with its spin turned off ([`Kind::ProjectSpinOff`]) and on
//!   the .NET wire ([`Kind::ProjectDotnet`]), and another build of it to
//!   compare with ([`Kind::Baseline`]).
//! - [`Kind::Direct`]: no relay at all, A and B are the two ends of one
//!   loopback connection ([`direct`]). This is the floor.
//! - [`Kind::Threaded`]: a blocking, thread-per-connection relay with a lock
//!   around its shared state ([`threaded`]).
//! - [`Kind::TokioCurrentThread`] and [`Kind::TokioMultiThread`]: the relay a
//!   Rust user would write with tokio tasks ([`tokio_relay`]).
//!
//! Every relay runs in its own child process, as the real server does, so
//! none of them shares an address space, an allocator or a scheduler queue
//! with the clients. The peers are this very bench binary started again with
//! `--serve NAME` ([`serve`]); they print `relay ADDR` and serve until their
//! standard input closes, which also happens if the bench dies.

pub mod direct;
pub mod project;
pub mod threaded;
pub mod tokio_relay;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use portal_chat::wire::{Codec, Wire};

/// The longest any connect, read or write may wait. A system that stalls
/// this long fails the bench instead of hanging it.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes an [`Endpoint`] reads per `read` call.
const READ_BUFFER: usize = 64 * 1024;

/// The longest message an [`Endpoint`] takes: one that still fits its
/// buffer, terminator or prefix included.
const MAX_MESSAGE: usize = READ_BUFFER - 8;

/// The systems compared, in the order they appear in every table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The real `chat-server`, reached through the portal, as it starts by
    /// default (line wire, the default spin).
    Project,
    /// The same server with `--spin-us 0`: it never busy-polls.
    ProjectSpinOff,
    /// The same server with `--wire dotnet`, and clients that frame their
    /// messages as .NET's `BinaryWriter` does.
    ProjectDotnet,
    /// Another `chat-server` binary (`PORTAL_CHAT_BASELINE`), started with
    /// only the flags every version has: the "before" of a before/after.
    Baseline,
    /// One loopback TCP connection, no relay.
    Direct,
    /// Blocking sockets, one thread per connection, one lock.
    Threaded,
    /// tokio tasks on a current-thread runtime.
    TokioCurrentThread,
    /// tokio tasks on the multi-thread runtime (one worker per core).
    TokioMultiThread,
}

impl Kind {
    /// Every system, in table order.
    pub const ALL: [Kind; 8] = [
        Kind::Project,
        Kind::ProjectSpinOff,
        Kind::ProjectDotnet,
        Kind::Baseline,
        Kind::Direct,
        Kind::Threaded,
        Kind::TokioCurrentThread,
        Kind::TokioMultiThread,
    ];

    /// The relays a user would otherwise run: what the project is held
    /// against.
    pub const RELAYS: [Kind; 3] = [
        Kind::Threaded,
        Kind::TokioCurrentThread,
        Kind::TokioMultiThread,
    ];

    /// The systems this run can start, in table order: the baseline only
    /// when `PORTAL_CHAT_BASELINE` names a binary, the spin-off and dotnet
    /// rows only when the project's binary has `--spin-us` and `--wire`
    /// (an older build given as `PORTAL_CHAT_SERVER` may not).
    pub fn available() -> Vec<Kind> {
        let server = project::server_binary();
        Kind::ALL
            .into_iter()
            .filter(|kind| match kind {
                Kind::ProjectSpinOff => project::has_flag(&server, "--spin-us"),
                Kind::ProjectDotnet => project::has_flag(&server, "--wire"),
                Kind::Baseline => project::baseline_binary().is_some(),
                _ => true,
            })
            .collect()
    }

    /// The name used in tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::ProjectSpinOff => "project, spin off",
            Kind::ProjectDotnet => "project, dotnet wire",
            Kind::Baseline => "project, baseline",
            Kind::Direct => "direct",
            Kind::Threaded => "threaded relay",
            Kind::TokioCurrentThread => "tokio current-thread",
            Kind::TokioMultiThread => "tokio multi-thread",
        }
    }

    /// Whether this is a `chat-server` (joined through its portal).
    pub fn is_project(self) -> bool {
        self.server().is_some()
    }

    /// How to start this system's `chat-server`, for the project's rows.
    fn server(self) -> Option<project::Server> {
        let own = || project::server_binary();
        Some(match self {
            Kind::Project => project::Server::new(own()),
            Kind::ProjectSpinOff => project::Server {
                spin_us: Some(0),
                ..project::Server::new(own())
            },
            Kind::ProjectDotnet => project::Server {
                wire: Wire::Dotnet,
                ..project::Server::new(own())
            },
            Kind::Baseline => project::Server::new(project::baseline_binary()?),
            _ => return None,
        })
    }

    /// The wire this system's clients speak.
    pub fn wire(self) -> Wire {
        self.server().map_or(Wire::Line, |server| server.wire)
    }

    /// The `--serve` argument that starts this relay, for the relays that
    /// live in this bench binary.
    fn serve_name(self) -> Option<&'static str> {
        match self {
            Kind::Threaded => Some("threaded"),
            Kind::TokioCurrentThread => Some("tokio-current-thread"),
            Kind::TokioMultiThread => Some("tokio-multi-thread"),
            _ => None,
        }
    }
}

/// Runs the relay named `name` in this process (the child side of
/// `--serve NAME`) until standard input closes. Never returns.
pub fn serve(name: &str) -> ! {
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.serve_name() == Some(name)) else {
        eprintln!("relay bench: unknown relay {name:?}");
        std::process::exit(2);
    };
    let result = (|| -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "relay {}", listener.local_addr()?)?;
        stdout.flush()?;
        drop(stdout);
        // The parent keeps our stdin open for as long as it wants us; end of
        // file (a drop, a kill, a crash of the parent) ends the relay.
        std::thread::spawn(|| {
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            std::process::exit(0);
        });
        match kind {
            Kind::Threaded => threaded::serve(listener),
            Kind::TokioCurrentThread => tokio_relay::serve(listener, tokio_relay::Flavor::Current),
            Kind::TokioMultiThread => tokio_relay::serve(listener, tokio_relay::Flavor::Multi),
            _ => unreachable!("not a relay of this binary"),
        }
    })();
    if let Err(e) = result {
        eprintln!("relay bench: {name} relay failed: {e}");
    }
    std::process::exit(1);
}

/// A started system that hands out pairs.
pub struct System {
    /// Which system this is.
    pub kind: Kind,
    /// The server process; `None` for [`Kind::Direct`].
    process: Option<ChildProcess>,
    /// Where clients connect: the portal for the project, the listener for
    /// the other relays.
    addr: Option<SocketAddr>,
}

impl System {
    /// Starts `kind`. The project gets `workers` worker ports, so it can hold
    /// `workers / 2` pairs; the other relays take any number.
    pub fn start(kind: Kind, workers: usize) -> io::Result<System> {
        let (process, addr) = match (kind, kind.server()) {
            (_, Some(server)) => {
                let (process, portal) = server.start(workers)?;
                (Some(process), Some(portal))
            }
            (Kind::Direct, None) => (None, None),
            _ => {
                let serve_name = kind.serve_name().expect("a relay");
                let mut command = Command::new(std::env::current_exe()?);
                command.args(["--serve", serve_name]);
                let mut process = ChildProcess::spawn(&mut command)?;
                let addr = process.read_announcement("relay ")?;
                (Some(process), Some(addr))
            }
        };
        Ok(System {
            kind,
            process,
            addr,
        })
    }

    /// Connects a new pair and passes a line each way through it, so the
    /// pair is known to work and every server notice has been read.
    pub fn connect_pair(&self) -> io::Result<Pair> {
        let wire = self.kind.wire();
        let mut pair = match (self.kind, self.addr) {
            (Kind::Direct, _) => direct::connect_pair()?,
            (kind, Some(portal)) if kind.is_project() => Pair {
                a: project::join(portal, wire)?,
                b: project::join(portal, wire)?,
            },
            (_, Some(addr)) => {
                // The relays pair connections in the order they accept them,
                // and connecting from one thread fixes that order.
                let connect = || TcpStream::connect_timeout(&addr, STALL_TIMEOUT);
                let a = Endpoint::new(connect()?, wire)?;
                let b = Endpoint::new(connect()?, wire)?;
                Pair { a, b }
            }
            (_, None) => unreachable!("every relay has an address"),
        };
        pair.sync()?;
        Ok(pair)
    }

    /// The server's process id, for the footprint readings.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }
}

/// A server child process: killed when dropped, including when the bench
/// unwinds from a panic.
pub struct ChildProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    /// Starts `command` with piped stdin and stdout. Its stdin stays open for
    /// as long as this value lives.
    pub fn spawn(command: &mut Command) -> io::Result<ChildProcess> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(ChildProcess { child, stdout })
    }

    /// Reads one line `PREFIX ADDR` from the child's stdout.
    pub fn read_announcement(&mut self, prefix: &str) -> io::Result<SocketAddr> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim_end()
            .strip_prefix(prefix)
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| invalid(format!("expected {prefix:?} and an address, got {line:?}")))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client's end: a TCP socket, the wire its messages are framed in, and
/// a reader that cuts messages out of what arrives.
///
/// Every system is driven through this same type, so the client side costs
/// the same everywhere; messages are cut out by the project's own codecs
/// (`portal_chat::wire`), which on the line wire is a `memchr` for the
/// newline. A message is read as its whole frame (newline or length prefix
/// included), which lets an echo send back exactly what came in with one
/// `write`, and as its text.
pub struct Endpoint {
    stream: TcpStream,
    wire: Wire,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

/// Where one message is in an [`Endpoint`]'s buffer.
struct Found {
    frame: Range<usize>,
    text: Range<usize>,
}

impl Endpoint {
    /// Wraps a connected socket that speaks `wire`, turns Nagle's algorithm
    /// off and bounds every read and write by [`STALL_TIMEOUT`].
    pub fn new(stream: TcpStream, wire: Wire) -> io::Result<Endpoint> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(STALL_TIMEOUT))?;
        stream.set_write_timeout(Some(STALL_TIMEOUT))?;
        Ok(Endpoint {
            stream,
            wire,
            buffer: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        })
    }

    /// [`new`](Self::new) for a socket that has already received `unread`
    /// and not consumed it: a client library session taken over.
    pub fn taking_over(stream: TcpStream, wire: Wire, unread: &[u8]) -> io::Result<Endpoint> {
        let mut endpoint = Endpoint::new(stream, wire)?;
        if unread.len() > endpoint.buffer.len() {
            endpoint.buffer.resize(unread.len(), 0);
        }
        endpoint.buffer[..unread.len()].copy_from_slice(unread);
        endpoint.end = unread.len();
        Ok(endpoint)
    }

    /// The wire this endpoint speaks.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Writes `bytes` (one or more whole frames) in as few calls as the
    /// socket allows.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Frames `text` and writes it.
    pub fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(text.len() + 8);
        self.wire.encode(text, &mut frame);
        self.stream.write_all(&frame)
    }

    /// The next message's whole frame, reading as needed.
    pub fn read_frame(&mut self) -> io::Result<&[u8]> {
        let found = self.next_message()?;
        Ok(&self.buffer[found.frame])
    }

    /// The next message's text, reading as needed.
    pub fn read_text(&mut self) -> io::Result<&[u8]> {
        let found = self.next_message()?;
        Ok(&self.buffer[found.text])
    }

    /// Reads the next message and writes its frame straight back.
    pub fn echo(&mut self) -> io::Result<()> {
        let found = self.next_message()?;
        self.stream.write_all(&self.buffer[found.frame])
    }

    /// Reads once, waiting for bytes, for a reader that takes every message
    /// already buffered with [`buffered`](Self::buffered) before it reads
    /// again. A timeout set with [`set_read_timeout`](Self::set_read_timeout)
    /// comes back as `WouldBlock` or `TimedOut`; nothing is lost then.
    pub fn fill(&mut self) -> io::Result<()> {
        // Keep the partial message, at the front of the buffer.
        self.buffer.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
        match self.stream.read(&mut self.buffer[self.end..])? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// The next complete message already read, as (frame length, text),
    /// without reading; `None` if there is none.
    pub fn buffered(&mut self) -> io::Result<Option<(usize, &[u8])>> {
        Ok(self
            .decode()?
            .map(|found| (found.frame.len(), &self.buffer[found.text])))
    }

    /// The socket itself, for a workload that drives many endpoints from
    /// one event loop (through a clone of it). Nothing must be left in the
    /// endpoint's buffer while it does.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Limits how long a read may wait; `None` restores [`STALL_TIMEOUT`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream
            .set_read_timeout(Some(timeout.unwrap_or(STALL_TIMEOUT)))
    }

    /// Limits how long a write may wait; `None` restores [`STALL_TIMEOUT`].
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream
            .set_write_timeout(Some(timeout.unwrap_or(STALL_TIMEOUT)))
    }

    /// Finds the next complete message, reading as needed, and consumes it.
    fn next_message(&mut self) -> io::Result<Found> {
        loop {
            if let Some(found) = self.decode()? {
                return Ok(found);
            }
            self.fill()?;
        }
    }

    /// Cuts the next complete message out of the unread bytes with the
    /// wire's codec and consumes it.
    fn decode(&mut self) -> io::Result<Option<Found>> {
        let unread = &self.buffer[self.start..self.end];
        match self.wire.decode(unread, 0, MAX_MESSAGE) {
            Ok(Some(frame)) => {
                let at = self.start;
                self.start += frame.len;
                Ok(Some(Found {
                    frame: at..at + frame.len,
                    text: at + frame.text.start..at + frame.text.end,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(invalid(format!(
                "undecodable {} message ({e:?}) in {:?}",
                self.wire,
                String::from_utf8_lossy(&unread[..unread.len().min(80)])
            ))),
        }
    }
}

/// Two endpoints whose lines reach each other through the system under test.
pub struct Pair {
    /// The side that sends first (and times).
    pub a: Endpoint,
    /// The side that answers (or only receives).
    pub b: Endpoint,
}

impl Pair {
    /// Passes one `sync` message from A to B and one back, skipping the
    /// server's notices (`SERVER…` messages, such as "Partner … connected")
    /// on the way. Afterwards nothing is left unread on either side.
    pub fn sync(&mut self) -> io::Result<()> {
        pass_sync(&mut self.a, &mut self.b)?;
        pass_sync(&mut self.b, &mut self.a)
    }
}

fn pass_sync(from: &mut Endpoint, to: &mut Endpoint) -> io::Result<()> {
    const SYNC: &[u8] = b"sync";
    from.send_text(SYNC)?;
    loop {
        let text = to.read_text()?;
        if text == SYNC {
            return Ok(());
        }
        if !text.starts_with(b"SERVER") {
            let text = String::from_utf8_lossy(text).into_owned();
            return Err(invalid(format!("expected the sync message, got {text:?}")));
        }
    }
}

/// An `InvalidData` error with a message.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

//! The systems under test, all seen through one shape: a [`Pair`] of TCP
//! endpoints A and B on loopback, where a line written on A comes out on B
//! and a line written on B comes out on A.
//!
//! - [`Kind::Project`]: the real `chat-server` binary, joined through the
//!   portal and the passcode handshake like any client ([`project`]).
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

/// The longest any connect, read or write may wait. A system that stalls
/// this long fails the bench instead of hanging it.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes an [`Endpoint`] reads per `read` call.
const READ_BUFFER: usize = 64 * 1024;

/// The systems compared, in the order they appear in every table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The real `chat-server`, reached through the portal.
    Project,
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
    pub const ALL: [Kind; 5] = [
        Kind::Project,
        Kind::Direct,
        Kind::Threaded,
        Kind::TokioCurrentThread,
        Kind::TokioMultiThread,
    ];

    /// The name used in tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::Direct => "direct",
            Kind::Threaded => "threaded relay",
            Kind::TokioCurrentThread => "tokio current-thread",
            Kind::TokioMultiThread => "tokio multi-thread",
        }
    }

    /// The `--serve` argument that starts this relay, for the relays that
    /// live in this bench binary.
    fn serve_name(self) -> Option<&'static str> {
        match self {
            Kind::Threaded => Some("threaded"),
            Kind::TokioCurrentThread => Some("tokio-current-thread"),
            Kind::TokioMultiThread => Some("tokio-multi-thread"),
            Kind::Project | Kind::Direct => None,
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
            Kind::Project | Kind::Direct => unreachable!("not a relay of this binary"),
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
        let (process, addr) = match kind {
            Kind::Project => {
                let (process, portal) = project::start(workers)?;
                (Some(process), Some(portal))
            }
            Kind::Direct => (None, None),
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
        let mut pair = match (self.kind, self.addr) {
            (Kind::Direct, _) => direct::connect_pair()?,
            (Kind::Project, Some(portal)) => Pair {
                a: project::join(portal)?,
                b: project::join(portal)?,
            },
            (_, Some(addr)) => {
                // The relays pair connections in the order they accept them,
                // and connecting from one thread fixes that order.
                let a = Endpoint::new(TcpStream::connect_timeout(&addr, STALL_TIMEOUT)?)?;
                let b = Endpoint::new(TcpStream::connect_timeout(&addr, STALL_TIMEOUT)?)?;
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

/// One client's end: a TCP socket and a line reader over it.
///
/// Every system is driven through this same type, so the client side costs
/// the same everywhere. Lines are read with their `\n`, which lets an echo
/// send back exactly what came in with one `write`.
pub struct Endpoint {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl Endpoint {
    /// Wraps a connected socket, turns Nagle's algorithm off and bounds
    /// every read and write by [`STALL_TIMEOUT`].
    pub fn new(stream: TcpStream) -> io::Result<Endpoint> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(STALL_TIMEOUT))?;
        stream.set_write_timeout(Some(STALL_TIMEOUT))?;
        Ok(Endpoint {
            stream,
            buffer: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        })
    }

    /// Writes `bytes` (one or more whole lines) in as few calls as the
    /// socket allows.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next line, `\n` included.
    pub fn read_line(&mut self) -> io::Result<&[u8]> {
        let range = self.next_line()?;
        Ok(&self.buffer[range])
    }

    /// Reads the next line and writes it straight back.
    pub fn echo_line(&mut self) -> io::Result<()> {
        let range = self.next_line()?;
        self.stream.write_all(&self.buffer[range])
    }

    /// Whatever bytes come next, for a reader that only counts: first the
    /// buffered ones, else one `read`. Empty at end of stream.
    pub fn read_chunk(&mut self) -> io::Result<&[u8]> {
        if self.start < self.end {
            let range = self.start..self.end;
            (self.start, self.end) = (0, 0);
            return Ok(&self.buffer[range]);
        }
        let n = self.stream.read(&mut self.buffer)?;
        Ok(&self.buffer[..n])
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

    /// Finds the next complete line, reading as needed, and consumes it.
    fn next_line(&mut self) -> io::Result<Range<usize>> {
        loop {
            let unread = &self.buffer[self.start..self.end];
            if let Some(newline) = unread.iter().position(|&b| b == b'\n') {
                let line = self.start..self.start + newline + 1;
                self.start = line.end;
                return Ok(line);
            }
            // Keep the partial line, at the front of the buffer.
            self.buffer.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.end == self.buffer.len() {
                return Err(invalid("line longer than the read buffer".into()));
            }
            match self.stream.read(&mut self.buffer[self.end..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.end += n,
            }
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
    /// Passes one `sync` line from A to B and one back, skipping the server's
    /// notices (`SERVER…` lines, such as "Partner … connected") on the way.
    /// Afterwards nothing is left unread on either side.
    pub fn sync(&mut self) -> io::Result<()> {
        pass_sync_line(&mut self.a, &mut self.b)?;
        pass_sync_line(&mut self.b, &mut self.a)
    }
}

fn pass_sync_line(from: &mut Endpoint, to: &mut Endpoint) -> io::Result<()> {
    const SYNC: &[u8] = b"sync\n";
    from.write_all(SYNC)?;
    loop {
        let line = to.read_line()?;
        if line == SYNC {
            return Ok(());
        }
        if !line.starts_with(b"SERVER") {
            let line = String::from_utf8_lossy(line).into_owned();
            return Err(invalid(format!("expected the sync line, got {line:?}")));
        }
    }
}

/// An `InvalidData` error with a message.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

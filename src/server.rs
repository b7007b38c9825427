//! The event loop: the only module that touches mio, and it only moves bytes.
//!
//! One [`mio::Poll`] watches the portal listener, the worker listeners, every
//! client socket (in a [`Slab`]) and a signal pipe. Each wake-up goes the
//! same way: readiness events are handed to the [`Relay`], then the relay is
//! asked what to do ([`Io`]) until its round is over, and each answer is one
//! system call whose outcome goes straight back to it. Every decision (what
//! a byte means, who may read, when to close) is the relay's; the timer tick
//! is computed into the poll timeout. One thread, no locks.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rand::SeedableRng;
use rand::rngs::StdRng;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::core::{ConnId, Core};
pub use crate::relay::Role;
use crate::relay::{Io, Limits, Relay};
use crate::spin::SpinPolicy;
use crate::wire::Wire;

/// The token of the signal pipe.
const SIGNALS: Token = Token(usize::MAX);

/// Listener `i` (0 is the portal, `i` ≥ 1 is worker `i`) has token
/// `LISTENERS + i`. Client connections use their slab key, which stays far
/// below this.
const LISTENERS: usize = usize::MAX / 2;

/// Bytes read per `read` call, into one buffer shared by all connections, so
/// an idle connection holds no read buffer of its own.
const READ_CHUNK: usize = 64 * 1024;

/// Silence after which TCP keepalive probes a client (Redis's default too).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(300);

/// Once a burst of queued output this large has drained, the tick hands the
/// freed memory back to the operating system.
const TRIM_AFTER: usize = 16 << 20;

/// How long a stopping server waits for clients to take their final notice.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

struct Listener {
    socket: TcpListener,
    role: Role,
    /// Accepting failed for a reason other than `WouldBlock` (typically
    /// "too many open files"). Retrying at once would spin the CPU, so the
    /// listener rests until the next tick.
    paused: bool,
}

/// A bound, ready-to-run chat server.
pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    streams: Slab<TcpStream>,
    relay: Relay<StdRng>,
    wire: Wire,
    tick: Duration,
    read_buffer: Vec<u8>,
    spin: SpinPolicy,
    /// Set when a signal asked us to stop: the time to stop waiting.
    stopping: Option<Instant>,
}

impl Server {
    /// Binds the portal and worker listeners. An address already in use is an
    /// error that names it.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listeners = Vec::with_capacity(config.workers + 1);
        for index in 0..=config.workers {
            let port = match config.port {
                0 => 0,
                base => u16::try_from(index)
                    .ok()
                    .and_then(|index| base.checked_add(index))
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "worker ports above 65535")
                    })?,
            };
            let addr = SocketAddr::new(config.bind, port);
            let mut socket = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            poll.registry()
                .register(&mut socket, Token(LISTENERS + index), Interest::READABLE)?;
            let role = match index {
                0 => Role::Portal,
                n => Role::Worker(n - 1),
            };
            listeners.push(Listener {
                socket,
                role,
                paused: false,
            });
        }
        let mut worker_ports = Vec::with_capacity(config.workers);
        for listener in &listeners[1..] {
            worker_ports.push(listener.socket.local_addr()?.port());
        }
        // The passcode generator: a CSPRNG seeded from the OS.
        let rng = StdRng::try_from_rng(&mut rand::rngs::SysRng).map_err(io::Error::other)?;
        let core = Core::new(worker_ports, config.timeouts, rng).with_max_per_ip(config.max_per_ip);
        let limits = Limits {
            max_line: config.max_line,
            max_queued: config.max_queued,
            ..Limits::default()
        };
        Ok(Server {
            poll,
            listeners,
            streams: Slab::new(),
            relay: Relay::new(core, limits),
            wire: config.wire,
            tick: config.tick,
            read_buffer: vec![0; READ_CHUNK],
            spin: SpinPolicy::new(config.spin),
            stopping: None,
        })
    }

    /// Every listener's role and address, portal first, then workers in order.
    pub fn local_addrs(&self) -> io::Result<Vec<(Role, SocketAddr)>> {
        self.listeners
            .iter()
            .map(|l| Ok((l.role, l.socket.local_addr()?)))
            .collect()
    }

    /// Serves until SIGINT, SIGTERM or SIGQUIT, then tells every client and
    /// returns. SIGHUP is logged and ignored; SIGUSR1 logs a summary of the
    /// state. Only a failure of the poll itself ends it early.
    pub fn run(mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + self.tick;
        loop {
            if let Err(e) = self.wait(&mut events, next_tick) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue; // a signal arrived; its pipe will report it
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == SIGNALS {
                    for signal in signals.pending() {
                        if !self.on_signal(signal, now) {
                            return Ok(());
                        }
                    }
                } else {
                    self.dispatch(event, now);
                }
            }
            if now >= next_tick {
                self.on_tick(now);
                next_tick += self.tick;
                if next_tick <= now {
                    next_tick = now + self.tick; // we fell behind: skip, don't burst
                }
            }
            self.serve_round(now);
            if let Some(deadline) = self.stopping
                && (self.relay.is_empty() || now >= deadline)
            {
                match self.streams.len() {
                    0 => info!("stopped"),
                    n => info!("stopped; {n} connection(s) dropped at the grace deadline"),
                }
                return Ok(());
            }
        }
    }

    /// Waits for events, at most until the next tick, so the tick comes on
    /// time however busy the sockets are; without sleeping at all while the
    /// relay has work left from the last round. Before sleeping, it may
    /// busy-poll for a few microseconds, as the [`SpinPolicy`] decides.
    fn wait(&mut self, events: &mut Events, next_tick: Instant) -> io::Result<()> {
        if self.relay.has_work() {
            return self.poll.poll(events, Some(Duration::ZERO));
        }
        if let Some(window) = self.spin.spin_window(!events.is_empty()) {
            let spin_until = (Instant::now() + window).min(next_tick);
            loop {
                self.poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() {
                    self.spin.caught();
                    return Ok(());
                }
                if Instant::now() >= spin_until {
                    break;
                }
            }
        }
        let timeout = next_tick.saturating_duration_since(Instant::now());
        self.poll.poll(events, Some(timeout))
    }

    /// Hands one readiness event to the relay (or accepts, for a listener).
    fn dispatch(&mut self, event: &Event, now: Instant) {
        trace!(
            "event for {}:{}{}{}{}",
            self.token_name(event.token()),
            if event.is_readable() { " readable" } else { "" },
            if event.is_writable() { " writable" } else { "" },
            if event.is_read_closed() {
                " read-closed"
            } else {
                ""
            },
            if event.is_error() { " error" } else { "" },
        );
        match event.token() {
            Token(t) if t >= LISTENERS => self.accept_all(t - LISTENERS, now),
            // A reset or a peer's close shows up as readable (or as an
            // error); the read itself tells which, so all three are "read".
            Token(key) => self.relay.readiness(
                ConnId(key),
                event.is_readable() || event.is_read_closed() || event.is_error(),
                event.is_writable(),
            ),
        }
    }

    /// Carries out what the relay asks until its round is over.
    fn serve_round(&mut self, now: Instant) {
        self.relay.start_round();
        while let Some(io) = self.relay.poll_io() {
            match io {
                Io::Read(conn) => self.read_once(conn, now),
                Io::Write(conn) => self.write_once(conn, now),
                Io::ShutdownWrite(conn) => {
                    trace!("{}: shut down writing (FIN)", self.relay.name(conn));
                    let _ = self.streams[conn.0].shutdown(Shutdown::Write);
                }
                Io::WantWritable(conn, wanted) => self.want_writable(conn, wanted, now),
                Io::Close(conn) => {
                    let mut stream = self.streams.remove(conn.0);
                    let _ = self.poll.registry().deregister(&mut stream);
                }
            }
        }
    }

    fn read_once(&mut self, conn: ConnId, now: Instant) {
        match self.streams[conn.0].read(&mut self.read_buffer) {
            Ok(0) => {
                trace!("{}: read end of stream", self.relay.name(conn));
                self.relay.end_of_stream(conn, now);
            }
            Ok(n) => {
                trace!("{}: read {n} bytes", self.relay.name(conn));
                self.relay.bytes_read(conn, &self.read_buffer[..n], now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                trace!("{}: read would block: drained", self.relay.name(conn));
                self.relay.read_would_block(conn);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {} // the relay asks again
            Err(e) => {
                debug!("{}: read failed: {e}", self.relay.name(conn));
                self.relay.reset(conn, now);
            }
        }
    }

    fn write_once(&mut self, conn: ConnId, now: Instant) {
        let bytes = self.relay.output(conn);
        match self.streams[conn.0].write(bytes) {
            Ok(0) if !bytes.is_empty() => self.relay.reset(conn, now),
            Ok(n) => {
                self.relay.write_done(conn, n, now);
                trace!(
                    "{}: wrote {n} bytes, {} still queued",
                    self.relay.name(conn),
                    self.relay.queued(conn)
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                trace!("{}: write would block: socket full", self.relay.name(conn));
                self.relay.write_would_block(conn);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("{}: write failed: {e}", self.relay.name(conn));
                self.relay.reset(conn, now);
            }
        }
    }

    /// Registers `WRITABLE` only while a write has been refused, or every
    /// event would wake us for a socket with nothing to write.
    fn want_writable(&mut self, conn: ConnId, wanted: bool, now: Instant) {
        let interest = if wanted {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        trace!(
            "{}: {} WRITABLE interest",
            self.relay.name(conn),
            if wanted { "register" } else { "drop" }
        );
        let stream = &mut self.streams[conn.0];
        if let Err(e) = self
            .poll
            .registry()
            .reregister(stream, Token(conn.0), interest)
        {
            debug!("{}: reregister failed: {e}", self.relay.name(conn));
            self.relay.reset(conn, now);
        }
    }

    /// Accepts every pending connection on listener `index`.
    fn accept_all(&mut self, index: usize, now: Instant) {
        let Some(listener) = self.listeners.get(index) else {
            return; // listeners were closed for shutdown earlier in this batch
        };
        if listener.paused {
            return;
        }
        let role = listener.role;
        loop {
            let (stream, peer) = match self.listeners[index].socket.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up while waiting in the backlog: not our problem.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE and friends: the pending connection stays in the
                    // backlog and the listener stays readable, so retrying now
                    // would spin. Rest until the tick.
                    warn!("accept on {role:?} failed: {e}; retrying on the next tick");
                    self.listeners[index].paused = true;
                    return;
                }
            };
            if let Err(e) = self.add_connection(stream, peer, role, now) {
                warn!("could not set up connection from {peer}: {e}");
            }
        }
    }

    fn add_connection(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        role: Role,
        now: Instant,
    ) -> io::Result<()> {
        // Chat lines are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        // A peer that vanished without a FIN or a reset (its machine lost
        // power, a NAT forgot it) would hold its port until the idle timeout,
        // or forever while held back: TCP keepalive probes find it after
        // KEEPALIVE_IDLE of silence, and the failed read closes it.
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE))?;
        let entry = self.streams.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)?;
        entry.insert(stream);
        self.relay.accepted(ConnId(key), role, self.wire, peer, now);
        trace!("accepted {peer} as {}", self.relay.name(ConnId(key)));
        Ok(())
    }

    /// How the trace names a token: `signals`, `portal`, `worker 3` (a
    /// listener), or a connection as the relay names it.
    fn token_name(&self, token: Token) -> String {
        match token {
            SIGNALS => "signals".to_string(),
            Token(t) if t >= LISTENERS => match self.listeners.get(t - LISTENERS).map(|l| l.role) {
                Some(Role::Portal) => "portal".to_string(),
                Some(Role::Worker(n)) => format!("worker {} (listener)", n + 1),
                None => format!("listener {}", t - LISTENERS),
            },
            Token(key) => self.relay.name(ConnId(key)).to_string(),
        }
    }

    fn on_tick(&mut self, now: Instant) {
        trace!("tick");
        self.relay.tick(now);
        if self.relay.take_freed_burst(TRIM_AFTER) {
            give_back_freed_memory();
        }
        for index in 0..self.listeners.len() {
            if self.listeners[index].paused {
                self.listeners[index].paused = false;
                self.accept_all(index, now);
                if !self.listeners[index].paused {
                    info!("{:?} listener: accepting again", self.listeners[index].role);
                }
            }
        }
    }

    /// SIGHUP: there is nothing to reload, so it is logged and ignored (a
    /// terminal that closes must not stop a server). SIGUSR1: the state.
    /// Any other: the first starts the shutdown; a second stops at once.
    /// Returns whether to go on.
    fn on_signal(&mut self, signal: i32, now: Instant) -> bool {
        match signal {
            SIGHUP => {
                info!("SIGHUP received and ignored: there is no configuration to reload");
                return true;
            }
            SIGUSR1 => {
                let paused: Vec<String> = self
                    .listeners
                    .iter()
                    .filter(|l| l.paused)
                    .map(|l| format!("{:?}", l.role))
                    .collect();
                info!(
                    "state: {}; listeners paused: {}",
                    self.relay.status(),
                    if paused.is_empty() {
                        "none".to_string()
                    } else {
                        paused.join(", ")
                    }
                );
                return true;
            }
            _ => {}
        }
        if self.stopping.is_some() {
            info!("second signal: stopping now");
            return false;
        }
        info!(
            "signal received: telling {} client(s) and stopping",
            self.streams.len()
        );
        self.stopping = Some(now + SHUTDOWN_GRACE);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.relay.shutdown(now);
        true
    }
}

/// Hands freed heap memory back to the operating system. glibc keeps what
/// `free` returns for reuse, so after 100 never-reading pairs had queued
/// 118 MiB the server stayed at 119 MiB RSS with everyone gone; this
/// brings it back near its start. Elsewhere the allocator decides.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it
        // takes no pointer and is safe to call at any time from any thread.
        let trimmed = unsafe { libc::malloc_trim(0) };
        debug!("gave freed memory back to the system: {}", trimmed == 1);
    }
}

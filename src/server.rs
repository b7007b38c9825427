//! The event loop: the only module that touches mio.
//!
//! One [`mio::Poll`] watches the portal listener, the worker listeners, every
//! client socket and a signal pipe. Each readiness event is turned into a call
//! on the protocol [`Core`]; the core's [`Action`]s are turned back into
//! socket writes and closes. A timer tick, computed into the poll timeout,
//! drives every deadline. One thread, no locks.
//!
//! mio is edge-triggered: an event says "something changed", not "there is
//! exactly this much to do". So every handler below reads, accepts or writes
//! until the OS says `WouldBlock`; stopping early would leave work that no
//! later event announces.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rand::SeedableRng;
use rand::rngs::StdRng;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::core::{Action, ConnId, Core, is_plain_chat};
use crate::framing::{LineBuffer, LineTooLong};
use crate::output::{Flushed, OUTPUT_HIGH_WATER, OutputBuffer};

/// The token of the signal pipe.
const SIGNALS: Token = Token(usize::MAX);

/// Listener `i` (0 is the portal, `i` ≥ 1 is worker `i`) has token
/// `LISTENERS + i`. Client connections use their slab key, which stays far
/// below this.
const LISTENERS: usize = usize::MAX / 2;

/// Bytes read per `read` call, into one buffer shared by all connections, so
/// an idle connection holds no read buffer of its own.
const READ_CHUNK: usize = 64 * 1024;

/// After a wake-up that brought events, the loop may go on polling without
/// blocking for this long before it sleeps. In a conversation the answer to
/// a line often comes back within microseconds, and a thread that slept in
/// the meantime must be woken for it: on a virtual machine that means waking
/// a halted virtual CPU, which costs more than the whole relay hop. Spinning
/// briefly catches the answer awake. It spins only while spinning pays (see
/// [`Server::wait`]), and never while idle: a wake-up for the tick alone
/// does not spin.
const BUSY_POLL: Duration = Duration::from_micros(20);

/// Spinning stops after this many spins in a row caught nothing.
const SPIN_MISSES_ALLOWED: u32 = 8;

/// Once spinning has stopped, one wake-up in this many still spins, to find
/// out whether spinning pays again.
const SPIN_PROBE_EVERY: u32 = 16;

/// How long a closing connection may take to acknowledge our shutdown
/// before it is dropped anyway.
const LINGER: Duration = Duration::from_secs(2);

/// How long a stopping server waits for clients to take their final notice.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The most bytes one connection may read in one turn of the loop. Without a
/// bound, a client that sends as fast as loopback allows keeps the loop
/// reading from it forever, and every other client waits (Redis bounds each
/// client the same way, with `NET_MAX_WRITES_PER_EVENT` for writes). A
/// connection that still has bytes waiting gets another turn after the other
/// ready connections had theirs.
const READ_BUDGET: usize = READ_CHUNK;

/// The most bytes written to one connection in one turn of the loop, for the
/// same reason as [`READ_BUDGET`].
const WRITE_BUDGET: usize = READ_CHUNK;

/// At most this many discarding reads per turn for a closing connection, so
/// a client that keeps sending cannot hold the loop; the linger deadline
/// ends it. A connection with more to read gets another turn in the next
/// poll (see `discard_input`).
const CLOSING_READS_PER_EVENT: usize = 4;

/// What a connection is registered for: `WRITABLE` only while output waits.
fn interest(wants_write: bool) -> Interest {
    if wants_write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// Which listener a socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The portal port.
    Portal,
    /// Worker port number `n` (0-based).
    Worker(usize),
}

enum State {
    /// In the protocol: its lines are read and handled.
    Open,
    /// Leaving: queued output is written, then the write side is shut down,
    /// then the peer's end of stream is awaited (until `until`). Waiting for
    /// it matters: closing a socket that still has unread input makes the
    /// kernel send a reset, which can destroy our final notice in flight.
    Closing {
        until: Instant,
        write_shut: bool,
        peer_done: bool,
    },
    /// Closed during this batch of events. It stays in the slab until the
    /// batch ends so that its key is not reused while events queued for the
    /// old connection may still be handled.
    Dead,
}

struct Connection {
    stream: TcpStream,
    state: State,
    input: LineBuffer,
    output: OutputBuffer,
    /// Reading stopped (backpressure) until the output queue of this
    /// connection key drains: the partner's, or its own (see
    /// `handle_buffered_lines`).
    paused_on: Option<usize>,
    /// `WRITABLE` is registered: only while output is queued, or every
    /// event would wake us for a socket with nothing to write.
    write_interest: bool,
    /// Already in the list of connections to flush after this event.
    flush_scheduled: bool,
    /// Already in the list of connections that get another turn: work is
    /// left that no readiness event will announce (a read or write budget
    /// ran out, or reading was resumed after a pause).
    wants_turn: bool,
}

/// How far [`Server::read_lines`] reads before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadUntil {
    /// Until the OS says `WouldBlock`.
    WouldBlock,
    /// Until a read returns less than a full buffer (or `WouldBlock`).
    ShortRead,
}

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
    conns: Slab<Connection>,
    core: Core<StdRng>,
    max_line: usize,
    tick: Duration,
    /// The time of the current wake-up; handlers use it instead of asking the
    /// clock for every line.
    now: Instant,
    read_buffer: Vec<u8>,
    to_flush: Vec<usize>,
    /// Connections with work left over from their last turn, served in
    /// order after the events of the next poll, which then does not block.
    turns: Vec<usize>,
    dead: Vec<usize>,
    /// Set when a signal asked us to stop: the time to stop waiting.
    stopping: Option<Instant>,
    /// Spins in a row that caught nothing, then wake-ups since spinning
    /// stopped at [`SPIN_MISSES_ALLOWED`].
    spin_misses: u32,
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
        Ok(Server {
            poll,
            listeners,
            conns: Slab::new(),
            core: Core::new(worker_ports, config.timeouts, rng),
            max_line: config.max_line,
            tick: config.tick,
            now: Instant::now(),
            read_buffer: vec![0; READ_CHUNK],
            to_flush: Vec::new(),
            turns: Vec::new(),
            dead: Vec::new(),
            stopping: None,
            spin_misses: SPIN_MISSES_ALLOWED,
        })
    }

    /// Every listener's role and address, portal first, then workers in order.
    pub fn local_addrs(&self) -> io::Result<Vec<(Role, SocketAddr)>> {
        self.listeners
            .iter()
            .map(|l| Ok((l.role, l.socket.local_addr()?)))
            .collect()
    }

    /// Serves until SIGINT or SIGTERM, then tells every client and returns.
    /// Only a failure of the poll itself ends it early.
    pub fn run(mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
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
            self.now = Instant::now();
            for event in events.iter() {
                trace!(
                    "event {:?}: readable={} writable={} read_closed={} error={}",
                    event.token(),
                    event.is_readable(),
                    event.is_writable(),
                    event.is_read_closed(),
                    event.is_error()
                );
                match event.token() {
                    SIGNALS => {
                        if signals.pending().next().is_some() {
                            if self.stopping.is_some() {
                                info!("second signal: stopping now");
                                return Ok(());
                            }
                            self.begin_shutdown();
                        }
                    }
                    Token(t) if t >= LISTENERS => self.accept_all(t - LISTENERS),
                    Token(key) => self.connection_event(key, event),
                }
                self.flush_scheduled();
            }
            self.serve_turns();
            if self.now >= next_tick {
                self.on_tick();
                next_tick += self.tick;
                if next_tick <= self.now {
                    next_tick = self.now + self.tick; // we fell behind: skip, don't burst
                }
            }
            // The batch is over: now the keys of dead connections may be reused.
            for key in self.dead.drain(..) {
                if self.conns.remove(key).wants_turn {
                    self.turns.retain(|&k| k != key);
                }
            }
            if let Some(deadline) = self.stopping
                && (self.conns.is_empty() || self.now >= deadline)
            {
                match self.conns.len() {
                    0 => info!("stopped"),
                    n => info!("stopped; {n} connection(s) dropped at the grace deadline"),
                }
                return Ok(());
            }
        }
    }

    /// Waits for events, at most until the next tick, so the tick comes on
    /// time however busy the sockets are.
    ///
    /// If the last wake-up brought events (`events` still holds them) and
    /// spinning pays, it first polls without blocking for up to [`BUSY_POLL`]. Spinning pays
    /// while it catches events. After [`SPIN_MISSES_ALLOWED`] spins in a row
    /// that caught nothing, only one wake-up in [`SPIN_PROBE_EVERY`] spins,
    /// until one catches something again. So a conversation keeps the loop
    /// spinning, one late answer does not stop it, and traffic with longer
    /// gaps, or a machine whose cores are busy with other work, hardly pays
    /// for it.
    fn wait(&mut self, events: &mut Events, next_tick: Instant) -> io::Result<()> {
        if !self.turns.is_empty() {
            // Work is waiting: look for new events, but do not sleep.
            return self.poll.poll(events, Some(Duration::ZERO));
        }
        if !events.is_empty() {
            let stopped = self.spin_misses >= SPIN_MISSES_ALLOWED;
            let probe = stopped
                && (self.spin_misses - SPIN_MISSES_ALLOWED).is_multiple_of(SPIN_PROBE_EVERY);
            // Wrapping, after billions of quiet wake-ups, only means eight
            // more tries.
            self.spin_misses = self.spin_misses.wrapping_add(1);
            if !stopped || probe {
                let spin_until = (Instant::now() + BUSY_POLL).min(next_tick);
                loop {
                    self.poll.poll(events, Some(Duration::ZERO))?;
                    if !events.is_empty() {
                        self.spin_misses = 0;
                        return Ok(());
                    }
                    if Instant::now() >= spin_until {
                        break;
                    }
                }
            }
        }
        let timeout = next_tick.saturating_duration_since(Instant::now());
        self.poll.poll(events, Some(timeout))
    }

    /// Accepts every pending connection on listener `index`.
    fn accept_all(&mut self, index: usize) {
        let Some(listener) = self.listeners.get_mut(index) else {
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
            if let Err(e) = self.add_connection(stream, role) {
                warn!("could not set up connection from {peer}: {e}");
            }
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, role: Role) -> io::Result<()> {
        // Chat lines are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)?;
        trace!(
            "accepted {:?} as connection {key} on {role:?}",
            stream.peer_addr()
        );
        entry.insert(Connection {
            stream,
            state: State::Open,
            input: LineBuffer::new(),
            output: OutputBuffer::new(),
            paused_on: None,
            write_interest: false,
            flush_scheduled: false,
            wants_turn: false,
        });
        match role {
            Role::Portal => {
                let reply = self.core.handle_portal_request(self.now);
                self.conns[key].output.push_line(reply.to_line().as_bytes());
                self.begin_close(key);
            }
            Role::Worker(worker) => self
                .core
                .handle_worker_connect(ConnId(key), worker, self.now),
        }
        Ok(())
    }

    fn connection_event(&mut self, key: usize, event: &Event) {
        match self.conns.get(key).map(|c| &c.state) {
            None | Some(State::Dead) => {
                trace!("connection {key}: stale event ignored");
                return;
            }
            _ => {}
        }
        if event.is_writable() {
            self.flush(key);
        }
        // A reset or a peer's close shows up as readable (or as an error);
        // the read itself tells which, so all three take the same path.
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // A read shorter than the buffer means the socket was empty at
            // that moment, and epoll will report any byte that arrives after
            // it, so one read is enough; that saves a system call per message.
            // A pending end of stream or error, though, comes with no further
            // event: then read on until the read itself reports it.
            let until = if event.is_read_closed() || event.is_error() {
                ReadUntil::WouldBlock
            } else {
                ReadUntil::ShortRead
            };
            match self.conns.get(key).map(|c| &c.state) {
                Some(State::Open) => self.read_lines(key, until),
                Some(State::Closing { .. }) => self.discard_input(key),
                _ => {}
            }
        }
    }

    /// Reads and handles lines from an open connection until the socket is
    /// drained, the connection leaves, its partner's queue is full, or it has
    /// read [`READ_BUDGET`] bytes in this turn; then it asks for another turn.
    fn read_lines(&mut self, key: usize, until: ReadUntil) {
        let mut drained = false;
        let mut spent = 0;
        loop {
            if !self.handle_buffered_lines(key) {
                return;
            }
            let conn = &mut self.conns[key];
            if drained {
                conn.input.shrink_if_empty();
                return;
            }
            if spent >= READ_BUDGET {
                // More may be waiting, and edge-triggered readiness will not
                // say so again: come back after the others had their turn.
                return self.give_another_turn(key);
            }
            match conn.stream.read(&mut self.read_buffer) {
                Ok(0) => {
                    trace!("connection {key}: end of stream");
                    return self.peer_finished(key);
                }
                Ok(n) => {
                    trace!("connection {key}: read {n} bytes");
                    conn.input.extend(&self.read_buffer[..n]);
                    spent += n;
                    drained = until == ReadUntil::ShortRead && n < READ_CHUNK;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("connection {key}: read failed: {e}");
                    return self.lose(key);
                }
            }
        }
    }

    /// Handles every complete line already buffered. Returns whether reading
    /// may go on (the connection is open and not paused). Only
    /// `resume_if_ready` ends a pause.
    fn handle_buffered_lines(&mut self, key: usize) -> bool {
        let id = ConnId(key);
        loop {
            let conn = &self.conns[key];
            if !matches!(conn.state, State::Open) || conn.paused_on.is_some() {
                return false;
            }
            // Backpressure: never queue more chat for a partner that is not
            // reading. The lines wait in our input buffer, and the socket's
            // buffers fill up behind them, which slows the sender down in
            // TCP itself. The held sender is sending, not idle: the core
            // stops its idle clock.
            let partner = self.core.partner(id);
            if let Some(partner) = partner
                && self.conns[partner.0].output.is_full()
            {
                trace!(
                    "connection {key}: paused, partner {} has a full queue",
                    partner.0
                );
                self.conns[key].paused_on = Some(partner.0);
                self.core.handle_held_back(id, true, self.now);
                return false;
            }
            let max = self.core.max_line(id, self.max_line);
            // The fast path: a streaming client sends a thousand lines per
            // read, nearly all of them plain chat, which the core would
            // only forward unchanged. Such a run goes to the partner in one
            // copy and is reported to the core in one call. The run stops
            // where the queue would pass its high-water mark, so
            // backpressure works as it does line by line. Any other line
            // goes the slow way below, through `handle_line`.
            if let Some(partner) = partner {
                // Not full (checked above), so there is room.
                let room = OUTPUT_HIGH_WATER - self.conns[partner.0].output.len();
                if let Some(run) = self.conns[key].input.take_run(max, room, is_plain_chat) {
                    self.core.handle_forwarded_run(id, self.now);
                    if let Some((from, to)) = self.conns.get2_mut(key, partner.0) {
                        to.output.push_lines(from.input.get(run));
                        self.schedule_flush(partner.0);
                    }
                    continue;
                }
            }
            match self.conns[key].input.next_line(max) {
                Ok(None) => return true,
                Ok(Some(line)) => {
                    let queued_before = self.conns[key].output.len();
                    self.deliver_line(key, line);
                    // A line can earn its sender a notice ("not delivered",
                    // "refused"), queued for the sender itself. A client that
                    // does not read those is held back on its own queue, so
                    // its notices cannot pile up without bound. Its idle
                    // clock runs on: it is its own doing.
                    let conn = &self.conns[key];
                    let earned_notice = conn.output.len() > queued_before;
                    if matches!(conn.state, State::Open) && earned_notice && conn.output.is_full() {
                        trace!("connection {key}: paused, its own queue is full");
                        self.conns[key].paused_on = Some(key);
                        return false;
                    }
                }
                Err(LineTooLong) => {
                    debug!("connection {key}: line too long");
                    self.core.handle_line_too_long(id, self.max_line);
                    self.apply_actions();
                    return false;
                }
            }
        }
    }

    /// Gives one line to the core and copies it to the partner if told to.
    fn deliver_line(&mut self, key: usize, line: std::ops::Range<usize>) {
        let text = self.conns[key].input.get(line.clone());
        if let Some(to) = self.core.handle_line(ConnId(key), text, self.now)
            && let Some((from, partner)) = self.conns.get2_mut(key, to.0)
        {
            partner.output.push_line(from.input.get(line));
            self.schedule_flush(to.0);
        }
        self.apply_actions();
    }

    /// The client closed its sending side. Its last unterminated line is
    /// still delivered, then it leaves as if it had terminated.
    fn peer_finished(&mut self, key: usize) {
        if let Some(rest) = self.conns[key].input.take_rest() {
            self.deliver_line(key, rest);
        }
        self.core.handle_disconnect(ConnId(key));
        self.apply_actions();
        self.begin_close(key);
        if let Some(State::Closing { peer_done, .. }) =
            self.conns.get_mut(key).map(|c| &mut c.state)
        {
            *peer_done = true;
        }
    }

    /// Reads and throws away what a closing connection still sends, watching
    /// for its end of stream.
    fn discard_input(&mut self, key: usize) {
        for _ in 0..CLOSING_READS_PER_EVENT {
            let conn = &mut self.conns[key];
            match conn.stream.read(&mut self.read_buffer) {
                Ok(0) => {
                    if let State::Closing {
                        write_shut,
                        peer_done,
                        ..
                    } = &mut conn.state
                    {
                        *peer_done = true;
                        if *write_shut {
                            self.kill(key);
                        }
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(key),
            }
        }
        // There is more to read, but edge-triggered readiness will not say
        // so again unless new bytes arrive, and the client's end of stream
        // may already be queued behind them. Registering the socket again
        // makes epoll look at it afresh and report it in the next poll, so
        // the rest is read then, after the other connections had their turn.
        let conn = &mut self.conns[key];
        let interest = interest(conn.write_interest);
        if let Err(e) = self
            .poll
            .registry()
            .reregister(&mut conn.stream, Token(key), interest)
        {
            debug!("connection {key}: reregister failed: {e}");
            self.kill(key);
        }
    }

    /// Carries out what the core asked for.
    fn apply_actions(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send { to, line } => {
                    if let Some(conn) = self.conns.get_mut(to.0) {
                        conn.output.push_line(line.as_bytes());
                        self.schedule_flush(to.0);
                    }
                }
                Action::Close { conn } => self.begin_close(conn.0),
            }
        }
    }

    /// Starts the orderly close: flush, shut down writing, await the peer.
    fn begin_close(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.state, State::Open) {
            return;
        }
        trace!("connection {key}: closing");
        conn.state = State::Closing {
            until: self.now + LINGER,
            write_shut: false,
            peer_done: false,
        };
        conn.input = LineBuffer::new();
        conn.paused_on = None;
        self.schedule_flush(key);
        // The client may have closed already (a TERMINATE line followed by
        // its FIN, say), and that end of stream has been announced; read
        // now, or we would wait out the linger and close with a reset.
        self.discard_input(key);
    }

    fn schedule_flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.flush_scheduled {
            conn.flush_scheduled = true;
            self.to_flush.push(key);
        }
    }

    /// Flushes every connection that got output during the last event: all
    /// lines queued for one client go out in one `write` where possible. The
    /// write is tried right away; `WRITABLE` is registered only if the
    /// socket cannot take everything.
    fn flush_scheduled(&mut self) {
        while let Some(key) = self.to_flush.pop() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.flush_scheduled = false;
                self.flush(key);
            }
        }
    }

    fn flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if matches!(conn.state, State::Dead) {
            return;
        }
        let flushed = match conn.output.write_to(&mut conn.stream, WRITE_BUDGET) {
            Ok(flushed) => flushed,
            Err(e) => {
                debug!("connection {key}: write failed: {e}");
                return self.lose(key);
            }
        };
        trace!(
            "connection {key}: flushed, {} bytes still queued",
            conn.output.len()
        );
        let drained = flushed == Flushed::Drained;
        // Register WRITABLE while the socket is full, drop it once it takes
        // bytes again. A spent budget needs no event: the socket still takes
        // bytes, so no WRITABLE edge would come; the rest goes out in the
        // connection's next turn.
        let wants_write = flushed == Flushed::WouldBlock;
        if wants_write != conn.write_interest {
            conn.write_interest = wants_write;
            let interest = interest(wants_write);
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
            {
                debug!("connection {key}: reregister failed: {e}");
                return self.lose(key);
            }
        }
        if flushed == Flushed::BudgetSpent {
            self.give_another_turn(key);
        }
        let conn = &mut self.conns[key];
        if drained
            && let State::Closing {
                write_shut,
                peer_done,
                ..
            } = &mut conn.state
        {
            if !*write_shut {
                *write_shut = true;
                // Our FIN goes after the last queued byte: the client reads
                // the final notice, then end of stream.
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            if *peer_done {
                return self.kill(key);
            }
        }
        // Output went out, so whoever waited on this queue may go on: the
        // partner, if it was paused on it, and this connection itself if it
        // was paused on a partner that has since left (the "partner left"
        // notice is what was just written).
        if let Some(partner) = self.core.partner(ConnId(key)) {
            self.resume_if_ready(partner.0);
        }
        self.resume_if_ready(key);
    }

    /// Resumes a paused sender once the queue it waits on has room again,
    /// or once that queue is a partner's and the partner has left.
    fn resume_if_ready(&mut self, key: usize) {
        let Some(paused_on) = self.conns.get(key).and_then(|c| c.paused_on) else {
            return;
        };
        let still_waiting = (paused_on == key
            || self.core.partner(ConnId(key)) == Some(ConnId(paused_on)))
            && !self.conns[paused_on].output.has_room();
        if still_waiting {
            return;
        }
        trace!("connection {key}: resumed");
        self.conns[key].paused_on = None;
        self.core.handle_held_back(ConnId(key), false, self.now);
        // Edge-triggered: bytes that arrived while we were paused were
        // announced already, so no event will come for them. Reading them
        // here, though, would run this connection's work inside another's
        // (the flush that made room), and a fast pair would then feed each
        // other without the loop ever polling again. It gets a turn instead.
        self.give_another_turn(key);
    }

    /// Puts `key` in the list of connections served after the next poll.
    fn give_another_turn(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.wants_turn {
            conn.wants_turn = true;
            self.turns.push(key);
        }
    }

    /// Serves every connection that asked for another turn, in the order
    /// they asked, each within its budgets. A connection that uses up a
    /// budget again goes to the back of the list for the next round, so
    /// this returns after one round however busy the clients are.
    fn serve_turns(&mut self) {
        for key in std::mem::take(&mut self.turns) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.wants_turn = false;
            if matches!(conn.state, State::Dead) {
                continue;
            }
            if !conn.output.is_empty() {
                self.flush(key);
            }
            if matches!(self.conns[key].state, State::Open) {
                self.read_lines(key, ReadUntil::WouldBlock);
            }
            self.flush_scheduled();
        }
    }

    /// The peer is gone (reset, broken pipe): tell the core, close at once.
    fn lose(&mut self, key: usize) {
        if matches!(self.conns[key].state, State::Open) {
            self.core.handle_disconnect(ConnId(key));
            self.apply_actions();
        }
        self.kill(key);
    }

    /// Closes the socket now; the slab entry goes at the end of the batch.
    fn kill(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if matches!(conn.state, State::Dead) {
            return;
        }
        trace!("connection {key}: closed");
        let _ = self.poll.registry().deregister(&mut conn.stream);
        conn.state = State::Dead;
        self.dead.push(key);
    }

    fn on_tick(&mut self) {
        trace!("tick");
        self.core.handle_tick(self.now);
        self.apply_actions();
        let now = self.now;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Closing { until, .. } if now >= until))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            trace!("connection {key}: linger over");
            self.kill(key);
        }
        for index in 0..self.listeners.len() {
            if self.listeners[index].paused {
                self.listeners[index].paused = false;
                self.accept_all(index);
            }
        }
        self.flush_scheduled();
    }

    fn begin_shutdown(&mut self) {
        info!(
            "signal received: telling {} client(s) and stopping",
            self.conns.len()
        );
        self.stopping = Some(self.now + SHUTDOWN_GRACE);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.core.handle_shutdown();
        self.apply_actions();
    }
}

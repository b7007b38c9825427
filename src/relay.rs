//! The relay layer: everything the server decides about connections, with no
//! I/O ("sans-IO", as quinn-proto is to quinn).
//!
//! The event loop ([`crate::server`]) owns the sockets and makes the system
//! calls; this layer owns everything else about a connection: its received
//! and queued bytes, its lifecycle (open, closing with a linger deadline,
//! gone), the backpressure marks and who is paused on whom, and the
//! schedule that decides which connection does what next. The protocol
//! itself (ports, passcodes, pairing, deadlines) is the [`Core`] below it.
//!
//! The loop reports what the sockets said (`accepted`, `readiness`,
//! `bytes_read`, `read_would_block`, `end_of_stream`, `write_done`,
//! `write_would_block`, `reset`, `tick`, `shutdown`) and asks what to do
//! next with [`Relay::poll_io`]: read once, write once, shut down the write
//! side, change the `WRITABLE` interest, or close. Time is passed in, so the
//! tests drive every rule with a fake clock and a simulated peer.
//!
//! # Readiness, turns and rounds
//!
//! mio is edge-triggered and documents only one promise: after an event, no
//! further event comes for that socket until an operation on it has
//! returned `WouldBlock`. So this layer remembers, per connection, whether
//! the socket may still have bytes to read (`readable`) and may still take
//! bytes (`writable`), and clears each only on `WouldBlock`.
//!
//! Work is served in *turns*: a connection's turn writes what is queued for
//! it and reads what it sent, each up to a budget, and handles what it read.
//! A turn never runs another connection's I/O; it only marks that other
//! connection as having work. The loop serves every marked connection in
//! turn, one *round* per wake-up, then polls again. A connection that spent
//! a budget with work left goes into the next round, and the loop polls
//! without sleeping while such work waits. So however fast a client is, the
//! loop comes back to `poll` after at most one budget per connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use log::trace;
use rand::{CryptoRng, Rng};

use crate::core::{Action, Census, ConnId, Core, is_plain_chat};
use crate::output::{OUTPUT_HIGH_WATER, OutputBuffer};
use crate::wire::{DecodeError, Inbox, Wire};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The portal port.
    Portal,
    /// Worker port number `n` (0-based).
    Worker(usize),
}

/// A connection as the trace names it: `conn 7 (worker 2)`, `conn 3
/// (portal)`. Workers are numbered from 1, as the server announces them.
#[derive(Debug, Clone, Copy)]
pub struct ConnName {
    conn: ConnId,
    role: Option<Role>,
}

impl std::fmt::Display for ConnName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            Some(Role::Portal) => write!(f, "conn {} (portal)", self.conn.0),
            Some(Role::Worker(n)) => write!(f, "conn {} (worker {})", self.conn.0, n + 1),
            None => write!(f, "conn {}", self.conn.0),
        }
    }
}

/// What the event loop must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Read once from the socket and report it (`bytes_read`,
    /// `read_would_block`, `end_of_stream` or `reset`).
    Read(ConnId),
    /// Write [`Relay::output`] once and report it (`write_done`,
    /// `write_would_block` or `reset`).
    Write(ConnId),
    /// Shut down the socket's write side: our FIN follows the last byte.
    ShutdownWrite(ConnId),
    /// Register (`true`) or drop (`false`) interest in `WRITABLE`.
    WantWritable(ConnId, bool),
    /// Deregister and close the socket; the relay has forgotten it.
    Close(ConnId),
}

/// The relay's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest chat message in bytes, framing excluded.
    pub max_line: usize,
    /// How long a closing connection may take to acknowledge our shutdown
    /// before it is dropped anyway. Waiting for its end of stream matters:
    /// closing a socket that still has unread input makes the kernel send a
    /// reset, which can destroy our final notice in flight.
    pub linger: Duration,
    /// Bytes one connection may read in one turn.
    pub read_budget: usize,
    /// Bytes one connection may write in one turn.
    pub write_budget: usize,
    /// Bytes queued for all connections together above which every sender
    /// is held back as if its partner's queue were full; they go on once
    /// the total is down to half of it.
    pub max_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 8192,
            linger: Duration::from_secs(2),
            // One read buffer's worth. Redis bounds each client the same way
            // (`NET_MAX_WRITES_PER_EVENT`, 64 KiB), so that one client cannot
            // monopolise the loop; measured here, a larger budget bought no
            // streaming throughput and cost the other clients' tail.
            read_budget: 64 * 1024,
            write_budget: 64 * 1024,
            max_queued: 256 << 20,
        }
    }
}

enum State {
    /// In the protocol: its messages are read and handled.
    Open,
    /// Leaving: queued output is written, then the write side is shut down,
    /// then the peer's end of stream is awaited, until the linger deadline
    /// (in `Relay::lingering`). What it still sends is read and thrown away.
    Closing { write_shut: bool, peer_done: bool },
}

struct Conn {
    role: Role,
    wire: Wire,
    state: State,
    inbox: Inbox,
    outbox: OutputBuffer,
    /// Reading stopped (backpressure) until the output queue of this
    /// connection drains: the partner's, or its own (see `handle_input`).
    paused_on: Option<ConnId>,
    /// The partner that is paused on this connection's queue, if any.
    waiter: Option<ConnId>,
    /// The socket may have bytes to read: no read returned `WouldBlock`
    /// since the last readable event.
    readable: bool,
    /// The socket may take bytes: no write returned `WouldBlock` since the
    /// last writable event.
    writable: bool,
    /// `WRITABLE` is registered: only while a write has returned
    /// `WouldBlock`, or every event would wake us for an idle socket.
    write_interest: bool,
    /// In `ready` or `next_round`.
    scheduled: bool,
    /// The round of this connection's last turn.
    last_round: u64,
    read_spent: usize,
    write_spent: usize,
    /// Tells this connection apart from an earlier one with the same id, so
    /// a stale linger deadline cannot close a newcomer.
    serial: u64,
}

impl Conn {
    fn state_name(&self) -> &'static str {
        match self.state {
            State::Open => "open",
            State::Closing { .. } => "closing",
        }
    }

    fn may_read(&self) -> bool {
        self.readable
            && self.paused_on.is_none()
            && match self.state {
                State::Open => true,
                State::Closing { peer_done, .. } => !peer_done,
            }
    }

    fn may_write(&self) -> bool {
        self.writable && !self.outbox.is_empty()
    }
}

/// The relay's state in numbers (see [`Relay::status`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Ports and connections as the protocol core counts them.
    pub census: Census,
    /// Portal connections still open (being answered).
    pub portal: usize,
    /// Connections closing: their final bytes going out.
    pub closing: usize,
    /// Senders held back by backpressure.
    pub held: usize,
    /// Bytes queued for all connections together.
    pub queued: usize,
    /// The limit on that total.
    pub max_queued: usize,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.census;
        write!(
            f,
            "worker ports: {} free, {} reserved, {} occupied; \
             connections: {} on the portal, {} awaiting a passcode, {} chatting, {} closing; \
             {} sender(s) held back; {} bytes queued (limit {})",
            c.free,
            c.reserved,
            c.occupied,
            self.portal,
            c.awaiting,
            c.chatting,
            self.closing,
            self.held,
            self.queued,
            self.max_queued
        )
    }
}

/// Every connection's relay state and the protocol core.
pub struct Relay<R> {
    core: Core<R>,
    limits: Limits,
    conns: Vec<Option<Conn>>,
    /// Connections to serve in this round, in order.
    ready: VecDeque<ConnId>,
    /// Connections that had their turn in this round and have work left.
    next_round: Vec<ConnId>,
    /// The connection whose turn it is.
    current: Option<ConnId>,
    round: u64,
    /// Instructions that come before any further turn.
    ios: VecDeque<Io>,
    /// Closing connections by linger deadline; the linger is one fixed
    /// length, so the order of closing is the order of the deadlines.
    lingering: VecDeque<(Instant, ConnId, u64)>,
    next_serial: u64,
    /// Bytes queued for all connections together.
    queued_total: usize,
    /// Senders whose queue has room but that wait for the total to fall.
    held_by_total: Vec<ConnId>,
    /// The highest total since the memory was last given back.
    queued_peak: usize,
}

impl<R: Rng + CryptoRng> Relay<R> {
    /// A relay over `core`, with no connections.
    pub fn new(core: Core<R>, limits: Limits) -> Self {
        Relay {
            core,
            limits,
            conns: Vec::new(),
            ready: VecDeque::new(),
            next_round: Vec::new(),
            current: None,
            round: 0,
            ios: VecDeque::new(),
            lingering: VecDeque::new(),
            next_serial: 0,
            queued_total: 0,
            held_by_total: Vec::new(),
            queued_peak: 0,
        }
    }

    /// The protocol core, for inspection.
    pub fn core(&self) -> &Core<R> {
        &self.core
    }

    /// Whether no connection is left.
    pub fn is_empty(&self) -> bool {
        self.conns.iter().all(Option::is_none)
    }

    /// Whether work is waiting for the next round: the loop must then poll
    /// without sleeping.
    pub fn has_work(&self) -> bool {
        !self.next_round.is_empty() || !self.ready.is_empty() || !self.ios.is_empty()
    }

    /// Bytes queued for `conn` and not yet written.
    pub fn queued(&self, conn: ConnId) -> usize {
        self.conn(conn).map_or(0, |c| c.outbox.len())
    }

    /// How the trace names `conn`.
    pub fn name(&self, conn: ConnId) -> ConnName {
        ConnName {
            conn,
            role: self.conn(conn).map(|c| c.role),
        }
    }

    /// Bytes queued for all connections together.
    pub fn queued_total(&self) -> usize {
        self.queued_total
    }

    /// Whether enough queue memory has been freed since the last call that
    /// it is worth handing back to the operating system: a burst that
    /// queued at least `threshold` bytes more than are queued now.
    pub fn take_freed_burst(&mut self, threshold: usize) -> bool {
        let freed = self.queued_peak.saturating_sub(self.queued_total) >= threshold;
        if freed {
            self.queued_peak = self.queued_total;
        }
        freed
    }

    /// A summary of the whole state, for an operator (`SIGUSR1`).
    pub fn status(&self) -> Status {
        let mut status = Status {
            census: self.core.census(),
            queued: self.queued_total,
            max_queued: self.limits.max_queued,
            ..Status::default()
        };
        for c in self.conns.iter().flatten() {
            match (c.state_name(), c.role) {
                ("closing", _) => status.closing += 1,
                (_, Role::Portal) => status.portal += 1,
                _ => {}
            }
            if c.paused_on.is_some() {
                status.held += 1;
            }
        }
        status
    }

    /// A new connection from `peer`, with id `conn` (unused until its
    /// `Close`), speaking `wire`.
    pub fn accepted(
        &mut self,
        conn: ConnId,
        role: Role,
        wire: Wire,
        peer: SocketAddr,
        now: Instant,
    ) {
        if conn.0 >= self.conns.len() {
            self.conns.resize_with(conn.0 + 1, || None);
        }
        debug_assert!(self.conns[conn.0].is_none(), "{conn:?} is still in use");
        self.next_serial += 1;
        self.conns[conn.0] = Some(Conn {
            role,
            wire,
            state: State::Open,
            inbox: Inbox::new(),
            outbox: OutputBuffer::new(),
            paused_on: None,
            waiter: None,
            // Bytes may have arrived before the socket was registered, and
            // whether registering reports them is not promised: assume so
            // until a read says otherwise.
            readable: true,
            writable: true,
            write_interest: false,
            scheduled: false,
            last_round: 0,
            read_spent: 0,
            write_spent: 0,
            serial: self.next_serial,
        });
        match role {
            Role::Portal => {
                let reply = self.core.handle_portal_request(peer, now);
                self.send(conn, reply.to_line().as_bytes());
                self.begin_close(conn, now);
            }
            Role::Worker(worker) => {
                self.core.handle_worker_connect(conn, worker, peer, now);
                self.apply_actions(now);
            }
        }
        self.schedule(conn);
    }

    /// The socket of `conn` was reported readable (or closed, or in error:
    /// the read tells which) and/or writable.
    pub fn readiness(&mut self, conn: ConnId, readable: bool, writable: bool) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        c.readable |= readable;
        c.writable |= writable;
        self.schedule(conn);
    }

    /// A new wake-up: connections left over from the last round get theirs.
    pub fn start_round(&mut self) {
        self.round += 1;
        for conn in std::mem::take(&mut self.next_round) {
            self.ready.push_back(conn);
        }
    }

    /// The next thing to do, or `None` when this round is over.
    pub fn poll_io(&mut self) -> Option<Io> {
        loop {
            if let Some(io) = self.ios.pop_front() {
                return Some(io);
            }
            let conn = match self.current {
                Some(conn) => conn,
                None => {
                    let conn = self.ready.pop_front()?;
                    let round = self.round;
                    let Some(c) = self.conn_mut(conn) else {
                        continue;
                    };
                    c.scheduled = false;
                    c.last_round = round;
                    c.read_spent = 0;
                    c.write_spent = 0;
                    self.current = Some(conn);
                    conn
                }
            };
            if let Some(io) = self.next_step(conn) {
                return Some(io);
            }
            self.current = None;
            // The turn is over. Work left (a budget ran out) waits for the
            // next round: no event will announce it.
            self.schedule(conn);
        }
    }

    /// The bytes [`Io::Write`] should offer: what is queued, up to what is
    /// left of this turn's budget.
    pub fn output(&self, conn: ConnId) -> &[u8] {
        match self.conn(conn) {
            Some(c) => c
                .outbox
                .pending(self.limits.write_budget.saturating_sub(c.write_spent)),
            None => &[],
        }
    }

    /// A read returned `data`.
    pub fn bytes_read(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        c.read_spent += data.len();
        match c.state {
            State::Open => {
                c.inbox.extend(data);
                self.handle_input(conn, now);
            }
            // A closing connection's input is read only to find its end.
            State::Closing { .. } => {}
        }
    }

    /// A read returned `WouldBlock`: the socket is drained.
    pub fn read_would_block(&mut self, conn: ConnId) {
        if let Some(c) = self.conn_mut(conn) {
            c.readable = false;
            c.inbox.shrink_if_empty();
        }
    }

    /// A read returned end of stream: the client closed its sending side.
    /// Its last unterminated message is still delivered, if its wire has
    /// such a thing, and then it leaves as if it had terminated.
    pub fn end_of_stream(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        c.readable = false;
        if matches!(c.state, State::Open) {
            if let Some((text, hidden_break)) = c.inbox.take_final(&c.wire) {
                self.deliver(conn, text, hidden_break, now);
            }
            if self.is_open(conn) {
                self.core.handle_disconnect(conn, now);
                self.apply_actions(now);
                self.begin_close(conn, now);
            }
        }
        if let Some(Conn {
            state: State::Closing { peer_done, .. },
            ..
        }) = self.conn_mut(conn)
        {
            *peer_done = true;
        }
        self.finish_close_if_done(conn, now);
    }

    /// A write took the first `n` bytes of [`output`](Self::output).
    pub fn write_done(&mut self, conn: ConnId, n: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(conn.0).and_then(Option::as_mut) else {
            return;
        };
        c.outbox.consume(n);
        c.write_spent += n;
        self.queued_total -= n;
        if c.outbox.is_empty() && std::mem::take(&mut c.write_interest) {
            self.ios.push_back(Io::WantWritable(conn, false));
        }
        self.shut_down_if_flushed(conn);
        if n > 0 {
            self.drained_some(conn, now);
            self.release_held_by_total(now);
        }
        self.finish_close_if_done(conn, now);
    }

    /// A write returned `WouldBlock`: the socket is full; `WRITABLE` will
    /// say when it takes bytes again.
    pub fn write_would_block(&mut self, conn: ConnId) {
        if let Some(c) = self.conn_mut(conn) {
            c.writable = false;
            if !c.write_interest {
                c.write_interest = true;
                self.ios.push_back(Io::WantWritable(conn, true));
            }
        }
    }

    /// The connection failed (reset, broken pipe, a registration error):
    /// tell the core, close at once.
    pub fn reset(&mut self, conn: ConnId, now: Instant) {
        if self.is_open(conn) {
            self.core.handle_reset(conn, now);
            self.apply_actions(now);
        }
        self.close(conn, now);
    }

    /// The timer tick: the core's deadlines, then the lingering closes.
    pub fn tick(&mut self, now: Instant) {
        self.core.handle_tick(now);
        self.apply_actions(now);
        while let Some(&(until, conn, serial)) = self.lingering.front() {
            if now < until {
                break;
            }
            self.lingering.pop_front();
            if self.conn(conn).is_some_and(|c| c.serial == serial) {
                self.close(conn, now);
            }
        }
    }

    /// The server is stopping: every client is told and closed.
    pub fn shutdown(&mut self, now: Instant) {
        self.core.handle_shutdown();
        self.apply_actions(now);
    }

    /// Checks that the relay's bookkeeping agrees with itself and with the
    /// core; panics with what is wrong. For tests and fuzzing.
    pub fn check_invariants(&self) {
        self.core.check_invariants();
        let total: usize = self.conns.iter().flatten().map(|c| c.outbox.len()).sum();
        assert_eq!(total, self.queued_total, "the total queued");
        for (id, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let conn = ConnId(id);
            if let Some(on) = c.paused_on
                && on != conn
            {
                let holder = self.conn(on).expect("paused on a live connection");
                assert_eq!(holder.waiter, Some(conn), "{conn:?} paused on {on:?}");
            }
            if let Some(waiter) = c.waiter {
                let w = self.conn(waiter).expect("the waiter is alive");
                assert_eq!(w.paused_on, Some(conn), "{waiter:?} waits on {conn:?}");
            }
            if c.write_interest {
                assert!(
                    !c.outbox.is_empty(),
                    "{conn:?}: WRITABLE registered with nothing to write"
                );
            }
            let queued = self.ready.contains(&conn)
                || self.next_round.contains(&conn)
                || self.current == Some(conn);
            assert!(
                queued || !(c.may_read() || c.may_write()),
                "{conn:?} has work but no turn"
            );
            assert!(
                c.outbox.len() <= OUTPUT_HIGH_WATER + self.limits.max_line + 64,
                "{conn:?}: queue past its bound"
            );
        }
    }

    fn next_step(&mut self, conn: ConnId) -> Option<Io> {
        let budgets = self.limits;
        let c = self.conn(conn)?;
        if c.may_write() && c.write_spent < budgets.write_budget {
            return Some(Io::Write(conn));
        }
        if c.may_read() && c.read_spent < budgets.read_budget {
            return Some(Io::Read(conn));
        }
        None
    }

    /// Puts `conn` in line for a turn if it has work: in this round if it
    /// has not had its turn yet, else in the next.
    fn schedule(&mut self, conn: ConnId) {
        let round = self.round;
        let current = self.current;
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        if c.scheduled || current == Some(conn) || !(c.may_read() || c.may_write()) {
            return;
        }
        c.scheduled = true;
        if c.last_round == round {
            self.next_round.push(conn);
        } else {
            self.ready.push_back(conn);
        }
    }

    /// Handles every complete message buffered for an open connection,
    /// until it is empty, the connection leaves, or backpressure pauses it.
    fn handle_input(&mut self, conn: ConnId, now: Instant) {
        loop {
            let Some(c) = self.conn(conn) else { return };
            if !matches!(c.state, State::Open) || c.paused_on.is_some() {
                return;
            }
            // Backpressure: never queue more chat for a partner that is not
            // reading. The messages wait in our inbox, the socket's buffers
            // fill up behind them, and that slows the sender down in TCP
            // itself.
            let partner = self.core.partner(conn);
            if let Some(partner) = partner {
                let partner_full = self.conn(partner).is_some_and(|p| p.outbox.is_full());
                let total_full = self.queued_total >= self.limits.max_queued;
                if partner_full || total_full {
                    self.pause(conn, partner);
                    if !partner_full {
                        // No write to this partner may come to wake it.
                        self.held_by_total.push(conn);
                    }
                    return;
                }
            }
            let max = self.core.max_line(conn, self.limits.max_line);
            if let Some(partner) = partner
                && self.forward_run(conn, partner, max, now)
            {
                continue;
            }
            let Some(c) = self.conn_mut(conn) else { return };
            match c.inbox.next_message(&c.wire, max) {
                Ok(None) => return,
                Ok(Some((text, hidden_break))) => {
                    let queued_before = c.outbox.len();
                    self.deliver(conn, text, hidden_break, now);
                    // A message can earn its sender a notice ("not
                    // delivered", "refused"), queued for the sender itself.
                    // A client that does not read those is held back on its
                    // own queue, so its notices cannot pile up without bound.
                    if let Some(c) = self.conn(conn)
                        && matches!(c.state, State::Open)
                        && c.outbox.len() > queued_before
                        && c.outbox.is_full()
                    {
                        self.pause(conn, conn);
                        return;
                    }
                }
                Err(error) => {
                    match error {
                        DecodeError::TooLong => {
                            self.core
                                .handle_line_too_long(conn, self.limits.max_line, now)
                        }
                        DecodeError::Malformed => self.core.handle_malformed(conn, now),
                    }
                    self.apply_actions(now);
                    return;
                }
            }
        }
    }

    /// The fast path: a streaming client sends a thousand messages per read,
    /// nearly all of them plain chat that the core would only forward
    /// unchanged. Such a run goes to the partner in one copy and is reported
    /// to the core in one call. The run stops where the partner's queue
    /// would pass its high-water mark, so backpressure works as it does
    /// message by message; any other message goes the slow way, through
    /// `deliver`. Returns whether a run was forwarded.
    fn forward_run(&mut self, conn: ConnId, partner: ConnId, max: usize, now: Instant) -> bool {
        let Ok([Some(from), Some(to)]) = self.conns.get_disjoint_mut([conn.0, partner.0]) else {
            return false;
        };
        // Neither full nor over the total (checked by the caller), so there
        // is room.
        let room =
            (OUTPUT_HIGH_WATER - to.outbox.len()).min(self.limits.max_queued - self.queued_total);
        let mut lines = 0;
        let plain_chat = |message: &[u8]| {
            let plain = is_plain_chat(message);
            lines += u64::from(plain);
            plain
        };
        let Some(run) = from.inbox.take_run(&from.wire, max, room, plain_chat) else {
            return false;
        };
        self.queued_total += run.len();
        self.queued_peak = self.queued_peak.max(self.queued_total);
        to.outbox.push_encoded(from.inbox.get(run.clone()));
        trace!(
            "{}: forwarded {lines} line(s), {} bytes, to {} in one copy",
            self.name(conn),
            run.len(),
            self.name(partner)
        );
        self.core.handle_forwarded_run(conn, lines, now);
        self.schedule(partner);
        true
    }

    /// Gives one message to the core and copies it to the partner if told to.
    fn deliver(&mut self, conn: ConnId, text: Range<usize>, hidden_break: bool, now: Instant) {
        let Some(c) = self.conns.get(conn.0).and_then(Option::as_ref) else {
            return;
        };
        let forward_to = if hidden_break {
            self.core
                .handle_hidden_break(conn, c.inbox.get(text.clone()), now)
        } else {
            self.core.handle_line(conn, c.inbox.get(text.clone()), now)
        };
        if let Some(to) = forward_to
            && let Ok([Some(from), Some(partner)]) = self.conns.get_disjoint_mut([conn.0, to.0])
        {
            let before = partner.outbox.len();
            partner
                .outbox
                .push_message(&partner.wire, from.inbox.get(text));
            let added = partner.outbox.len() - before;
            self.queued_total += added;
            self.queued_peak = self.queued_peak.max(self.queued_total);
            trace!(
                "{}: forwarded 1 line, {added} bytes, to {}",
                self.name(conn),
                self.name(to)
            );
            self.schedule(to);
        }
        self.apply_actions(now);
    }

    /// Carries out what the core asked for.
    fn apply_actions(&mut self, now: Instant) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send { to, line } => self.send(to, line.as_bytes()),
                Action::Close { conn } => self.begin_close(conn, now),
            }
        }
    }

    fn send(&mut self, to: ConnId, text: &[u8]) {
        if let Some(c) = self.conn_mut(to) {
            let before = c.outbox.len();
            c.outbox.push_message(&c.wire, text);
            let added = c.outbox.len() - before;
            self.queued_total += added;
            self.queued_peak = self.queued_peak.max(self.queued_total);
            // The text is not logged: the portal's answer holds a passcode.
            trace!("{}: queued a notice, {added} bytes", self.name(to));
            self.schedule(to);
        }
    }

    fn pause(&mut self, conn: ConnId, on: ConnId) {
        trace!(
            "{}: paused: {} has {} bytes queued (all: {})",
            self.name(conn),
            self.name(on),
            self.queued(on),
            self.queued_total
        );
        if let Some(c) = self.conn_mut(conn) {
            c.paused_on = Some(on);
        }
        if on != conn
            && let Some(holder) = self.conn_mut(on)
        {
            holder.waiter = Some(conn);
        }
    }

    /// Output of `conn` went out: whoever waits on its queue may go on (its
    /// partner, or itself), and a partner held back by this queue made
    /// progress, so its idle clock starts again. A held sender is idle only
    /// while nothing it sent moves at all.
    fn drained_some(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conn(conn) else { return };
        if let Some(waiter) = c.waiter {
            self.core.handle_progress(waiter, now);
            self.resume_if_ready(waiter, now);
        }
        self.resume_if_ready(conn, now);
    }

    /// Resumes a paused sender once the queue it waits on has room again,
    /// or once that queue is a partner's and the partner has left.
    fn resume_if_ready(&mut self, conn: ConnId, now: Instant) {
        let Some(on) = self.conn(conn).and_then(|c| c.paused_on) else {
            return;
        };
        let waiting_on_partner = on != conn && self.core.partner(conn) == Some(on);
        let still_waiting = (on == conn || waiting_on_partner)
            && self.conn(on).is_some_and(|q| !q.outbox.has_room());
        if still_waiting {
            return;
        }
        if waiting_on_partner && self.queued_total > self.limits.max_queued / 2 {
            // Its partner's queue has room, but all queues together have
            // not: wait for the total to fall.
            if !self.held_by_total.contains(&conn) {
                self.held_by_total.push(conn);
            }
            return;
        }
        self.unpause(conn);
        trace!("{}: resumed", self.name(conn));
        // Messages already in the inbox are handled now, as part of the
        // turn that made room; reading more waits for this connection's own
        // turn.
        self.handle_input(conn, now);
        self.schedule(conn);
    }

    /// Once the total queued is down to half its limit, every sender that
    /// waited for it may go on.
    fn release_held_by_total(&mut self, now: Instant) {
        if self.held_by_total.is_empty() || self.queued_total > self.limits.max_queued / 2 {
            return;
        }
        for conn in std::mem::take(&mut self.held_by_total) {
            self.resume_if_ready(conn, now);
        }
    }

    fn unpause(&mut self, conn: ConnId) {
        let Some(on) = self.conn_mut(conn).and_then(|c| c.paused_on.take()) else {
            return;
        };
        if let Some(holder) = self.conn_mut(on)
            && holder.waiter == Some(conn)
        {
            holder.waiter = None;
        }
    }

    /// Starts the orderly close: flush, shut down writing, await the peer.
    fn begin_close(&mut self, conn: ConnId, now: Instant) {
        let until = now + self.limits.linger;
        let Some(c) = self.conn_mut(conn) else { return };
        if !matches!(c.state, State::Open) {
            return;
        }
        c.state = State::Closing {
            write_shut: false,
            peer_done: false,
        };
        c.inbox.clear();
        let serial = c.serial;
        let waiter = c.waiter;
        self.unpause(conn);
        trace!("{}: closing", self.name(conn));
        self.lingering.push_back((until, conn, serial));
        self.shut_down_if_flushed(conn);
        // A sender paused on this queue is no longer this one's partner.
        if let Some(waiter) = waiter {
            self.resume_if_ready(waiter, now);
        }
        self.schedule(conn);
    }

    /// Our FIN goes after the last queued byte of a closing connection: the
    /// client reads the final notice, then end of stream.
    fn shut_down_if_flushed(&mut self, conn: ConnId) {
        if let Some(Conn {
            state: State::Closing { write_shut, .. },
            outbox,
            ..
        }) = self.conn_mut(conn)
            && outbox.is_empty()
            && !*write_shut
        {
            *write_shut = true;
            self.ios.push_back(Io::ShutdownWrite(conn));
        }
    }

    fn finish_close_if_done(&mut self, conn: ConnId, now: Instant) {
        if let Some(Conn {
            state:
                State::Closing {
                    write_shut: true,
                    peer_done: true,
                    ..
                },
            ..
        }) = self.conn(conn)
        {
            self.close(conn, now);
        }
    }

    /// Forgets `conn` and tells the loop to close its socket.
    fn close(&mut self, conn: ConnId, now: Instant) {
        if self.conn(conn).is_some() {
            trace!("{}: closed", self.name(conn));
        }
        self.unpause(conn);
        let Some(c) = self.conns.get_mut(conn.0).and_then(Option::take) else {
            return;
        };
        self.queued_total -= c.outbox.len();
        if self.current == Some(conn) {
            self.current = None;
        }
        if c.scheduled {
            self.ready.retain(|&c| c != conn);
            self.next_round.retain(|&c| c != conn);
        }
        self.ios.push_back(Io::Close(conn));
        // Whoever waited on its queue waits no more.
        if let Some(waiter) = c.waiter
            && let Some(w) = self.conn_mut(waiter)
        {
            w.paused_on = None;
            self.handle_input(waiter, now);
            self.schedule(waiter);
        }
    }

    fn is_open(&self, conn: ConnId) -> bool {
        self.conn(conn)
            .is_some_and(|c| matches!(c.state, State::Open))
    }

    fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(conn.0)?.as_ref()
    }

    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(conn.0)?.as_mut()
    }
}

#[cfg(test)]
mod tests;

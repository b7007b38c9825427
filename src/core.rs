//! The protocol core: port stack, passcodes, pairing and deadlines, with no I/O.
//!
//! Nothing here touches a socket or reads the clock. The event loop reports
//! what happened (`handle_*` methods, each given `now`) and then collects what
//! to do ([`Core::poll_action`]): send a line to a connection, or close one.
//! Because time and randomness come from outside, the tests below drive every
//! rule with a fake clock and a seeded RNG.
//!
//! Worker ports are numbered from 0 here (`worker` 0 is the first worker port);
//! worker `2k` is paired with `2k + 1`, which is the "1 with 2, 3 with 4" of the
//! wire protocol.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::distr::Distribution;
use rand::distr::slice::Choose;
use rand::{CryptoRng, Rng};
use subtle::ConstantTimeEq;

/// Whether a line from a chatting client is plain chat: neither the
/// terminate command nor a line posing as the server. With a partner
/// present, [`Core::handle_line`] forwards such a line unchanged and only
/// notes the activity, so the event loop may forward a whole run of them at
/// once and report it with [`Core::handle_forwarded_run`].
pub fn is_plain_chat(line: &[u8]) -> bool {
    line != TERMINATE && !line.starts_with(SERVER_PREFIX)
}

/// Identifies one client connection. The event loop uses its slab key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// The symbols of a passcode: the digits and lower-case letters without
/// `0`, `1`, `l` and `o`, the ones a person can mistake for one another. One
/// case only, so no `c`/`C` or `s`/`S` to tell apart and no Shift to press;
/// 32 symbols, so each one carries exactly 5 bits.
pub const PASSCODE_ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";

/// Length of a passcode: 26 symbols of 5 bits carry 26 · log2(32) = 130 bits,
/// above the 128 the protocol asks for (25 would carry only 125).
pub const PASSCODE_LEN: usize = 26;

/// The most bytes a client may send before its handshake line ends. The
/// longest valid handshake, `CLIENT65535>>>HandshakeCode=` and a passcode, is
/// 54 bytes; anything much longer is not a handshake, so it is not buffered.
pub const HANDSHAKE_MAX_LINE: usize = 128;

/// The line a client sends to leave.
pub const TERMINATE: &[u8] = b"CLIENT>>> TERMINATE";

/// What the server's own lines begin with; clients may not send such lines.
pub const SERVER_PREFIX: &[u8] = b"SERVER";

/// How long each phase may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From portal assignment to a successful handshake.
    pub assign: Duration,
    /// From connecting to a worker port to a complete first line.
    pub handshake: Duration,
    /// Longest silence from a client in a session.
    pub idle: Duration,
    /// Longest session, if limited.
    pub session: Option<Duration>,
}

impl Default for Timeouts {
    /// The server's defaults: 10 s to claim a port, 5 s for the passcode,
    /// 60 s of silence, no session limit.
    fn default() -> Self {
        Timeouts {
            assign: Duration::from_secs(10),
            handshake: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            session: None,
        }
    }
}

/// The portal's answer to a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalReply {
    /// A worker port was reserved for whoever presents `code`.
    Assigned {
        /// The reserved worker port.
        port: u16,
        /// The one-time passcode for it.
        code: String,
    },
    /// Every worker port is reserved or occupied.
    Full,
}

impl PortalReply {
    /// The reply as sent on the wire (without the newline).
    pub fn to_line(&self) -> String {
        match self {
            PortalReply::Assigned { port, code } => {
                format!("SERVER>>>Port=>{port},HandshakeCode={code}")
            }
            PortalReply::Full => "SERVER>>>full".to_string(),
        }
    }
}

/// Something the event loop must do for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue `line` (a server notice; the newline is added on the wire).
    Send {
        /// The recipient.
        to: ConnId,
        /// The notice, without its newline.
        line: String,
    },
    /// Write out what is queued for `conn`, then close it. The core has
    /// already forgotten the connection; its port, if it had one, is free.
    Close {
        /// The connection to close.
        conn: ConnId,
    },
}

/// How many ports and connections are in each state (see [`Core::census`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Worker ports on the free stack.
    pub free: usize,
    /// Worker ports handed out by the portal, waiting for their passcode.
    pub reserved: usize,
    /// Worker ports held by a client in a session.
    pub occupied: usize,
    /// Connections on worker ports that have not sent their passcode yet.
    pub awaiting: usize,
    /// Connections in a session.
    pub chatting: usize,
}

/// The state of one worker port, as seen from outside the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// On the free stack.
    Free,
    /// Handed out by the portal; waiting for its passcode.
    Reserved,
    /// A client holds it.
    Occupied(ConnId),
}

/// A worker port's state. A reserved or occupied port is counted against
/// the source address that holds it (`--max-per-ip`): the portal client's
/// for a reservation, the session client's for a session.
enum Slot {
    Free,
    Reserved {
        code: String,
        lapses: Instant,
        by: IpAddr,
    },
    Occupied {
        conn: ConnId,
        by: IpAddr,
    },
}

impl Slot {
    fn holder(&self) -> Option<IpAddr> {
        match self {
            Slot::Free => None,
            Slot::Reserved { by, .. } | Slot::Occupied { by, .. } => Some(*by),
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    /// Connected to a worker port from `from`; its first line must be the
    /// passcode.
    AwaitingCode {
        worker: usize,
        deadline: Instant,
        from: SocketAddr,
    },
    /// Holds `worker` after a good handshake. `last_line` is the last time
    /// it said something, or something it said moved on to its partner.
    Chatting {
        worker: usize,
        last_line: Instant,
        started: Instant,
        from: SocketAddr,
        /// Chat lines it sent, for the log.
        lines: u64,
    },
}

/// What one source address holds, for `--max-per-ip`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    /// Worker ports reserved for it or held by its sessions.
    ports: usize,
    /// Its connections on worker ports that have not passed the handshake.
    unauthenticated: usize,
}

/// Per-source limits: with `max` N > 0, a source address may hold at most N
/// worker ports and 4·N unauthenticated worker connections at once, so one
/// source cannot take every port from the others. 0 means no limit, and
/// then nothing is counted at all.
struct Sources {
    max: usize,
    usage: HashMap<IpAddr, Usage>,
}

impl Sources {
    /// Unauthenticated connections allowed per port a source may hold:
    /// enough for a client that retries, far from enough to hold every port.
    const CONNECTIONS_PER_PORT: usize = 4;

    fn may_take_port(&self, ip: IpAddr) -> bool {
        self.max == 0 || self.get(ip).ports < self.max
    }

    fn may_connect(&self, ip: IpAddr) -> bool {
        self.max == 0 || self.get(ip).unauthenticated < Self::CONNECTIONS_PER_PORT * self.max
    }

    fn get(&self, ip: IpAddr) -> Usage {
        self.usage.get(&ip).copied().unwrap_or_default()
    }

    /// Changes what `ip` holds, forgetting sources that hold nothing.
    fn change(&mut self, ip: IpAddr, change: impl FnOnce(&mut Usage)) {
        if self.max == 0 {
            return;
        }
        let usage = self.usage.entry(ip).or_default();
        change(usage);
        if *usage == Usage::default() {
            self.usage.remove(&ip);
        }
    }
}

/// The whole protocol state of the server.
pub struct Core<R> {
    ports: Vec<u16>,
    slots: Vec<Slot>,
    /// Free workers; the top of the stack is the end of the vector.
    free: Vec<usize>,
    /// Every connection on a worker port, indexed by `ConnId`. Slab keys are
    /// small and reused, so a vector is the natural map.
    conns: Vec<Option<Phase>>,
    timeouts: Timeouts,
    rng: R,
    actions: VecDeque<Action>,
    /// `handle_shutdown` emptied the free stack for good.
    shut_down: bool,
    sources: Sources,
}

impl<R: Rng + CryptoRng> Core<R> {
    /// A core for the given worker ports (an even number, at least two),
    /// all free. The first port is on top of the stack, so clients are handed
    /// ports in order while none is returned.
    pub fn new(worker_ports: Vec<u16>, timeouts: Timeouts, rng: R) -> Self {
        assert!(
            worker_ports.len() >= 2 && worker_ports.len().is_multiple_of(2),
            "workers come in pairs"
        );
        let count = worker_ports.len();
        Core {
            slots: (0..count).map(|_| Slot::Free).collect(),
            free: (0..count).rev().collect(),
            ports: worker_ports,
            conns: Vec::new(),
            timeouts,
            rng,
            actions: VecDeque::new(),
            shut_down: false,
            sources: Sources {
                max: 0,
                usage: HashMap::new(),
            },
        }
    }

    /// Limits every source address to `max` worker ports (reservations and
    /// sessions) and 4 × `max` unauthenticated worker connections; 0 is no
    /// limit. Over it, the portal answers that source "full" and a worker
    /// connection from it gets the wrong-passcode answer.
    pub fn with_max_per_ip(mut self, max: usize) -> Self {
        self.sources.max = max;
        self
    }

    /// The next thing to do, if any. Call until `None` after every `handle_*`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A client from `source` connected to the portal: reserve the top free
    /// port for it.
    pub fn handle_portal_request(&mut self, source: SocketAddr, now: Instant) -> PortalReply {
        if !self.sources.may_take_port(source.ip()) {
            log::info!("portal: {source} told full: its address holds its limit of ports");
            return PortalReply::Full;
        }
        let Some(worker) = self.free.pop() else {
            log::info!("portal: {source} told full: no port is free");
            return PortalReply::Full;
        };
        let symbols = Choose::new(PASSCODE_ALPHABET).expect("the alphabet is not empty");
        let code = symbols
            .sample_iter(&mut self.rng)
            .take(PASSCODE_LEN)
            .map(|&symbol| char::from(symbol))
            .collect::<String>();
        self.set_slot(
            worker,
            Slot::Reserved {
                code: code.clone(),
                lapses: now + self.timeouts.assign,
                by: source.ip(),
            },
        );
        log::info!("portal: {source} given port {}", self.ports[worker]);
        PortalReply::Assigned {
            port: self.ports[worker],
            code,
        }
    }

    /// A connection from `source` arrived on worker port number `worker`.
    /// A source with too many unauthenticated connections already is
    /// answered as a wrong passcode at once.
    pub fn handle_worker_connect(
        &mut self,
        conn: ConnId,
        worker: usize,
        source: SocketAddr,
        now: Instant,
    ) {
        debug_assert!(self.phase(conn).is_none(), "{conn:?} is still in use");
        if !self.sources.may_connect(source.ip()) {
            let port = self.ports[worker];
            log::info!("port {port}: {source} refused: its address has too many connections");
            self.send(conn, format!("SERVER{port}>>> Wrong handshake passcode"));
            self.actions.push_back(Action::Close { conn });
            return;
        }
        let deadline = now + self.timeouts.handshake;
        self.set_phase(
            conn,
            Some(Phase::AwaitingCode {
                worker,
                deadline,
                from: source,
            }),
        );
    }

    /// The longest line `conn` may send now: short before its handshake.
    pub fn max_line(&self, conn: ConnId, session_max: usize) -> usize {
        match self.phase(conn) {
            Some(Phase::Chatting { .. }) => session_max,
            _ => HANDSHAKE_MAX_LINE,
        }
    }

    /// The connection `conn` is chatting with, if both are in a session.
    pub fn partner(&self, conn: ConnId) -> Option<ConnId> {
        match self.phase(conn)? {
            Phase::Chatting { worker, .. } => match self.slots[worker ^ 1] {
                Slot::Occupied { conn, .. } => Some(conn),
                _ => None,
            },
            Phase::AwaitingCode { .. } => None,
        }
    }

    /// A complete line (without its terminator) arrived from `conn`.
    ///
    /// Returns the connection to forward the line to, byte for byte; notices
    /// and closes are queued as actions. The caller copies the line itself so
    /// that chat traffic needs no allocation here.
    pub fn handle_line(&mut self, conn: ConnId, line: &[u8], now: Instant) -> Option<ConnId> {
        match self.phase(conn)? {
            Phase::AwaitingCode { worker, from, .. } => {
                self.handshake(conn, worker, from, line, now);
                None
            }
            Phase::Chatting { worker, .. } => {
                self.note_activity(conn, now);
                let port = self.ports[worker];
                if line == TERMINATE {
                    self.end_session(
                        conn,
                        Some(format!("SERVER{port}>>> Bye")),
                        "terminated",
                        now,
                    );
                    return None;
                }
                self.count_lines(conn, 1);
                if line.starts_with(SERVER_PREFIX) {
                    self.send(
                        conn,
                        format!("SERVER{port}>>> Refused: chat lines may not begin with SERVER"),
                    );
                    return None;
                }
                let partner = self.partner(conn);
                if partner.is_none() {
                    let partner_port = self.ports[worker ^ 1];
                    self.send(
                        conn,
                        format!(
                            "SERVER{port}>>> Not delivered: partner {partner_port} is not connected"
                        ),
                    );
                }
                partner
            }
        }
    }

    /// `conn`, chatting with a partner, sent a run of lines that
    /// [`is_plain_chat`] accepts, and the event loop
    /// forwarded them to the partner: the same as
    /// [`handle_line`](Self::handle_line) for each of the `lines`, in one
    /// call.
    pub fn handle_forwarded_run(&mut self, conn: ConnId, lines: u64, now: Instant) {
        self.note_activity(conn, now);
        self.count_lines(conn, lines);
    }

    /// Lines `conn` sent earlier, held back for a partner that reads slowly,
    /// moved on: a held sender is sending, not idle, as long as what it
    /// sends moves at all.
    pub fn handle_progress(&mut self, conn: ConnId, now: Instant) {
        self.note_activity(conn, now);
    }

    /// A line from `conn` holds a byte that some readers of its wire take as
    /// the end of a line (a bare `\r` in line mode), so forwarding it could
    /// show the partner a forged second line. In a session it is refused
    /// with a notice; before the handshake it is a handshake attempt like
    /// any other (and cannot match a passcode).
    pub fn handle_hidden_break(
        &mut self,
        conn: ConnId,
        line: &[u8],
        now: Instant,
    ) -> Option<ConnId> {
        match self.phase(conn)? {
            Phase::AwaitingCode { .. } => self.handle_line(conn, line, now),
            Phase::Chatting { worker, .. } => {
                self.note_activity(conn, now);
                let port = self.ports[worker];
                self.send(
                    conn,
                    format!("SERVER{port}>>> Refused: chat lines may not hold a carriage return"),
                );
                None
            }
        }
    }

    /// `conn` sent bytes that cannot be a message of its wire at all (a bad
    /// length prefix): tell it, and end it, as for a line too long.
    pub fn handle_malformed(&mut self, conn: ConnId, now: Instant) {
        match self.phase(conn) {
            Some(Phase::AwaitingCode { worker, .. }) => self.refuse_handshake(conn, worker),
            Some(Phase::Chatting { worker, .. }) => {
                let port = self.ports[worker];
                let notice = format!("SERVER{port}>>> Malformed message; closing");
                self.end_session(conn, Some(notice), "malformed message", now);
            }
            None => {}
        }
    }

    /// `conn` sent a line longer than it may: tell it, and end it.
    pub fn handle_line_too_long(&mut self, conn: ConnId, session_max: usize, now: Instant) {
        match self.phase(conn) {
            Some(Phase::AwaitingCode { worker, .. }) => self.refuse_handshake(conn, worker),
            Some(Phase::Chatting { worker, .. }) => {
                let port = self.ports[worker];
                let notice =
                    format!("SERVER{port}>>> Line too long (limit {session_max} bytes); closing");
                self.end_session(conn, Some(notice), "line too long", now);
            }
            None => {}
        }
    }

    /// `conn` closed its side (end of stream): forget it, free its port and
    /// tell its partner. No `Close` is queued for it.
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Instant) {
        self.depart(conn, "disconnected", now);
    }

    /// `conn` failed (a reset, a write error): as [`handle_disconnect`](Self::handle_disconnect).
    pub fn handle_reset(&mut self, conn: ConnId, now: Instant) {
        self.depart(conn, "reset", now);
    }

    fn depart(&mut self, conn: ConnId, reason: &str, now: Instant) {
        match self.phase(conn) {
            Some(Phase::Chatting { worker, .. }) => self.free_worker(conn, worker, reason, now),
            Some(Phase::AwaitingCode { .. }) => self.set_phase(conn, None),
            None => {}
        }
    }

    /// The 1-second tick: lapse reservations, end late handshakes, idle
    /// clients and sessions past their limit.
    pub fn handle_tick(&mut self, now: Instant) {
        for worker in 0..self.slots.len() {
            if let Slot::Reserved { lapses, .. } = self.slots[worker]
                && now >= lapses
            {
                log::debug!("port {}: reservation lapsed", self.ports[worker]);
                self.set_slot(worker, Slot::Free);
                self.free.push(worker);
            }
        }
        for index in 0..self.conns.len() {
            let conn = ConnId(index);
            match self.conns[index] {
                Some(Phase::AwaitingCode {
                    worker,
                    deadline,
                    from,
                }) if now >= deadline => {
                    let port = self.ports[worker];
                    log::info!("port {port}: {from} refused: no passcode in time");
                    self.send(conn, format!("SERVER{port}>>> Handshake timeout"));
                    self.close(conn);
                }
                Some(Phase::Chatting {
                    last_line, started, ..
                }) => {
                    if now >= last_line + self.timeouts.idle {
                        self.end_session(conn, Some("SERVER>>> TIMEOUT".to_string()), "idle", now);
                    } else if self
                        .timeouts
                        .session
                        .is_some_and(|limit| now >= started + limit)
                    {
                        let notice = "SERVER>>> TOTAL TIME TIMEOUT".to_string();
                        self.end_session(conn, Some(notice), "session limit", now);
                    }
                }
                _ => {}
            }
        }
    }

    /// The server is stopping: every client is told, then closed.
    pub fn handle_shutdown(&mut self) {
        for index in 0..self.conns.len() {
            if self.conns[index].is_some() {
                self.send(ConnId(index), "SERVER>>> Server shutting down".to_string());
                self.close(ConnId(index));
            }
        }
        self.free.clear();
        for worker in 0..self.slots.len() {
            self.set_slot(worker, Slot::Free);
        }
        self.shut_down = true;
    }

    /// Checks the core's own rules and panics with the one broken: every
    /// port is free, reserved or occupied, and only free ports are on the
    /// free stack, each once; an occupied port is held by a client in a
    /// session on that very port, and every such client holds its port;
    /// partners are mutual. For tests and fuzzing; it is not called by the
    /// server.
    pub fn check_invariants(&self) {
        let mut on_stack = vec![false; self.slots.len()];
        for &worker in &self.free {
            assert!(!on_stack[worker], "worker {worker} twice on the free stack");
            on_stack[worker] = true;
        }
        for (worker, slot) in self.slots.iter().enumerate() {
            if !self.shut_down {
                assert_eq!(
                    on_stack[worker],
                    matches!(slot, Slot::Free),
                    "worker {worker}: on the free stack if and only if free"
                );
            }
            if let Slot::Occupied { conn, .. } = slot {
                assert!(
                    matches!(self.phase(*conn), Some(Phase::Chatting { worker: w, .. }) if w == worker),
                    "worker {worker} occupied by {conn:?}, which is not in a session on it"
                );
            }
        }
        for (index, phase) in self.conns.iter().enumerate() {
            let conn = ConnId(index);
            if let Some(Phase::Chatting { worker, .. }) = phase {
                assert!(
                    matches!(self.slots[*worker], Slot::Occupied { conn: c, .. } if c == conn),
                    "{conn:?} in a session without holding worker {worker}"
                );
            }
            if let Some(partner) = self.partner(conn) {
                assert_ne!(partner, conn, "{conn:?} is its own partner");
                assert_eq!(
                    self.partner(partner),
                    Some(conn),
                    "{conn:?}: one-sided pair"
                );
            }
        }
        if self.sources.max > 0 {
            let mut usage: HashMap<IpAddr, Usage> = HashMap::new();
            for ip in self.slots.iter().filter_map(Slot::holder) {
                usage.entry(ip).or_default().ports += 1;
            }
            for phase in self.conns.iter().flatten() {
                if let Phase::AwaitingCode { from, .. } = phase {
                    usage.entry(from.ip()).or_default().unauthenticated += 1;
                }
            }
            assert_eq!(usage, self.sources.usage, "per-source counts");
        }
    }

    /// The state of worker port number `worker`.
    pub fn port_state(&self, worker: usize) -> PortState {
        match self.slots[worker] {
            Slot::Free => PortState::Free,
            Slot::Reserved { .. } => PortState::Reserved,
            Slot::Occupied { conn, .. } => PortState::Occupied(conn),
        }
    }

    /// How many ports and connections are in each state.
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for slot in &self.slots {
            match slot {
                Slot::Free => census.free += 1,
                Slot::Reserved { .. } => census.reserved += 1,
                Slot::Occupied { .. } => census.occupied += 1,
            }
        }
        for phase in self.conns.iter().flatten() {
            match phase {
                Phase::AwaitingCode { .. } => census.awaiting += 1,
                Phase::Chatting { .. } => census.chatting += 1,
            }
        }
        census
    }

    /// The free stack, bottom first, as port numbers.
    pub fn free_ports(&self) -> Vec<u16> {
        self.free.iter().map(|&w| self.ports[w]).collect()
    }

    fn handshake(
        &mut self,
        conn: ConnId,
        worker: usize,
        from: SocketAddr,
        line: &[u8],
        now: Instant,
    ) {
        let offered = strip_handshake_prefix(line, self.ports[worker]);
        if !self.passcode_matches(worker, from, offered, now) {
            // The reservation, if any, stays: a stray's wrong guess must not
            // lock the rightful client out.
            log::info!(
                "port {}: {from} refused: wrong passcode",
                self.ports[worker]
            );
            self.refuse_handshake(conn, worker);
            return;
        }
        self.admit(conn, worker, from, now);
        self.announce_arrival(conn, worker);
    }

    /// Whether `offered` opens `worker`'s reservation for a client at
    /// `from`.
    ///
    /// Only a reservation of this very port can match. A free or occupied
    /// port is compared against nothing and fails the same way, so a stray
    /// learns nothing about the port's state. A lapsed reservation is dead
    /// at once, even if the tick that frees its port has not come yet.
    fn passcode_matches(
        &self,
        worker: usize,
        from: SocketAddr,
        offered: &[u8],
        now: Instant,
    ) -> bool {
        match &self.slots[worker] {
            // A client that would hold one port too many for its address
            // (a reservation made from another address) fails the same way.
            Slot::Reserved { by, .. }
                if *by != from.ip() && !self.sources.may_take_port(from.ip()) =>
            {
                false
            }
            Slot::Reserved { code, lapses, .. } => {
                // Compared in constant time, so the time taken does not tell
                // an attacker how much of a guess was right.
                now < *lapses && bool::from(offered.ct_eq(code.as_bytes()))
            }
            _ => false,
        }
    }

    /// Gives `worker` to `conn`, whose passcode matched: the port is
    /// occupied and the session's clocks start.
    fn admit(&mut self, conn: ConnId, worker: usize, from: SocketAddr, now: Instant) {
        self.set_slot(
            worker,
            Slot::Occupied {
                conn,
                by: from.ip(),
            },
        );
        self.set_phase(
            conn,
            Some(Phase::Chatting {
                worker,
                last_line: now,
                started: now,
                from,
                lines: 0,
            }),
        );
        log::info!("port {}: {from} joined", self.ports[worker]);
    }

    /// Tells a client that just joined `worker` that it did, and where its
    /// partner is; tells the partner, if there, that it came.
    fn announce_arrival(&mut self, conn: ConnId, worker: usize) {
        let port = self.ports[worker];
        let partner_port = self.ports[worker ^ 1];
        self.send(conn, format!("SERVER{port}>>> Connection successful"));
        match self.partner(conn) {
            Some(partner) => {
                self.send(
                    conn,
                    format!("SERVER{port}>>> Partner {partner_port} connected"),
                );
                self.send(
                    partner,
                    format!("SERVER{partner_port}>>> Partner {port} connected"),
                );
            }
            None => self.send(
                conn,
                format!("SERVER{port}>>> Waiting for partner {partner_port}"),
            ),
        }
    }

    fn refuse_handshake(&mut self, conn: ConnId, worker: usize) {
        let port = self.ports[worker];
        self.send(conn, format!("SERVER{port}>>> Wrong handshake passcode"));
        self.close(conn);
    }

    /// Ends a session the server or the client chose to end: an optional
    /// final notice, the close, the freed port and the partner's notice.
    fn end_session(&mut self, conn: ConnId, notice: Option<String>, reason: &str, now: Instant) {
        let Some(Phase::Chatting { worker, .. }) = self.phase(conn) else {
            return;
        };
        if let Some(notice) = notice {
            self.send(conn, notice);
        }
        self.free_worker(conn, worker, reason, now);
        self.actions.push_back(Action::Close { conn });
    }

    /// Ends `conn`'s session on `worker`: its partner is told, its port
    /// goes back on the stack, and the log says why and how it went.
    fn free_worker(&mut self, conn: ConnId, worker: usize, reason: &str, now: Instant) {
        if let Some(Phase::Chatting {
            from,
            started,
            lines,
            ..
        }) = self.phase(conn)
        {
            log::info!(
                "port {}: {from} left ({reason}) after {:.1?}, {lines} line(s)",
                self.ports[worker],
                now.saturating_duration_since(started)
            );
        }
        if let Some(partner) = self.partner(conn) {
            let (port, partner_port) = (self.ports[worker], self.ports[worker ^ 1]);
            self.send(
                partner,
                format!("SERVER{partner_port}>>> Partner {port} left"),
            );
        }
        self.set_phase(conn, None);
        self.set_slot(worker, Slot::Free);
        self.free.push(worker);
    }

    fn close(&mut self, conn: ConnId) {
        self.set_phase(conn, None);
        self.actions.push_back(Action::Close { conn });
    }

    fn send(&mut self, to: ConnId, line: String) {
        self.actions.push_back(Action::Send { to, line });
    }

    fn phase(&self, conn: ConnId) -> Option<Phase> {
        self.conns.get(conn.0).copied().flatten()
    }

    fn count_lines(&mut self, conn: ConnId, count: u64) {
        if let Some(Phase::Chatting { lines, .. }) = self.phase_mut(conn) {
            *lines += count;
        }
    }

    /// A chatting client said something: its idle clock starts again.
    fn note_activity(&mut self, conn: ConnId, now: Instant) {
        if let Some(Phase::Chatting { last_line, .. }) = self.phase_mut(conn) {
            *last_line = now;
        }
    }

    fn phase_mut(&mut self, conn: ConnId) -> Option<&mut Phase> {
        self.conns.get_mut(conn.0)?.as_mut()
    }

    /// Every phase change goes through here, so the count of a source's
    /// unauthenticated connections follows it.
    fn set_phase(&mut self, conn: ConnId, phase: Option<Phase>) {
        if conn.0 >= self.conns.len() {
            self.conns.resize(conn.0 + 1, None);
        }
        if let Some(Phase::AwaitingCode { from, .. }) = self.conns[conn.0] {
            self.sources.change(from.ip(), |u| u.unauthenticated -= 1);
        }
        if let Some(Phase::AwaitingCode { from, .. }) = phase {
            self.sources.change(from.ip(), |u| u.unauthenticated += 1);
        }
        self.conns[conn.0] = phase;
    }

    /// Every port change goes through here, so the count of the ports a
    /// source holds follows it.
    fn set_slot(&mut self, worker: usize, slot: Slot) {
        if let Some(ip) = self.slots[worker].holder() {
            self.sources.change(ip, |u| u.ports -= 1);
        }
        if let Some(ip) = slot.holder() {
            self.sources.change(ip, |u| u.ports += 1);
        }
        self.slots[worker] = slot;
    }
}

/// Accepts both handshake forms: `CLIENT{port}>>>HandshakeCode={code}` and the
/// bare `{code}`. A prefix naming another port leaves the line as it is, which
/// then cannot match a passcode (passcodes hold no `>`).
fn strip_handshake_prefix(line: &[u8], port: u16) -> &[u8] {
    let prefix = format!("CLIENT{port}>>>HandshakeCode=");
    line.strip_prefix(prefix.as_bytes()).unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const PORTS: [u16; 4] = [50001, 50002, 50003, 50004];
    const HOME: SocketAddr =
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 40000);
    const OTHER: SocketAddr =
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)), 40000);

    fn timeouts() -> Timeouts {
        Timeouts::default()
    }

    struct Harness {
        core: Core<StdRng>,
        t0: Instant,
        next_conn: usize,
    }

    impl Harness {
        fn new(timeouts: Timeouts) -> Self {
            Harness {
                core: Core::new(PORTS.to_vec(), timeouts, StdRng::seed_from_u64(7)),
                t0: Instant::now(),
                next_conn: 0,
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.t0 + Duration::from_secs(secs)
        }

        fn actions(&mut self) -> Vec<Action> {
            self.core.check_invariants();
            std::iter::from_fn(|| self.core.poll_action()).collect()
        }

        fn assign(&mut self, secs: u64) -> (u16, String) {
            self.assign_from(HOME, secs)
        }

        fn assign_from(&mut self, source: SocketAddr, secs: u64) -> (u16, String) {
            match self.core.handle_portal_request(source, self.at(secs)) {
                PortalReply::Assigned { port, code } => (port, code),
                PortalReply::Full => panic!("unexpectedly full"),
            }
        }

        fn connect(&mut self, port: u16, secs: u64) -> ConnId {
            self.connect_from(HOME, port, secs)
        }

        fn connect_from(&mut self, source: SocketAddr, port: u16, secs: u64) -> ConnId {
            let conn = ConnId(self.next_conn);
            self.next_conn += 1;
            let worker = PORTS.iter().position(|&p| p == port).unwrap();
            self.core
                .handle_worker_connect(conn, worker, source, self.at(secs));
            conn
        }

        fn line(&mut self, conn: ConnId, line: &str, secs: u64) -> Option<ConnId> {
            self.core.handle_line(conn, line.as_bytes(), self.at(secs))
        }

        /// Portal, connect and handshake in one step; returns the session.
        fn join(&mut self, secs: u64) -> (u16, ConnId) {
            let (port, code) = self.assign(secs);
            let conn = self.connect(port, secs);
            self.line(conn, &format!("CLIENT{port}>>>HandshakeCode={code}"), secs);
            assert_eq!(
                self.core.port_state(worker(port)),
                PortState::Occupied(conn)
            );
            self.actions();
            (port, conn)
        }
    }

    fn worker(port: u16) -> usize {
        PORTS.iter().position(|&p| p == port).unwrap()
    }

    fn send(to: ConnId, line: &str) -> Action {
        Action::Send {
            to,
            line: line.to_string(),
        }
    }

    #[test]
    fn portal_hands_out_ports_from_a_lifo_stack() {
        let mut h = Harness::new(timeouts());
        assert_eq!(h.assign(0).0, 50001);
        let (_, b) = h.join(0);
        assert_eq!(h.core.port_state(1), PortState::Occupied(b));
        assert_eq!(h.assign(0).0, 50003);
        assert_eq!(h.core.free_ports(), vec![50004]);
        h.line(b, "CLIENT>>> TERMINATE", 1);
        // The port returned last is handed out first.
        assert_eq!(h.core.free_ports(), vec![50004, 50002]);
        assert_eq!(h.assign(1).0, 50002);
        assert_eq!(h.assign(1).0, 50004);
        assert_eq!(
            h.core.handle_portal_request(HOME, h.at(1)),
            PortalReply::Full
        );
        assert_eq!(PortalReply::Full.to_line(), "SERVER>>>full");
    }

    #[test]
    fn passcodes_are_long_fresh_and_free_of_look_alikes() {
        let mut h = Harness::new(timeouts());
        let reply = h.core.handle_portal_request(HOME, h.at(0));
        let PortalReply::Assigned { port, code } = reply.clone() else {
            panic!()
        };
        assert_eq!(
            reply.to_line(),
            format!("SERVER>>>Port=>{port},HandshakeCode={code}")
        );
        assert_eq!(code.len(), PASSCODE_LEN);
        assert!(code.bytes().all(|b| PASSCODE_ALPHABET.contains(&b)));
        assert!(!code.contains(['0', 'O', 'o', '1', 'l', 'I']));
        let (_, other) = h.assign(0);
        assert_ne!(code, other);
    }

    #[test]
    fn both_handshake_forms_are_accepted() {
        let mut h = Harness::new(timeouts());
        let (port, code) = h.assign(0);
        let conn = h.connect(port, 0);
        assert_eq!(h.line(conn, &code, 0), None);
        assert_eq!(
            h.actions(),
            vec![
                send(conn, "SERVER50001>>> Connection successful"),
                send(conn, "SERVER50001>>> Waiting for partner 50002"),
            ]
        );
        let (port, code) = h.assign(0);
        let conn2 = h.connect(port, 0);
        h.line(conn2, &format!("CLIENT{port}>>>HandshakeCode={code}"), 0);
        assert_eq!(
            h.actions(),
            vec![
                send(conn2, "SERVER50002>>> Connection successful"),
                send(conn2, "SERVER50002>>> Partner 50001 connected"),
                send(conn, "SERVER50001>>> Partner 50002 connected"),
            ]
        );
    }

    #[test]
    fn a_stray_wrong_guess_does_not_lock_out_the_holder() {
        let mut h = Harness::new(timeouts());
        let (port, code) = h.assign(0);
        let stray = h.connect(port, 0);
        h.line(stray, "guess", 0);
        assert_eq!(
            h.actions(),
            vec![
                send(stray, "SERVER50001>>> Wrong handshake passcode"),
                Action::Close { conn: stray }
            ]
        );
        assert_eq!(h.core.port_state(0), PortState::Reserved);
        let holder = h.connect(port, 1);
        h.line(holder, &code, 1);
        assert_eq!(h.core.port_state(0), PortState::Occupied(holder));
    }

    #[test]
    fn a_code_for_another_port_or_with_another_ports_prefix_fails() {
        let mut h = Harness::new(timeouts());
        let (_, code1) = h.assign(0);
        let (port2, _) = h.assign(0);
        let conn = h.connect(port2, 0);
        h.line(conn, &code1, 0);
        assert!(h.actions().contains(&Action::Close { conn }));
        let conn = h.connect(50001, 0);
        h.line(conn, &format!("CLIENT50002>>>HandshakeCode={code1}"), 0);
        assert!(h.actions().contains(&Action::Close { conn }));
        assert_eq!(h.core.port_state(0), PortState::Reserved);
    }

    #[test]
    fn free_and_occupied_ports_answer_like_a_wrong_code() {
        let mut h = Harness::new(timeouts());
        let (port, _) = h.join(0);
        let (_, code) = h.assign(0);
        for target in [port, 50004] {
            let stray = h.connect(target, 0);
            h.line(stray, &code, 0);
            assert_eq!(
                h.actions(),
                vec![
                    send(
                        stray,
                        &format!("SERVER{target}>>> Wrong handshake passcode")
                    ),
                    Action::Close { conn: stray }
                ]
            );
        }
    }

    #[test]
    fn passcode_is_single_use() {
        let mut h = Harness::new(timeouts());
        let (port, code) = h.assign(0);
        let first = h.connect(port, 0);
        h.line(first, &code, 0);
        h.line(first, "CLIENT>>> TERMINATE", 1);
        h.actions();
        let again = h.connect(port, 2);
        h.line(again, &code, 2);
        assert!(h.actions().contains(&Action::Close { conn: again }));
    }

    #[test]
    fn unused_reservation_lapses_and_its_passcode_dies() {
        let mut h = Harness::new(timeouts());
        let (port, code) = h.assign(0);
        h.core.handle_tick(h.at(9));
        assert_eq!(h.core.port_state(0), PortState::Reserved);
        h.core.handle_tick(h.at(10));
        assert_eq!(h.core.port_state(0), PortState::Free);
        assert_eq!(h.core.free_ports(), vec![50004, 50003, 50002, 50001]);
        let late = h.connect(port, 11);
        h.line(late, &code, 11);
        assert!(h.actions().contains(&Action::Close { conn: late }));
        assert_eq!(h.core.port_state(0), PortState::Free);
    }

    #[test]
    fn a_passcode_dies_at_its_lapse_even_before_the_tick() {
        let mut h = Harness::new(timeouts());
        let (port, code) = h.assign(0);
        h.core.handle_tick(h.at(9));
        let late = h.connect(port, 10);
        h.line(late, &code, 10);
        assert!(h.actions().contains(&Action::Close { conn: late }));
        assert_eq!(
            h.core.port_state(0),
            PortState::Reserved,
            "the tick frees it"
        );
    }

    #[test]
    fn handshake_must_finish_in_time() {
        let mut h = Harness::new(timeouts());
        let (port, code) = h.assign(0);
        let slow = h.connect(port, 0);
        h.core.handle_tick(h.at(4));
        assert!(h.actions().is_empty());
        h.core.handle_tick(h.at(5));
        assert_eq!(
            h.actions(),
            vec![
                send(slow, "SERVER50001>>> Handshake timeout"),
                Action::Close { conn: slow }
            ]
        );
        // The reservation outlives the slow connection.
        let conn = h.connect(port, 6);
        h.line(conn, &code, 6);
        assert_eq!(h.core.port_state(0), PortState::Occupied(conn));
    }

    #[test]
    fn idle_client_times_out_and_partner_is_told() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, b) = h.join(0);
        h.line(b, "still here", 30);
        h.core.handle_tick(h.at(59));
        assert!(h.actions().is_empty());
        h.core.handle_tick(h.at(60));
        assert_eq!(
            h.actions(),
            vec![
                send(a, "SERVER>>> TIMEOUT"),
                send(b, "SERVER50002>>> Partner 50001 left"),
                Action::Close { conn: a },
            ]
        );
        assert_eq!(h.core.port_state(0), PortState::Free);
        h.core.handle_tick(h.at(89));
        assert!(h.actions().is_empty(), "b spoke at 30 s");
        h.core.handle_tick(h.at(90));
        assert!(h.actions().contains(&send(b, "SERVER>>> TIMEOUT")));
        assert_eq!(h.core.free_ports(), vec![50004, 50003, 50001, 50002]);
    }

    #[test]
    fn plain_chat_is_exactly_what_handle_line_forwards_and_nothing_more() {
        let cases = [
            "hello",
            "",
            " SERVER>>> x",
            "SERVE",
            "SERVER",
            "SERVER50001>>> Partner 50002 left",
            "CLIENT>>> TERMINATE",
            "CLIENT>>> TERMINATE ",
            "client>>> terminate",
        ];
        for line in cases {
            let mut h = Harness::new(timeouts());
            let (_, a) = h.join(0);
            let (_, b) = h.join(0);
            h.actions();
            let forwarded_alone = h.line(a, line, 1) == Some(b) && h.actions().is_empty();
            assert_eq!(is_plain_chat(line.as_bytes()), forwarded_alone, "{line:?}");
        }
    }

    #[test]
    fn a_forwarded_run_counts_as_activity() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, b) = h.join(0);
        h.line(b, "still here", 30);
        h.core.handle_forwarded_run(a, 1, h.at(30));
        h.core.handle_tick(h.at(89));
        assert!(h.actions().is_empty(), "both spoke at 30 s");
        h.core.handle_tick(h.at(90));
        assert!(h.actions().contains(&send(a, "SERVER>>> TIMEOUT")));
    }

    #[test]
    fn a_line_with_a_hidden_break_is_refused_in_a_session() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, _b) = h.join(0);
        h.actions();
        let forged = b"hi\rSERVER50002>>> Partner 50001 left";
        assert_eq!(h.core.handle_hidden_break(a, forged, h.at(1)), None);
        assert_eq!(
            h.actions(),
            vec![send(
                a,
                "SERVER50001>>> Refused: chat lines may not hold a carriage return"
            )]
        );
    }

    #[test]
    fn a_malformed_message_ends_the_session_or_the_handshake() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        h.actions();
        h.core.handle_malformed(a, h.at(0));
        assert_eq!(
            h.actions(),
            vec![
                send(a, "SERVER50001>>> Malformed message; closing"),
                Action::Close { conn: a }
            ]
        );
        let (port, _) = h.assign(0);
        let conn = h.connect(port, 0);
        h.core.handle_malformed(conn, h.at(0));
        assert!(h.actions().contains(&Action::Close { conn }));
    }

    #[test]
    fn session_limit_ends_even_a_busy_session() {
        let mut h = Harness::new(Timeouts {
            session: Some(Duration::from_secs(20)),
            ..timeouts()
        });
        let (_, a) = h.join(0);
        h.line(a, "busy", 19);
        h.actions(); // the "not delivered" notice: a has no partner
        h.core.handle_tick(h.at(19));
        assert!(h.actions().is_empty());
        h.core.handle_tick(h.at(20));
        assert_eq!(
            h.actions(),
            vec![
                send(a, "SERVER>>> TOTAL TIME TIMEOUT"),
                Action::Close { conn: a }
            ]
        );
    }

    #[test]
    fn terminate_frees_the_port_and_tells_the_partner() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, b) = h.join(0);
        assert_eq!(h.line(a, "CLIENT>>> TERMINATE", 1), None);
        assert_eq!(
            h.actions(),
            vec![
                send(a, "SERVER50001>>> Bye"),
                send(b, "SERVER50002>>> Partner 50001 left"),
                Action::Close { conn: a }
            ]
        );
        assert_eq!(h.core.port_state(0), PortState::Free);
        assert_eq!(h.core.partner(b), None);
    }

    #[test]
    fn lines_go_only_to_the_paired_port() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, b) = h.join(0);
        let (_, c) = h.join(0);
        let (_, d) = h.join(0);
        assert_eq!(h.line(a, "to b", 1), Some(b));
        assert_eq!(h.line(b, "to a", 1), Some(a));
        assert_eq!(h.line(c, "to d", 1), Some(d));
        assert_eq!(h.line(d, "to c", 1), Some(c));
        assert!(h.actions().is_empty());
    }

    #[test]
    fn line_without_partner_is_not_delivered_and_sender_is_told() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        assert_eq!(h.line(a, "anyone?", 1), None);
        assert_eq!(
            h.actions(),
            vec![send(
                a,
                "SERVER50001>>> Not delivered: partner 50002 is not connected"
            )]
        );
    }

    #[test]
    fn clients_cannot_forge_server_lines() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, _b) = h.join(0);
        assert_eq!(h.line(a, "SERVER>>> TIMEOUT", 1), None);
        assert_eq!(
            h.actions(),
            vec![send(
                a,
                "SERVER50001>>> Refused: chat lines may not begin with SERVER"
            )]
        );
        assert!(h.line(a, " SERVER is fine inside a line", 1).is_some());
    }

    #[test]
    fn overlong_line_ends_the_session() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, b) = h.join(0);
        assert_eq!(h.core.max_line(a, 8192), 8192);
        h.core.handle_line_too_long(a, 8192, h.at(0));
        assert_eq!(
            h.actions(),
            vec![
                send(
                    a,
                    "SERVER50001>>> Line too long (limit 8192 bytes); closing"
                ),
                send(b, "SERVER50002>>> Partner 50001 left"),
                Action::Close { conn: a },
            ]
        );
        assert_eq!(h.core.port_state(0), PortState::Free);
    }

    #[test]
    fn before_the_handshake_only_a_short_line_is_allowed() {
        let mut h = Harness::new(timeouts());
        let (port, _) = h.assign(0);
        let conn = h.connect(port, 0);
        assert_eq!(h.core.max_line(conn, 8192), HANDSHAKE_MAX_LINE);
        h.core.handle_line_too_long(conn, 8192, h.at(0));
        assert_eq!(
            h.actions(),
            vec![
                send(conn, "SERVER50001>>> Wrong handshake passcode"),
                Action::Close { conn }
            ]
        );
        assert_eq!(h.core.port_state(0), PortState::Reserved);
    }

    #[test]
    fn disconnect_frees_port_and_tells_partner_without_a_close() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (_, b) = h.join(0);
        h.core.handle_disconnect(b, h.at(0));
        assert_eq!(
            h.actions(),
            vec![send(a, "SERVER50001>>> Partner 50002 left")]
        );
        assert_eq!(h.core.free_ports(), vec![50004, 50003, 50002]);
        h.core.handle_disconnect(b, h.at(0));
        assert!(h.actions().is_empty(), "a second report changes nothing");
    }

    #[test]
    fn shutdown_tells_every_client() {
        let mut h = Harness::new(timeouts());
        let (_, a) = h.join(0);
        let (port, _) = h.assign(0);
        let pending = h.connect(port, 0);
        h.core.handle_shutdown();
        assert_eq!(
            h.actions(),
            vec![
                send(a, "SERVER>>> Server shutting down"),
                Action::Close { conn: a },
                send(pending, "SERVER>>> Server shutting down"),
                Action::Close { conn: pending },
            ]
        );
    }

    #[test]
    fn a_source_at_its_limit_is_told_full_and_others_are_not() {
        let mut h = Harness::new(timeouts());
        h.core = Core::new(PORTS.to_vec(), timeouts(), StdRng::seed_from_u64(7)).with_max_per_ip(1);
        h.assign_from(HOME, 0);
        assert_eq!(
            h.core.handle_portal_request(HOME, h.at(0)),
            PortalReply::Full
        );
        let (port, code) = h.assign_from(OTHER, 0);
        // Its reservation turned into a session still counts.
        let conn = h.connect_from(OTHER, port, 0);
        h.line(conn, &code, 0);
        assert_eq!(h.core.port_state(worker(port)), PortState::Occupied(conn));
        assert_eq!(
            h.core.handle_portal_request(OTHER, h.at(0)),
            PortalReply::Full
        );
        h.actions();
        // Once the session ends and the reservation lapses, both may again.
        h.line(conn, "CLIENT>>> TERMINATE", 1);
        h.core.handle_tick(h.at(10));
        h.actions();
        h.assign_from(HOME, 10);
        h.assign_from(OTHER, 10);
    }

    #[test]
    fn a_handshake_that_would_exceed_its_sources_limit_fails_like_a_wrong_code() {
        let mut h = Harness::new(timeouts());
        h.core = Core::new(PORTS.to_vec(), timeouts(), StdRng::seed_from_u64(7)).with_max_per_ip(1);
        let (held, _) = h.assign_from(OTHER, 0);
        let (port, code) = h.assign_from(HOME, 0);
        assert_ne!(held, port);
        // OTHER holds a port already; it cannot take HOME's reservation too.
        let conn = h.connect_from(OTHER, port, 0);
        h.line(conn, &code, 0);
        assert_eq!(
            h.actions(),
            vec![
                send(conn, &format!("SERVER{port}>>> Wrong handshake passcode")),
                Action::Close { conn }
            ]
        );
        assert_eq!(h.core.port_state(worker(port)), PortState::Reserved);
        let rightful = h.connect_from(HOME, port, 0);
        h.line(rightful, &code, 0);
        assert_eq!(
            h.core.port_state(worker(port)),
            PortState::Occupied(rightful)
        );
    }

    #[test]
    fn a_source_may_have_four_unauthenticated_connections_per_port() {
        let mut h = Harness::new(timeouts());
        h.core = Core::new(PORTS.to_vec(), timeouts(), StdRng::seed_from_u64(7)).with_max_per_ip(1);
        let strays: Vec<ConnId> = (0..4).map(|_| h.connect_from(HOME, 50001, 0)).collect();
        assert!(h.actions().is_empty(), "four are allowed");
        let fifth = h.connect_from(HOME, 50001, 0);
        assert_eq!(
            h.actions(),
            vec![
                send(fifth, "SERVER50001>>> Wrong handshake passcode"),
                Action::Close { conn: fifth }
            ]
        );
        let other = h.connect_from(OTHER, 50001, 0);
        assert!(h.actions().is_empty(), "another source is not affected");
        // One of them leaves: there is room for one more.
        h.core.handle_disconnect(strays[0], h.at(0));
        h.connect_from(HOME, 50001, 0);
        assert!(h.actions().is_empty());
        h.core.handle_disconnect(other, h.at(0));
    }

    #[test]
    fn without_a_limit_one_source_may_hold_every_port() {
        let mut h = Harness::new(timeouts());
        for _ in 0..4 {
            h.assign_from(HOME, 0);
        }
        assert_eq!(
            h.core.handle_portal_request(OTHER, h.at(0)),
            PortalReply::Full
        );
    }
}

//! A simulated network for driving a [`Relay`] in-process: the relay's unit
//! tests and the `relay` fuzz target both use it. Built for tests, or with
//! the `sim` feature.
//!
//! [`Sim`] plays the event loop's part exactly as [`crate::server`] does
//! (a round is `start_round`, then every [`Io`] carried out until
//! `poll_io` says the round is over) and the peers' part through simulated
//! sockets. Each socket holds what its peer sent and the relay has not yet
//! read (delivered at most `read_chunk` bytes per read), and a receive
//! window of `window_cap` bytes that the relay's writes fill and the peer
//! drains when the test says so; a write takes what fits, or returns
//! `WouldBlock` when nothing does.
//!
//! Readiness is edge-triggered with only mio's promise and nothing more:
//! a socket is reported readable only after a read returned `WouldBlock`
//! and something (bytes, end of stream) arrived since, and writable only
//! after a write returned `WouldBlock`, `WRITABLE` is registered, and the
//! window has room again. A reset is reported once, as the kernel's error
//! event would be. Events are handed over at the start of the next round,
//! as the server hands over a poll's events before it serves a round.
//!
//! Closing a socket that still has unread bytes makes a real kernel send a
//! reset, which throws away what was still in flight to the peer: the
//! simulation does the same, so a test sees a final notice lost that way.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use slab::Slab;

use crate::client::{PortalAnswer, parse_portal_reply};
use crate::core::{ConnId, Core, Timeouts};
use crate::relay::{Io, Limits, Relay, Role};
use crate::wire::Wire;

/// The worker ports of every simulated server: two pairs.
pub const WORKER_PORTS: [u16; 4] = [50001, 50002, 50003, 50004];

/// A round that never ends, or rounds that never stop having work, are a
/// livelock: [`Sim::settle`] gives up after this many.
/// Where every simulated client comes from.
const PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

const MAX_ROUNDS: usize = 100_000;

/// One simulated client, for the whole life of its connection and after.
/// Unlike a [`ConnId`], which the server reuses, a peer is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// What a peer saw its socket do, in order. Consecutive writes are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The relay wrote this many bytes into the window.
    Bytes(usize),
    /// The relay shut down its write side: end of stream after the bytes.
    ShutdownWrite,
    /// The relay closed the socket.
    Close,
    /// The close found unread bytes: the peer got a reset, and what was
    /// still in its window is gone.
    Reset,
}

/// One simulated socket and the client behind it.
#[derive(Debug)]
pub struct Peer {
    /// The listener it came in on.
    pub role: Role,
    /// Its connection id while the relay has it (the slab key).
    pub conn: ConnId,
    /// Sent by the peer, not yet read by the relay.
    pub unread: VecDeque<u8>,
    /// The most bytes one read delivers.
    pub read_chunk: usize,
    /// Written by the relay, not yet taken by the peer.
    pub window: VecDeque<u8>,
    /// How many bytes the window holds at most.
    pub window_cap: usize,
    /// Everything the peer has taken from its window, in order.
    pub received: Vec<u8>,
    /// What happened to the socket, in order.
    pub log: Vec<Seen>,
    /// The peer shut down its write side: after `unread`, end of stream.
    pub sent_fin: bool,
    /// The peer reset the connection: every read and write fails.
    pub reset: bool,
    /// Bytes the relay read from it in the current round.
    pub read_this_round: usize,
    /// The relay shut down its write side.
    pub write_shut: bool,
    /// The relay closed the socket.
    pub closed: bool,
    /// `WRITABLE` is registered.
    pub wants_writable: bool,
    read_blocked: bool,
    write_blocked: bool,
    reset_reported: bool,
}

impl Peer {
    /// Its worker port, for a peer on a worker listener.
    pub fn port(&self) -> Option<u16> {
        match self.role {
            Role::Worker(worker) => Some(WORKER_PORTS[worker]),
            Role::Portal => None,
        }
    }

    /// The complete lines received so far, without their `\n`.
    pub fn lines(&self) -> Vec<&[u8]> {
        self.lines_since(0)
    }

    /// The complete lines received after the first `skip` bytes (which
    /// should end with a line).
    pub fn lines_since(&self, skip: usize) -> Vec<&[u8]> {
        let mut lines: Vec<&[u8]> = self.received[skip..].split(|&b| b == b'\n').collect();
        // What follows the last newline is not a complete line (yet).
        lines.pop();
        lines
    }

    /// The complete lines received that begin with `SERVER`, as text.
    pub fn notices(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.starts_with(b"SERVER"))
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    }
}

/// A relay, a fake clock, and simulated sockets for every connection.
pub struct Sim {
    /// The relay under test.
    pub relay: Relay<StdRng>,
    /// The relay's limits.
    pub limits: Limits,
    t0: Instant,
    now: Instant,
    /// Connection ids in use, as the server's slab hands them out.
    keys: Slab<PeerId>,
    peers: Vec<Peer>,
    read_buffer: Vec<u8>,
    /// The instructions of the last round, in order.
    ios: Vec<Io>,
    /// Bytes moved, and ends of stream and closes seen, so far.
    progress: u64,
    rounds: u64,
}

impl Sim {
    /// A relay over a core with [`WORKER_PORTS`] and a `StdRng` from
    /// `seed`, and no connections.
    pub fn new(seed: u64, timeouts: Timeouts, limits: Limits) -> Sim {
        let core = Core::new(WORKER_PORTS.to_vec(), timeouts, StdRng::seed_from_u64(seed));
        let t0 = Instant::now();
        Sim {
            relay: Relay::new(core, limits),
            limits,
            t0,
            now: t0,
            keys: Slab::new(),
            peers: Vec::new(),
            read_buffer: Vec::new(),
            ios: Vec::new(),
            progress: 0,
            rounds: 0,
        }
    }

    /// The fake clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How far the fake clock has moved.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Moves the fake clock on; nothing else happens.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Rounds served so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// The instructions the relay gave in the last round, in order.
    pub fn last_round_ios(&self) -> &[Io] {
        &self.ios
    }

    /// A peer, open or closed.
    pub fn peer(&self, peer: PeerId) -> &Peer {
        &self.peers[peer.0]
    }

    /// A peer, to change its chunk sizes.
    pub fn peer_mut(&mut self, peer: PeerId) -> &mut Peer {
        &mut self.peers[peer.0]
    }

    /// Every peer so far, in order of arrival.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// A peer's connection id, while the relay has it.
    pub fn conn(&self, peer: PeerId) -> Option<ConnId> {
        let p = self.peer(peer);
        (!p.closed).then_some(p.conn)
    }

    /// The peer on connection `conn` now.
    pub fn peer_on(&self, conn: ConnId) -> Option<PeerId> {
        self.keys.get(conn.0).copied()
    }

    /// Bytes the relay has queued for `peer` and not yet written.
    pub fn queued(&self, peer: PeerId) -> usize {
        self.conn(peer).map_or(0, |conn| self.relay.queued(conn))
    }

    /// A client connects on `role`'s listener and the server accepts it.
    /// It reads 64 KiB per call and its window takes 256 KiB, until changed.
    pub fn accept(&mut self, role: Role) -> PeerId {
        let peer = PeerId(self.peers.len());
        let conn = ConnId(self.keys.insert(peer));
        self.peers.push(Peer {
            role,
            conn,
            unread: VecDeque::new(),
            read_chunk: 64 * 1024,
            window: VecDeque::new(),
            window_cap: 256 * 1024,
            received: Vec::new(),
            log: Vec::new(),
            sent_fin: false,
            reset: false,
            read_this_round: 0,
            write_shut: false,
            closed: false,
            wants_writable: false,
            read_blocked: false,
            write_blocked: false,
            reset_reported: false,
        });
        self.relay.accepted(conn, role, Wire::Line, PEER, self.now);
        peer
    }

    /// The peer sends `bytes`. After its own end of stream or reset, or
    /// the relay's close, it cannot: those bytes are dropped.
    pub fn send(&mut self, peer: PeerId, bytes: &[u8]) {
        let p = &mut self.peers[peer.0];
        if !(p.sent_fin || p.reset || p.closed) {
            p.unread.extend(bytes);
        }
    }

    /// The peer shuts down its write side.
    pub fn send_fin(&mut self, peer: PeerId) {
        self.peers[peer.0].sent_fin = true;
    }

    /// The peer resets the connection.
    pub fn reset(&mut self, peer: PeerId) {
        self.peers[peer.0].reset = true;
    }

    /// The peer takes up to `max` bytes from its window; returns how many.
    pub fn drain(&mut self, peer: PeerId, max: usize) -> usize {
        let p = &mut self.peers[peer.0];
        let n = max.min(p.window.len());
        p.received.extend(p.window.drain(..n));
        n
    }

    /// Every peer takes everything in its window; returns how many bytes.
    pub fn drain_all(&mut self) -> usize {
        (0..self.peers.len())
            .map(|i| self.drain(PeerId(i), usize::MAX))
            .sum()
    }

    /// The timer tick, as the server's loop has it: the wake-up's events,
    /// the relay's tick, then a round.
    pub fn tick(&mut self) {
        self.dispatch();
        self.relay.tick(self.now);
        self.serve_round();
    }

    /// The server is stopping: the relay tells every client, then a round.
    pub fn shutdown(&mut self) {
        self.dispatch();
        self.relay.shutdown(self.now);
        self.serve_round();
    }

    /// One wake-up of the server's loop: the readiness events, then a round.
    pub fn run_round(&mut self) {
        self.dispatch();
        self.serve_round();
    }

    /// Rounds until the relay has no work left over (the server would then
    /// sleep until an event). Peers do nothing meanwhile.
    pub fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            self.run_round();
            if !self.relay.has_work() && !self.has_events() {
                return;
            }
        }
        panic!("still busy after {MAX_ROUNDS} rounds");
    }

    /// Every peer reads everything it is sent, and rounds go on until
    /// nothing moves any more.
    pub fn pump(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let before = self.progress;
            let drained = self.drain_all();
            self.run_round();
            if drained == 0
                && self.progress == before
                && !self.relay.has_work()
                && !self.has_events()
            {
                return;
            }
        }
        panic!("still moving after {MAX_ROUNDS} rounds");
    }

    /// A client asks the portal, reads the answer, and closes, as
    /// `chat-client` does. Returns the port and passcode, or `None` if the
    /// portal is full.
    pub fn ask_portal(&mut self) -> Option<(u16, String)> {
        let portal = self.accept(Role::Portal);
        self.settle();
        self.drain(portal, usize::MAX);
        let line = self.peer(portal).lines().first().map(|l| l.to_vec());
        let line = line.expect("the portal answers at once");
        self.send_fin(portal);
        self.settle();
        match parse_portal_reply(&String::from_utf8_lossy(&line)) {
            Some(PortalAnswer::Assigned(assignment)) => Some((assignment.port, assignment.code)),
            Some(PortalAnswer::Full) => None,
            None => panic!("not a portal reply: {line:?}"),
        }
    }

    /// A client joins like `chat-client`: the portal, then the assigned
    /// worker port with the long form of the passcode. It reads its
    /// window once, so its join notices are out of the way (its partner's
    /// "connected" notice, if any, waits in the partner's window).
    pub fn join(&mut self) -> PeerId {
        let (port, code) = self.ask_portal().expect("a free port");
        let worker = WORKER_PORTS.iter().position(|&p| p == port).unwrap();
        let peer = self.accept(Role::Worker(worker));
        self.send(
            peer,
            format!("CLIENT{port}>>>HandshakeCode={code}\n").as_bytes(),
        );
        self.settle();
        self.drain(peer, usize::MAX);
        let answer = format!("SERVER{port}>>> Connection successful");
        assert!(
            self.peer(peer).notices().contains(&answer),
            "{port} not joined: {:?}",
            self.peer(peer).notices()
        );
        peer
    }

    /// Two clients on paired ports, both joined, with every notice so far
    /// read.
    pub fn pair(&mut self) -> (PeerId, PeerId) {
        let a = self.join();
        let b = self.join();
        self.settle();
        self.drain(a, usize::MAX);
        assert_eq!(
            self.relay.core().partner(self.peer(a).conn),
            Some(self.peer(b).conn),
            "not partners"
        );
        (a, b)
    }

    fn has_events(&self) -> bool {
        self.keys.iter().any(|(_, &peer)| {
            let p = &self.peers[peer.0];
            (p.reset && !p.reset_reported)
                || (p.read_blocked && (!p.unread.is_empty() || p.sent_fin))
                || (p.write_blocked && p.wants_writable && p.window.len() < p.window_cap)
        })
    }

    /// Hands the relay the readiness events that happened since the last
    /// round, each at most once (edge-triggered).
    fn dispatch(&mut self) {
        let open: Vec<(usize, PeerId)> = self.keys.iter().map(|(k, &p)| (k, p)).collect();
        for (key, peer) in open {
            let p = &mut self.peers[peer.0];
            let mut readable = false;
            let mut writable = false;
            if p.reset && !p.reset_reported {
                // The kernel reports an error on its own: the read says which.
                p.reset_reported = true;
                readable = true;
            }
            if p.read_blocked && (!p.unread.is_empty() || p.sent_fin) {
                p.read_blocked = false;
                readable = true;
            }
            if p.write_blocked && p.wants_writable && p.window.len() < p.window_cap {
                p.write_blocked = false;
                writable = true;
            }
            if readable || writable {
                self.relay.readiness(ConnId(key), readable, writable);
            }
        }
    }

    /// `serve_round` of the server, with the simulated sockets.
    fn serve_round(&mut self) {
        self.rounds += 1;
        for p in &mut self.peers {
            p.read_this_round = 0;
        }
        self.ios.clear();
        self.relay.start_round();
        while let Some(io) = self.relay.poll_io() {
            self.ios.push(io);
            assert!(self.ios.len() < 10_000_000, "a round that does not end");
            self.carry_out(io);
        }
        self.relay.check_invariants();
    }

    fn carry_out(&mut self, io: Io) {
        let (Io::Read(conn)
        | Io::Write(conn)
        | Io::ShutdownWrite(conn)
        | Io::WantWritable(conn, _)
        | Io::Close(conn)) = io;
        let Some(&peer) = self.keys.get(conn.0) else {
            // The server would index a vacant slab entry and panic.
            panic!("{io:?} for a connection that is not open");
        };
        let now = self.now;
        let p = &mut self.peers[peer.0];
        match io {
            Io::Read(_) => {
                if p.reset {
                    self.relay.reset(conn, now);
                } else if !p.unread.is_empty() {
                    let n = p.read_chunk.max(1).min(p.unread.len());
                    self.read_buffer.clear();
                    self.read_buffer.extend(p.unread.drain(..n));
                    p.read_this_round += n;
                    self.progress += n as u64;
                    self.relay.bytes_read(conn, &self.read_buffer, now);
                } else if p.sent_fin {
                    self.progress += 1;
                    self.relay.end_of_stream(conn, now);
                } else {
                    p.read_blocked = true;
                    self.relay.read_would_block(conn);
                }
            }
            Io::Write(_) => {
                assert!(!p.write_shut, "{io:?} after ShutdownWrite");
                if p.reset {
                    self.relay.reset(conn, now);
                    return;
                }
                let bytes = self.relay.output(conn);
                assert!(!bytes.is_empty(), "{io:?} with nothing to write");
                let room = p.window_cap.saturating_sub(p.window.len());
                if room == 0 {
                    p.write_blocked = true;
                    self.relay.write_would_block(conn);
                    return;
                }
                let n = room.min(bytes.len());
                p.window.extend(&bytes[..n]);
                match p.log.last_mut() {
                    Some(Seen::Bytes(m)) => *m += n,
                    _ => p.log.push(Seen::Bytes(n)),
                }
                self.progress += n as u64;
                self.relay.write_done(conn, n, now);
            }
            Io::ShutdownWrite(_) => {
                assert!(!p.write_shut, "{io:?} twice");
                p.write_shut = true;
                p.log.push(Seen::ShutdownWrite);
            }
            Io::WantWritable(_, wanted) => p.wants_writable = wanted,
            Io::Close(_) => {
                self.keys.remove(conn.0);
                p.closed = true;
                p.log.push(Seen::Close);
                self.progress += 1;
                if !p.unread.is_empty() && !p.reset {
                    p.window.clear();
                    p.log.push(Seen::Reset);
                }
            }
        }
    }
}

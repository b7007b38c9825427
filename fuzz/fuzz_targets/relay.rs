//! Fuzzes the relay layer through the simulated network of
//! `portal_chat::sim` (the one the relay's unit tests use): the input bytes
//! decode (with `arbitrary`) into limits, timeouts and a list of operations:
//! clients arriving on the portal or a worker port, handshakes with the
//! passcodes the portal really handed out, tagged chat lines, floods of
//! them, arbitrary bytes, in any read and window sizes, windows drained,
//! ends of stream, resets, rounds, clock advances with ticks, a shutdown.
//!
//! Checked after every operation (the simulation itself also runs
//! `check_invariants` after every round and panics on any instruction for
//! a connection that is not open):
//!
//! - the relay's and the core's invariants;
//! - no chat byte reaches anyone but the sender's partner: every chat line
//!   the harness sends carries a tag (a 0xFF byte, which the arbitrary
//!   bytes never hold, then the sender and a sequence number), and a tag
//!   arrives only at a worker client on the paired port, only between the
//!   "Partner {port} connected" notice for the sender's port and the next
//!   "Partner {port} left" or the receiver's own end, only from one sender
//!   per such stretch, never from a sender seen in an earlier stretch, in
//!   strictly increasing order (nothing duplicated or swapped), and only
//!   between clients that were given a passcode for their own port;
//! - a portal client gets one portal reply and nothing else.
//!
//! At the end every client reads everything, then the server shuts down and
//! every client closes: nothing may stay queued or unread, and the relay
//! must have forgotten every connection (nothing stuck, no lost wake-up).
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portal_chat::client::{PortalAnswer, parse_portal_reply};
use portal_chat::core::Timeouts;
use portal_chat::relay::{Limits, Role};
use portal_chat::sim::{PeerId, Sim, WORKER_PORTS};

/// Marks a tagged chat line. `Raw` bytes never hold it.
const TAG: u8 = 0xFF;
/// Bytes the clients may send in one input, so that one run stays fast.
const MAX_SENT: usize = 4 << 20;

#[derive(Debug, Arbitrary)]
struct Input {
    seed: u64,
    max_line: u16,
    read_budget: u16,
    write_budget: u16,
    linger_ms: u16,
    assign_ms: u16,
    handshake_ms: u16,
    idle_ms: u16,
    session_ms: Option<u16>,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A client joins as `chat-client` does: asks the portal (which then
    /// takes rounds), reads the answer and closes, connects to the port it
    /// was given and sends the passcode in the long form.
    Join,
    /// A client asks the portal.
    Portal,
    /// A client connects to worker port `worker % 4`.
    Connect {
        worker: u8,
    },
    /// A client sends a passcode the portal handed out (`which` of them),
    /// bare or in the long form for its own port.
    Handshake {
        peer: u8,
        which: u8,
        long: bool,
    },
    /// `lines` tagged chat lines, each after `filler` bytes of padding.
    Chat {
        peer: u8,
        lines: u8,
        filler: u8,
    },
    /// About `(kib + 1) * 4` KiB of tagged 100-byte lines.
    Flood {
        peer: u8,
        kib: u8,
    },
    Raw {
        peer: u8,
        bytes: Vec<u8>,
    },
    Terminate {
        peer: u8,
    },
    Drain {
        peer: u8,
        bytes: u16,
    },
    DrainAll,
    Sizes {
        peer: u8,
        read_chunk: u16,
        window_cap: u16,
    },
    Fin {
        peer: u8,
    },
    Reset {
        peer: u8,
    },
    Round,
    Settle,
    Tick {
        ms: u16,
    },
    Shutdown,
}

/// What the harness knows about one client.
#[derive(Default)]
struct Client {
    /// It was given a passcode issued for its own port.
    given_own_code: bool,
    /// Sequence number of its next tagged line.
    seq: u64,
    /// How much of what it received has been checked.
    checked: usize,
    /// The partner stretch of its stream it is in, if any.
    stretch: Option<Stretch>,
    /// Senders seen in its earlier stretches.
    past_senders: HashSet<usize>,
    /// A portal client had its reply.
    got_reply: bool,
}

struct Stretch {
    /// The partner port the notice named.
    port: u16,
    sender: Option<usize>,
    last_seq: Option<u64>,
}

struct Harness {
    sim: Sim,
    clients: Vec<Client>,
    /// Passcodes the portal handed out, with their port.
    codes: Vec<(u16, String)>,
    sent: usize,
    shut_down: bool,
}

fn ms(v: u16) -> Duration {
    Duration::from_millis(u64::from(v).max(1))
}

fn tagged(out: &mut Vec<u8>, filler: usize, sender: usize, seq: u64) {
    out.resize(out.len() + filler, b'.');
    out.push(TAG);
    out.extend_from_slice(format!("{sender}.{seq}\n").as_bytes());
}

impl Harness {
    fn accept(&mut self, role: Role) {
        if !self.shut_down {
            self.sim.accept(role);
            self.clients.push(Client::default());
        }
    }

    fn join(&mut self) {
        if self.shut_down {
            return;
        }
        let answer = self.sim.ask_portal();
        self.sync_clients();
        if let Some((port, code)) = answer {
            let worker = WORKER_PORTS.iter().position(|&p| p == port).unwrap();
            self.accept(Role::Worker(worker));
            let peer = PeerId(self.clients.len() - 1);
            self.clients[peer.0].given_own_code = true;
            self.send(
                peer,
                format!("CLIENT{port}>>>HandshakeCode={code}\n").as_bytes(),
            );
        }
    }

    /// One `Client` per peer of the simulation.
    fn sync_clients(&mut self) {
        let peers = self.sim.peers().len();
        self.clients.resize_with(peers, Client::default);
    }

    fn pick(&self, peer: u8) -> Option<PeerId> {
        let n = self.clients.len();
        (n > 0).then(|| PeerId(usize::from(peer) % n))
    }

    fn send(&mut self, peer: PeerId, bytes: &[u8]) {
        if self.sent + bytes.len() <= MAX_SENT {
            self.sent += bytes.len();
            self.sim.send(peer, bytes);
        }
    }

    fn chat(&mut self, peer: PeerId, lines: usize, filler: usize) {
        let mut out = Vec::new();
        for _ in 0..lines {
            let client = &mut self.clients[peer.0];
            tagged(&mut out, filler, peer.0, client.seq);
            client.seq += 1;
        }
        self.send(peer, &out);
    }

    /// Checks what every client received since the last check.
    fn check(&mut self) {
        self.sim.relay.check_invariants();
        for index in 0..self.clients.len() {
            self.check_client(index);
        }
    }

    fn check_client(&mut self, index: usize) {
        let peer = self.sim.peer(PeerId(index));
        let from = self.clients[index].checked;
        let Some(end) = peer.received[from..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| from + i + 1)
        else {
            return;
        };
        let lines: Vec<Vec<u8>> = peer.received[from..end]
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let port = peer.port();
        self.clients[index].checked = end;
        for line in &lines[..lines.len() - 1] {
            match port {
                None => self.check_portal_line(index, line),
                Some(port) => self.check_worker_line(index, port, line),
            }
        }
    }

    fn check_portal_line(&mut self, index: usize, line: &[u8]) {
        assert!(!line.contains(&TAG), "chat reached portal client {index}");
        let text = String::from_utf8_lossy(line);
        match parse_portal_reply(&text) {
            Some(PortalAnswer::Assigned(a)) => self.codes.push((a.port, a.code)),
            Some(PortalAnswer::Full) => {}
            None => panic!("portal client {index} got {text:?}"),
        }
        let client = &mut self.clients[index];
        assert!(!client.got_reply, "portal client {index} got two lines");
        client.got_reply = true;
    }

    fn check_worker_line(&mut self, index: usize, port: u16, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let client = &mut self.clients[index];
        if let Some(rest) = text.strip_prefix(&format!("SERVER{port}>>> Partner ")) {
            if let Some(other) = rest.strip_suffix(" connected") {
                assert!(
                    client.stretch.is_none(),
                    "{port}: {text:?} inside a stretch"
                );
                client.stretch = Some(Stretch {
                    port: other.parse().expect("a port"),
                    sender: None,
                    last_seq: None,
                });
            } else if let Some(other) = rest.strip_suffix(" left") {
                let stretch = client.stretch.take().expect("left without connected");
                assert_eq!(stretch.port.to_string(), other, "{port}: {text:?}");
                client.past_senders.extend(stretch.sender);
            }
            return;
        }
        if text.starts_with("SERVER>>> ") || text.ends_with("; closing") {
            // Its own session is over: no more chat for it.
            if let Some(stretch) = client.stretch.take() {
                client.past_senders.extend(stretch.sender);
            }
            return;
        }
        let Some(at) = line.iter().position(|&b| b == TAG) else {
            return; // untagged chat (arbitrary bytes) or another notice
        };
        let tag = std::str::from_utf8(&line[at + 1..]).expect("a whole tag");
        let (sender, seq) = tag.split_once('.').expect("a whole tag");
        let (sender, seq): (usize, u64) = (sender.parse().unwrap(), seq.parse().unwrap());
        assert!(sender < self.clients.len(), "{port}: a tag from nobody");
        assert_ne!(sender, index, "{port}: its own chat came back");
        let sender_port = self.sim.peer(PeerId(sender)).port();
        let paired = WORKER_PORTS[WORKER_PORTS.iter().position(|&p| p == port).unwrap() ^ 1];
        assert_eq!(
            sender_port,
            Some(paired),
            "{port}: chat from client {sender}"
        );
        assert!(
            self.clients[sender].given_own_code && self.clients[index].given_own_code,
            "chat between {sender} and {index}, one of which never had a passcode"
        );
        let client = &mut self.clients[index];
        assert!(
            !client.past_senders.contains(&sender),
            "{port}: chat from {sender}, whose session with it had ended"
        );
        let stretch = client
            .stretch
            .as_mut()
            .unwrap_or_else(|| panic!("{port}: chat from {sender} outside a session"));
        assert_eq!(stretch.port, paired);
        match stretch.sender {
            None => stretch.sender = Some(sender),
            Some(s) => assert_eq!(s, sender, "{port}: two senders in one stretch"),
        }
        if let Some(last) = stretch.last_seq {
            assert!(seq > last, "{port}: {sender}.{seq} after {sender}.{last}");
        }
        stretch.last_seq = Some(seq);
    }

    /// Every client reads everything, with room to spare, until nothing
    /// moves.
    fn read_everything(&mut self) {
        for index in 0..self.clients.len() {
            let p = self.sim.peer_mut(PeerId(index));
            p.window_cap = 1 << 20;
            p.read_chunk = 64 * 1024;
        }
        self.sim.pump();
        self.check();
    }
}

fuzz_target!(|input: Input| {
    let limits = Limits {
        max_line: 32 + usize::from(input.max_line) % 8161,
        linger: ms(input.linger_ms),
        // At least 512 bytes, so that a flood needs only thousands of rounds.
        read_budget: 512 + usize::from(input.read_budget),
        write_budget: 512 + usize::from(input.write_budget),
        // Below what the floods can queue, so the total's hold and release
        // are exercised too.
        max_queued: 2 << 20,
    };
    let timeouts = Timeouts {
        assign: ms(input.assign_ms),
        handshake: ms(input.handshake_ms),
        idle: ms(input.idle_ms),
        session: input.session_ms.map(ms),
    };
    let mut h = Harness {
        sim: Sim::new(input.seed, timeouts, limits),
        clients: Vec::new(),
        codes: Vec::new(),
        sent: 0,
        shut_down: false,
    };
    for op in input.ops {
        match op {
            Op::Join => h.join(),
            Op::Portal => h.accept(Role::Portal),
            Op::Connect { worker } => h.accept(Role::Worker(usize::from(worker) % 4)),
            Op::Handshake { peer, which, long } => {
                let Some(peer) = h.pick(peer) else { continue };
                let Some(own) = h.sim.peer(peer).port() else {
                    continue;
                };
                if h.codes.is_empty() {
                    continue;
                }
                let (port, code) = h.codes[usize::from(which) % h.codes.len()].clone();
                let line = if long {
                    format!("CLIENT{own}>>>HandshakeCode={code}\n")
                } else {
                    format!("{code}\n")
                };
                h.clients[peer.0].given_own_code |= port == own;
                h.send(peer, line.as_bytes());
            }
            Op::Chat {
                peer,
                lines,
                filler,
            } => {
                if let Some(peer) = h.pick(peer) {
                    h.chat(peer, usize::from(lines), usize::from(filler));
                }
            }
            Op::Flood { peer, kib } => {
                if let Some(peer) = h.pick(peer) {
                    h.chat(peer, (usize::from(kib) + 1) * 41, 88);
                }
            }
            Op::Raw { peer, mut bytes } => {
                if let Some(peer) = h.pick(peer) {
                    bytes.retain(|&b| b != TAG);
                    h.send(peer, &bytes);
                }
            }
            Op::Terminate { peer } => {
                if let Some(peer) = h.pick(peer) {
                    h.send(peer, b"CLIENT>>> TERMINATE\n");
                }
            }
            Op::Drain { peer, bytes } => {
                if let Some(peer) = h.pick(peer) {
                    h.sim.drain(peer, usize::from(bytes));
                }
            }
            Op::DrainAll => {
                h.sim.drain_all();
            }
            Op::Sizes {
                peer,
                read_chunk,
                window_cap,
            } => {
                if let Some(peer) = h.pick(peer) {
                    let p = h.sim.peer_mut(peer);
                    p.read_chunk = usize::from(read_chunk).max(1);
                    p.window_cap = usize::from(window_cap).max(1);
                }
            }
            Op::Fin { peer } => {
                if let Some(peer) = h.pick(peer) {
                    h.sim.send_fin(peer);
                }
            }
            Op::Reset { peer } => {
                if let Some(peer) = h.pick(peer) {
                    h.sim.reset(peer);
                }
            }
            Op::Round => h.sim.run_round(),
            Op::Settle => h.sim.settle(),
            Op::Tick { ms } => {
                h.sim.advance(Duration::from_millis(u64::from(ms)));
                h.sim.tick();
            }
            Op::Shutdown => {
                if !h.shut_down {
                    h.shut_down = true;
                    h.sim.shutdown();
                }
            }
        }
        h.check();
    }

    // Everyone reads: nothing may stay queued, or unread by the relay.
    h.read_everything();
    for index in 0..h.clients.len() {
        let peer = PeerId(index);
        let p = h.sim.peer(peer);
        if p.closed || p.reset {
            continue;
        }
        assert_eq!(h.sim.queued(peer), 0, "client {index}: output stuck");
        assert!(p.window.is_empty(), "client {index}: window not drained");
        assert!(p.unread.is_empty(), "client {index}: input stuck");
    }
    // Then the server stops and every client closes: nothing may be left.
    if !h.shut_down {
        h.sim.shutdown();
    }
    h.read_everything();
    for index in 0..h.clients.len() {
        h.sim.send_fin(PeerId(index));
    }
    h.read_everything();
    assert!(
        h.sim.relay.is_empty(),
        "connections left after everyone closed"
    );
});

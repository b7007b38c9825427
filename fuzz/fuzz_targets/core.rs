//! Fuzzes the sans-IO protocol core with arbitrary event sequences, the way
//! rustls and quinn fuzz theirs: the input bytes decode (with `arbitrary`)
//! into a configuration and a list of events, which drive a `Core` with a
//! fake clock and a seeded RNG. The harness keeps to the event loop's side of
//! the contract (a connection id is reused only after the core has let go of
//! it) and checks after every event:
//!
//! - no panic;
//! - the core's own rules (`Core::check_invariants`): every worker port
//!   exactly one of free (and then on the free stack, once), reserved, or
//!   occupied by a connection in a session on that port; partners mutual;
//! - a port is occupied only by a connection the harness knows is live and
//!   connected to that port; partners sit on paired ports; a connection the
//!   core has let go of has no partner and no session;
//! - a passcode is accepted only on its own port, at most once, and never
//!   at or after its lapse time;
//! - a forwarded line goes to the sender's partner only, and only a chat line
//!   is forwarded; with a partner, a line is forwarded exactly when
//!   `is_plain_chat` accepts it, which the event loop's fast path relies on;
//! - a run of lines the event loop forwarded itself (`handle_forwarded_run`,
//!   reported only while the sender has a partner) queues nothing and changes
//!   no partner;
//! - notices and closes go to live connections, nothing after a close, and
//!   every notice is a server line.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portal_chat::core::{
    Action, ConnId, Core, HANDSHAKE_MAX_LINE, PortState, PortalReply, TERMINATE, Timeouts,
    is_plain_chat,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The session line limit handed to the core; anything but
/// `HANDSHAKE_MAX_LINE`, so `max_line` tells the phases apart.
/// Every client comes from one address.
const HOME: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

const SESSION_MAX: usize = 8192;
/// Connection ids are drawn from `0..IDS`, so they are reused often.
const IDS: u8 = 12;
const FIRST_PORT: u16 = 50001;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Worker pairs, `1 + pairs % 3`.
    pairs: u8,
    assign_ms: u16,
    handshake_ms: u16,
    idle_ms: u16,
    session_ms: Option<u16>,
    seed: u64,
    events: Vec<Event>,
}

#[derive(Debug, Arbitrary)]
enum Event {
    Portal,
    Connect {
        conn: u8,
        worker: u8,
    },
    /// A passcode the portal handed out (`which` of them), bare or in the
    /// long form for the connection's own port.
    Passcode {
        conn: u8,
        which: u8,
        long: bool,
    },
    Line {
        conn: u8,
        bytes: Vec<u8>,
    },
    Terminate {
        conn: u8,
    },
    TooLong {
        conn: u8,
    },
    Disconnect {
        conn: u8,
    },
    Advance {
        ms: u16,
    },
    /// The event loop forwarded a run of plain chat lines from `conn` to
    /// its partner itself.
    ForwardedRun {
        conn: u8,
    },
    Tick,
    Shutdown,
}

struct Issued {
    worker: usize,
    code: String,
    lapses: u64,
    used: bool,
    lapsed: bool,
}

struct Harness {
    core: Core<StdRng>,
    ports: Vec<u16>,
    t0: Instant,
    now: u64,
    /// Connections the core knows, with their worker.
    live: HashMap<usize, usize>,
    codes: Vec<Issued>,
}

fn millis(ms: u16) -> Duration {
    Duration::from_millis(u64::from(ms).max(1))
}

impl Harness {
    fn at(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now)
    }

    fn chatting(&self, conn: usize) -> bool {
        self.core.max_line(ConnId(conn), SESSION_MAX) == SESSION_MAX
    }

    /// Drains the actions, checks their targets, forgets closed connections.
    fn actions(&mut self) {
        let before: HashSet<usize> = self.live.keys().copied().collect();
        let mut closed = HashSet::new();
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send { to, line } => {
                    assert!(before.contains(&to.0), "notice to unknown {to:?}: {line}");
                    assert!(!closed.contains(&to.0), "notice after close to {to:?}");
                    assert!(line.starts_with("SERVER"), "notice {line:?}");
                }
                Action::Close { conn } => {
                    assert!(before.contains(&conn.0), "close of unknown {conn:?}");
                    assert!(closed.insert(conn.0), "{conn:?} closed twice");
                    self.live.remove(&conn.0);
                }
            }
        }
    }

    fn check(&self) {
        self.core.check_invariants();
        for (worker, &port) in self.ports.iter().enumerate() {
            if let PortState::Occupied(conn) = self.core.port_state(worker) {
                assert_eq!(
                    self.live.get(&conn.0),
                    Some(&worker),
                    "port {port} held by {conn:?}"
                );
            }
        }
        for (&conn, &worker) in &self.live {
            if let Some(partner) = self.core.partner(ConnId(conn)) {
                assert_eq!(
                    self.live.get(&partner.0),
                    Some(&(worker ^ 1)),
                    "partner's port"
                );
            }
        }
        for conn in 0..usize::from(IDS) {
            if !self.live.contains_key(&conn) {
                assert_eq!(
                    self.core.partner(ConnId(conn)),
                    None,
                    "forgotten {conn} has a partner"
                );
                assert_eq!(
                    self.core.max_line(ConnId(conn), SESSION_MAX),
                    HANDSHAKE_MAX_LINE,
                    "forgotten {conn} in a session"
                );
            }
        }
    }

    fn line(&mut self, conn: usize, line: &[u8]) {
        let awaiting = self.live.contains_key(&conn) && !self.chatting(conn);
        let chatting = self.live.contains_key(&conn) && self.chatting(conn);
        let partner = self.core.partner(ConnId(conn));
        let target = self.core.handle_line(ConnId(conn), line, self.at());
        if let Some(to) = target {
            assert!(chatting, "line forwarded from {conn}, not in a session");
            assert_eq!(Some(to), partner, "line forwarded past the partner");
            assert!(
                line != TERMINATE && !line.starts_with(b"SERVER"),
                "{line:?} forwarded"
            );
        } else if chatting && line != TERMINATE && !line.starts_with(b"SERVER") {
            assert_eq!(partner, None, "chat line not forwarded to the partner");
        }
        if chatting && partner.is_some() {
            assert_eq!(
                target.is_some(),
                is_plain_chat(line),
                "is_plain_chat disagrees with handle_line on {line:?}"
            );
        }
        if awaiting && self.chatting(conn) {
            let worker = self.live[&conn];
            let prefix = format!("CLIENT{}>>>HandshakeCode=", self.ports[worker]);
            let offered = line.strip_prefix(prefix.as_bytes()).unwrap_or(line);
            let issued = self
                .codes
                .iter_mut()
                .find(|c| c.code.as_bytes() == offered)
                .unwrap_or_else(|| panic!("{line:?} accepted but never issued"));
            assert_eq!(issued.worker, worker, "passcode accepted on another port");
            assert!(!issued.used, "passcode accepted twice");
            assert!(!issued.lapsed, "passcode accepted after its lapse");
            assert!(
                self.now < issued.lapses,
                "passcode accepted at or after its lapse time"
            );
            issued.used = true;
        }
        self.actions();
    }
}

fuzz_target!(|input: Input| {
    let workers = 2 * (1 + usize::from(input.pairs % 3));
    let ports: Vec<u16> = (0..workers as u16).map(|i| FIRST_PORT + i).collect();
    let timeouts = Timeouts {
        assign: millis(input.assign_ms),
        handshake: millis(input.handshake_ms),
        idle: millis(input.idle_ms),
        session: input.session_ms.map(millis),
    };
    let mut h = Harness {
        core: Core::new(ports.clone(), timeouts, StdRng::seed_from_u64(input.seed)),
        ports,
        t0: Instant::now(),
        now: 0,
        live: HashMap::new(),
        codes: Vec::new(),
    };
    h.check();
    for event in input.events {
        match event {
            Event::Portal => match h.core.handle_portal_request(HOME, h.at()) {
                PortalReply::Assigned { port, code } => {
                    let worker = h
                        .ports
                        .iter()
                        .position(|&p| p == port)
                        .expect("a worker port");
                    assert_eq!(h.core.port_state(worker), PortState::Reserved);
                    assert!(h.codes.iter().all(|c| c.code != code), "passcode reissued");
                    h.codes.push(Issued {
                        worker,
                        code,
                        lapses: h.now + u64::from(input.assign_ms.max(1)),
                        used: false,
                        lapsed: false,
                    });
                }
                PortalReply::Full => assert!(h.core.free_ports().is_empty(), "full, yet free"),
            },
            Event::Connect { conn, worker } => {
                let conn = usize::from(conn % IDS);
                // The event loop never reuses the id of a connection the
                // core still knows.
                if !h.live.contains_key(&conn) {
                    let worker = usize::from(worker) % workers;
                    h.core.handle_worker_connect(ConnId(conn), worker, HOME, h.at());
                    h.live.insert(conn, worker);
                }
            }
            Event::Passcode { conn, which, long } => {
                let conn = usize::from(conn % IDS);
                if h.codes.is_empty() {
                    continue;
                }
                let code = h.codes[usize::from(which) % h.codes.len()].code.clone();
                let line = match (long, h.live.get(&conn)) {
                    (true, Some(&worker)) => {
                        format!("CLIENT{}>>>HandshakeCode={code}", h.ports[worker])
                    }
                    _ => code,
                };
                h.line(conn, line.as_bytes());
            }
            Event::Line { conn, bytes } => h.line(usize::from(conn % IDS), &bytes),
            Event::Terminate { conn } => h.line(usize::from(conn % IDS), TERMINATE),
            Event::TooLong { conn } => {
                let conn = usize::from(conn % IDS);
                h.core.handle_line_too_long(ConnId(conn), SESSION_MAX, h.at());
                h.actions();
                assert!(
                    !h.live.contains_key(&conn),
                    "still there after an overlong line"
                );
            }
            Event::Disconnect { conn } => {
                let conn = usize::from(conn % IDS);
                h.core.handle_disconnect(ConnId(conn), h.at());
                h.live.remove(&conn);
                h.actions();
            }
            Event::Advance { ms } => h.now += u64::from(ms),
            Event::ForwardedRun { conn } => {
                let conn = ConnId(usize::from(conn % IDS));
                // The event loop takes the fast path only with a partner.
                let Some(partner) = h.core.partner(conn) else {
                    continue;
                };
                h.core.handle_forwarded_run(conn, 1, h.at());
                assert!(
                    h.core.poll_action().is_none(),
                    "a forwarded run queued an action"
                );
                assert_eq!(
                    h.core.partner(conn),
                    Some(partner),
                    "a forwarded run changed partners"
                );
            }
            Event::Tick => {
                h.core.handle_tick(h.at());
                for issued in &mut h.codes {
                    if h.now >= issued.lapses {
                        issued.lapsed = true;
                    }
                }
                h.actions();
            }
            Event::Shutdown => {
                h.core.handle_shutdown();
                h.actions();
                assert!(h.live.is_empty(), "not everyone was closed");
                assert!(h.core.free_ports().is_empty());
                for worker in 0..workers {
                    assert_eq!(h.core.port_state(worker), PortState::Free);
                }
                assert_eq!(h.core.handle_portal_request(HOME, h.at()), PortalReply::Full);
                // The server stops taking events now.
                return;
            }
        }
        h.check();
    }
});

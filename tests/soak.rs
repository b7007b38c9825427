//! A bounded soak: many clients churn sessions through the portal while
//! every fault of `tests/faults.rs` is injected among them, then the server
//! must be exactly where it started.
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture           # 60 s
//! SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture
//! SOAK_LOAD_NICE=0 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! The server runs with 128 descriptors (`prlimit`), 22 worker ports, a 1 s
//! handshake timeout, a 2 s reservation lifetime, `--max-per-ip 2` and glibc
//! set to give freed memory back at once (so RSS shows what is live). Twelve
//! client threads each run one session after another through the portal
//! (retrying while it is full), each session of a random kind:
//!
//! - chatter: sends 50 to 550 lines while reading, then terminates;
//! - streamer: the same with 6000 lines of 1000 bytes;
//! - slow reader: a chatter that stops reading for 1.5 s in the middle;
//! - half-closer: ends with an unterminated line and a shutdown of its
//!   sending side instead of `TERMINATE`;
//! - resetter: stops reading and closes with unread input: a reset;
//! - garbage: lines holding NULs and invalid UTF-8 among its chat, which
//!   must arrive byte for byte, and lines hiding a bare `\r`, which the
//!   server must refuse with a notice to the sender; then a line beginning
//!   with `SERVER`, then a megabyte without a newline.
//!
//! A chaos thread meanwhile takes turns at a slowloris, garbage on the
//! portal, garbage on a worker port before the handshake, a flood of
//! connections that exhausts the server's descriptors for a second, and a
//! slow consumer: a pair where one side sends 64 MiB and the other reads
//! nothing until the sender is held back (ports taken from the portal in
//! vain while looking for such a pair are given back as sessions that leave
//! at once).
//!
//! Beside them, for the whole churn:
//!
//! - a flat-out pair: a writer sends numbered lines in 64 KiB writes as fast
//!   as the server takes them, and its partner reads and checks every one;
//! - a pinger pair: a numbered line every 10 ms, answered by the partner;
//!   each round trip goes into a histogram, whose p50, p99 and maximum are in
//!   the report (the p99 must stay under 10 ms and the worst under 200 ms,
//!   as in `tests/fairness.rs`);
//! - an attacker on a source address of its own (127.0.0.2): it asks the
//!   portal 20 times a second, claims every port it is given and holds each
//!   session for 1 to 4 s, while six stray connections of its own sit on
//!   worker ports without a passcode until they are timed out. It must never
//!   hold more than `--max-per-ip` ports at once. (The legitimate clients
//!   come from many other addresses; see [`MAX_PER_IP`] for why.)
//!
//! The threads that make the load run at nice 10 (`SOAK_LOAD_NICE`; 0 runs
//! them at the test's priority): the server, the pinger and its echo come
//! first, so that the pinger measures the server's loop and not the test's
//! own threads queueing for the CPU (see [`in_the_background`]).
//!
//! Every chat line names its sender session, its number, its ports and its
//! length, and has a computed payload (garbage lines carry their route and
//! session before the garbage). Receivers check each line as it arrives
//! (misrouted, damaged, out of order); at the end, for every sender, lines
//! sent = lines received (once) + "not delivered" notices + refusals of a
//! bare `\r`, except where a reset was involved (the resetter's own lines,
//! and lines sent to it). So "zero lines lost" is counted, not assumed. The
//! flat-out, pinger and attacker sessions are in the same ledger, checked
//! the same way.
//!
//! At the end: every port can be obtained again, the descriptor count is back
//! to its start, memory is back to its start (within a small allowance), and
//! a last pair chats; then SIGTERM while two pairs stream, and every client
//! must get the notice last and whole, and the server exit 0. The report is
//! printed whatever happened; then the test fails on any problem, any line
//! lost, misrouted or damaged, a pinger p99 of 10 ms or more or a worst
//! round trip of 200 ms or more, or an attacker that held more than its
//! limit.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Drain, End, Peer, Pump, PumpEnd, PumpPlan, Rng, Sampler, TestServer, connect, connect_from,
    fd_count, fd_numbers, nofile_prefix, release_from, request_port_from, rss_kib, settled_fds,
    tcp_queues, try_rss_kib as try_rss, wait_every_port_free_from, wait_until,
};
use hdrhistogram::Histogram;
use portal_chat::client::{Assignment, PortalAnswer, parse_portal_reply};

const FD_LIMIT: usize = 128;
/// 16 ports for the churn, as many as it had before the pairs below came;
/// 4 for the flat-out and pinger pairs, 2 for the attacker.
const WORKERS: usize = 22;
const CLIENT_THREADS: usize = 12;
const FLOOD: usize = 2 * FD_LIMIT;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// `--max-per-ip` for the soak's server: the ports one source address may
/// hold at once.
///
/// The limit counts per source address, so where the clients come from
/// decides what it means. The attacker has 127.0.0.2 to itself. Were every
/// legitimate client on 127.0.0.1, the limit would have to let that one
/// address hold nearly every port, and the attacker, on an address of its
/// own, would be allowed as many: the limit would protect nobody. So the
/// legitimate clients come, as users on a network do, from addresses of
/// their own (every address of 127.0.0.0/8 is this machine's): each client
/// thread has one ([`client_source`]), and every other legitimate session
/// takes a fresh one ([`Sources`]). None of them needs more than a port at
/// a time, or two for the moment a session's end and the next request
/// overlap (a resetter asks again before the server has seen its reset),
/// so the limit can be as small as on a public server: 2, which leaves the
/// attacker 2 ports of the 22. The chaos
/// thread's single connections (slowloris, garbage) come from 127.0.0.1,
/// and the descriptor flood from 64 addresses ([`flood_source`]).
const MAX_PER_IP: usize = 2;
/// The attacker's address.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How often the attacker asks the portal.
const ATTACK_EVERY: Duration = Duration::from_millis(50);
/// The attacker's connections that sit on worker ports without a passcode:
/// 6 of the 4 × [`MAX_PER_IP`] it may have, which leaves it room to claim
/// the ports it is given.
const STRAYS: usize = 6;
/// How often the pinger pings, and what its round trips must stay under.
const PING_EVERY: Duration = Duration::from_millis(10);
const PING_P99_LIMIT: Duration = Duration::from_millis(10);
const PING_WORST_LIMIT: Duration = Duration::from_millis(200);
/// How much more memory the server may hold at the end than at the start:
/// the slab and the core's tables keep the size of the busiest moment. With
/// glibc's default thresholds, freed queues (a full 1 MiB queue sits in a
/// 2 MiB buffer) mostly stay in the heap and RSS ends 3 to 4 MiB up, which
/// would hide a leak of that size; so the server runs with eager trimming
/// (below), and RSS then measures what is live.
const RSS_ALLOWANCE_KIB: u64 = 2 * 1024;

/// glibc settings for the server: buffers of 64 KiB and more are mapped
/// apart and unmapped when freed, and the heap is trimmed when 64 KiB are
/// free at its top.
const EAGER_TRIM: [&str; 3] = [
    "env",
    "MALLOC_MMAP_THRESHOLD_=65536",
    "MALLOC_TRIM_THRESHOLD_=65536",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Chatter,
    Streamer,
    SlowReader,
    HalfCloser,
    Resetter,
    Garbage,
    /// A port taken in vain while looking for a pair, given straight back.
    GiveBack,
    /// A side of the flat-out pair (the writer, or the reader).
    FlatOut,
    /// A side of the pinger pair.
    Pinger,
    /// A session the attacker claimed and held.
    Attacker,
}

impl Kind {
    fn pick(rng: &mut Rng) -> Kind {
        match rng.below(100) {
            0..40 => Kind::Chatter,
            40..50 => Kind::Streamer,
            50..65 => Kind::SlowReader,
            65..80 => Kind::HalfCloser,
            80..90 => Kind::Resetter,
            _ => Kind::Garbage,
        }
    }

    /// Whether the session must end cleanly, every write succeeding.
    fn accountable(self) -> bool {
        self != Kind::Resetter
    }
}

/// A chat line of the soak: sender session, number, ports, length, payload.
fn soak_line(from: u16, to: u16, session: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut line = format!("{from}>{to}#{session}.{seq}/{len}:").into_bytes();
    let salt = (session * 31 + seq * 7) as usize;
    line.extend((0..len).map(|i| b'a' + ((salt + i * 13) % 26) as u8));
    line
}

/// Reads the header of a soak line and checks the whole line against it:
/// (from, to, session, seq).
fn parse_soak_line(line: &[u8]) -> Option<(u16, u16, u64, u64)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let header = std::str::from_utf8(&line[..colon]).ok()?;
    let (from, rest) = header.split_once('>')?;
    let (to, rest) = rest.split_once('#')?;
    let (session, rest) = rest.split_once('.')?;
    let (seq, len) = rest.split_once('/')?;
    let (from, to, session, seq, len) = (
        from.parse().ok()?,
        to.parse().ok()?,
        session.parse().ok()?,
        seq.parse().ok()?,
        len.parse().ok()?,
    );
    (line == soak_line(from, to, session, seq, len).as_slice()).then_some((from, to, session, seq))
}

/// What one session's reader saw.
#[derive(Debug, Default)]
struct Seen {
    /// Per sender session: first and last number received, and how many.
    runs: HashMap<u64, (u64, u64, u64)>,
    not_delivered: u64,
    refused: u64,
    /// Refusals of a line that hides a bare `\r`.
    refused_cr: u64,
    too_long: u64,
    /// Per sender session: lines of garbage received.
    garbage_from: HashMap<u64, u64>,
    /// Lines from a session that is not the partner's, or not addressed to
    /// this client.
    misrouted: u64,
    /// Lines that do not match their own header, or out of order.
    damaged: u64,
    /// The first [`Seen::PROBLEMS_KEPT`] problems, and how many more.
    problems: Vec<String>,
    more_problems: u64,
    /// The stream ended cleanly (end of stream, or a reset after the
    /// server's close began, for a client that sent garbage).
    clean_end: bool,
}

/// One session, as the ledger keeps it.
#[derive(Debug)]
struct Record {
    kind: Kind,
    port: u16,
    partner: u16,
    /// Before asking the portal, and after the end: the session lies within.
    began: Instant,
    ended: Instant,
    /// Numbered lines sent.
    sent: u64,
    /// Lines of garbage sent (a garbage session's), not numbered.
    garbage_sent: u64,
    seen: Seen,
}

#[derive(Default)]
struct Ledger {
    next_id: u64,
    records: HashMap<u64, Record>,
    refused_joins: u64,
    full_answers: u64,
}

/// One side of a long-lived pair (the slow consumer, the flat-out pair, the
/// pinger pair), as it is filed when the pair ends.
struct Side {
    kind: Kind,
    port: u16,
    partner: u16,
    began: Instant,
    sent: u64,
    seen: Seen,
}

impl Ledger {
    /// Files `side` of the pair `what`, which has just ended; a side that
    /// did not end cleanly carries that as a problem.
    fn file_side(&mut self, id: u64, what: &str, side: Side) {
        let Side {
            kind,
            port,
            partner,
            began,
            sent,
            mut seen,
        } = side;
        if !seen.clean_end {
            seen.problems
                .push(format!("{what}, port {port}: did not end cleanly"));
        }
        let record = Record {
            kind,
            port,
            partner,
            began,
            ended: Instant::now(),
            sent,
            garbage_sent: 0,
            seen,
        };
        self.records.insert(id, record);
    }
}

#[derive(Default)]
struct Chaos {
    slow_consumers: AtomicU64,
    slow_consumer_skipped: AtomicU64,
    /// Resetters that closed with unread input, which is a reset for sure.
    resets: AtomicU64,
    slowloris: AtomicU64,
    slowloris_bad: Mutex<Vec<String>>,
    portal_garbage: AtomicU64,
    worker_garbage: AtomicU64,
    floods: AtomicU64,
    flood_held_ms: AtomicU64,
    problems: Mutex<Vec<String>>,
}

/// What the attacker on [`ATTACKER`] got.
#[derive(Default)]
struct Attack {
    requests: AtomicU64,
    /// Ports the portal gave it.
    given: AtomicU64,
    /// Ports it claimed with their passcode, and sessions it then held.
    claimed: AtomicU64,
    /// Its handshakes refused (its connections were at their limit).
    refused: AtomicU64,
    full: AtomicU64,
    /// The most ports it held at once, by its own count: from the portal's
    /// answer to the end of the session it claimed (or the refusal of its
    /// handshake). The server holds each a little longer at both ends, so
    /// this count can only be lower than the server's.
    max_held: AtomicU64,
    /// Its stray connections: told `Handshake timeout` at the deadline, or
    /// refused at once for having too many.
    strays_timed_out: AtomicU64,
    strays_refused: AtomicU64,
}

/// Fresh source addresses, one per use (127.3.0.1, 127.3.0.2, …, 64 000 of
/// them before one comes again), for the legitimate sessions that are not
/// a client thread's.
#[derive(Default)]
struct Sources(AtomicU64);

impl Sources {
    fn next(&self) -> IpAddr {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        IpAddr::V4(Ipv4Addr::new(
            127,
            3,
            (n / 250 % 256) as u8,
            (1 + n % 250) as u8,
        ))
    }
}

/// Client thread `n`'s own source address: 127.1.0.1 for the first.
fn client_source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1 + n as u8))
}

/// The source of the descriptor flood's connection number `n`: four to an
/// address, within the 4 × [`MAX_PER_IP`] unauthenticated connections each
/// may have. From one address, the server would refuse and close all but 8
/// of them at once, and its descriptors would not run out.
fn flood_source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 4, 0, 1 + (n / 4) as u8))
}

struct Soak {
    server: TestServer,
    deadline: Instant,
    ledger: Mutex<Ledger>,
    chaos: Chaos,
    sources: Sources,
    attack: Attack,
    /// Bytes the flat-out pair's writer has sent.
    streamed: AtomicU64,
}

/// What a line was, to the client that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// A chat line (checked and counted, whatever was wrong with it).
    Chat,
    /// `Partner … connected`.
    PartnerCame,
    /// `Partner … left`.
    PartnerLeft,
    /// Another notice, or garbage (counted).
    Other,
}

impl Seen {
    /// Enough problems to see what went wrong; a stream that goes wrong
    /// could otherwise make millions.
    const PROBLEMS_KEPT: usize = 20;

    fn problem(&mut self, problem: String) {
        if self.problems.len() < Self::PROBLEMS_KEPT {
            self.problems.push(problem);
        } else {
            self.more_problems += 1;
        }
    }

    /// Checks and counts one line, without its `\n`, read by the client on
    /// `me`, whose partner is on `partner`.
    fn hear(&mut self, line: &[u8], me: u16, partner: u16) -> Heard {
        if line.starts_with(b"SERVER") {
            let text = String::from_utf8_lossy(line);
            match text.strip_prefix(&format!("SERVER{me}>>> ")) {
                Some(n) if n == format!("Not delivered: partner {partner} is not connected") => {
                    self.not_delivered += 1
                }
                Some("Refused: chat lines may not begin with SERVER") => self.refused += 1,
                Some("Refused: chat lines may not hold a carriage return") => self.refused_cr += 1,
                Some("Line too long (limit 8192 bytes); closing") => self.too_long += 1,
                Some(n) if n == format!("Partner {partner} connected") => {
                    return Heard::PartnerCame;
                }
                Some(n) if n == format!("Partner {partner} left") => return Heard::PartnerLeft,
                // The answer to our own `CLIENT>>> TERMINATE`.
                Some("Bye") => {}
                _ => self.problem(format!("port {me}: unexpected notice {text:?}")),
            }
            return Heard::Other;
        }
        if let Some(rest) = line.strip_prefix(b"~g~") {
            // Garbage, tagged with its route and session, then raw bytes.
            let tag = format!("{partner}>{me}#");
            let session = rest.strip_prefix(tag.as_bytes()).and_then(|rest| {
                let colon = rest.iter().position(|&b| b == b':')?;
                std::str::from_utf8(&rest[..colon])
                    .ok()?
                    .parse::<u64>()
                    .ok()
            });
            match session {
                Some(_) if line.contains(&b'\r') => {
                    self.damaged += 1;
                    self.problem(format!(
                        "port {me}: a line with a bare \\r was forwarded: {:?}",
                        String::from_utf8_lossy(&line[..line.len().min(30)])
                    ))
                }
                Some(session) => *self.garbage_from.entry(session).or_default() += 1,
                None => {
                    self.misrouted += 1;
                    self.problem(format!(
                        "port {me}: misrouted garbage {:?}",
                        String::from_utf8_lossy(&line[..line.len().min(30)])
                    ))
                }
            }
            return Heard::Other;
        }
        match parse_soak_line(line) {
            Some((from, to, session, seq)) if from == partner && to == me => {
                let run = self.runs.entry(session).or_insert((seq, seq, 0));
                let after = run.1;
                let in_order = run.2 == 0 || seq == after + 1;
                run.1 = seq;
                run.2 += 1;
                if !in_order {
                    self.damaged += 1;
                    self.problem(format!(
                        "port {me}: from session {session}, line {seq} after line {after}"
                    ));
                }
            }
            Some((from, to, session, seq)) => {
                self.misrouted += 1;
                self.problem(format!(
                    "port {me} (partner {partner}): misrouted line {from}>{to}#{session}.{seq}"
                ))
            }
            None => {
                self.damaged += 1;
                self.problem(format!(
                    "port {me}: damaged line {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(60)])
                ))
            }
        }
        Heard::Chat
    }
}

/// The soak's reader for one session: checks and counts everything.
fn read_session(
    mut reader: BufReader<TcpStream>,
    me: u16,
    partner: u16,
    pause_after: Option<u64>,
    stop: &AtomicBool,
    partner_came: &AtomicBool,
    gate: Option<&AtomicBool>,
) -> Seen {
    if let Some(gate) = gate {
        // Not reading at all until the gate opens (bounded by the test).
        wait_until(Duration::from_secs(30), || gate.load(Ordering::SeqCst));
    }
    let mut seen = Seen::default();
    let mut chat = 0u64;
    let mut line = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return seen;
        }
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                seen.clean_end = true;
                return seen;
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                if stop.load(Ordering::SeqCst) {
                    return seen; // our own shutdown cut the line short
                }
                seen.problem(format!(
                    "port {me}: stream ended inside a line: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(60)])
                ));
                return seen;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && seen.too_long > 0 => {
                seen.clean_end = true;
                return seen;
            }
            Err(e) => {
                let local = reader.get_ref().local_addr().map_or(0, |a| a.port());
                seen.problem(format!(
                    "port {me}: read failed after {chat} lines: {e} (queues: ours {:?}, the \
                     server's {:?})",
                    tcp_queues(local, me),
                    tcp_queues(me, local)
                ));
                return seen;
            }
        }
        line.pop();
        match seen.hear(&line, me, partner) {
            Heard::Chat => chat += 1,
            Heard::PartnerCame => {
                partner_came.store(true, Ordering::SeqCst);
                continue;
            }
            Heard::PartnerLeft | Heard::Other => continue,
        }
        if pause_after == Some(chat) {
            // A slow reader: nothing is read for a while, so the partner's
            // queue fills and the partner is held back.
            thread::sleep(Duration::from_millis(1500));
        }
    }
}

impl Soak {
    fn new_id(&self) -> u64 {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.next_id += 1;
        ledger.next_id
    }

    /// Portal and handshake, retrying while the portal is full or a
    /// reservation lapsed (behind a flood, say); `None` once the soak is over.
    fn join(&self, from: IpAddr, rng: &mut Rng) -> Option<Peer> {
        loop {
            if Instant::now() >= self.deadline {
                return None;
            }
            match request_port_from(from, self.server.portal) {
                Ok(PortalAnswer::Assigned(assignment)) => {
                    match Peer::handshake_from(from, self.server.host(), &assignment) {
                        Ok(peer) => return Some(peer),
                        Err(_) => self.ledger.lock().unwrap().refused_joins += 1,
                    }
                }
                Ok(PortalAnswer::Full) => {
                    self.ledger.lock().unwrap().full_answers += 1;
                    // The client's own back-off, a workload pace.
                    thread::sleep(Duration::from_millis(20 + rng.below(30)));
                }
                Err(e) => {
                    self.chaos
                        .problems
                        .lock()
                        .unwrap()
                        .push(format!("portal did not answer: {e}"));
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// One session of `kind` from `from`, from the portal to the end.
    fn session(&self, kind: Kind, from: IpAddr, rng: &mut Rng) -> bool {
        let began = Instant::now();
        let Some(peer) = self.join(from, rng) else {
            return false;
        };
        let id = self.new_id();
        let (me, partner) = (peer.port, peer.partner);
        let mut stream = peer.stream;
        let stop = Arc::new(AtomicBool::new(false));
        let pause_after = (kind == Kind::SlowReader).then(|| 20 + rng.below(200));
        let partner_came = Arc::new(AtomicBool::new(false));
        let reader = {
            let (stop, partner_came) = (stop.clone(), partner_came.clone());
            let reader = peer.reader;
            thread::spawn(move || {
                read_session(reader, me, partner, pause_after, &stop, &partner_came, None)
            })
        };
        // Chat needs a partner: wait a little for one (a client would).
        if !peer.partner_present {
            let partner_came = partner_came.clone();
            wait_until(Duration::from_millis(300), || {
                partner_came.load(Ordering::SeqCst)
            });
        }
        let lines = match kind {
            Kind::Streamer => 6000,
            _ => 50 + rng.below(500),
        };
        let mut sent = 0;
        let mut garbage_sent = 0;
        let mut hidden_breaks = 0;
        let mut write_failed = None;
        let mut send = |stream: &mut TcpStream, bytes: &[u8]| {
            if write_failed.is_none()
                && let Err(e) = stream.write_all(bytes)
            {
                write_failed = Some(e.to_string());
            }
        };
        for seq in 0..lines {
            let len = if kind == Kind::Streamer {
                1000
            } else if rng.below(50) == 0 {
                4000 + rng.below(4000) as usize
            } else {
                rng.below(200) as usize
            };
            let mut line = soak_line(me, partner, id, seq, len);
            let last = seq + 1 == lines;
            if !(last && kind == Kind::HalfCloser) {
                line.push(b'\n');
            }
            send(&mut stream, &line);
            sent += 1;
            if kind == Kind::Garbage && seq % 10 == 0 {
                let mut garbage = format!("~g~{me}>{partner}#{id}:").into_bytes();
                garbage.extend(b"\0\0\xff\xfe\xc3\x28 a");
                let len = rng.below(100) as usize;
                garbage.extend(rng.bytes(len));
                // No line break inside, but for every other one a bare `\r`
                // (to a reader that splits at `\r`, a break): the server
                // must refuse that one with a notice to us, and forward the
                // others byte for byte.
                garbage
                    .iter_mut()
                    .filter(|b| **b == b'\n' || **b == b'\r')
                    .for_each(|b| *b = 0);
                if seq % 20 == 10 {
                    garbage.extend(b" b\rc \r\r");
                    hidden_breaks += 1;
                }
                garbage.push(b'\n');
                send(&mut stream, &garbage);
                garbage_sent += 1;
            }
            if rng.below(20) == 0 {
                thread::sleep(Duration::from_millis(rng.below(10))); // typing pause
            }
        }
        match kind {
            // (Only the kinds `Kind::pick` returns run here; the others
            // would leave this way too.)
            Kind::Chatter
            | Kind::Streamer
            | Kind::SlowReader
            | Kind::GiveBack
            | Kind::FlatOut
            | Kind::Pinger
            | Kind::Attacker => send(&mut stream, b"CLIENT>>> TERMINATE\n"),
            Kind::HalfCloser => {
                let _ = stream.shutdown(Shutdown::Write);
            }
            Kind::Garbage => {
                send(&mut stream, b"SERVER>>> forged\n");
                let mut writer = stream.try_clone().unwrap();
                thread::spawn(move || {
                    let _ = writer.write_all(&vec![b'z'; 1 << 20]);
                    let _ = writer.shutdown(Shutdown::Write);
                });
            }
            Kind::Resetter => {
                // Stop reading (a blocked read is woken by the shutdown of
                // the reading side, which leaves the kernel's queue as it is).
                stop.store(true, Ordering::SeqCst);
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
        let seen = reader.join().expect("reader thread");
        if kind == Kind::Resetter {
            // Unread input at the close makes it a reset; give the
            // partner's lines a moment to arrive, if there is a partner.
            let local = stream.local_addr().unwrap().port();
            let unread = wait_until(Duration::from_millis(500), || {
                tcp_queues(local, me).is_some_and(|(_, rx)| rx > 0)
            });
            if unread {
                self.chaos.resets.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(stream);
        let mut seen = seen;
        if let Some(e) = write_failed
            && kind.accountable()
        {
            seen.problems.push(format!("port {me}: write failed: {e}"));
        }
        if kind.accountable() && !seen.clean_end {
            seen.problems
                .push(format!("port {me}: {kind:?} session did not end cleanly"));
        }
        if kind == Kind::Garbage && seen.too_long != 1 {
            seen.problems.push(format!(
                "port {me}: no line-too-long notice for the megabyte"
            ));
        }
        if kind == Kind::Garbage && seen.refused_cr != hidden_breaks {
            seen.problems.push(format!(
                "port {me}: {hidden_breaks} lines hid a bare \\r, {} refused",
                seen.refused_cr
            ));
        }
        if kind == Kind::Garbage && seen.refused != 1 {
            seen.problems
                .push(format!("port {me}: the forged line was not refused"));
        }
        self.ledger.lock().unwrap().records.insert(
            id,
            Record {
                kind,
                port: me,
                partner,
                began,
                ended: Instant::now(),
                sent,
                garbage_sent,
                seen,
            },
        );
        true
    }

    /// Client thread `n`: one session after another, from its own address.
    fn client_thread(&self, n: usize) {
        in_the_background();
        let mut rng = Rng::new(0x50A4 + n as u64);
        let from = client_source(n);
        while Instant::now() < self.deadline {
            let kind = Kind::pick(&mut rng);
            if !self.session(kind, from, &mut rng) {
                return;
            }
        }
    }

    fn chaos_thread(&self, seed: u64) {
        in_the_background();
        let mut rng = Rng::new(seed);
        let mut turn = 0u64;
        let mut lorises = Vec::new();
        while Instant::now() < self.deadline {
            turn += 1;
            match turn % 4 {
                0 => {
                    let addr = self.worker(&mut rng);
                    lorises.push(thread::spawn(move || slowloris(addr)));
                    self.chaos.slowloris.fetch_add(1, Ordering::SeqCst);
                }
                1 => {
                    self.portal_garbage(&mut rng);
                    self.chaos.portal_garbage.fetch_add(1, Ordering::SeqCst);
                }
                2 => {
                    self.worker_garbage(&mut rng);
                    self.chaos.worker_garbage.fetch_add(1, Ordering::SeqCst);
                }
                _ if turn % 12 == 3 => {
                    self.flood();
                    self.chaos.floods.fetch_add(1, Ordering::SeqCst);
                }
                _ if turn % 12 == 7 => self.slow_consumer(),
                _ => {}
            }
            thread::sleep(Duration::from_millis(200 + rng.below(200))); // chaos pace
        }
        for loris in lorises {
            if let Err(problem) = loris.join().unwrap() {
                self.chaos.slowloris_bad.lock().unwrap().push(problem);
            }
        }
    }

    fn worker(&self, rng: &mut Rng) -> SocketAddr {
        self.server.workers[rng.below(WORKERS as u64) as usize]
    }

    fn portal_garbage(&self, rng: &mut Rng) {
        let bytes = garbage(rng);
        let Ok(stream) = connect(self.server.portal) else {
            return self.problem("portal refused a connection".into());
        };
        let mut writer = stream.try_clone().unwrap();
        let spray = thread::spawn(move || {
            let _ = writer.write_all(&bytes);
        });
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(_) if line.ends_with('\n') && parse_portal_reply(line.trim_end()).is_some() => {}
            other => self.problem(format!("portal answered garbage with {other:?} {line:?}")),
        }
        drop(reader);
        let _ = spray.join();
    }

    fn worker_garbage(&self, rng: &mut Rng) {
        let addr = self.worker(rng);
        let port = addr.port();
        let mut bytes = garbage(rng);
        bytes.push(b'\n'); // so it is refused, not left to time out
        let Ok(stream) = connect(addr) else {
            return self.problem(format!("worker {port} refused a connection"));
        };
        let mut writer = stream.try_clone().unwrap();
        let spray = thread::spawn(move || {
            let _ = writer.write_all(&bytes);
        });
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let want = format!("SERVER{port}>>> Wrong handshake passcode\n");
        match reader.read_line(&mut line) {
            Ok(_) if line == want => {}
            other => self.problem(format!(
                "port {port} answered garbage with {other:?} {line:?}"
            )),
        }
        drop(reader);
        let _ = spray.join();
    }

    /// Exhausts the server's descriptors for about a second.
    fn flood(&self) {
        let pid = self.server.pid();
        let mut flood = Vec::with_capacity(FLOOD);
        for i in 0..FLOOD {
            match connect_from(flood_source(i), self.server.workers[i % WORKERS]) {
                Ok(stream) => flood.push(stream),
                Err(e) => return self.problem(format!("flood connect: {e}")),
            }
        }
        let ceiling = FD_LIMIT
            + fd_numbers(pid)
                .into_iter()
                .filter(|&n| n as usize >= FD_LIMIT)
                .count();
        if wait_until(Duration::from_secs(5), || fd_count(pid) >= ceiling) {
            let exhausted = Instant::now();
            thread::sleep(Duration::from_secs(1)); // the fault's duration
            self.chaos
                .flood_held_ms
                .fetch_add(exhausted.elapsed().as_millis() as u64, Ordering::SeqCst);
        } else {
            self.problem(format!(
                "a flood of {FLOOD} did not exhaust {FD_LIMIT} descriptors ({} open)",
                fd_count(pid)
            ));
        }
        drop(flood);
    }

    /// A partner that does not read while 64 MiB are sent to it, until the
    /// sender is held back; then it reads everything. Both are sessions of
    /// the ledger like any other, so the audit counts every line.
    fn slow_consumer(&self) {
        // Enough to outlast every kernel buffer on the way (they grow to
        // tens of MiB on a fast loopback) and the server's 1 MiB queue.
        const LINES: u64 = 64 * 1024;
        let began = Instant::now();
        let mut pair = None;
        for _ in 0..20 {
            pair = self.try_join_pair();
            if pair.is_some() || Instant::now() >= self.deadline {
                break;
            }
            thread::sleep(Duration::from_millis(300)); // try again later
        }
        let Some((a, b)) = pair else {
            self.chaos
                .slow_consumer_skipped
                .fetch_add(1, Ordering::SeqCst);
            return;
        };
        let (a_id, b_id) = (self.new_id(), self.new_id());
        let never = Arc::new(AtomicBool::new(false));
        let came = Arc::new(AtomicBool::new(true));
        let gate = Arc::new(AtomicBool::new(false));
        // The sender hears nothing until it leaves, however long sending
        // takes (a debug build is slow): no read timeout short of that.
        a.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        let a_reader = {
            let (never, came) = (never.clone(), came.clone());
            let (reader, me, partner) = (a.reader, a.port, a.partner);
            thread::spawn(move || read_session(reader, me, partner, None, &never, &came, None))
        };
        let b_reader = {
            let (never, came, gate) = (never.clone(), came.clone(), gate.clone());
            let (reader, me, partner) = (b.reader, b.port, b.partner);
            thread::spawn(move || {
                read_session(reader, me, partner, None, &never, &came, Some(&gate))
            })
        };
        let stalls = Arc::new(AtomicU64::new(0));
        let writer = {
            let mut stream = a.stream.try_clone().unwrap();
            stream.set_write_timeout(Some(common::POLL)).unwrap();
            let (stalls, me, partner) = (stalls.clone(), a.port, a.partner);
            thread::spawn(move || {
                for seq in 0..LINES {
                    let mut line = soak_line(me, partner, a_id, seq, 1000);
                    line.push(b'\n');
                    if common::write_patiently(&mut stream, &line, &stalls).is_err() {
                        return seq;
                    }
                }
                let _ = common::write_patiently(&mut stream, b"CLIENT>>> TERMINATE\n", &stalls);
                LINES
            })
        };
        let held = wait_until(Duration::from_secs(10), || {
            stalls.load(Ordering::SeqCst) >= 3
        });
        gate.store(true, Ordering::SeqCst);
        let sent = writer.join().unwrap();
        let a_seen = a_reader.join().unwrap();
        // The sender has gone: the reader leaves too, after everything.
        let mut b_stream = b.stream;
        let _ = b_stream.write_all(b"CLIENT>>> TERMINATE\n");
        let b_seen = b_reader.join().unwrap();
        if !held {
            self.problem("slow consumer: the sender was never held back".into());
        }
        let mut ledger = self.ledger.lock().unwrap();
        for (id, kind, port, partner, sent, seen) in [
            (a_id, Kind::Streamer, a.port, a.partner, sent, a_seen),
            (b_id, Kind::SlowReader, b.port, b.partner, 0, b_seen),
        ] {
            let side = Side {
                kind,
                port,
                partner,
                began,
                sent,
                seen,
            };
            ledger.file_side(id, "slow consumer", side);
        }
        self.chaos.slow_consumers.fetch_add(1, Ordering::SeqCst);
    }

    /// Two clients in one session, taken from the portal until two partner
    /// ports turn up. Ports taken in vain are given back as recorded
    /// sessions that leave at once (so any line that reaches them in that
    /// moment is counted). `None` if the portal runs out first.
    /// Each request comes from a fresh address, and its port is claimed
    /// from there.
    fn try_join_pair(&self) -> Option<(Peer, Peer)> {
        let server = &self.server;
        let mut held: Vec<(IpAddr, Assignment)> = Vec::new();
        let pair = loop {
            let from = self.sources.next();
            let assignment = match request_port_from(from, server.portal) {
                Ok(PortalAnswer::Assigned(assignment)) => assignment,
                Ok(PortalAnswer::Full) => {
                    self.ledger.lock().unwrap().full_answers += 1;
                    break None;
                }
                Err(_) => break None,
            };
            let partner = partner_port(server, assignment.port);
            if let Some(at) = held.iter().position(|(_, a)| a.port == partner) {
                break Some((held.swap_remove(at), (from, assignment)));
            }
            held.push((from, assignment));
        };
        for (from, assignment) in &held {
            self.give_back(*from, assignment);
        }
        let ((first_from, first), (second_from, second)) = pair?;
        let first = Peer::handshake_from(first_from, server.host(), &first);
        let second = Peer::handshake_from(second_from, server.host(), &second);
        let (Ok(mut a), Ok(b)) = (first, second) else {
            return None;
        };
        a.expect(&format!("SERVER{}>>> Partner {} connected", a.port, b.port));
        Some((a, b))
    }

    /// Claims a port and leaves at once, as a session of the ledger.
    fn give_back(&self, from: IpAddr, assignment: &Assignment) {
        let began = Instant::now();
        let Ok(mut peer) = Peer::handshake_from(from, self.server.host(), assignment) else {
            return; // lapsed meanwhile: it is free anyway
        };
        let id = self.new_id();
        let _ = peer.send_line(b"CLIENT>>> TERMINATE");
        let never = AtomicBool::new(false);
        let came = AtomicBool::new(false);
        let mut seen = read_session(
            peer.reader,
            peer.port,
            peer.partner,
            None,
            &never,
            &came,
            None,
        );
        if !seen.clean_end {
            seen.problems
                .push(format!("giving back {}: did not end cleanly", peer.port));
        }
        self.ledger.lock().unwrap().records.insert(
            id,
            Record {
                kind: Kind::GiveBack,
                port: peer.port,
                partner: peer.partner,
                began,
                ended: Instant::now(),
                sent: 0,
                garbage_sent: 0,
                seen,
            },
        );
    }

    /// The flat-out pair, from the start of the churn to its end: `writer`
    /// sends numbered lines of 500 to 1499 bytes in 64 KiB writes as fast as
    /// the server takes them, and `reader` reads and checks every one as it
    /// comes (and says a line of its own every 2 s). Then the writer leaves,
    /// and the reader after it.
    fn flat_out(&self, writer: Peer, reader: Peer) {
        in_the_background();
        let began = Instant::now();
        let (writer_id, reader_id) = (self.new_id(), self.new_id());
        let never = Arc::new(AtomicBool::new(false));
        let came = Arc::new(AtomicBool::new(true));
        let writer_hears = {
            let (never, came) = (never.clone(), came.clone());
            let (reader, me, partner) = (writer.reader, writer.port, writer.partner);
            thread::spawn(move || read_session(reader, me, partner, None, &never, &came, None))
        };
        let reader_hears = {
            // Reads of 64 KiB rather than the default 8 KiB: fewer system
            // calls, so the reader keeps pace.
            let buffered = if reader.reader.buffer().is_empty() {
                BufReader::with_capacity(64 << 10, reader.reader.into_inner())
            } else {
                reader.reader
            };
            let (me, partner) = (reader.port, reader.partner);
            thread::spawn(move || read_session(buffered, me, partner, None, &never, &came, None))
        };
        // The reader says a line every 2 s, as a client that mostly listens
        // would: silent, it would be timed out as idle (after 60 s, the
        // server's default).
        let reader_speaks = {
            let mut stream = reader.stream.try_clone().expect("clone socket");
            let (me, partner, deadline) = (reader.port, reader.partner, self.deadline);
            thread::spawn(move || {
                let mut said = 0;
                let mut next = Instant::now();
                loop {
                    // The reader's own pace.
                    thread::sleep(next.min(deadline).saturating_duration_since(Instant::now()));
                    if Instant::now() >= deadline {
                        return (said, None);
                    }
                    let mut line = soak_line(me, partner, reader_id, said, 32);
                    line.push(b'\n');
                    if let Err(e) = stream.write_all(&line) {
                        return (said, Some(e));
                    }
                    said += 1;
                    next += Duration::from_secs(2);
                }
            })
        };
        let (me, partner) = (writer.port, writer.partner);
        let mut stream = writer.stream;
        let mut sent = 0;
        let mut block = Vec::with_capacity(80 << 10);
        let mut failed = None;
        while failed.is_none() && Instant::now() < self.deadline {
            block.clear();
            let mut seq = sent;
            while block.len() < 64 << 10 {
                let len = 500 + (seq as usize * 61) % 1000;
                block.extend(soak_line(me, partner, writer_id, seq, len));
                block.push(b'\n');
                seq += 1;
            }
            match stream.write_all(&block) {
                Ok(()) => {
                    sent = seq;
                    self.streamed
                        .fetch_add(block.len() as u64, Ordering::Relaxed);
                }
                Err(e) => failed = Some(e),
            }
        }
        if failed.is_none()
            && let Err(e) = stream.write_all(b"CLIENT>>> TERMINATE\n")
        {
            failed = Some(e);
        }
        let mut writer_seen = writer_hears.join().expect("flat-out writer's reader");
        // The writer has gone: the reader leaves too, after everything.
        let (said, speaking_failed) = reader_speaks.join().expect("flat-out reader's voice");
        let mut reader_stream = reader.stream;
        let _ = reader_stream.write_all(b"CLIENT>>> TERMINATE\n");
        let mut reader_seen = reader_hears.join().expect("flat-out reader");
        if let Some(e) = failed {
            writer_seen
                .problems
                .push(format!("flat-out writer on {me}: write failed: {e}"));
        }
        if let Some(e) = speaking_failed {
            reader_seen
                .problems
                .push(format!("flat-out reader on {partner}: write failed: {e}"));
        }
        let mut ledger = self.ledger.lock().unwrap();
        for (id, port, partner, sent, seen) in [
            (writer_id, me, partner, sent, writer_seen),
            (reader_id, partner, me, said, reader_seen),
        ] {
            let kind = Kind::FlatOut;
            let side = Side {
                kind,
                port,
                partner,
                began,
                sent,
                seen,
            };
            ledger.file_side(id, "flat-out pair", side);
        }
    }

    /// The pinger pair, from the start of the churn to its end: every 10 ms
    /// `pinger` sends a numbered line and waits for `echo`'s numbered line in
    /// answer. Both sides check every line they read, like any other session
    /// of the ledger.
    fn pinger(&self, pinger: Peer, echo: Peer) -> Pings {
        let began = Instant::now();
        let (pinger_id, echo_id) = (self.new_id(), self.new_id());
        let (echo_port, echo_partner) = (echo.port, echo.partner);
        let echoing = thread::spawn(move || answer_every_line(echo, echo_id));
        let mut pings = Pings::default();
        let (me, partner) = (pinger.port, pinger.partner);
        let (mut stream, mut reader) = (pinger.stream, pinger.reader);
        let mut seen = Seen::default();
        let mut sent = 0u32;
        let mut line = Vec::new();
        let start = Instant::now();
        'pings: loop {
            let due = start + PING_EVERY * sent;
            if due >= self.deadline {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait); // the traffic's own pace, not a wait for a condition
                let late = Instant::now().saturating_duration_since(due);
                pings.woke_late.saturating_record(late.as_micros() as u64);
            }
            let mut ping = soak_line(me, partner, pinger_id, sent.into(), 16);
            ping.push(b'\n');
            let pinged = Instant::now();
            if let Err(e) = stream.write_all(&ping) {
                seen.problem(format!("pinger on {me}: ping {sent}: {e}"));
                break;
            }
            sent += 1;
            // The answer (after any notices).
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(_) if line.last() == Some(&b'\n') => {}
                    other => {
                        seen.problem(format!(
                            "pinger on {me}: no answer to ping {}: {other:?}",
                            sent - 1
                        ));
                        break 'pings;
                    }
                }
                line.pop();
                if seen.hear(&line, me, partner) == Heard::Chat {
                    break;
                }
            }
            pings
                .rtts
                .saturating_record(pinged.elapsed().as_micros() as u64);
        }
        if let Err(e) = stream.write_all(b"CLIENT>>> TERMINATE\n") {
            seen.problem(format!("pinger on {me}: leaving: {e}"));
        }
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    seen.clean_end = true;
                    break;
                }
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    seen.hear(&line, me, partner);
                }
                other => {
                    seen.problem(format!("pinger on {me}: leaving: {other:?}"));
                    break;
                }
            }
        }
        let (echo_sent, echo_seen) = echoing.join().expect("echo thread");
        let mut ledger = self.ledger.lock().unwrap();
        for (id, port, partner, sent, seen) in [
            (pinger_id, me, partner, u64::from(sent), seen),
            (echo_id, echo_port, echo_partner, echo_sent, echo_seen),
        ] {
            let kind = Kind::Pinger;
            let side = Side {
                kind,
                port,
                partner,
                began,
                sent,
                seen,
            };
            ledger.file_side(id, "pinger pair", side);
        }
        pings
    }

    /// The attacker, from [`ATTACKER`]: it asks the portal every 50 ms,
    /// claims every port it is given and holds the session for 1 to 4 s,
    /// reading whatever its partner sends (so the ledger accounts for those
    /// lines as for any other), then leaves. It counts the ports it holds.
    fn attacker(&self, seed: u64) {
        in_the_background();
        struct Held {
            id: u64,
            began: Instant,
            until: Instant,
            peer_port: u16,
            partner: u16,
            stream: TcpStream,
            hears: thread::JoinHandle<Seen>,
        }
        let leave = |held: Held| {
            let Held {
                id,
                began,
                peer_port,
                partner,
                mut stream,
                hears,
                ..
            } = held;
            let wrote = stream.write_all(b"CLIENT>>> TERMINATE\n");
            // Until the end of the stream: the server has let the port go.
            let mut seen = hears.join().expect("attacker's reader");
            if let Err(e) = wrote {
                seen.problems
                    .push(format!("attacker on {peer_port}: leaving: {e}"));
            }
            if !seen.clean_end {
                seen.problems
                    .push(format!("attacker on {peer_port}: did not end cleanly"));
            }
            self.ledger.lock().unwrap().records.insert(
                id,
                Record {
                    kind: Kind::Attacker,
                    port: peer_port,
                    partner,
                    began,
                    ended: Instant::now(),
                    sent: 0,
                    garbage_sent: 0,
                    seen,
                },
            );
        };
        let attack = &self.attack;
        let mut rng = Rng::new(seed);
        let mut held: Vec<Held> = Vec::new();
        let start = Instant::now();
        for n in 0u32.. {
            let due = start + ATTACK_EVERY * n;
            let over = due >= self.deadline;
            let mut i = 0;
            while i < held.len() {
                if over || held[i].until <= Instant::now() {
                    leave(held.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if over {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait); // the attacker's pace
            }
            attack.requests.fetch_add(1, Ordering::SeqCst);
            let assignment = match request_port_from(ATTACKER, self.server.portal) {
                Ok(PortalAnswer::Assigned(assignment)) => assignment,
                Ok(PortalAnswer::Full) => {
                    attack.full.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                Err(e) => {
                    self.problem(format!("attacker: {e}"));
                    continue;
                }
            };
            attack.given.fetch_add(1, Ordering::SeqCst);
            // Held from the portal's answer: the sessions, and this one.
            attack
                .max_held
                .fetch_max(held.len() as u64 + 1, Ordering::SeqCst);
            let began = Instant::now();
            let Ok(peer) = Peer::handshake_from(ATTACKER, self.server.host(), &assignment) else {
                attack.refused.fetch_add(1, Ordering::SeqCst);
                continue;
            };
            attack.claimed.fetch_add(1, Ordering::SeqCst);
            let id = self.new_id();
            let (peer_port, partner) = (peer.port, peer.partner);
            let reader = peer.reader;
            let hears = thread::spawn(move || {
                let (never, came) = (AtomicBool::new(false), AtomicBool::new(false));
                read_session(reader, peer_port, partner, None, &never, &came, None)
            });
            held.push(Held {
                id,
                began,
                until: Instant::now() + Duration::from_millis(1000 + rng.below(3000)),
                peer_port,
                partner,
                stream: peer.stream,
                hears,
            });
        }
    }

    /// One of the attacker's stray connections, again and again until the
    /// churn ends: it connects to a worker port from [`ATTACKER`] and never
    /// says a word. The server must tell it `Handshake timeout` at the
    /// deadline, or refuse it at once if the attacker has too many such
    /// connections already.
    fn stray(&self, seed: u64) {
        in_the_background();
        let attack = &self.attack;
        let mut rng = Rng::new(seed);
        while Instant::now() < self.deadline {
            let addr = self.worker(&mut rng);
            let port = addr.port();
            let mut stream = match connect_from(ATTACKER, addr) {
                Ok(stream) => stream,
                Err(e) => {
                    self.problem(format!("stray on {port}: {e}"));
                    thread::sleep(Duration::from_millis(100)); // try again later
                    continue;
                }
            };
            let mut answer = Vec::new();
            let read = stream.read_to_end(&mut answer);
            let timed_out = format!("SERVER{port}>>> Handshake timeout\n");
            let refused = format!("SERVER{port}>>> Wrong handshake passcode\n");
            match read {
                Ok(_) if answer == timed_out.as_bytes() => {
                    attack.strays_timed_out.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) if answer == refused.as_bytes() => {
                    attack.strays_refused.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(100)); // the attacker's pace
                }
                other => self.problem(format!(
                    "stray on {port}: {other:?} after {:?}",
                    String::from_utf8_lossy(&answer)
                )),
            }
        }
    }

    fn problem(&self, problem: String) {
        self.chaos.problems.lock().unwrap().push(problem);
    }
}

/// What the pinger measured, in microseconds.
struct Pings {
    /// Each round trip, from the ping's write to the answer's last byte.
    rtts: Histogram<u64>,
    /// How late the pinger's thread woke from each sleep to its next ping:
    /// no server involved, so this is what the machine's scheduling alone
    /// adds (and a round trip waits for two threads to wake, the echo's and
    /// the pinger's).
    woke_late: Histogram<u64>,
}

impl Default for Pings {
    fn default() -> Self {
        // 1 µs to a minute, three significant digits.
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        Pings {
            rtts: histogram(),
            woke_late: histogram(),
        }
    }
}

/// The pinger's partner: answers every chat line with a numbered line of
/// its own (16 bytes of payload, like the ping), and leaves once the pinger
/// has left. Returns the lines it sent and what it saw.
fn answer_every_line(echo: Peer, id: u64) -> (u64, Seen) {
    let (me, partner) = (echo.port, echo.partner);
    let (mut stream, mut reader) = (echo.stream, echo.reader);
    let mut seen = Seen::default();
    let mut sent = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                seen.clean_end = true;
                break;
            }
            Ok(_) if line.last() == Some(&b'\n') => {}
            other => {
                seen.problem(format!("echo on {me}: {other:?} after {sent} answers"));
                break;
            }
        }
        line.pop();
        let answer = match seen.hear(&line, me, partner) {
            Heard::Chat => {
                let mut answer = soak_line(me, partner, id, sent, 16);
                answer.push(b'\n');
                answer
            }
            Heard::PartnerLeft => b"CLIENT>>> TERMINATE\n".to_vec(),
            Heard::PartnerCame | Heard::Other => continue,
        };
        if let Err(e) = stream.write_all(&answer) {
            seen.problem(format!("echo on {me}: {e} after {sent} answers"));
            break;
        }
        if !answer.starts_with(b"CLIENT") {
            sent += 1;
        }
    }
    (sent, seen)
}

fn garbage(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => {
            let len = 1 + rng.below(2000) as usize;
            rng.bytes(len)
        }
        1 => vec![0; 1 + rng.below(300) as usize],
        2 => b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc".to_vec(),
        3 => vec![b'\r'; 200],
        _ => vec![b'x'; 1 << 20],
    }
}

/// One byte every 500 ms until the server closes; it must say why, after
/// the handshake deadline and not much later.
fn slowloris(addr: SocketAddr) -> Result<(), String> {
    let began = Instant::now();
    let port = addr.port();
    let mut stream = connect(addr).map_err(|e| format!("slowloris connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0; 128];
    loop {
        if began.elapsed() > HANDSHAKE_TIMEOUT + Duration::from_secs(20) {
            return Err(format!("slowloris on {port}: never closed"));
        }
        if received.is_empty() {
            let _ = stream.write_all(b"s");
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("slowloris on {port}: {e}")),
        }
    }
    let took = began.elapsed();
    let want = format!("SERVER{port}>>> Handshake timeout\n");
    if received != want.as_bytes() {
        return Err(format!(
            "slowloris on {port}: got {:?}",
            String::from_utf8_lossy(&received)
        ));
    }
    if took < HANDSHAKE_TIMEOUT {
        return Err(format!("slowloris on {port}: cut off early, {took:?}"));
    }
    Ok(())
}

/// The ledger's verdict on the lines.
#[derive(Debug, Default)]
struct Audit {
    /// Lines sent: numbered chat lines and tagged garbage lines.
    sent: u64,
    /// Lines received by the partner they were sent to.
    received: u64,
    /// "Not delivered" notices (the partner was not there).
    not_delivered: u64,
    /// Lines refused for a bare `\r`.
    refused_cr: u64,
    /// Lines gone with a reset: sent by a resetter, or to one.
    with_resets: u64,
    /// Lines unaccounted for where nothing excuses it.
    lost: u64,
    /// Lines that reached a client they were not sent to.
    misrouted: u64,
    /// Lines that arrived damaged or out of order.
    damaged: u64,
    problems: Vec<String>,
    /// Problems beyond those each reader kept.
    more_problems: u64,
}

/// Checks the ledger: every line accounted for, none twice, none misrouted
/// (the readers checked routing and order line by line).
fn audit(ledger: &Ledger) -> Audit {
    let mut audit = Audit::default();
    // Who received what from whom.
    let mut runs: HashMap<u64, Vec<(u64, u64, u64)>> = HashMap::new();
    let mut garbage: HashMap<u64, u64> = HashMap::new();
    for record in ledger.records.values() {
        audit.problems.extend(record.seen.problems.iter().cloned());
        audit.more_problems += record.seen.more_problems;
        audit.misrouted += record.seen.misrouted;
        audit.damaged += record.seen.damaged;
        for (&from, &run) in &record.seen.runs {
            runs.entry(from).or_default().push(run);
        }
        for (&from, &count) in &record.seen.garbage_from {
            *garbage.entry(from).or_default() += count;
        }
    }
    for (&id, sender) in &ledger.records {
        let mut got = runs.remove(&id).unwrap_or_default();
        got.sort_unstable();
        for pair in got.windows(2) {
            if pair[1].0 <= pair[0].1 {
                audit
                    .problems
                    .push(format!("session {id}: lines delivered twice: {pair:?}"));
            }
        }
        if let Some(last) = got.last()
            && last.1 >= sender.sent
        {
            audit
                .problems
                .push(format!("session {id}: line {} was never sent", last.1));
        }
        let received =
            got.iter().map(|run| run.2).sum::<u64>() + garbage.remove(&id).unwrap_or_default();
        let sent = sender.sent + sender.garbage_sent;
        let accounted = received + sender.seen.not_delivered + sender.seen.refused_cr;
        audit.sent += sent;
        audit.received += received;
        audit.not_delivered += sender.seen.not_delivered;
        audit.refused_cr += sender.seen.refused_cr;
        // A resetter paired with this sender may have taken lines with it.
        let beside_a_resetter = ledger.records.values().any(|other| {
            other.kind == Kind::Resetter
                && other.port == sender.partner
                && other.began <= sender.ended
                && sender.began <= other.ended
        });
        if accounted > sent {
            audit.problems.push(format!(
                "session {id}: {accounted} lines accounted, {sent} sent"
            ));
        } else if sender.kind == Kind::Resetter || beside_a_resetter {
            audit.with_resets += sent - accounted;
        } else if accounted < sent {
            audit.problems.push(format!(
                "session {id} ({:?} on {}): sent {sent}, received {received}, not delivered {}",
                sender.kind, sender.port, sender.seen.not_delivered
            ));
            audit.lost += sent - accounted;
        }
    }
    for id in runs.keys().chain(garbage.keys()) {
        audit
            .problems
            .push(format!("lines from an unknown session {id}"));
    }
    audit
}

/// The port paired with worker port `port`.
fn partner_port(server: &TestServer, port: u16) -> u16 {
    let index = server.workers.iter().position(|w| w.port() == port);
    server.workers[index.expect("a worker port") ^ 1].port()
}

/// Two clients in one session, once the churn is over: ports are taken
/// from the portal (each from a fresh address) until two partners turn up,
/// and the others given back.
fn join_pair(server: &TestServer, sources: &Sources) -> (Peer, Peer) {
    let mut held: Vec<(IpAddr, Assignment)> = Vec::new();
    let (first, second) = loop {
        let from = sources.next();
        let assignment = match request_port_from(from, server.portal).expect("the portal answers") {
            PortalAnswer::Assigned(assignment) => assignment,
            PortalAnswer::Full => panic!("no two partner ports free"),
        };
        let partner = partner_port(server, assignment.port);
        if let Some(at) = held.iter().position(|(_, a)| a.port == partner) {
            break (held.swap_remove(at), (from, assignment));
        }
        held.push((from, assignment));
    };
    for (from, assignment) in &held {
        release_from(*from, server.host(), assignment).expect("give a port back");
    }
    let mut a = Peer::handshake_from(first.0, server.host(), &first.1).expect("handshake");
    let b = Peer::handshake_from(second.0, server.host(), &second.1).expect("handshake");
    a.expect(&format!("SERVER{}>>> Partner {} connected", a.port, b.port));
    (a, b)
}

/// Lowers the calling thread's scheduling priority to `SOAK_LOAD_NICE`
/// (default 10; 0 leaves it as it is); the threads it starts inherit it.
///
/// Every thread that makes load calls this: the client threads, the chaos
/// thread, the flat-out pair and the attacker. Their own work (making and
/// checking over 100 MiB of lines a second) keeps both cores of a small
/// machine busy, and a woken server, pinger or echo would then queue for a
/// core behind some forty threads of the test: the pinger would measure
/// the test's own wait for the CPU rather than the server's loop. (With
/// them all at the same priority, a 10 s run had the pinger's p99 at 17 ms
/// while the server used a quarter of one core.) Real clients run on other
/// machines. At nice 10 the load still gets every moment of CPU that nobody
/// else wants; the server, the pinger and its echo, at the test's own
/// priority, come first, and other processes on the machine compete as
/// they would.
fn in_the_background() {
    let nice = std::env::var("SOAK_LOAD_NICE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    if nice == 0 {
        return;
    }
    // SAFETY: gettid has no preconditions; setpriority changes only the
    // niceness of the thread it names, this one.
    let status = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    assert_eq!(
        status,
        0,
        "setpriority: {}",
        std::io::Error::last_os_error()
    );
}

fn soak_secs() -> u64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

#[test]
#[ignore = "soak: cargo test --release --test soak -- --ignored --nocapture (SOAK_SECS, default 60)"]
fn soak() {
    let secs = soak_secs();
    let nofile = nofile_prefix(FD_LIMIT as u32);
    let prefix: Vec<&str> = EAGER_TRIM
        .into_iter()
        .chain(nofile.iter().map(String::as_str))
        .collect();
    let workers = WORKERS.to_string();
    let max_per_ip = MAX_PER_IP.to_string();
    let mut server = TestServer::start_with_prefix(
        &prefix,
        &[
            "--workers",
            &workers,
            "--handshake-timeout",
            "1",
            "--assign-timeout",
            "2",
            "--max-per-ip",
            &max_per_ip,
        ],
    );
    let pid = server.pid();
    let start_fds = settled_fds(&server);
    let start_rss = rss_kib(pid);
    let sampler = Sampler::start(pid, Duration::from_millis(20));
    let cpu_start = common::cpu_ticks(pid);
    let load_start = load_average();
    let began = Instant::now();
    println!(
        "soak: {secs} s, server pid {pid}, {start_fds} fds, {start_rss} KiB at the start; \
         load average {load_start}"
    );

    let soak = Soak {
        server,
        deadline: began + Duration::from_secs(secs),
        ledger: Mutex::new(Ledger::default()),
        chaos: Chaos::default(),
        sources: Sources::default(),
        attack: Attack::default(),
        streamed: AtomicU64::new(0),
    };
    let flat_out_pair = soak
        .try_join_pair()
        .expect("a pair for the flat-out stream");
    let pinger_pair = soak.try_join_pair().expect("a pair for the pinger");
    let mut quarters = Vec::new();
    let mut pings = Pings::default();
    let mut load_end = String::new();
    thread::scope(|scope| {
        let marks = scope.spawn(|| {
            (1..=4)
                .map(|q| {
                    let mark = began + Duration::from_secs(secs) * q / 4;
                    thread::sleep(mark.saturating_duration_since(Instant::now())); // a timetable
                    try_rss(pid)
                })
                .collect::<Vec<_>>()
        });
        let soak = &soak;
        scope.spawn(move || soak.flat_out(flat_out_pair.0, flat_out_pair.1));
        let pinging = scope.spawn(move || soak.pinger(pinger_pair.0, pinger_pair.1));
        for n in 0..CLIENT_THREADS {
            scope.spawn(move || soak.client_thread(n));
        }
        scope.spawn(|| soak.chaos_thread(0xC4A05));
        scope.spawn(|| soak.attacker(0xA77AC));
        for n in 0..STRAYS {
            scope.spawn(move || soak.stray(0x57A7 + n as u64));
        }
        quarters = marks.join().unwrap();
        load_end = load_average();
        pings = pinging.join().unwrap();
    });
    let churn = began.elapsed();
    let Soak {
        server: churned,
        ledger,
        chaos,
        sources,
        attack,
        streamed,
        ..
    } = soak;
    server = churned;
    let ledger = ledger.into_inner().unwrap();

    // Back where it started (each port asked for from an address of its
    // own: the limit is per address).
    let port_sources: Vec<IpAddr> = (0..WORKERS).map(|_| sources.next()).collect();
    let ports_free = wait_every_port_free_from(&server, &port_sources, Duration::from_secs(10));
    let fds_back = wait_until(Duration::from_secs(10), || fd_count(pid) == start_fds);
    let end_fds = fd_count(pid);
    let end_rss = rss_kib(pid);
    let (mut last, mut other) = join_pair(&server, &sources);
    last.send_line(b"still answering").unwrap();
    other.expect("still answering");
    for mut peer in [last, other] {
        peer.send_line(b"CLIENT>>> TERMINATE").unwrap();
        while !matches!(peer.next(), Ok(common::Got::Eof) | Err(_)) {}
    }
    let cpu_ticks = common::cpu_ticks(pid) - cpu_start;
    let (peak_rss, peak_fds) = sampler.stop();

    // Signals during load: two pairs streaming, then SIGTERM.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let (a, b) = join_pair(&server, &sources);
        for peer in [a, b] {
            let pump = Pump::start(
                &peer.stream,
                PumpPlan {
                    from: peer.port,
                    to: peer.partner,
                    len: |seq| (seq as usize * 61) % 1500,
                    lines: None,
                    end: PumpEnd::Nothing,
                },
            );
            let drain = Drain::start(peer.reader, peer.port, peer.partner);
            streams.push((peer.port, peer.stream, pump, drain));
        }
    }
    for (port, _, _, drain) in &streams {
        assert!(
            drain.wait_for(Duration::from_secs(10), |r| r.chat >= 100),
            "port {port}: the final stream never got going"
        );
    }
    let exit = common::watch_exit(pid, Duration::from_secs(10));
    let signalled = Instant::now();
    server.signal("TERM");
    let mut signal_problems = Vec::new();
    for (port, stream, pump, drain) in streams {
        drain.wait_for(Duration::from_secs(10), |r| r.end.is_some());
        pump.stop();
        let _ = stream.shutdown(Shutdown::Both);
        let _ = pump.join();
        let log = drain.join();
        let notice = vec![(log.chat, "SERVER>>> Server shutting down".to_string())];
        if log.end != Some(End::Eof) || log.notices != notice || !log.bad.is_empty() {
            signal_problems.push(format!(
                "port {port}: end {:?}, notices {:?}, bad {:?}",
                log.end, log.notices, log.bad
            ));
        }
    }
    let status = server.wait_exit(Duration::from_secs(10));
    let exit_after = exit
        .join()
        .unwrap()
        .map_or(Duration::MAX, |at| at.duration_since(signalled));

    // The summary.
    let audit = audit(&ledger);
    let mut problems = audit.problems;
    problems.extend(chaos.problems.into_inner().unwrap());
    problems.extend(chaos.slowloris_bad.into_inner().unwrap());
    problems.extend(signal_problems);
    let mut kinds: HashMap<Kind, u64> = HashMap::new();
    for record in ledger.records.values() {
        *kinds.entry(record.kind).or_default() += 1;
    }
    let kind = |k| kinds.get(&k).copied().unwrap_or(0);
    let count = |n: &AtomicU64| n.load(Ordering::SeqCst);
    let sessions = ledger.records.len() as u64;
    let faults = kind(Kind::SlowReader)
        + kind(Kind::HalfCloser)
        + kind(Kind::Resetter)
        + kind(Kind::Garbage)
        + count(&chaos.slowloris)
        + count(&chaos.portal_garbage)
        + count(&chaos.worker_garbage)
        + count(&chaos.floods)
        + count(&chaos.slow_consumers)
        + 1;
    let status_text = status.map_or("still running".to_string(), |s| s.to_string());
    let quarters: Vec<String> = quarters
        .iter()
        .map(|q| q.map_or("-".into(), |kib| kib.to_string()))
        .collect();
    let flat_out_lines: u64 = ledger
        .records
        .values()
        .filter(|r| r.kind == Kind::FlatOut)
        .map(|r| r.sent)
        .sum();
    let streamed_mib = streamed.into_inner() as f64 / f64::from(1 << 20);
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let rtts = &pings.rtts;
    let (p50, p99, worst) = (
        rtts.value_at_quantile(0.50),
        rtts.value_at_quantile(0.99),
        rtts.max(),
    );
    let late = &pings.woke_late;
    let pings_due = secs * 1000 / PING_EVERY.as_millis() as u64;
    let max_held = count(&attack.max_held);
    let rows = [
        (
            "duration",
            format!("{secs} s of churn, {churn:.1?} with the last sessions"),
        ),
        (
            "sessions",
            format!(
                "{sessions}: chatter {}, streamer {}, slow reader {}, half-close {}, \
                 reset {}, garbage {}, port given back at once {}, flat-out pair {}, \
                 pinger pair {}, attacker {}",
                kind(Kind::Chatter),
                kind(Kind::Streamer),
                kind(Kind::SlowReader),
                kind(Kind::HalfCloser),
                kind(Kind::Resetter),
                kind(Kind::Garbage),
                kind(Kind::GiveBack),
                kind(Kind::FlatOut),
                kind(Kind::Pinger),
                kind(Kind::Attacker),
            ),
        ),
        (
            "portal",
            format!(
                "{} \"full\" answers, {} handshakes refused after a lapse",
                ledger.full_answers, ledger.refused_joins
            ),
        ),
        (
            "lines",
            format!(
                "{} sent: {} received, {} \"not delivered\" (no partner), {} refused for a \
                 bare \\r, {} gone with a reset",
                audit.sent,
                audit.received,
                audit.not_delivered,
                audit.refused_cr,
                audit.with_resets
            ),
        ),
        (
            "lines lost or misrouted",
            format!(
                "{} lost, {} misrouted, {} damaged or out of order (problems found: {})",
                audit.lost,
                audit.misrouted,
                audit.damaged,
                problems.len() as u64 + audit.more_problems
            ),
        ),
        (
            "flat-out pair",
            format!(
                "{streamed_mib:.0} MiB in {flat_out_lines} lines ({:.0} MiB/s), every line checked",
                streamed_mib / churn.as_secs_f64()
            ),
        ),
        (
            "pinger, every 10 ms",
            format!(
                "{} round trips ({pings_due} due): p50 {}, p99 {}, max {}; its thread woke \
                 from sleep late by p50 {}, p99 {}, max {}",
                rtts.len(),
                ms(p50),
                ms(p99),
                ms(worst),
                ms(late.value_at_quantile(0.50)),
                ms(late.value_at_quantile(0.99)),
                ms(late.max()),
            ),
        ),
        (
            "attacker on 127.0.0.2",
            format!(
                "{} portal requests: {} ports given, {} claimed and held 1–4 s ({} handshakes \
                 refused), {} \"full\"; at most {max_held} held at once (--max-per-ip \
                 {MAX_PER_IP}); {STRAYS} strays: {} timed out at the handshake deadline, {} \
                 refused at once",
                count(&attack.requests),
                count(&attack.given),
                count(&attack.claimed),
                count(&attack.refused),
                count(&attack.full),
                count(&attack.strays_timed_out),
                count(&attack.strays_refused),
            ),
        ),
        (
            "faults injected",
            format!(
                "{faults}: slow readers {}, half-closes {}, resets {} ({} with unread input), \
                 garbage sessions {}, slow consumers held back {} ({} skipped: no free \
                 pair), slowloris {}, portal garbage {}, pre-handshake garbage {}, \
                 descriptor floods {} ({} ms out of descriptors), SIGTERM under load 1",
                kind(Kind::SlowReader),
                kind(Kind::HalfCloser),
                kind(Kind::Resetter),
                count(&chaos.resets),
                kind(Kind::Garbage),
                count(&chaos.slow_consumers),
                count(&chaos.slow_consumer_skipped),
                count(&chaos.slowloris),
                count(&chaos.portal_garbage),
                count(&chaos.worker_garbage),
                count(&chaos.floods),
                count(&chaos.flood_held_ms),
            ),
        ),
        ("peak RSS", format!("{peak_rss} KiB")),
        ("peak fds", format!("{peak_fds} (limit {FD_LIMIT})")),
        (
            "RSS start → end",
            format!(
                "{start_rss} KiB → {end_rss} KiB (at each quarter: {} KiB)",
                quarters.join(", ")
            ),
        ),
        ("fds start → end", format!("{start_fds} → {end_fds}")),
        (
            "server CPU",
            format!(
                "{:.1} s",
                cpu_ticks as f64 / common::ticks_per_second() as f64
            ),
        ),
        (
            "all ports free at the end",
            format!("{}", ports_free.is_ok()),
        ),
        (
            "SIGTERM under load",
            format!("{status_text}, {exit_after:.2?} after the signal"),
        ),
        (
            "machine load",
            format!(
                "1-minute load average {load_start} at the start, {load_end} at the end of the \
                 churn ({} cores)",
                thread::available_parallelism().map_or(0, |n| n.get())
            ),
        ),
    ];
    println!("\n| soak | |\n|---|---|");
    for (name, value) in &rows {
        println!("| {name} | {value} |");
    }
    for problem in problems.iter().take(60) {
        println!("problem: {problem}");
    }

    ports_free.unwrap();
    assert!(
        fds_back,
        "descriptors: {start_fds} at the start, {end_fds} at the end"
    );
    assert!(
        end_rss <= start_rss + RSS_ALLOWANCE_KIB,
        "memory: {start_rss} KiB at the start, {end_rss} KiB at the end"
    );
    assert!(
        problems.is_empty(),
        "{} problems, the first: {}",
        problems.len(),
        problems[0]
    );
    assert_eq!(audit.lost, 0, "lines lost");
    assert_eq!(audit.misrouted, 0, "lines misrouted");
    assert_eq!(audit.damaged, 0, "lines damaged or out of order");
    assert!(status.is_some_and(|s| s.success()), "exit: {status_text}");
    assert!(
        exit_after <= Duration::from_millis(3500),
        "exit took {exit_after:?}"
    );
    // The pinger's tail, as tests/fairness.rs demands it beside one
    // flat-out pair alone.
    assert!(
        rtts.len() * 10 >= pings_due * 9,
        "{} round trips of {pings_due}",
        rtts.len()
    );
    assert!(
        Duration::from_micros(p99) < PING_P99_LIMIT,
        "pinger p99 {}",
        ms(p99)
    );
    assert!(
        Duration::from_micros(worst) < PING_WORST_LIMIT,
        "pinger's worst round trip {}",
        ms(worst)
    );
    assert!(count(&attack.given) > 0, "the attacker never got a port");
    assert!(
        max_held <= MAX_PER_IP as u64,
        "the attacker held {max_held} ports at once (limit {MAX_PER_IP})"
    );
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

//! The protocol end to end on every wire: one table of cases, each a
//! function of the [`Wire`], run against the real `chat-server --wire
//! <name>` over loopback.
//!
//! Where both wires follow the same rule, a case runs on both, each wire in
//! a thread of its own named after it (so a failure says which wire, and the
//! two do not wait for each other's timeouts). Where the rules differ, the
//! table says which wire a case is for, or the case runs on both and
//! expects each wire's own rule; either way the case says why.
//!
//! The client here is deliberately raw: it writes exact bytes and frames
//! with the library's own codecs ([`Codec::encode`], [`Inbox`]), so a case
//! can send half a message, a bad prefix or one byte at a time. Every read
//! has a timeout, so a missing answer fails instead of hanging; deadline
//! checks have a lower bound (the server may never act early) and a generous
//! upper bound (the machine is shared).

mod common;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{TestServer, wait_until};
use portal_chat::client::{Assignment, PortalAnswer, parse_portal_reply};
use portal_chat::core::PASSCODE_LEN;
use portal_chat::wire::{Codec, Inbox, Wire};

/// The longest any single read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const TERMINATE: &str = "CLIENT>>> TERMINATE";

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// Both wires, where the rule is the same.
const BOTH: &[Wire] = &Wire::ALL;

/// Only the .NET wire: the rule is about its length prefix.
const DOTNET: &[Wire] = &[Wire::Dotnet];

/// One `#[test]` per case, named after it, that runs the case on each of
/// its wires.
macro_rules! table {
    ($($(#[$meta:meta])* $case:ident: $wires:ident;)*) => {
        mod table {
            $(
                $(#[$meta])*
                #[test]
                fn $case() {
                    super::run_case(super::$case, super::$wires);
                }
            )*
        }
    };
}

table! {
    portal_answers_one_message_then_closes: BOTH;
    a_full_portal_says_so_until_a_port_is_free: BOTH;
    both_handshake_forms_are_accepted: BOTH;
    a_wrong_code_is_refused_and_the_holder_is_not_locked_out: BOTH;
    strays_on_free_occupied_and_reserved_ports_answer_like_a_wrong_code: BOTH;
    an_unused_reservation_lapses_and_its_code_dies: BOTH;
    an_idle_client_times_out_even_while_receiving: BOTH;
    terminate_frees_the_port_and_the_partner_is_told: BOTH;
    workers_pair_without_crosstalk: BOTH;
    messages_beginning_with_server_are_refused: BOTH;
    a_message_over_the_limit_ends_the_session: BOTH;
    a_malformed_prefix_is_refused: DOTNET;
    a_dotnet_message_may_hold_any_byte: DOTNET;
    messages_written_a_byte_at_a_time_arrive_whole: BOTH;
    a_trickle_does_not_extend_the_handshake_deadline: BOTH;
    twenty_thousand_messages_reach_a_late_reader_in_order: BOTH;
    a_reset_frees_the_port_and_the_partner_is_told: BOTH;
    sigterm_tells_every_client_and_exits_zero: BOTH;
    end_of_stream_in_the_middle_of_a_message: BOTH;
}

/// Runs `case` on each wire at once, each in a thread named after its wire,
/// and fails naming the wires it failed on (the panics above say why).
fn run_case(case: fn(Wire), wires: &[Wire]) {
    let failed: Vec<Wire> = thread::scope(|scope| {
        let runs: Vec<_> = wires
            .iter()
            .map(|&wire| {
                let run = thread::Builder::new()
                    .name(format!("wire {wire}"))
                    .spawn_scoped(scope, move || case(wire))
                    .expect("start a thread");
                (wire, run)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(wire, run)| run.join().is_err().then_some(wire))
            .collect()
    });
    assert!(failed.is_empty(), "failed on wire(s) {failed:?}");
}

// ---------------------------------------------------------------------------
// A raw client for either wire
// ---------------------------------------------------------------------------

/// What the server sent next.
#[derive(Clone, PartialEq, Eq)]
enum Got {
    /// One whole message, its text as sent.
    Msg(Vec<u8>),
    /// The end of the stream after whole messages.
    Eof,
    /// The end of the stream after this many bytes of a message.
    Partial(usize),
}

impl Got {
    fn msg(text: impl AsRef<[u8]>) -> Got {
        Got::Msg(text.as_ref().to_vec())
    }
}

impl fmt::Debug for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Msg(text) => write!(f, "Msg({:?})", String::from_utf8_lossy(text)),
            Got::Eof => f.write_str("Eof"),
            Got::Partial(n) => write!(f, "Partial({n} bytes)"),
        }
    }
}

/// A connection to one of the server's ports, speaking `wire`.
struct Client {
    wire: Wire,
    /// The server's port: the worker port held, or the portal's.
    port: u16,
    /// For a client that joined, its partner's port and whether the partner
    /// was there at the handshake.
    partner: u16,
    partner_present: bool,
    stream: TcpStream,
    inbox: Inbox,
    eof: bool,
}

impl Client {
    fn connect(addr: SocketAddr, wire: Wire) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("{wire}: connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        // Every write its own segment, so "a byte at a time" is just that.
        stream.set_nodelay(true).unwrap();
        Client {
            wire,
            port: addr.port(),
            partner: 0,
            partner_present: false,
            stream,
            inbox: Inbox::new(),
            eof: false,
        }
    }

    /// Writes `bytes` exactly as they are.
    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("{} port {}: send: {e}", self.wire, self.port));
    }

    /// Writes `bytes` one at a time, each in a segment of its own.
    fn send_bytewise(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.send_raw(&[byte]);
            thread::sleep(Duration::from_millis(1)); // the trickle's pace
        }
    }

    /// Writes one message, framed for the wire.
    fn send(&mut self, text: impl AsRef<[u8]>) {
        let framed = frame(self.wire, text.as_ref());
        self.send_raw(&framed);
    }

    /// A second handle on the socket that frames messages, for a thread.
    fn sender(&self) -> Sender {
        Sender {
            wire: self.wire,
            stream: self.stream.try_clone().expect("clone the socket"),
        }
    }

    /// The next message, or the end of the stream. A read timeout fails.
    fn next(&mut self) -> Got {
        loop {
            match self.inbox.next_message(&self.wire, usize::MAX) {
                Ok(Some((text, _))) => return Got::Msg(self.inbox.get(text).to_vec()),
                Ok(None) => {}
                Err(e) => panic!(
                    "{} port {}: undecodable output: {e:?}",
                    self.wire, self.port
                ),
            }
            if self.eof {
                return match self.inbox.pending() {
                    0 => Got::Eof,
                    n => Got::Partial(n),
                };
            }
            let mut buf = [0u8; 64 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbox.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{} port {}: read: {e}", self.wire, self.port),
            }
        }
    }

    /// Fails unless the next message is `want`.
    fn expect(&mut self, want: impl AsRef<[u8]>) {
        let got = self.next();
        assert_eq!(got, Got::msg(&want), "{} port {}", self.wire, self.port);
    }

    /// Fails unless the server closes now.
    fn expect_eof(&mut self) {
        let got = self.next();
        assert_eq!(
            got,
            Got::Eof,
            "{} port {}: expected the close",
            self.wire,
            self.port
        );
    }

    /// Fails unless the server closes now, after at most a goodbye: what a
    /// client that chose to leave gets.
    fn expect_closed_after_leaving(&mut self) {
        let bye = format!("SERVER{}>>> Bye", self.port);
        let mut got = self.next();
        if got == Got::msg(&bye) {
            got = self.next();
        }
        assert_eq!(
            got,
            Got::Eof,
            "{} port {}: expected the close",
            self.wire,
            self.port
        );
    }

    /// Every message until the server closes, as text.
    fn rest(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.next() {
                Got::Msg(text) => rest.push(String::from_utf8_lossy(&text).into_owned()),
                Got::Eof => return rest,
                partial => panic!(
                    "{} port {}: {partial:?} after {rest:?}",
                    self.wire, self.port
                ),
            }
        }
    }
}

/// A clone of a client's socket that sends framed messages.
struct Sender {
    wire: Wire,
    stream: TcpStream,
}

impl Sender {
    fn send(&mut self, text: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame(self.wire, text))
    }
}

fn frame(wire: Wire, text: &[u8]) -> Vec<u8> {
    let mut framed = Vec::new();
    wire.encode(text, &mut framed);
    framed
}

// ---------------------------------------------------------------------------
// Protocol helpers
// ---------------------------------------------------------------------------

/// Starts the server speaking `wire`, with `args` after it.
fn start(wire: Wire, args: &[&str]) -> TestServer {
    let mut all = vec!["--wire", wire.name()];
    all.extend_from_slice(args);
    TestServer::start(&all)
}

/// A server on `wire` with `workers` ports and deadlines (30 s) no test
/// comes near, so that every answer a test waits for comes at once, not at
/// a timeout.
fn start_unhurried(wire: Wire, workers: usize) -> TestServer {
    let workers = workers.to_string();
    start(
        wire,
        &[
            "--workers",
            &workers,
            "--assign-timeout",
            "30",
            "--handshake-timeout",
            "30",
        ],
    )
}

/// The port of worker `n` (1-based, as on the server's stdout).
fn worker(server: &TestServer, n: usize) -> u16 {
    server.workers[n - 1].port()
}

fn connect_worker(server: &TestServer, wire: Wire, port: u16) -> Client {
    Client::connect(SocketAddr::new(server.host(), port), wire)
}

/// One portal exchange: exactly one message, then the close.
fn portal_text(server: &TestServer, wire: Wire) -> String {
    let mut portal = Client::connect(server.portal, wire);
    let got = portal.next();
    let Got::Msg(text) = got else {
        panic!("{wire}: the portal closed without answering: {got:?}");
    };
    portal.expect_eof();
    String::from_utf8(text).expect("the portal answers in UTF-8")
}

fn ask_portal(server: &TestServer, wire: Wire) -> PortalAnswer {
    let text = portal_text(server, wire);
    parse_portal_reply(&text).unwrap_or_else(|| panic!("{wire}: not a portal reply: {text:?}"))
}

fn assign(server: &TestServer, wire: Wire) -> Assignment {
    match ask_portal(server, wire) {
        PortalAnswer::Assigned(assignment) => assignment,
        PortalAnswer::Full => panic!("{wire}: the portal is full"),
    }
}

/// The handshake message in the original client's form.
fn prefixed(assignment: &Assignment) -> String {
    format!(
        "CLIENT{}>>>HandshakeCode={}",
        assignment.port, assignment.code
    )
}

/// Connects to the assigned port, sends `handshake` and checks the success
/// answer; the partner status is left for the caller.
fn claim(server: &TestServer, wire: Wire, assignment: &Assignment, handshake: &str) -> Client {
    let port = assignment.port;
    let mut client = connect_worker(server, wire, port);
    client.send(handshake);
    client.expect(format!("SERVER{port}>>> Connection successful"));
    client
}

/// Portal, handshake in the prefixed form, and the partner status, which
/// must name the paired port.
fn join(server: &TestServer, wire: Wire) -> Client {
    let assignment = assign(server, wire);
    let mut client = claim(server, wire, &assignment, &prefixed(&assignment));
    let port = assignment.port;
    let index = server
        .workers
        .iter()
        .position(|w| w.port() == port)
        .expect("a worker port");
    let partner = server.workers[index ^ 1].port();
    let status = client.next();
    client.partner = partner;
    client.partner_present =
        if status == Got::msg(format!("SERVER{port}>>> Partner {partner} connected")) {
            true
        } else if status == Got::msg(format!("SERVER{port}>>> Waiting for partner {partner}")) {
            false
        } else {
            panic!("{wire} port {port}: unexpected status {status:?}");
        };
    client
}

/// Sends `text` from one client and checks that it is the next thing the
/// other receives.
fn relay(from: &mut Client, to: &mut Client, text: &str) {
    from.send(text);
    to.expect(text);
}

fn partner_left(client: &Client) -> String {
    format!("SERVER{}>>> Partner {} left", client.port, client.partner)
}

fn partner_connected(client: &Client) -> String {
    format!(
        "SERVER{}>>> Partner {} connected",
        client.port, client.partner
    )
}

/// Connects to `port`, sends `bytes` as they are, and checks that the whole
/// answer is the wrong-passcode notice and the close.
fn assert_refused(server: &TestServer, wire: Wire, port: u16, bytes: &[u8]) {
    let mut stray = connect_worker(server, wire, port);
    stray.send_raw(bytes);
    assert_eq!(
        stray.rest(),
        [format!("SERVER{port}>>> Wrong handshake passcode")],
        "{wire}: the answer on port {port} to {:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// A thread that runs `send` every `every` until told to stop or a send
/// fails; returns the stop flag, the count sent and the thread.
fn pinger(
    every: Duration,
    mut send: impl FnMut() -> io::Result<()> + Send + 'static,
) -> (Arc<AtomicBool>, Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let handle = thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            if send().is_err() {
                break;
            }
            sent2.fetch_add(1, Ordering::SeqCst);
            thread::sleep(every); // the simulated client's pace
        }
    });
    (stop, sent, handle)
}

// ---------------------------------------------------------------------------
// Portal
// ---------------------------------------------------------------------------

fn portal_answers_one_message_then_closes(wire: Wire) {
    let server = start(wire, &["--workers", "4", "--assign-timeout", "60"]);
    let mut codes = Vec::new();
    for n in 1..=4 {
        let assignment = assign(&server, wire);
        assert_eq!(
            assignment.port,
            worker(&server, n),
            "{wire}: worker 1 first, in order"
        );
        assert_eq!(
            assignment.code.len(),
            PASSCODE_LEN,
            "{wire}: {:?}",
            assignment.code
        );
        codes.push(assignment.code);
    }
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 4, "{wire}: every passcode is fresh");
}

fn a_full_portal_says_so_until_a_port_is_free(wire: Wire) {
    let server = start(wire, &["--workers", "2", "--assign-timeout", "60"]);
    let mut first = join(&server, wire);
    let second = assign(&server, wire);
    assert_eq!(portal_text(&server, wire), "SERVER>>>full");
    assert_eq!(
        portal_text(&server, wire),
        "SERVER>>>full",
        "{wire}: still full"
    );
    // The session's port comes back when it ends; the reservation stays.
    first.send(TERMINATE);
    first.expect_closed_after_leaving();
    assert_eq!(assign(&server, wire).port, first.port);
    assert_eq!(portal_text(&server, wire), "SERVER>>>full");
    let mut holder = claim(&server, wire, &second, &second.code);
    holder.expect(format!(
        "SERVER{}>>> Waiting for partner {}",
        second.port, first.port
    ));
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

fn both_handshake_forms_are_accepted(wire: Wire) {
    let server = start(wire, &["--workers", "2"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));

    let first = assign(&server, wire);
    let mut a = claim(&server, wire, &first, &prefixed(&first));
    a.expect(format!("SERVER{w1}>>> Waiting for partner {w2}"));

    let second = assign(&server, wire);
    let mut b = claim(&server, wire, &second, &second.code);
    b.expect(format!("SERVER{w2}>>> Partner {w1} connected"));
    a.expect(format!("SERVER{w1}>>> Partner {w2} connected"));

    relay(&mut a, &mut b, "from the prefixed form");
    relay(&mut b, &mut a, "from the bare form");
}

fn a_wrong_code_is_refused_and_the_holder_is_not_locked_out(wire: Wire) {
    let server = start_unhurried(wire, 2);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let held = assign(&server, wire);
    assert_eq!(held.port, w1);

    let mut wrong = held.code.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'x' { b'y' } else { b'x' };
    let wrong = String::from_utf8(wrong).unwrap();
    let code = &held.code;
    let strays = [
        wrong.clone(),
        format!("CLIENT{w1}>>>HandshakeCode={wrong}"),
        code[..code.len() - 1].to_string(),
        format!("{code}x"),
        // The right code behind another port's prefix is not a handshake.
        format!("CLIENT{w2}>>>HandshakeCode={code}"),
        String::new(),
    ];
    for stray in &strays {
        assert_refused(&server, wire, w1, &frame(wire, stray.as_bytes()));
    }

    let mut holder = claim(&server, wire, &held, &prefixed(&held));
    holder.expect(format!("SERVER{w1}>>> Waiting for partner {w2}"));
    // Single use: the same code again is refused like any wrong code.
    assert_refused(&server, wire, w1, &frame(wire, prefixed(&held).as_bytes()));
}

fn strays_on_free_occupied_and_reserved_ports_answer_like_a_wrong_code(wire: Wire) {
    let server = start_unhurried(wire, 4);
    let [w1, w2, w3, w4] = [1, 2, 3, 4].map(|n| worker(&server, n));
    let used = assign(&server, wire);
    let mut occupant = claim(&server, wire, &used, &prefixed(&used)); // w1: occupied
    occupant.expect(format!("SERVER{w1}>>> Waiting for partner {w2}"));
    let reserved = assign(&server, wire); // w2: reserved, not yet claimed
    assert_eq!((used.port, reserved.port), (w1, w2));
    // w3 and w4 are free.

    let cases = [
        // Occupied: its own spent code, another port's live code, garbage.
        (w1, prefixed(&used)),
        (w1, reserved.code.clone()),
        (w1, "nonsense".to_string()),
        // Reserved for someone else: a wrong code, another port's spent one.
        (w2, format!("CLIENT{w2}>>>HandshakeCode={}", "A".repeat(24))),
        (w2, used.code.clone()),
        // Free: a live code of another port, a spent one, garbage.
        (w3, reserved.code.clone()),
        (w3, format!("CLIENT{w3}>>>HandshakeCode={}", used.code)),
        (w4, "nonsense".to_string()),
    ];
    for (port, text) in &cases {
        assert_refused(&server, wire, *port, &frame(wire, text.as_bytes()));
    }

    // None of it disturbed the occupant or the reservation.
    let mut claimer = claim(&server, wire, &reserved, &reserved.code);
    claimer.expect(format!("SERVER{w2}>>> Partner {w1} connected"));
    occupant.expect(format!("SERVER{w1}>>> Partner {w2} connected"));
}

fn an_unused_reservation_lapses_and_its_code_dies(wire: Wire) {
    let server = start(wire, &["--workers", "2", "--assign-timeout", "1"]);
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));

    let started = Instant::now();
    let lapsing = assign(&server, wire);
    assert_eq!(lapsing.port, w1);
    let mut holder = join(&server, wire);
    assert_eq!(holder.port, w2);

    // The portal is full until the unused reservation lapses.
    let mut reissued = None;
    assert!(
        wait_until(IO_TIMEOUT, || match ask_portal(&server, wire) {
            PortalAnswer::Full => false,
            PortalAnswer::Assigned(a) => {
                reissued = Some(a);
                true
            }
        }),
        "{wire}: the reservation never lapsed"
    );
    let lapsed = started.elapsed();
    assert!(
        lapsed >= Duration::from_secs(1),
        "{wire}: lapsed early: {lapsed:?}"
    );
    let reissued = reissued.unwrap();
    assert_eq!(reissued.port, w1, "{wire}: the lapsed port is reissued");
    assert_ne!(reissued.code, lapsing.code, "{wire}: with a new passcode");

    // The old passcode is dead, in both forms; the new one works.
    assert_refused(
        &server,
        wire,
        w1,
        &frame(wire, prefixed(&lapsing).as_bytes()),
    );
    assert_refused(&server, wire, w1, &frame(wire, lapsing.code.as_bytes()));
    let mut newcomer = claim(&server, wire, &reissued, &reissued.code);
    newcomer.expect(format!("SERVER{w1}>>> Partner {w2} connected"));
    holder.expect(partner_connected(&holder));
}

// ---------------------------------------------------------------------------
// Session timeouts
// ---------------------------------------------------------------------------

fn an_idle_client_times_out_even_while_receiving(wire: Wire) {
    let server = start(wire, &["--workers", "2", "--idle-timeout", "1"]);
    let started = Instant::now();
    let mut quiet = join(&server, wire);
    let mut busy = join(&server, wire);
    quiet.expect(partner_connected(&quiet));
    let mut busy_sender = busy.sender();
    let (stop, _, talker) = pinger(Duration::from_millis(100), move || {
        busy_sender.send(b"ping")
    });

    // Receiving chat is not activity: only the client's own messages are.
    let mut pings = 0;
    let end = loop {
        match quiet.next() {
            Got::Msg(text) if text == b"ping" => pings += 1,
            other => break other,
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(end, Got::msg("SERVER>>> TIMEOUT"), "{wire}");
    quiet.expect_eof();
    assert!(
        elapsed >= Duration::from_secs(1),
        "{wire}: idle timeout early: {elapsed:?}"
    );
    assert!(
        pings >= 2,
        "{wire}: only {pings} pings came before the timeout"
    );

    // The busy partner is told first (its own pings make no notice while
    // the partner is there), and its port stays.
    busy.expect(partner_left(&busy));
    // Asked while the pings go on, so the busy client cannot have timed out
    // and freed its own port too.
    assert_eq!(
        assign(&server, wire).port,
        quiet.port,
        "{wire}: the port is free again"
    );
    stop.store(true, Ordering::SeqCst);
    talker.join().unwrap();
}

// ---------------------------------------------------------------------------
// Chatting
// ---------------------------------------------------------------------------

fn terminate_frees_the_port_and_the_partner_is_told(wire: Wire) {
    let server = start(wire, &["--workers", "2"]);
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    a.expect(partner_connected(&a));

    a.send(TERMINATE);
    a.expect_closed_after_leaving();
    b.expect(partner_left(&b));

    // A's port is the only free one; a newcomer gets it and chats with B.
    let mut c = join(&server, wire);
    assert_eq!(c.port, a.port);
    assert!(c.partner_present);
    b.expect(partner_connected(&b));
    relay(&mut b, &mut c, "welcome");
    relay(&mut c, &mut b, "thanks");
}

fn workers_pair_without_crosstalk(wire: Wire) {
    let server = start(wire, &["--workers", "4"]);
    let [w1, w2, w3, w4] = [1, 2, 3, 4].map(|n| worker(&server, n));
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    let mut c = join(&server, wire);
    let mut d = join(&server, wire);
    assert_eq!([a.port, b.port, c.port, d.port], [w1, w2, w3, w4]);
    assert_eq!(
        (a.partner, b.partner, c.partner, d.partner),
        (w2, w1, w4, w3)
    );
    assert!(!a.partner_present && b.partner_present);
    assert!(!c.partner_present && d.partner_present);
    a.expect(partner_connected(&a));
    c.expect(partner_connected(&c));

    // Each message read before the next is sent: one that went astray would
    // be queued ahead of the markers.
    relay(&mut a, &mut b, "a to b");
    relay(&mut c, &mut d, "c to d");
    relay(&mut b, &mut a, "b to a");
    relay(&mut d, &mut c, "d to c");
    relay(&mut a, &mut b, "mark a");
    relay(&mut b, &mut a, "mark b");
    relay(&mut c, &mut d, "mark c");
    relay(&mut d, &mut c, "mark d");

    // A leaving tells only B.
    a.send(TERMINATE);
    a.expect_closed_after_leaving();
    b.expect(partner_left(&b));
    relay(&mut c, &mut d, "c still");
    relay(&mut d, &mut c, "d still");
}

fn messages_beginning_with_server_are_refused(wire: Wire) {
    let server = start(wire, &["--workers", "2"]);
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    a.expect(partner_connected(&a));
    let (w1, w2) = (a.port, b.port);

    let refused =
        |port: u16| format!("SERVER{port}>>> Refused: chat lines may not begin with SERVER");
    for spoof in [
        "SERVER>>> TIMEOUT".to_string(),
        format!("SERVER{w2}>>> Partner {w1} left"),
        "SERVER>>> Server shutting down".to_string(),
        "SERVER".to_string(),
        "SERVERx".to_string(),
    ] {
        a.send(&spoof);
        a.expect(refused(w1));
    }
    b.send(format!("SERVER{w1}>>> Partner {w2} left"));
    b.expect(refused(w2));

    // Nothing was forwarded: the first thing each side gets is the next
    // genuine message. `SERVER` elsewhere in a message is fine.
    relay(&mut a, &mut b, " SERVER not at the start");
    relay(&mut b, &mut a, "ok");
}

fn a_message_over_the_limit_ends_the_session(wire: Wire) {
    let server = start(
        wire,
        &[
            "--workers",
            "4",
            "--max-line",
            "64",
            "--handshake-timeout",
            "30",
        ],
    );
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    a.expect(partner_connected(&a));
    let too_long = format!(
        "SERVER{}>>> Line too long (limit 64 bytes); closing",
        a.port
    );

    // Exactly at the limit: delivered.
    relay(&mut a, &mut b, &"a".repeat(64));

    // One byte over: the sender is told and closed, the partner told. The
    // .NET wire knows from the prefix alone, so the body is never sent: a
    // server that waited for it would leave this read to time out.
    match wire {
        Wire::Line => a.send("c".repeat(65)),
        Wire::Dotnet => a.send_raw(&[65]),
    }
    assert_eq!(a.rest(), [too_long.as_str()], "{wire}");
    b.expect(partner_left(&b));

    // A message with no end in sight is caught too (the line wire: 10,000
    // bytes and no newline; the .NET wire: the longest prefix it can read),
    // and the first offender's port was freed.
    let mut c = join(&server, wire);
    assert_eq!(c.port, a.port);
    b.expect(partner_connected(&b));
    match wire {
        Wire::Line => c.send_raw("d".repeat(10_000).as_bytes()),
        Wire::Dotnet => c.send_bytewise(&[0xff, 0xff, 0xff, 0xff, 0x07]),
    }
    assert_eq!(c.rest(), [too_long], "{wire}");
    b.expect(partner_left(&b));

    // Before the handshake the limit is 128 bytes, answered like a wrong
    // code at once (the handshake timeout is 30 s).
    let held = assign(&server, wire);
    let port = held.port;
    assert_eq!(port, a.port, "{wire}: the freed port again");
    match wire {
        Wire::Line => assert_refused(&server, wire, port, "z".repeat(200).as_bytes()),
        Wire::Dotnet => assert_refused(&server, wire, port, &[0x81, 0x01]),
    }
    // At the limit it is only a wrong code; the reservation survives both.
    assert_refused(
        &server,
        wire,
        port,
        &frame(wire, "z".repeat(128).as_bytes()),
    );
    let mut holder = claim(&server, wire, &held, &held.code);
    holder.expect(format!("SERVER{port}>>> Partner {} connected", b.port));
    b.expect(partner_connected(&b));
}

/// .NET only: the line wire has no prefix to be malformed.
fn a_malformed_prefix_is_refused(wire: Wire) {
    let server = start_unhurried(wire, 4);
    let malformed = [
        // A fifth byte with its high bit set: a sixth would follow.
        &[0x80, 0x80, 0x80, 0x80, 0x80][..],
        // 2^31, one above what .NET's Int32 length holds.
        &[0x80, 0x80, 0x80, 0x80, 0x08],
        // 2^32 - 1.
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
    ];
    let mut b = join(&server, wire);
    for prefix in malformed {
        // In a session: a clear notice, the close; the partner is told.
        let mut a = join(&server, wire);
        assert_eq!(a.port, worker(&server, 2), "{wire}: the freed port again");
        b.expect(partner_connected(&b));
        // A byte at a time: the fifth byte decides, whenever it comes.
        a.send_bytewise(prefix);
        assert_eq!(
            a.rest(),
            [format!("SERVER{}>>> Malformed message; closing", a.port)],
            "{wire}: after {prefix:02x?}"
        );
        b.expect(partner_left(&b));
    }

    // Before the handshake: the wrong-passcode answer, and the reservation
    // stays for its holder.
    let held = assign(&server, wire);
    for prefix in malformed {
        assert_refused(&server, wire, held.port, prefix);
    }
    assert_eq!(
        held.port,
        worker(&server, 2),
        "{wire}: the freed port again"
    );
    let mut holder = claim(&server, wire, &held, &prefixed(&held));
    holder.expect(format!(
        "SERVER{}>>> Partner {} connected",
        held.port, b.port
    ));
    b.expect(partner_connected(&b));
}

/// .NET only: its messages carry their own length, so any byte is text and
/// nothing in one can pose as a second message. (The line wire ends a
/// message at `\n` and refuses a bare `\r`; tests/server.rs covers that.)
fn a_dotnet_message_may_hold_any_byte(wire: Wire) {
    let server = start(wire, &["--workers", "2"]);
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    a.expect(partner_connected(&a));
    let texts: [&[u8]; 6] = [
        b"two\nlines",
        b"hi\nSERVER>>> Server shutting down",
        b"cr\r and crlf\r\n",
        b"",
        b"\0\xff\x80",
        "h\u{e9}llo \u{4f60}\u{597d} \u{1f642}".as_bytes(),
    ];
    for text in texts {
        a.send(text);
        assert_eq!(b.next(), Got::msg(text), "{wire}");
    }
}

fn messages_written_a_byte_at_a_time_arrive_whole(wire: Wire) {
    let trickle = |client: &mut Client, text: &[u8]| client.send_bytewise(&frame(wire, text));
    let server = start(wire, &["--workers", "2"]);
    let mut a = join(&server, wire);
    let assignment = assign(&server, wire);
    let port = assignment.port;
    let mut b = connect_worker(&server, wire, port);
    trickle(&mut b, prefixed(&assignment).as_bytes());
    b.expect(format!("SERVER{port}>>> Connection successful"));
    b.expect(format!("SERVER{port}>>> Partner {} connected", a.port));
    a.expect(partner_connected(&a));
    b.partner = a.port;

    // 200 bytes: the .NET prefix is two bytes, and it is split too.
    let long: Vec<u8> = (0..200).map(|i| b'a' + (i % 26) as u8).collect();
    trickle(&mut b, &long);
    assert_eq!(a.next(), Got::msg(&long), "{wire}");
    trickle(&mut a, b"short");
    b.expect("short");
    trickle(&mut b, TERMINATE.as_bytes());
    b.expect_closed_after_leaving();
    a.expect(partner_left(&a));
}

fn a_trickle_does_not_extend_the_handshake_deadline(wire: Wire) {
    let server = start(
        wire,
        &[
            "--workers",
            "2",
            "--handshake-timeout",
            "1",
            "--assign-timeout",
            "30",
        ],
    );
    let (w1, w2) = (worker(&server, 1), worker(&server, 2));
    let held = assign(&server, wire);
    assert_eq!(held.port, w1);

    let started = Instant::now();
    // On the reserved port, a byte every 50 ms of a message that would take
    // over 6 s to complete (127 bytes, within the handshake limit).
    let mut slow = connect_worker(&server, wire, w1);
    let start_of_message: &[u8] = match wire {
        Wire::Line => b"",
        Wire::Dotnet => &[127],
    };
    slow.send_raw(start_of_message);
    // And on the free port, nothing at all.
    let mut silent = connect_worker(&server, wire, w2);
    // The rest of it, one unframed byte at a time.
    let mut body = slow.stream.try_clone().unwrap();
    let (stop, sent, trickler) = pinger(Duration::from_millis(50), move || body.write_all(b"a"));

    slow.expect(format!("SERVER{w1}>>> Handshake timeout"));
    let cut = started.elapsed();
    slow.expect_eof();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    silent.expect(format!("SERVER{w2}>>> Handshake timeout"));
    silent.expect_eof();

    assert!(
        cut >= Duration::from_secs(1),
        "{wire}: cut off early: {cut:?}"
    );
    assert!(
        cut < Duration::from_secs(5),
        "{wire}: the trickle extended the deadline: cut off after {cut:?}"
    );
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent >= 5, "{wire}: the trickle did not run: {sent} bytes");

    // The reservation survived the siege.
    let mut holder = claim(&server, wire, &held, &prefixed(&held));
    holder.expect(format!("SERVER{w1}>>> Waiting for partner {w2}"));
}

fn twenty_thousand_messages_reach_a_late_reader_in_order(wire: Wire) {
    const MESSAGES: usize = 20_000;
    fn text(i: usize) -> Vec<u8> {
        // 100 to 200 bytes (one- and two-byte .NET prefixes), numbered.
        let len = 100 + (i * 37) % 101;
        let mut text = format!("{i:05}:").into_bytes();
        while text.len() < len {
            text.push(b'a' + ((i + text.len()) % 26) as u8);
        }
        text
    }
    let stream: Vec<u8> = (0..MESSAGES).flat_map(|i| frame(wire, &text(i))).collect();
    assert!(stream.len() > 2 << 20, "more than the 1 MiB output bound");

    let server = start(wire, &["--workers", "2"]);
    let mut writer = join(&server, wire);
    let mut reader = join(&server, wire);
    writer.expect(partner_connected(&writer));

    let mut out = writer.stream.try_clone().unwrap();
    out.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (written2, done2) = (written.clone(), done.clone());
    let total = stream.len();
    let writing = thread::spawn(move || -> io::Result<()> {
        for chunk in stream.chunks(8 * 1024) {
            out.write_all(chunk)?;
            written2.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        // And leave at once with an end of stream: the messages still held
        // back in the server must not be lost with it.
        out.shutdown(Shutdown::Write)?;
        done2.store(true, Ordering::SeqCst);
        Ok(())
    });

    // The reader starts late: once the writer is done, or held back.
    wait_for_done_or_stall(&done, &written);
    let stalled_at = (!done.load(Ordering::SeqCst)).then(|| written.load(Ordering::SeqCst));
    eprintln!(
        "{wire}: the late reader starts; the writer stalled at {stalled_at:?} of {total} bytes"
    );
    for i in 0..MESSAGES {
        let got = reader.next();
        assert!(got == Got::msg(text(i)), "{wire}: message {i}: got {got:?}");
    }
    writing.join().unwrap().expect("writer");
    assert_eq!(written.load(Ordering::SeqCst), total);
    // Nothing more, nothing duplicated: the next thing is the leave notice.
    reader.expect(partner_left(&reader));
    writer.expect_closed_after_leaving();
    reader.send(TERMINATE);
    reader.expect_closed_after_leaving();
}

/// Waits until `done` is set or `progress` has not moved for half a second
/// (the writer is blocked in `write`), up to 60 s.
fn wait_for_done_or_stall(done: &AtomicBool, progress: &AtomicUsize) {
    let mut last = (usize::MAX, Instant::now());
    let settled = wait_until(Duration::from_secs(60), || {
        if done.load(Ordering::SeqCst) {
            return true;
        }
        let now = progress.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
            return false;
        }
        last.1.elapsed() >= Duration::from_millis(500)
    });
    assert!(settled, "the writer neither finished nor stalled");
}

// ---------------------------------------------------------------------------
// Abrupt endings
// ---------------------------------------------------------------------------

fn a_reset_frees_the_port_and_the_partner_is_told(wire: Wire) {
    let server = start(wire, &["--workers", "2"]);
    let a = join(&server, wire);
    let mut b = join(&server, wire);
    // A's "partner connected" and B's message stay unread in A's socket:
    // closing a socket with unread data makes Linux send a reset, not FIN.
    b.send("you will never read this");
    let mut peek = [0u8; 1];
    assert_eq!(
        a.stream.peek(&mut peek).expect("wait for bytes to arrive"),
        1
    );
    let freed = a.port;
    drop(a);

    b.expect(partner_left(&b));
    let mut c = join(&server, wire);
    assert_eq!(
        c.port, freed,
        "{wire}: the reset client's port is free again"
    );
    assert!(c.partner_present);
    b.expect(partner_connected(&b));
    relay(&mut b, &mut c, "hello again");
}

fn sigterm_tells_every_client_and_exits_zero(wire: Wire) {
    let mut server = start(wire, &["--workers", "4"]);
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    let mut c = join(&server, wire);
    a.expect(partner_connected(&a));
    // Connected, but not through the handshake. The signal waits until the
    // server has accepted it, or D could still be in the listen backlog
    // when the listeners close.
    let d_port = worker(&server, 4);
    let mut d = connect_worker(&server, wire, d_port);
    let d_local = d.stream.local_addr().unwrap().port();
    assert!(
        wait_until(IO_TIMEOUT, || accepted(d_port, d_local)),
        "{wire}: the server never accepted D"
    );

    server.signal("TERM");
    for client in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(client.rest(), ["SERVER>>> Server shutting down"], "{wire}");
    }
    drop((a, b, c, d));
    let status = server
        .wait_exit(IO_TIMEOUT)
        .expect("the server did not exit");
    assert_eq!(status.code(), Some(0), "{wire}");
}

/// Whether the server's end of the loopback connection between its port
/// `local` and our port `remote` has been accepted: in `/proc/net/tcp`, a
/// socket still in the listen backlog has no inode yet (0).
fn accepted(local: u16, remote: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9
            && port_of(fields[1]) == Some(local)
            && port_of(fields[2]) == Some(remote)
            && fields[9] != "0"
    })
}

/// The rule differs, and both are tested: the line wire delivers an
/// unterminated last line (what `nc` sends when its input has no final
/// newline), while half a .NET message is not a message (`ReadString`
/// would throw on it), so it is dropped. Either way the partner is then
/// told that the client left, and the port is freed.
fn end_of_stream_in_the_middle_of_a_message(wire: Wire) {
    let server = start(wire, &["--workers", "2"]);
    let mut a = join(&server, wire);
    let mut b = join(&server, wire);
    a.expect(partner_connected(&a));
    relay(&mut a, &mut b, "whole");

    let last_words = b"last words";
    let framed = frame(wire, last_words);
    let cut = match wire {
        Wire::Line => framed.len() - 1, // all but the newline
        Wire::Dotnet => framed.len() - 3,
    };
    a.send_raw(&framed[..cut]);
    a.stream.shutdown(Shutdown::Write).unwrap();
    if wire == Wire::Line {
        b.expect(last_words);
    }
    b.expect(partner_left(&b));
    a.expect_closed_after_leaving();

    let mut c = join(&server, wire);
    assert_eq!(c.port, a.port, "{wire}: the port is free again");
    b.expect(partner_connected(&b));
    relay(&mut c, &mut b, "hello");
}

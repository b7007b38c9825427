//! Per-source limits (`--max-per-ip`): one source address must not be able
//! to hold every port. The attacker and the victim come from two loopback
//! addresses (127.0.0.1 and 127.0.0.2), each client socket bound to its
//! address before it connects.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{IO_LIMIT, Peer, TestServer, handshake_line};
use portal_chat::client::{Assignment, PortalAnswer, parse_portal_reply};
use socket2::{Domain, Socket, Type};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Connects to `to` from `from` (port chosen by the OS).
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind the source address");
    socket
        .connect_timeout(&to.into(), IO_LIMIT)
        .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_LIMIT)).unwrap();
    stream.set_write_timeout(Some(IO_LIMIT)).unwrap();
    stream
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line.trim_end().to_string()
}

/// Asks the portal once, from `from`.
fn ask_portal(from: IpAddr, server: &TestServer) -> PortalAnswer {
    let mut reader = BufReader::new(connect_from(from, server.portal));
    let line = read_line(&mut reader);
    parse_portal_reply(&line).unwrap_or_else(|| panic!("portal answered {line:?}"))
}

/// Presents the passcode from `from`; the session if the server accepted it.
fn handshake(from: IpAddr, server: &TestServer, a: &Assignment) -> Option<Peer> {
    let stream = connect_from(from, SocketAddr::new(server.host(), a.port));
    Peer::handshake_with(stream, a, handshake_line(a).as_bytes()).ok()
}

#[test]
fn an_attacker_over_its_limit_is_told_full_and_refused_and_nobody_else_is() {
    let server = TestServer::start(&["--max-per-ip", "1"]);
    let PortalAnswer::Assigned(first) = ask_portal(ATTACKER, &server) else {
        panic!("the first request gets a port")
    };
    assert!(matches!(ask_portal(ATTACKER, &server), PortalAnswer::Full));
    // Another source's reservation cannot be taken from the attacker's
    // address, which holds one port already.
    let PortalAnswer::Assigned(victims) = ask_portal(VICTIM, &server) else {
        panic!("the victim gets a port")
    };
    let stolen = handshake(ATTACKER, &server, &victims);
    assert!(stolen.is_none(), "the attacker took a second port");
    let ok = handshake(VICTIM, &server, &victims);
    assert!(ok.is_some(), "the reservation survived the attempt");
    let ok = handshake(ATTACKER, &server, &first);
    assert!(ok.is_some(), "the attacker's own port is still its own");
}

#[test]
fn an_attacker_polling_the_portal_and_holding_sessions_cannot_keep_a_victim_out() {
    let server = Arc::new(TestServer::start(&["--max-per-ip", "1", "--tick-ms", "50"]));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // The attacker: 20 portal requests a second for 10 s; every port it is
    // given it claims, and keeps the session open.
    let attacker = {
        let (server, stop, answered) = (server.clone(), stop.clone(), answered.clone());
        thread::spawn(move || {
            let mut sessions = Vec::new();
            let start = Instant::now();
            for n in 0u32.. {
                let due = start + Duration::from_millis(50) * n;
                if due >= start + Duration::from_secs(10) || stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait); // the attacker's pace
                }
                if let PortalAnswer::Assigned(a) = ask_portal(ATTACKER, &server)
                    && let Some(session) = handshake(ATTACKER, &server, &a)
                {
                    sessions.push(session);
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            sessions.len()
        })
    };
    // The victim joins and leaves again and again meanwhile: every join must
    // succeed on the first or second attempt (the client retries after 2 s).
    let start = Instant::now();
    let mut joins = 0;
    while start.elapsed() < Duration::from_secs(9) {
        let mut attempts = 0;
        let mut session = loop {
            attempts += 1;
            assert!(attempts <= 2, "join {joins}: the portal said full twice");
            match ask_portal(VICTIM, &server) {
                PortalAnswer::Assigned(a) => {
                    let session = handshake(VICTIM, &server, &a);
                    break session.unwrap_or_else(|| {
                        panic!("join {joins}: the victim's handshake was refused")
                    });
                }
                PortalAnswer::Full => thread::sleep(Duration::from_secs(2)), // the client's retry delay
            }
        };
        session.send_line(b"CLIENT>>> TERMINATE").unwrap();
        joins += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let held = attacker.join().expect("attacker");
    println!(
        "victim joined {joins} times; attacker made {} portal requests and held {held} session(s)",
        answered.load(Ordering::SeqCst)
    );
    assert!(joins >= 5, "only {joins} joins in 9 s");
    assert_eq!(held, 1, "the attacker holds one port, its limit");
}

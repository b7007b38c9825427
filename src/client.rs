//! The client's side of the protocol, with blocking sockets.
//!
//! One implementation for everyone who talks to the server as a client: the
//! `chat-client` binary, the integration tests and the benchmarks. A client
//! asks the portal for a port ([`request_port`]), retrying while the server
//! is full ([`obtain_port`]), proves itself on that port ([`Session::handshake`]),
//! then sends and receives lines. [`Session::join`] does all of it;
//! [`Session::join_observed`] does the same and reports each setback, for a
//! program that keeps its user informed.
//!
//! A server known by name may have several addresses (`localhost` is often
//! `::1` and `127.0.0.1`, and a server listens on one of them).
//! [`resolve`] lists them all and [`Session::join_any`] tries them in turn.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The line that ends a session from the client's side.
pub const TERMINATE_LINE: &str = "CLIENT>>> TERMINATE";

/// How long the original client waits before asking a full portal again.
pub const FULL_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How long to wait for any single answer from the server while joining.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker port reserved by the portal, and the passcode that claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The worker port to connect to.
    pub port: u16,
    /// The one-time passcode to present there.
    pub code: String,
}

/// What the portal said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalAnswer {
    /// A port was reserved for us.
    Assigned(Assignment),
    /// No port is free: ask again later.
    Full,
}

/// Why joining failed.
#[derive(Debug)]
pub enum JoinError {
    /// The portal was full on every try.
    Full {
        /// How many times the portal was asked.
        attempts: u32,
    },
    /// The worker port refused the passcode (also what a lapsed reservation
    /// looks like).
    Refused,
    /// The server said something that is not in the protocol.
    Protocol(String),
    /// A socket error, including a timeout waiting for an answer.
    Io(io::Error),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Full { attempts } => {
                write!(f, "the server stayed full ({attempts} attempt(s))")
            }
            JoinError::Refused => write!(f, "the worker port refused the passcode"),
            JoinError::Protocol(line) => write!(f, "unexpected answer from the server: {line:?}"),
            JoinError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<io::Error> for JoinError {
    fn from(e: io::Error) -> Self {
        JoinError::Io(e)
    }
}

/// Reads the portal's answer from one line.
pub fn parse_portal_reply(line: &str) -> Option<PortalAnswer> {
    if line == "SERVER>>>full" {
        return Some(PortalAnswer::Full);
    }
    let rest = line.strip_prefix("SERVER>>>Port=>")?;
    let (port, code) = rest.split_once(",HandshakeCode=")?;
    let code_ok = !code.is_empty() && code.bytes().all(|b| b.is_ascii_alphanumeric());
    code_ok.then(|| {
        Some(PortalAnswer::Assigned(Assignment {
            port: port.parse().ok()?,
            code: code.to_string(),
        }))
    })?
}

/// Every address of `host`, in the order the system's resolver gives them
/// (which puts the preferred ones first), each once. An IP address is
/// itself, with no look-up.
pub fn resolve(host: &str) -> io::Result<Vec<IpAddr>> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    // The port is needed by the call only; any will do.
    for addr in (host, 0).to_socket_addrs()? {
        if !addresses.contains(&addr.ip()) {
            addresses.push(addr.ip());
        }
    }
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the name has no address",
        ));
    }
    Ok(addresses)
}

/// Connects to `port` on the first of `hosts` that accepts, trying them in
/// order, each for at most `timeout`.
///
/// With one address the error is the one connecting to it gave. With more,
/// it names every address tried and why each failed, and has the kind of
/// the last failure.
pub fn connect_any(hosts: &[IpAddr], port: u16, timeout: Duration) -> io::Result<TcpStream> {
    if let [host] = hosts {
        return TcpStream::connect_timeout(&SocketAddr::new(*host, port), timeout);
    }
    let mut failures = Vec::new();
    let mut last_kind = io::ErrorKind::InvalidInput;
    for &host in hosts {
        let addr = SocketAddr::new(host, port);
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                last_kind = e.kind();
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    if failures.is_empty() {
        return Err(io::Error::new(last_kind, "no address to connect to"));
    }
    Err(io::Error::new(last_kind, failures.join("; ")))
}

/// Asks the portal at `portal` once.
pub fn request_port(portal: SocketAddr) -> Result<PortalAnswer, JoinError> {
    request_port_any(&[portal.ip()], portal.port()).map(|(answer, _)| answer)
}

/// Asks the portal on `port` of the first of `hosts` that accepts a
/// connection, once. Returns the answer and the address that gave it.
fn request_port_any(hosts: &[IpAddr], port: u16) -> Result<(PortalAnswer, IpAddr), JoinError> {
    let stream = connect_any(hosts, port, ANSWER_TIMEOUT)?;
    let host = stream.peer_addr()?.ip();
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let line = read_text_line(&mut reader)?
        .ok_or_else(|| JoinError::Protocol("portal closed without answering".into()))?;
    let answer = parse_portal_reply(&line).ok_or(JoinError::Protocol(line))?;
    Ok((answer, host))
}

/// How often to ask a full portal again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `None` retries without limit.
    pub retries: Option<u32>,
    /// The pause before each retry.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: None,
            delay: FULL_RETRY_DELAY,
        }
    }
}

/// A setback while joining, reported by [`Session::join_observed`] before it
/// tries again (or gives up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinEvent {
    /// The portal answered "full" on this attempt (counted from 1).
    Full {
        /// Which attempt it was.
        attempt: u32,
    },
    /// The assigned port refused the passcode, the first time; joining goes
    /// back to the portal once.
    Refused {
        /// The port that refused.
        port: u16,
    },
}

/// Asks the portal until it assigns a port or the retries run out.
/// `on_full(attempt)` is called each time the answer is "full".
pub fn obtain_port(
    portal: SocketAddr,
    policy: RetryPolicy,
    on_full: impl FnMut(u32),
) -> Result<Assignment, JoinError> {
    obtain_port_any(&[portal.ip()], portal.port(), policy, on_full)
        .map(|(assignment, _)| assignment)
}

/// [`obtain_port`] from the first of `hosts` whose portal accepts a
/// connection, asked afresh on every attempt. Returns the assignment and
/// the address of the portal that gave it.
fn obtain_port_any(
    hosts: &[IpAddr],
    port: u16,
    policy: RetryPolicy,
    mut on_full: impl FnMut(u32),
) -> Result<(Assignment, IpAddr), JoinError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request_port_any(hosts, port)? {
            (PortalAnswer::Assigned(assignment), host) => return Ok((assignment, host)),
            (PortalAnswer::Full, _) => {
                on_full(attempt);
                if policy.retries.is_some_and(|retries| attempt > retries) {
                    return Err(JoinError::Full { attempts: attempt });
                }
                std::thread::sleep(policy.delay);
            }
        }
    }
}

/// One line from the server, sorted by what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A chat line from the partner, byte for byte, without its newline.
    Chat(Vec<u8>),
    /// A server notice (a line beginning with `SERVER`).
    Notice(String),
}

impl Message {
    fn from_line(line: Vec<u8>) -> Message {
        if line.starts_with(b"SERVER") {
            Message::Notice(String::from_utf8_lossy(&line).into_owned())
        } else {
            Message::Chat(line)
        }
    }

    /// Whether this is the idle or session-limit notice that ends a session.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Message::Notice(n) if n == "SERVER>>> TIMEOUT" || n == "SERVER>>> TOTAL TIME TIMEOUT")
    }

    /// Whether this is the notice of a server that is stopping; it closes
    /// the connection right after.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Message::Notice(n) if n == "SERVER>>> Server shutting down")
    }
}

/// A client holding a worker port after a good handshake.
pub struct Session {
    writer: TcpStream,
    reader: SessionReader,
    /// The worker port this session holds.
    pub port: u16,
    /// Whether the partner was connected when we joined.
    pub partner_present: bool,
    /// The partner's port, the one paired with ours.
    pub partner_port: u16,
}

impl Session {
    /// Connects to the assigned port on `host` and presents the passcode in
    /// the original client's form.
    pub fn handshake(host: IpAddr, assignment: &Assignment) -> Result<Session, JoinError> {
        Session::handshake_any(&[host], assignment)
    }

    /// [`handshake`](Self::handshake) on the first of `hosts` that accepts
    /// a connection to the assigned port.
    fn handshake_any(hosts: &[IpAddr], assignment: &Assignment) -> Result<Session, JoinError> {
        let port = assignment.port;
        let mut writer = connect_any(hosts, port, ANSWER_TIMEOUT)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut reader = SessionReader {
            inner: BufReader::new(writer.try_clone()?),
        };
        writeln!(writer, "CLIENT{port}>>>HandshakeCode={}", assignment.code)?;
        let expect = |line: Option<Message>| match line {
            Some(Message::Notice(text)) => Ok(text),
            Some(Message::Chat(bytes)) => Err(JoinError::Protocol(
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
            None => Err(JoinError::Refused),
        };
        let answer = expect(reader.next_message()?)?;
        if answer == format!("SERVER{port}>>> Wrong handshake passcode") {
            return Err(JoinError::Refused);
        }
        if answer != format!("SERVER{port}>>> Connection successful") {
            return Err(JoinError::Protocol(answer));
        }
        let status = expect(reader.next_message()?)?;
        let Some((partner_port, partner_present)) = parse_partner_status(port, &status) else {
            return Err(JoinError::Protocol(status));
        };
        writer.set_read_timeout(None)?;
        Ok(Session {
            writer,
            reader,
            port,
            partner_present,
            partner_port,
        })
    }

    /// Portal (with `policy` while full), then handshake. A refused handshake
    /// (the reservation lapsed, say) goes back to the portal once.
    /// `on_full(attempt)` is called each time the portal answers "full".
    pub fn join(
        host: IpAddr,
        portal_port: u16,
        policy: RetryPolicy,
        mut on_full: impl FnMut(u32),
    ) -> Result<Session, JoinError> {
        Session::join_observed(host, portal_port, policy, |event| {
            if let JoinEvent::Full { attempt } = event {
                on_full(attempt);
            }
        })
    }

    /// [`join`](Self::join), reporting every setback to `on_event` as it
    /// happens: each "full" answer, and a first refused handshake.
    pub fn join_observed(
        host: IpAddr,
        portal_port: u16,
        policy: RetryPolicy,
        on_event: impl FnMut(JoinEvent),
    ) -> Result<Session, JoinError> {
        Session::join_any(&[host], portal_port, policy, on_event)
    }

    /// [`join_observed`](Self::join_observed) with a server that may be at
    /// any of `hosts` (the addresses of one name, from [`resolve`]).
    ///
    /// The portal is asked at the first of `hosts` that accepts a
    /// connection, trying them in order on every attempt. The assigned port
    /// is then tried first at the address whose portal answered, since the
    /// reservation was made by the server there, and only then at the
    /// others, in order.
    pub fn join_any(
        hosts: &[IpAddr],
        portal_port: u16,
        policy: RetryPolicy,
        mut on_event: impl FnMut(JoinEvent),
    ) -> Result<Session, JoinError> {
        let (assignment, portal_host) = obtain_port_any(hosts, portal_port, policy, |attempt| {
            on_event(JoinEvent::Full { attempt })
        })?;
        match Session::handshake_any(&portal_first(hosts, portal_host), &assignment) {
            Err(JoinError::Refused) => {
                on_event(JoinEvent::Refused {
                    port: assignment.port,
                });
                let (assignment, portal_host) =
                    obtain_port_any(hosts, portal_port, policy, |attempt| {
                        on_event(JoinEvent::Full { attempt })
                    })?;
                Session::handshake_any(&portal_first(hosts, portal_host), &assignment)
            }
            result => result,
        }
    }

    /// Sends one line; the newline is added.
    pub fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut framed = Vec::with_capacity(line.len() + 1);
        framed.extend_from_slice(line);
        framed.push(b'\n');
        self.writer.write_all(&framed)
    }

    /// The next line from the server; `None` once the server has closed.
    pub fn next_message(&mut self) -> io::Result<Option<Message>> {
        self.reader.next_message()
    }

    /// Limits how long [`next_message`](Self::next_message) waits.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.writer.set_read_timeout(timeout)
    }

    /// Sends `CLIENT>>> TERMINATE` and waits, up to `wait`, for the server
    /// to close. Lines still arriving meanwhile are returned.
    pub fn terminate(mut self, wait: Duration) -> io::Result<Vec<Message>> {
        self.send_line(TERMINATE_LINE.as_bytes())?;
        self.writer.set_read_timeout(Some(wait))?;
        let mut rest = Vec::new();
        while let Some(message) = self.reader.next_message()? {
            rest.push(message);
        }
        Ok(rest)
    }

    /// Splits into a reading half and a writing half, for a program that
    /// reads the server and its user at the same time.
    pub fn split(self) -> (SessionReader, SessionWriter) {
        (
            self.reader,
            SessionWriter {
                stream: self.writer,
            },
        )
    }
}

/// The receiving half of a [`Session`].
pub struct SessionReader {
    inner: BufReader<TcpStream>,
}

impl SessionReader {
    /// The next line from the server; `None` once the server has closed.
    pub fn next_message(&mut self) -> io::Result<Option<Message>> {
        let mut line = Vec::new();
        if self.inner.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(Some(Message::from_line(line)))
    }
}

/// The sending half of a [`Session`].
pub struct SessionWriter {
    stream: TcpStream,
}

impl SessionWriter {
    /// Sends one line; the newline is added.
    pub fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut framed = Vec::with_capacity(line.len() + 1);
        framed.extend_from_slice(line);
        framed.push(b'\n');
        self.stream.write_all(&framed)
    }

    /// Sends `CLIENT>>> TERMINATE`.
    pub fn terminate(&mut self) -> io::Result<()> {
        self.send_line(TERMINATE_LINE.as_bytes())
    }

    /// Closes both directions, which also wakes a thread blocked reading.
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Both)
    }
}

/// `hosts` with `first` moved to the front.
fn portal_first(hosts: &[IpAddr], first: IpAddr) -> Vec<IpAddr> {
    let mut ordered = vec![first];
    ordered.extend(hosts.iter().copied().filter(|&host| host != first));
    ordered
}

/// Reads the answer after `Connection successful` on `port`: the partner's
/// port, and whether the partner is already there.
fn parse_partner_status(port: u16, line: &str) -> Option<(u16, bool)> {
    let rest = line.strip_prefix(&format!("SERVER{port}>>> "))?;
    if let Some(partner) = rest.strip_prefix("Waiting for partner ") {
        return Some((partner.parse().ok()?, false));
    }
    let partner = rest.strip_prefix("Partner ")?.strip_suffix(" connected")?;
    Some((partner.parse().ok()?, true))
}

fn read_text_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    Ok(Some(
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_replies_are_parsed() {
        assert_eq!(
            parse_portal_reply("SERVER>>>full"),
            Some(PortalAnswer::Full)
        );
        assert_eq!(
            parse_portal_reply("SERVER>>>Port=>50003,HandshakeCode=abC123"),
            Some(PortalAnswer::Assigned(Assignment {
                port: 50003,
                code: "abC123".into()
            }))
        );
        for bad in [
            "SERVER>>>Port=>x,HandshakeCode=abc",
            "SERVER>>>Port=>1,HandshakeCode=",
            "SERVER>>>Port=>1,HandshakeCode=a b",
            "SERVER>>>Port=>1",
            "hello",
        ] {
            assert_eq!(parse_portal_reply(bad), None, "{bad}");
        }
    }

    #[test]
    fn addresses_are_tried_in_order_until_one_accepts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Nothing listens on 127.0.0.2 (the listener has 127.0.0.1 only),
        // so connecting there is refused at once.
        let refused: IpAddr = [127, 0, 0, 2].into();
        let listening: IpAddr = [127, 0, 0, 1].into();
        let stream = connect_any(&[refused, listening], port, ANSWER_TIMEOUT).unwrap();
        assert_eq!(
            stream.peer_addr().unwrap(),
            SocketAddr::new(listening, port)
        );

        let other_refused: IpAddr = [127, 0, 0, 3].into();
        let e = connect_any(&[refused, other_refused], port, ANSWER_TIMEOUT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let message = e.to_string();
        let (first, second) = message.split_once("; ").expect("one part per address");
        assert!(
            first.starts_with(&format!("127.0.0.2:{port}: ")),
            "{message}"
        );
        assert!(
            second.starts_with(&format!("127.0.0.3:{port}: ")),
            "{message}"
        );
        // One address: its own error, unchanged, as before there were more.
        let e = connect_any(&[refused], port, ANSWER_TIMEOUT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.raw_os_error().is_some(), "{e}");
    }

    #[test]
    fn an_ip_address_resolves_to_itself() {
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            [IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(resolve("::1").unwrap(), ["::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn the_worker_port_is_tried_first_where_the_portal_answered() {
        assert_eq!(
            portal_first(
                &[IpAddr::from([127, 0, 0, 1]), "::1".parse().unwrap()],
                "::1".parse().unwrap()
            ),
            [
                "::1".parse::<IpAddr>().unwrap(),
                IpAddr::from([127, 0, 0, 1])
            ]
        );
    }

    #[test]
    fn partner_status_is_parsed() {
        assert_eq!(
            parse_partner_status(50001, "SERVER50001>>> Waiting for partner 50002"),
            Some((50002, false))
        );
        assert_eq!(
            parse_partner_status(50002, "SERVER50002>>> Partner 50001 connected"),
            Some((50001, true))
        );
        for bad in [
            "SERVER50002>>> Partner 50001 connected",
            "SERVER50001>>> Partner x connected",
            "SERVER50001>>> Partner 50002 left",
            "SERVER50001>>> Waiting for partner",
            "SERVER>>> TIMEOUT",
        ] {
            assert_eq!(parse_partner_status(50001, bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_are_sorted_into_chat_and_notices() {
        assert_eq!(
            Message::from_line(b"hi".to_vec()),
            Message::Chat(b"hi".to_vec())
        );
        let timeout = Message::from_line(b"SERVER>>> TIMEOUT".to_vec());
        assert!(timeout.is_timeout());
        assert!(!Message::from_line(b"SERVER50001>>> Partner 50002 left".to_vec()).is_timeout());
        let shutdown = Message::from_line(b"SERVER>>> Server shutting down".to_vec());
        assert!(shutdown.is_shutdown() && !shutdown.is_timeout());
        assert!(!timeout.is_shutdown());
    }
}

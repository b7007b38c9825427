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
//!
//! # Wires
//!
//! Every message, both ways, is framed by the library's own codecs
//! ([`crate::wire`]), so the client speaks whichever [`Wire`] the server
//! does. The functions without a wire in their name speak [`Wire::Line`];
//! their `_with_wire` forms ([`request_port_with_wire`],
//! [`Session::handshake_with_wire`], [`Session::join_any_with_wire`]) take
//! the wire, and the session keeps it: every chat line, the handshake and
//! `CLIENT>>> TERMINATE` is then one message of that wire, and so is every
//! answer and notice of the server.
//!
//! # The original server's spellings
//!
//! The C# server this project re-creates answers in the same protocol but
//! spells two of its texts differently: `SERVER>>> FULL` for a full portal
//! (here `SERVER>>>full`) and `SERVER>>> IDLE TIMEOUT` for the idle timeout
//! (here `SERVER>>> TIMEOUT`); its passcodes are decimal numbers, which the
//! passcodes accepted here (ASCII letters and digits) already include.
//! These spellings are accepted on [`Wire::Dotnet`] only, the one wire the
//! original server speaks ([`parse_portal_reply_with_wire`],
//! [`Message::is_timeout_with_wire`]). On the line wire the server can only
//! be this project's, whose texts are pinned exactly; a text it never sends
//! is then reported as unexpected rather than guessed at.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use crate::config::MAX_LINE_LIMIT;
use crate::wire::{Codec, DecodeError, DotnetCodec, Inbox, Wire};

/// The line that ends a session from the client's side.
pub const TERMINATE_LINE: &str = "CLIENT>>> TERMINATE";

/// How long the original client waits before asking a full portal again.
pub const FULL_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How long to wait for any single answer from the server while joining.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest message taken from the server, in bytes: the largest
/// `--max-line` a `chat-server` accepts, so no message it forwards is ever
/// refused. It bounds what a broken or hostile server can make the client
/// hold: a line that never ends, or a .NET prefix that announces 2 GiB and
/// then trickles.
pub const MAX_INCOMING: usize = MAX_LINE_LIMIT;

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
    /// The server said something that is not in the protocol; empty if it
    /// closed before a whole answer.
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
            JoinError::Protocol(line) if line.is_empty() => {
                write!(f, "the server closed before a whole answer")
            }
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

/// Reads the portal's answer from one line, as this project's server
/// writes it on the line wire.
pub fn parse_portal_reply(line: &str) -> Option<PortalAnswer> {
    parse_portal_reply_with_wire(line, Wire::Line)
}

/// Reads the portal's answer from the one message it sends on `wire`. On
/// [`Wire::Dotnet`] the original C# server's `SERVER>>> FULL` is "full" too
/// (see [the original server's spellings](self#the-original-servers-spellings)).
///
/// A passcode is one or more ASCII letters and digits: this project's
/// server sends letters and digits, the original server a decimal number.
pub fn parse_portal_reply_with_wire(line: &str, wire: Wire) -> Option<PortalAnswer> {
    let full = match wire {
        Wire::Line => line == "SERVER>>>full",
        Wire::Dotnet => line == "SERVER>>>full" || line == "SERVER>>> FULL",
    };
    if full {
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

/// Asks the portal at `portal` once, on the line wire.
pub fn request_port(portal: SocketAddr) -> Result<PortalAnswer, JoinError> {
    request_port_with_wire(portal, Wire::Line)
}

/// Asks the portal at `portal` once, on `wire`.
pub fn request_port_with_wire(portal: SocketAddr, wire: Wire) -> Result<PortalAnswer, JoinError> {
    request_port_any(&[portal.ip()], portal.port(), wire).map(|(answer, _)| answer)
}

/// Asks the portal on `port` of the first of `hosts` that accepts a
/// connection, once. Returns the answer and the address that gave it.
fn request_port_any(
    hosts: &[IpAddr],
    port: u16,
    wire: Wire,
) -> Result<(PortalAnswer, IpAddr), JoinError> {
    let stream = connect_any(hosts, port, ANSWER_TIMEOUT)?;
    let host = stream.peer_addr()?.ip();
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let text = MessageReader::new(stream, wire)
        .next_text()?
        .ok_or_else(|| JoinError::Protocol(String::new()))?;
    // Not UTF-8 is not a portal reply either: reported as what it was.
    let text = String::from_utf8_lossy(&text).into_owned();
    let answer = parse_portal_reply_with_wire(&text, wire).ok_or(JoinError::Protocol(text))?;
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
    obtain_port_with_wire(portal, Wire::Line, policy, on_full)
}

/// [`obtain_port`] on `wire`.
pub fn obtain_port_with_wire(
    portal: SocketAddr,
    wire: Wire,
    policy: RetryPolicy,
    on_full: impl FnMut(u32),
) -> Result<Assignment, JoinError> {
    obtain_port_any(&[portal.ip()], portal.port(), wire, policy, on_full)
        .map(|(assignment, _)| assignment)
}

/// [`obtain_port`] from the first of `hosts` whose portal accepts a
/// connection, asked afresh on every attempt. Returns the assignment and
/// the address of the portal that gave it.
fn obtain_port_any(
    hosts: &[IpAddr],
    port: u16,
    wire: Wire,
    policy: RetryPolicy,
    mut on_full: impl FnMut(u32),
) -> Result<(Assignment, IpAddr), JoinError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request_port_any(hosts, port, wire)? {
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

/// One message from the server (a line, on the line wire), sorted by what
/// it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A chat message from the partner, byte for byte, without its framing
    /// (on the line wire: without its newline, or the `\r` before it).
    Chat(Vec<u8>),
    /// A server notice (a message beginning with `SERVER`).
    Notice(String),
}

impl Message {
    fn from_text(text: Vec<u8>) -> Message {
        if text.starts_with(b"SERVER") {
            Message::Notice(String::from_utf8_lossy(&text).into_owned())
        } else {
            Message::Chat(text)
        }
    }

    /// Whether this is the idle or session-limit notice that ends a session,
    /// as this project's server spells them.
    pub fn is_timeout(&self) -> bool {
        self.is_timeout_with_wire(Wire::Line)
    }

    /// [`is_timeout`](Self::is_timeout) for a session on `wire`. On
    /// [`Wire::Dotnet`] the original C# server's `SERVER>>> IDLE TIMEOUT`
    /// counts as well (see
    /// [the original server's spellings](self#the-original-servers-spellings)).
    pub fn is_timeout_with_wire(&self, wire: Wire) -> bool {
        let Message::Notice(notice) = self else {
            return false;
        };
        match notice.as_str() {
            "SERVER>>> TIMEOUT" | "SERVER>>> TOTAL TIME TIMEOUT" => true,
            "SERVER>>> IDLE TIMEOUT" => wire == Wire::Dotnet,
            _ => false,
        }
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
    wire: Wire,
    /// The worker port this session holds.
    pub port: u16,
    /// Whether the partner was connected when we joined.
    pub partner_present: bool,
    /// The partner's port, the one paired with ours.
    pub partner_port: u16,
}

impl Session {
    /// Connects to the assigned port on `host` and presents the passcode in
    /// the original client's form, on the line wire.
    pub fn handshake(host: IpAddr, assignment: &Assignment) -> Result<Session, JoinError> {
        Session::handshake_with_wire(host, assignment, Wire::Line)
    }

    /// [`handshake`](Self::handshake) on `wire`: the passcode goes as one
    /// message, and the session goes on speaking `wire`.
    pub fn handshake_with_wire(
        host: IpAddr,
        assignment: &Assignment,
        wire: Wire,
    ) -> Result<Session, JoinError> {
        Session::handshake_any(&[host], assignment, wire)
    }

    /// [`handshake_with_wire`](Self::handshake_with_wire) on the first of
    /// `hosts` that accepts a connection to the assigned port.
    fn handshake_any(
        hosts: &[IpAddr],
        assignment: &Assignment,
        wire: Wire,
    ) -> Result<Session, JoinError> {
        let port = assignment.port;
        let mut writer = connect_any(hosts, port, ANSWER_TIMEOUT)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut reader = SessionReader {
            inner: MessageReader::new(writer.try_clone()?, wire),
        };
        let handshake = format!("CLIENT{port}>>>HandshakeCode={}", assignment.code);
        send(&mut writer, wire, handshake.as_bytes())?;
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
            wire,
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
        on_event: impl FnMut(JoinEvent),
    ) -> Result<Session, JoinError> {
        Session::join_any_with_wire(hosts, portal_port, policy, Wire::Line, on_event)
    }

    /// [`join_any`](Self::join_any) on `wire`: the portal's answer, the
    /// handshake and the whole session are messages of `wire`.
    pub fn join_any_with_wire(
        hosts: &[IpAddr],
        portal_port: u16,
        policy: RetryPolicy,
        wire: Wire,
        mut on_event: impl FnMut(JoinEvent),
    ) -> Result<Session, JoinError> {
        let obtain = |on_event: &mut dyn FnMut(JoinEvent)| {
            obtain_port_any(hosts, portal_port, wire, policy, |attempt| {
                on_event(JoinEvent::Full { attempt })
            })
        };
        let (assignment, portal_host) = obtain(&mut on_event)?;
        match Session::handshake_any(&portal_first(hosts, portal_host), &assignment, wire) {
            Err(JoinError::Refused) => {
                on_event(JoinEvent::Refused {
                    port: assignment.port,
                });
                let (assignment, portal_host) = obtain(&mut on_event)?;
                Session::handshake_any(&portal_first(hosts, portal_host), &assignment, wire)
            }
            result => result,
        }
    }

    /// The wire this session speaks.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Sends one chat line as one message of the session's wire: on the
    /// line wire, the line and a newline.
    pub fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        send(&mut self.writer, self.wire, line)
    }

    /// The next message from the server; `None` once the server has closed.
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

    /// The socket, with no read timeout, and what has arrived on it past
    /// the last message handed out: for a program that drives the socket
    /// itself from here on (a benchmark's own event loop, say).
    pub fn into_parts(self) -> (TcpStream, Inbox) {
        (self.writer, self.reader.inner.inbox)
    }

    /// Splits into a reading half and a writing half, for a program that
    /// reads the server and its user at the same time.
    pub fn split(self) -> (SessionReader, SessionWriter) {
        (
            self.reader,
            SessionWriter {
                stream: self.writer,
                wire: self.wire,
            },
        )
    }
}

/// The receiving half of a [`Session`].
pub struct SessionReader {
    inner: MessageReader,
}

impl SessionReader {
    /// The next message from the server; `None` once the server has closed.
    pub fn next_message(&mut self) -> io::Result<Option<Message>> {
        Ok(self.inner.next_text()?.map(Message::from_text))
    }
}

/// The sending half of a [`Session`].
pub struct SessionWriter {
    stream: TcpStream,
    wire: Wire,
}

impl SessionWriter {
    /// Sends one chat line as one message of the session's wire: on the
    /// line wire, the line and a newline.
    pub fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        send(&mut self.stream, self.wire, line)
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

/// Sends `text` to `stream` as one message of `wire`, in one write.
///
/// On the dotnet wire a text longer than a .NET string can be is refused
/// (`InvalidInput`), as no reader could take it; nothing is sent.
fn send(stream: &mut TcpStream, wire: Wire, text: &[u8]) -> io::Result<()> {
    let longest = match wire {
        Wire::Line => usize::MAX,
        Wire::Dotnet => DotnetCodec::MAX_TEXT,
    };
    if text.len() > longest {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {wire} message holds at most {longest} bytes"),
        ));
    }
    let mut framed = Vec::new();
    wire.encode(text, &mut framed);
    stream.write_all(&framed)
}

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The messages arriving on one socket, cut out by `wire`'s codec.
struct MessageReader {
    stream: TcpStream,
    wire: Wire,
    /// What has arrived and is not yet handed out. It outlives each call,
    /// so bytes read past one message (the partner's first line, right
    /// after the handshake's answers) wait for the next.
    inbox: Inbox,
}

impl MessageReader {
    fn new(stream: TcpStream, wire: Wire) -> MessageReader {
        MessageReader {
            stream,
            wire,
            inbox: Inbox::new(),
        }
    }

    /// The text of the next message; `None` once the stream has ended. On
    /// the line wire, a last line without its newline is a message; on the
    /// dotnet wire, half a message is not.
    ///
    /// A message over [`MAX_INCOMING`] bytes, or one this wire cannot
    /// frame, is an `InvalidData` error. So is a read timeout's error, after
    /// which the bytes of a partial message are kept for the next call.
    fn next_text(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = [0; READ_CHUNK];
        loop {
            let text = self
                .inbox
                .next_message(&self.wire, MAX_INCOMING)
                .map_err(|e| self.undecodable(e))?;
            if let Some((text, _)) = text {
                return Ok(Some(self.take(text)));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    let last = self.inbox.take_final(&self.wire);
                    return Ok(last.map(|(text, _)| self.take(text)));
                }
                Ok(n) => self.inbox.extend(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A copy of a message's text, and the memory of an inbox left empty
    /// given back, so a quiet session holds no buffer.
    fn take(&mut self, text: Range<usize>) -> Vec<u8> {
        let text = self.inbox.get(text).to_vec();
        self.inbox.shrink_if_empty();
        text
    }

    fn undecodable(&self, e: DecodeError) -> io::Error {
        let why = match e {
            DecodeError::TooLong => format!("a message over {MAX_INCOMING} bytes"),
            DecodeError::Malformed => format!("bytes that are not a {} message", self.wire),
        };
        io::Error::new(io::ErrorKind::InvalidData, format!("the server sent {why}"))
    }
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
    fn the_original_servers_spellings_count_on_the_dotnet_wire_only() {
        let decimal = Some(PortalAnswer::Assigned(Assignment {
            port: 50003,
            code: "0482913".into(),
        }));
        for wire in Wire::ALL {
            // A decimal passcode (a leading zero kept) is a passcode on both.
            assert_eq!(
                parse_portal_reply_with_wire("SERVER>>>Port=>50003,HandshakeCode=0482913", wire),
                decimal,
                "{wire}"
            );
            assert_eq!(
                parse_portal_reply_with_wire("SERVER>>>full", wire),
                Some(PortalAnswer::Full),
                "{wire}"
            );
            for bad in ["SERVER>>> full", "SERVER>>>FULL", "SERVER>>> FULL "] {
                assert_eq!(
                    parse_portal_reply_with_wire(bad, wire),
                    None,
                    "{wire} {bad}"
                );
            }
            let timeout = Message::from_text(b"SERVER>>> TIMEOUT".to_vec());
            assert!(timeout.is_timeout_with_wire(wire), "{wire}");
            for not in [
                &b"SERVER>>> IDLE TIMEOUT "[..],
                b"IDLE TIMEOUT",
                b"SERVER>>> IDLE",
            ] {
                let message = Message::from_text(not.to_vec());
                assert!(!message.is_timeout_with_wire(wire), "{wire} {not:?}");
            }
        }
        assert_eq!(
            parse_portal_reply_with_wire("SERVER>>> FULL", Wire::Dotnet),
            Some(PortalAnswer::Full)
        );
        assert_eq!(
            parse_portal_reply_with_wire("SERVER>>> FULL", Wire::Line),
            None
        );
        assert_eq!(parse_portal_reply("SERVER>>> FULL"), None);
        let idle = Message::from_text(b"SERVER>>> IDLE TIMEOUT".to_vec());
        assert!(idle.is_timeout_with_wire(Wire::Dotnet));
        assert!(!idle.is_timeout_with_wire(Wire::Line) && !idle.is_timeout());
        // A partner cannot pose as the server: its text is a chat message.
        assert!(
            !Message::Chat(b"SERVER>>> IDLE TIMEOUT".to_vec()).is_timeout_with_wire(Wire::Dotnet)
        );
    }

    /// A connected pair of sockets on loopback: (client side, server side).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        (client, server)
    }

    /// Every message `server_bytes` holds, read by a client on `wire`, with
    /// the bytes written one at a time; then what the end of stream gives.
    fn read_all(wire: Wire, server_bytes: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let (client, mut server) = socket_pair();
        server.set_nodelay(true).unwrap();
        let bytes = server_bytes.to_vec();
        let writer = std::thread::spawn(move || {
            for byte in bytes {
                // The reader may have stopped at an error and closed.
                if server.write_all(&[byte]).is_err() {
                    return;
                }
            }
        });
        let mut reader = MessageReader::new(client, wire);
        let mut texts = Vec::new();
        let result = loop {
            match reader.next_text() {
                Ok(Some(text)) => texts.push(text),
                Ok(None) => break Ok(texts),
                Err(e) => break Err(e),
            }
        };
        drop(reader);
        writer.join().unwrap();
        result
    }

    #[test]
    fn messages_are_read_through_the_wires_codec_in_any_split() {
        assert_eq!(
            read_all(Wire::Line, b"one\r\ntwo\n\nlast").unwrap(),
            [&b"one"[..], b"two", b"", b"last"]
        );
        let dotnet = b"\x03one\x06a\nb\rc\r\x00\x05ha";
        assert_eq!(
            read_all(Wire::Dotnet, dotnet).unwrap(),
            [&b"one"[..], b"a\nb\rc\r", b""],
            "half a message at the end is not one"
        );
    }

    #[test]
    fn a_message_over_the_limit_is_an_error_as_soon_as_it_shows() {
        // 2 GiB announced in 5 bytes: refused at the prefix, nothing waited for.
        let e = read_all(Wire::Dotnet, b"\x01x\xff\xff\xff\xff\x07").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            format!("the server sent a message over {MAX_INCOMING} bytes")
        );
        let e = read_all(Wire::Dotnet, &[0x80; 5]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server sent bytes that are not a dotnet message"
        );
    }

    #[test]
    fn a_message_is_framed_by_the_wire_in_one_write() {
        for (wire, text, framed) in [
            (Wire::Line, &b"hi"[..], &b"hi\n"[..]),
            (Wire::Line, b"", b"\n"),
            (Wire::Dotnet, b"hi", b"\x02hi"),
            (Wire::Dotnet, b"a\nb\r", b"\x04a\nb\r"),
            (Wire::Dotnet, b"", b"\x00"),
        ] {
            let (mut client, mut server) = socket_pair();
            send(&mut client, wire, text).unwrap();
            drop(client);
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            assert_eq!(got, framed, "{wire} {text:?}");
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
            Message::from_text(b"hi".to_vec()),
            Message::Chat(b"hi".to_vec())
        );
        let timeout = Message::from_text(b"SERVER>>> TIMEOUT".to_vec());
        assert!(timeout.is_timeout());
        assert!(!Message::from_text(b"SERVER50001>>> Partner 50002 left".to_vec()).is_timeout());
        let shutdown = Message::from_text(b"SERVER>>> Server shutting down".to_vec());
        assert!(shutdown.is_shutdown() && !shutdown.is_timeout());
        assert!(!timeout.is_shutdown());
    }
}

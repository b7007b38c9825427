//! Shared helpers for the integration tests: the real `chat-server` binary
//! on OS-chosen loopback ports, stopped when the test ends ([`TestServer`]);
//! clients that behave, on the client library ([`session`], [`join_at`],
//! [`session_pair`]); one raw client, [`Peer`], for a test that sends exact
//! bytes on purpose; and fault injection and measurement through `/proc`.
#![allow(dead_code)] // each test file uses a different part of this module

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use portal_chat::client::{Message, Session};

/// A `chat-server` child process. Killed when dropped.
pub struct TestServer {
    child: Child,
    pub portal: SocketAddr,
    pub workers: Vec<SocketAddr>,
    /// Kept open so the server never gets a broken pipe on stdout.
    _stdout: BufReader<ChildStdout>,
}

impl TestServer {
    /// Starts the server with `--port 0 --tick-ms 20` and then `args` (later
    /// flags win), and waits for it to print its listeners.
    pub fn start(args: &[&str]) -> TestServer {
        TestServer::spawn::<&str>(&[], args, Stdio::null())
    }

    /// Like [`start`](Self::start), but runs the binary through `prefix`, a
    /// command that sets something up and then execs its arguments in place
    /// (`prlimit --nofile=64:64`, say), so that [`pid`](Self::pid) is still
    /// the server's. An empty prefix is exactly `start`.
    pub fn start_with_prefix<S: AsRef<OsStr>>(prefix: &[S], args: &[&str]) -> TestServer {
        TestServer::spawn(prefix, args, Stdio::null())
    }

    /// Like [`start`](Self::start), with the server's log (its stderr)
    /// readable at `RUST_LOG=info`.
    pub fn start_logged(args: &[&str]) -> (TestServer, BufReader<ChildStderr>) {
        let mut server = TestServer::spawn::<&str>(&[], args, Stdio::piped());
        let log = BufReader::new(server.child.stderr.take().expect("stderr piped"));
        (server, log)
    }

    fn spawn<S: AsRef<OsStr>>(prefix: &[S], args: &[&str], stderr: Stdio) -> TestServer {
        let mut child = server_command(prefix)
            .args(["--port", "0", "--tick-ms", "20"])
            .args(args)
            .stdin(Stdio::null())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start chat-server");
        let workers: usize = args
            .iter()
            .position(|a| *a == "--workers")
            .map(|i| args[i + 1].parse().unwrap())
            .unwrap_or(4);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut read_addr = |prefix: String| -> SocketAddr {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read server stdout");
            let addr = line
                .trim_end()
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"));
            addr.parse().unwrap()
        };
        let portal = read_addr("portal ".into());
        let workers = (1..=workers)
            .map(|n| read_addr(format!("worker {n} ")))
            .collect();
        TestServer {
            child,
            portal,
            workers,
            _stdout: stdout,
        }
    }

    pub fn host(&self) -> IpAddr {
        self.portal.ip()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Joins with the client library: the portal once (panics if it is
    /// full), then the handshake; see [`join_at`].
    pub fn join(&self) -> Session {
        join_at(self.portal)
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `chat-server` binary as a command, run through `prefix` (a command
/// that sets something up and then execs its arguments in place, as
/// `prlimit` does) unless it is empty.
pub fn server_command<S: AsRef<OsStr>>(prefix: &[S]) -> Command {
    let server = env!("CARGO_BIN_EXE_chat-server");
    match prefix.split_first() {
        None => Command::new(server),
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(server);
            command
        }
    }
}

/// Runs `chat-server` with `args` to its end, with stdin empty and both
/// outputs captured; fails if it is still running after [`IO_LIMIT`].
pub fn run_to_end(args: &[&str]) -> Output {
    run_to_end_with::<&str>(&[], args)
}

/// [`run_to_end`] through a command `prefix`, as [`server_command`] takes it.
pub fn run_to_end_with<S: AsRef<OsStr>>(prefix: &[S], args: &[&str]) -> Output {
    let mut child = server_command(prefix)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server");
    if !wait_until(IO_LIMIT, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chat-server {args:?} did not exit");
    }
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------
// Fault injection and measurement, for tests/faults.rs and tests/soak.rs.
// ---------------------------------------------------------------------------

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use portal_chat::client::{
    Assignment, PortalAnswer, TERMINATE_LINE, parse_portal_reply, request_port,
};
use rand::rngs::StdRng;
use rand::{Rng as _, RngExt as _, SeedableRng};

/// The longest any single socket read or write in these helpers may block
/// without progress before it counts as a failure.
pub const IO_LIMIT: Duration = Duration::from_secs(10);

/// How often the pump threads look at their stop flag while blocked.
pub const POLL: Duration = Duration::from_millis(100);

/// A command prefix that runs the server with at most `limit` open files,
/// as its soft and its hard limit; see [`nofile_prefix_with`].
pub fn nofile_prefix(limit: u32) -> Vec<String> {
    nofile_prefix_with(limit, limit)
}

/// A command prefix that runs the server with these soft and hard open-file
/// limits: `prlimit` (util-linux) if installed, else the shell's `ulimit`.
/// Both exec the server in place, so the child's pid is the server's.
pub fn nofile_prefix_with(soft: u32, hard: u32) -> Vec<String> {
    let prlimit = Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if prlimit {
        vec!["prlimit".into(), format!("--nofile={soft}:{hard}")]
    } else {
        vec![
            "sh".into(),
            "-c".into(),
            // Soft first: the hard limit cannot go below the soft one.
            format!("ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" \"$@\""),
        ]
    }
}

/// CPU time (user + system) the process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The name, in parentheses, may hold anything; the fields after it are
    // fixed: state is field 3, utime 14 and stime 15.
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("numeric stat field") };
    field(14) + field(15)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// Resident memory of the process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).expect("VmRSS in /proc/PID/status")
}

/// Resident memory of the process, in KiB, if it is still running.
pub fn try_rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Open file descriptors of the process.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// The numbers of the process's open file descriptors.
pub fn fd_numbers(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The server's descriptor count with no client connected, measured once
/// its event loop runs (it opens its signal pipe only then, after printing
/// its addresses): a stray line on a worker port is answered, the stray
/// leaves, and the count is taken once its descriptor is gone. Call it on a
/// server with no clients.
pub fn settled_fds(server: &TestServer) -> usize {
    let pid = server.pid();
    let mut stray = connect(server.workers[0]).expect("connect");
    stray.write_all(b"stray\n").expect("send");
    let mut answer = Vec::new();
    stray
        .read_to_end(&mut answer)
        .expect("the stray is answered and closed");
    let with_stray = fd_count(pid);
    drop(stray);
    assert!(
        wait_until(IO_LIMIT, || fd_count(pid) < with_stray),
        "the server keeps a closed connection's descriptor"
    );
    fd_count(pid)
}

/// The soft and hard open-file limits of the process.
pub fn nofile_limits(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/PID/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("open-files line in /proc/PID/limits");
    let mut words = line["Max open files".len()..].split_whitespace();
    let soft = words.next().unwrap_or_default().to_string();
    let hard = words.next().unwrap_or_default().to_string();
    (soft, hard)
}

/// The kernel's send and receive queue lengths, in bytes, of the TCP socket
/// with this local and remote port (IPv4, from `/proc/net/tcp`).
pub fn tcp_queues(local_port: u16, remote_port: u16) -> Option<(u64, u64)> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5
            || port_of(fields[1])? != local_port
            || port_of(fields[2])? != remote_port
        {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Connects with the read and write limits of these helpers set.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_within(addr, IO_LIMIT)
}

/// [`connect`], with its own limit for the connect itself.
pub fn connect_within(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    with_limits(TcpStream::connect_timeout(&addr, limit)?)
}

/// Like [`connect`], from the local address `from` (the OS picks the port):
/// `--max-per-ip` counts per source address, and every address of
/// 127.0.0.0/8 is this machine's own, so one test can be many sources.
pub fn connect_from(from: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&addr.into(), IO_LIMIT)?;
    with_limits(socket.into())
}

/// [`connect`] from `from`, or from wherever the OS chooses.
fn connect_maybe_from(from: Option<IpAddr>, addr: SocketAddr) -> io::Result<TcpStream> {
    match from {
        Some(from) => connect_from(from, addr),
        None => connect(addr),
    }
}

fn with_limits(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_read_timeout(Some(IO_LIMIT))?;
    stream.set_write_timeout(Some(IO_LIMIT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Asks the portal once, from `from`.
pub fn request_port_from(from: IpAddr, portal: SocketAddr) -> Result<PortalAnswer, String> {
    let stream = connect_from(from, portal).map_err(|e| format!("connect from {from}: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("portal answer to {from}: {e}"))?;
    line.strip_suffix('\n')
        .and_then(parse_portal_reply)
        .ok_or_else(|| format!("the portal answered {from} with {line:?}"))
}

/// [`request_port`] from `from`, or from wherever the OS chooses.
fn request_port_maybe_from(
    from: Option<IpAddr>,
    portal: SocketAddr,
) -> Result<PortalAnswer, String> {
    match from {
        Some(from) => request_port_from(from, portal),
        None => request_port(portal).map_err(|e| e.to_string()),
    }
}

/// Asks the portal once; panics on anything but an answer.
pub fn ask_portal(server: &TestServer) -> PortalAnswer {
    request_port(server.portal).expect("the portal answers")
}

/// Asks the portal once for a port; panics if it is full.
pub fn assign(server: &TestServer) -> Assignment {
    match ask_portal(server) {
        PortalAnswer::Assigned(assignment) => assignment,
        PortalAnswer::Full => panic!("the portal is full"),
    }
}

/// The handshake line in the original client's form, with its `\n`: what
/// the client library sends, for a test that sends it itself.
pub fn handshake_line(assignment: &Assignment) -> String {
    format!(
        "CLIENT{}>>>HandshakeCode={}\n",
        assignment.port, assignment.code
    )
}

// ---------------------------------------------------------------------------
// Well-behaved clients: the client library.
// ---------------------------------------------------------------------------

/// Claims `assignment` on `host` with the client library; panics if it is
/// refused. The session's reads wait at most [`IO_LIMIT`].
pub fn session(host: IpAddr, assignment: &Assignment) -> Session {
    let session = Session::handshake(host, assignment)
        .unwrap_or_else(|e| panic!("handshake on port {}: {e}", assignment.port));
    session
        .set_read_timeout(Some(IO_LIMIT))
        .expect("set a read timeout");
    session
}

/// Asks the portal at `portal` once (panics if it is full), then claims the
/// port with [`session`]. Unlike `Session::join`, a refused handshake is
/// not retried: a test wants to see it.
pub fn join_at(portal: SocketAddr) -> Session {
    match request_port(portal).expect("the portal answers") {
        PortalAnswer::Assigned(assignment) => session(portal.ip(), &assignment),
        PortalAnswer::Full => panic!("the portal is full"),
    }
}

/// The next message of `session`; panics if the server has closed or the
/// read fails.
pub fn next(session: &mut Session) -> Message {
    session
        .next_message()
        .unwrap_or_else(|e| panic!("port {}: read: {e}", session.port))
        .unwrap_or_else(|| panic!("port {}: the server closed", session.port))
}

/// A chat line, as the client library reads it.
pub fn chat(text: impl AsRef<[u8]>) -> Message {
    Message::Chat(text.as_ref().to_vec())
}

/// A server notice, as the client library reads it.
pub fn notice(text: impl Into<String>) -> Message {
    Message::Notice(text.into())
}

/// A simulated client's steady talk: a thread that calls `send` every
/// `every` until told to stop or a send fails. Returns the stop flag, the
/// number of sends that succeeded, and the thread.
pub fn pinger(
    every: Duration,
    mut send: impl FnMut() -> io::Result<()> + Send + 'static,
) -> (Arc<AtomicBool>, Arc<AtomicUsize>, JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let handle = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) && send().is_ok() {
            sent2.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(every); // the client's pace, not a wait for a condition
        }
    });
    (stop, sent, handle)
}

/// Two sessions that are partners; the first has read "partner connected",
/// so both are ready to chat.
pub fn session_pair(server: &TestServer) -> (Session, Session) {
    session_pair_at(server.portal)
}

/// [`session_pair`] through the portal at `portal`.
pub fn session_pair_at(portal: SocketAddr) -> (Session, Session) {
    let mut first = join_at(portal);
    let second = join_at(portal);
    assert_eq!(second.partner_port, first.port, "consecutive joins pair up");
    assert!(second.partner_present);
    let joined = format!("SERVER{}>>> Partner {} connected", first.port, second.port);
    assert_eq!(next(&mut first), notice(joined));
    (first, second)
}

/// Claims `assignment` and gives it straight back: handshake and
/// `CLIENT>>> TERMINATE` in one write, then everything until the server
/// closes. When this returns, the port is free again.
pub fn release(host: IpAddr, assignment: &Assignment) -> io::Result<Vec<u8>> {
    release_maybe_from(None, host, assignment)
}

/// [`release`], connecting from `from`.
pub fn release_from(from: IpAddr, host: IpAddr, assignment: &Assignment) -> io::Result<Vec<u8>> {
    release_maybe_from(Some(from), host, assignment)
}

fn release_maybe_from(
    from: Option<IpAddr>,
    host: IpAddr,
    assignment: &Assignment,
) -> io::Result<Vec<u8>> {
    let mut stream = connect_maybe_from(from, SocketAddr::new(host, assignment.port))?;
    let claim_and_leave = handshake_line(assignment) + TERMINATE_LINE + "\n";
    stream.write_all(claim_and_leave.as_bytes())?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    Ok(rest)
}

/// Whether every worker port is free: asked once per worker port, the portal
/// hands out each of them exactly once. Every port obtained is given back
/// before this returns, whatever the outcome.
pub fn check_every_port_free(server: &TestServer) -> Result<(), String> {
    check_every_port_free_maybe_from(server, &[])
}

/// [`check_every_port_free`] for a server with `--max-per-ip`: the i-th
/// request comes from `sources[i]`, and that port is given back from there.
/// There must be a source per worker port.
pub fn check_every_port_free_from(server: &TestServer, sources: &[IpAddr]) -> Result<(), String> {
    assert!(sources.len() >= server.workers.len(), "a source per port");
    check_every_port_free_maybe_from(server, sources)
}

fn check_every_port_free_maybe_from(server: &TestServer, sources: &[IpAddr]) -> Result<(), String> {
    let mut obtained = Vec::new();
    let mut full = 0;
    for n in 0..server.workers.len() {
        let from = sources.get(n).copied();
        match request_port_maybe_from(from, server.portal) {
            Ok(PortalAnswer::Assigned(assignment)) => obtained.push((from, assignment)),
            Ok(PortalAnswer::Full) => full += 1,
            Err(e) => return Err(format!("the portal did not answer: {e}")),
        }
    }
    for (from, assignment) in &obtained {
        release_maybe_from(*from, server.host(), assignment)
            .map_err(|e| format!("giving port {} back failed: {e}", assignment.port))?;
    }
    let mut ports: Vec<u16> = obtained.iter().map(|(_, a)| a.port).collect();
    ports.sort_unstable();
    let mut workers: Vec<u16> = server.workers.iter().map(|w| w.port()).collect();
    workers.sort_unstable();
    if full > 0 || ports != workers {
        return Err(format!(
            "asked {} times: got ports {ports:?} and {full} \"full\"; workers are {workers:?}",
            workers.len()
        ));
    }
    Ok(())
}

/// Retries [`check_every_port_free`] until it holds or `limit` passes.
pub fn wait_every_port_free(server: &TestServer, limit: Duration) -> Result<(), String> {
    wait_every_port_free_maybe_from(server, &[], limit)
}

/// Retries [`check_every_port_free_from`] until it holds or `limit` passes.
pub fn wait_every_port_free_from(
    server: &TestServer,
    sources: &[IpAddr],
    limit: Duration,
) -> Result<(), String> {
    assert!(sources.len() >= server.workers.len(), "a source per port");
    wait_every_port_free_maybe_from(server, sources, limit)
}

fn wait_every_port_free_maybe_from(
    server: &TestServer,
    sources: &[IpAddr],
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match check_every_port_free_maybe_from(server, sources) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One line read from the server, exactly as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// A complete line, without its `\n`.
    Line(Vec<u8>),
    /// Bytes and then the end of the stream, with no `\n`: half a line.
    Partial(Vec<u8>),
    /// The end of the stream.
    Eof,
}

impl Got {
    /// A complete line of text.
    pub fn line(text: &str) -> Got {
        Got::Line(text.as_bytes().to_vec())
    }
}

/// Reads one line as it came; a read timeout is an error.
pub fn read_got(reader: &mut impl BufRead) -> io::Result<Got> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(Got::Eof);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        Ok(Got::Line(line))
    } else {
        Ok(Got::Partial(line))
    }
}

/// A client in a session, on raw sockets: exact bytes out and in.
pub struct Peer {
    /// The worker port held.
    pub port: u16,
    /// The paired worker port.
    pub partner: u16,
    /// Whether the partner was there at the handshake.
    pub partner_present: bool,
    /// The socket, for writing (and shutting down).
    pub stream: TcpStream,
    /// A clone of the socket, buffered, for reading.
    pub reader: BufReader<TcpStream>,
}

impl Peer {
    /// Portal, then handshake; panics if the portal is full or refuses.
    pub fn join(server: &TestServer) -> Peer {
        let assignment = assign(server);
        Peer::handshake(server.host(), &assignment)
            .unwrap_or_else(|e| panic!("handshake on {}: {e}", assignment.port))
    }

    /// Two clients that are partners; the first has read "partner
    /// connected", so both are ready to chat.
    pub fn pair(server: &TestServer) -> (Peer, Peer) {
        let mut first = Peer::join(server);
        let second = Peer::join(server);
        assert_eq!(second.partner, first.port, "consecutive joins pair up");
        assert!(second.partner_present);
        first.expect(&format!(
            "SERVER{}>>> Partner {} connected",
            first.port, first.partner
        ));
        (first, second)
    }

    /// Connects to the assigned port, presents the passcode in the original
    /// client's form and reads the two answers.
    pub fn handshake(host: IpAddr, assignment: &Assignment) -> Result<Peer, String> {
        Peer::handshake_maybe_from(None, host, assignment)
    }

    /// [`handshake`](Self::handshake), connecting from `from`.
    pub fn handshake_from(
        from: IpAddr,
        host: IpAddr,
        assignment: &Assignment,
    ) -> Result<Peer, String> {
        Peer::handshake_maybe_from(Some(from), host, assignment)
    }

    fn handshake_maybe_from(
        from: Option<IpAddr>,
        host: IpAddr,
        assignment: &Assignment,
    ) -> Result<Peer, String> {
        let stream = connect_maybe_from(from, SocketAddr::new(host, assignment.port))
            .map_err(|e| e.to_string())?;
        Peer::handshake_with(stream, assignment, handshake_line(assignment).as_bytes())
    }

    /// Sends `line` exactly as it is on `stream`, connected to the assigned
    /// port, and reads the two answers: "connection successful" and the
    /// partner's status.
    pub fn handshake_with(
        stream: TcpStream,
        assignment: &Assignment,
        line: &[u8],
    ) -> Result<Peer, String> {
        let port = assignment.port;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut peer = Peer {
            port,
            partner: 0,
            partner_present: false,
            stream,
            reader,
        };
        peer.send(line).map_err(|e| e.to_string())?;
        let mut answer = || match peer.next() {
            Ok(Got::Line(line)) => Ok(String::from_utf8_lossy(&line).into_owned()),
            other => Err(format!("handshake answer: {other:?}")),
        };
        let first = answer()?;
        if first != format!("SERVER{port}>>> Connection successful") {
            return Err(format!("handshake refused: {first:?}"));
        }
        let status = answer()?;
        let rest = status
            .strip_prefix(&format!("SERVER{port}>>> "))
            .ok_or_else(|| format!("unexpected status {status:?}"))?;
        let (partner, present) = if let Some(p) = rest.strip_prefix("Waiting for partner ") {
            (p, false)
        } else if let Some(p) = rest
            .strip_prefix("Partner ")
            .and_then(|p| p.strip_suffix(" connected"))
        {
            (p, true)
        } else {
            return Err(format!("unexpected status {status:?}"));
        };
        peer.partner = partner
            .parse()
            .map_err(|_| format!("unexpected status {status:?}"))?;
        peer.partner_present = present;
        Ok(peer)
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes a line and its `\n`.
    pub fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut framed = line.to_vec();
        framed.push(b'\n');
        self.stream.write_all(&framed)
    }

    /// The next line as it came.
    pub fn next(&mut self) -> io::Result<Got> {
        read_got(&mut self.reader)
    }

    /// Panics unless the next line is `want`.
    pub fn expect(&mut self, want: &str) {
        match self.next() {
            Ok(got) if got == Got::line(want) => {}
            other => panic!("port {}: expected {want:?}, got {other:?}", self.port),
        }
    }

    /// Panics unless the server closes now.
    pub fn expect_eof(&mut self) {
        match self.next() {
            Ok(Got::Eof) => {}
            other => panic!("port {}: expected the end, got {other:?}", self.port),
        }
    }

    /// The local port of our socket.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }
}

/// A chat line that names its sender, its addressee, its number and its
/// length, with a payload computed from them: whoever receives it can tell a
/// lost, reordered, misrouted, truncated or corrupted line.
pub fn seq_line(from: u16, to: u16, seq: u64, len: usize) -> Vec<u8> {
    let mut line = format!("{from}>{to}#{seq}/{len}:").into_bytes();
    let salt = seq as usize * 7 + from as usize;
    line.extend((0..len).map(|i| b'a' + ((salt + i * 13) % 26) as u8));
    line
}

/// Checks that `line` is exactly [`seq_line`]`(from, to, seq, _)`.
pub fn check_seq_line(line: &[u8], from: u16, to: u16, seq: u64) -> Result<(), String> {
    let header = format!("{from}>{to}#{seq}/");
    let show = || String::from_utf8_lossy(&line[..line.len().min(48)]).into_owned();
    let rest = line
        .strip_prefix(header.as_bytes())
        .ok_or_else(|| format!("expected line {header}..., got {:?}", show()))?;
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| format!("malformed line {:?}", show()))?;
    let len: usize = std::str::from_utf8(&rest[..colon])
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("malformed line {:?}", show()))?;
    if line != seq_line(from, to, seq, len).as_slice() {
        return Err(format!(
            "line {header}{len} is damaged ({} bytes): {:?}",
            line.len(),
            show()
        ));
    }
    Ok(())
}

/// A thread writing numbered lines ([`seq_line`]) to the partner.
pub struct Pump {
    stop: Arc<AtomicBool>,
    /// Lines written completely so far.
    pub sent: Arc<AtomicU64>,
    /// How many times a write made no progress for [`POLL`]: the socket's
    /// buffers were full, that is, the sender was being held back.
    pub stalls: Arc<AtomicU64>,
    handle: JoinHandle<io::Result<u64>>,
}

/// What a [`Pump`] writes.
pub struct PumpPlan {
    /// Our port and the partner's, for the line headers.
    pub from: u16,
    /// The partner's port.
    pub to: u16,
    /// Payload length of line number `seq`.
    pub len: fn(u64) -> usize,
    /// Stop after this many lines (or when told to).
    pub lines: Option<u64>,
    /// What to do after the last line.
    pub end: PumpEnd,
}

/// How a [`Pump`] finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// Just stop writing.
    Nothing,
    /// Send `CLIENT>>> TERMINATE`.
    Terminate,
    /// Send the last line without its `\n`, then shut down the write side.
    HalfClose,
}

impl Pump {
    /// Starts writing on a clone of `stream`.
    pub fn start(stream: &TcpStream, plan: PumpPlan) -> Pump {
        let mut stream = stream.try_clone().expect("clone socket");
        stream
            .set_write_timeout(Some(POLL))
            .expect("set write timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let stalls = Arc::new(AtomicU64::new(0));
        let (stop2, sent2, stalls2) = (stop.clone(), sent.clone(), stalls.clone());
        let handle = std::thread::spawn(move || {
            let mut seq = 0;
            while plan.lines.is_none_or(|n| seq < n) && !stop2.load(Ordering::SeqCst) {
                let mut line = seq_line(plan.from, plan.to, seq, (plan.len)(seq));
                let last = plan.lines == Some(seq + 1);
                if !(last && plan.end == PumpEnd::HalfClose) {
                    line.push(b'\n');
                }
                write_patiently(&mut stream, &line, &stalls2)?;
                seq += 1;
                sent2.store(seq, Ordering::SeqCst);
            }
            match plan.end {
                PumpEnd::Nothing => {}
                PumpEnd::Terminate => {
                    write_patiently(&mut stream, b"CLIENT>>> TERMINATE\n", &stalls2)?
                }
                PumpEnd::HalfClose => stream.shutdown(std::net::Shutdown::Write)?,
            }
            Ok(seq)
        });
        Pump {
            stop,
            sent,
            stalls,
            handle,
        }
    }

    /// Asks the pump to stop after the line it is writing.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits up to `limit` for `more` stalls beyond those counted so far,
    /// the proof that the server is holding the sender back. False if they
    /// did not come, or if the pump stopped writing first.
    pub fn wait_for_stalls(&self, more: u64, limit: Duration) -> bool {
        let target = self.stalls.load(Ordering::SeqCst) + more;
        let stalled = || self.stalls.load(Ordering::SeqCst) >= target;
        wait_until(limit, || stalled() || self.is_finished()) && stalled()
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the thread: the number of lines written, or the write error.
    pub fn join(self) -> io::Result<u64> {
        self.handle.join().expect("pump thread panicked")
    }
}

/// Writes all of `bytes`, waiting as long as progress is made at least every
/// [`IO_LIMIT`]; counts each [`POLL`] without progress in `stalls`.
pub fn write_patiently(stream: &mut TcpStream, bytes: &[u8], stalls: &AtomicU64) -> io::Result<()> {
    let mut written = 0;
    let mut progress = Instant::now();
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                progress = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                stalls.fetch_add(1, Ordering::SeqCst);
                if progress.elapsed() >= IO_LIMIT {
                    return Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How a [`Drain`]'s stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server closed after a complete line.
    Eof,
    /// The server closed in the middle of a line.
    Partial(Vec<u8>),
    /// A read failed (a reset, or [`IO_LIMIT`] without a byte).
    Error(io::ErrorKind),
    /// Told to stop reading.
    Stopped,
}

/// What a [`Drain`] has read so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Chat lines, each checked against the next [`seq_line`] of the partner.
    pub chat: u64,
    /// Each notice, with how many chat lines came before it.
    pub notices: Vec<(u64, String)>,
    /// What was wrong with the chat lines (the first few problems).
    pub bad: Vec<String>,
    /// Set once reading is over.
    pub end: Option<End>,
}

impl Received {
    /// How many notices satisfy `f`.
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.notices.iter().filter(|(_, n)| f(n)).count()
    }
}

/// How often a slow [`Drain`] reads its next few lines.
pub const SLOW_BEAT: Duration = Duration::from_millis(500);

/// A thread reading everything the server sends to one client.
pub struct Drain {
    stop: Arc<AtomicBool>,
    /// Lines read per 500 ms while slow; 0 reads at full speed.
    pace: Arc<AtomicU64>,
    /// What was read so far.
    pub log: Arc<Mutex<Received>>,
    handle: JoinHandle<()>,
}

impl Drain {
    /// Starts reading `reader` for the client on `me`, whose partner is
    /// `partner`.
    pub fn start(reader: BufReader<TcpStream>, me: u16, partner: u16) -> Drain {
        Drain::start_slow(reader, me, partner, 0)
    }

    /// Like [`start`](Self::start), but reads only `lines` chat lines per
    /// [`SLOW_BEAT`] (0: full speed) until [`full_speed`](Self::full_speed).
    pub fn start_slow(reader: BufReader<TcpStream>, me: u16, partner: u16, lines: u64) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let pace = Arc::new(AtomicU64::new(lines));
        let log = Arc::new(Mutex::new(Received::default()));
        let (stop2, pace2, log2) = (stop.clone(), pace.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            let end = drain(reader, me, partner, &stop2, &pace2, &log2);
            log2.lock().unwrap().end = Some(end);
        });
        Drain {
            stop,
            pace,
            log,
            handle,
        }
    }

    /// Reads at full speed from now on.
    pub fn full_speed(&self) {
        self.pace.store(0, Ordering::SeqCst);
    }

    /// A copy of what was read so far.
    pub fn snapshot(&self) -> Received {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `f` holds for what was read, up to `limit`.
    pub fn wait_for(&self, limit: Duration, f: impl Fn(&Received) -> bool) -> bool {
        wait_until(limit, || f(&self.log.lock().unwrap()))
    }

    /// Stops reading after the current line, leaving the rest unread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the thread and returns everything it read.
    pub fn join(self) -> Received {
        self.handle.join().expect("drain thread panicked");
        Arc::try_unwrap(self.log)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|arc| arc.lock().unwrap().clone())
    }
}

fn drain(
    mut reader: BufReader<TcpStream>,
    me: u16,
    partner: u16,
    stop: &AtomicBool,
    pace: &AtomicU64,
    log: &Mutex<Received>,
) -> End {
    if let Err(e) = reader.get_ref().set_read_timeout(Some(POLL)) {
        return End::Error(e.kind());
    }
    let mut line = Vec::new();
    let mut progress = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) && line.is_empty() {
            return End::Stopped;
        }
        let before = line.len();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => return End::Eof,
            Ok(0) => return End::Partial(line),
            Ok(_) if line.last() != Some(&b'\n') => return End::Partial(line),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if line.len() > before {
                    progress = Instant::now();
                } else if progress.elapsed() >= IO_LIMIT {
                    return End::Error(e.kind());
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return End::Error(e.kind()),
        }
        progress = Instant::now();
        line.pop();
        let mut log = log.lock().unwrap();
        if line.starts_with(b"SERVER") {
            let chat = log.chat;
            log.notices
                .push((chat, String::from_utf8_lossy(&line).into_owned()));
        } else {
            let seq = log.chat;
            if let Err(e) = check_seq_line(&line, partner, me, seq)
                && log.bad.len() < 5
            {
                log.bad.push(e);
            }
            log.chat += 1;
        }
        let chat = log.chat;
        drop(log);
        line.clear();
        let lines_per_beat = pace.load(Ordering::SeqCst);
        if lines_per_beat > 0 && chat.is_multiple_of(lines_per_beat) {
            std::thread::sleep(SLOW_BEAT); // a slow reader's own pace
        }
    }
}

/// Seeded randomness for garbage and schedules, so that a run can be
/// replayed from its printed seed: rand's `StdRng`, with the two draws
/// these tests make.
pub struct Rng(StdRng);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.0.fill_bytes(&mut bytes);
        bytes
    }
}

/// Samples a process's resident memory and descriptor count from a thread,
/// keeping the peaks (a process that has exited ends the sampling).
pub struct Sampler {
    running: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    peak_fds: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid` every `period`.
    pub fn start(pid: u32, period: Duration) -> Sampler {
        let running = Arc::new(AtomicBool::new(true));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_fds = Arc::new(AtomicU64::new(0));
        let (run, rss, fds) = (running.clone(), peak_rss.clone(), peak_fds.clone());
        let handle = std::thread::spawn(move || {
            while run.load(Ordering::SeqCst) {
                let Some(now) = try_rss_kib(pid) else {
                    return; // the process has ended
                };
                let Ok(open) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                    return;
                };
                rss.fetch_max(now, Ordering::SeqCst);
                fds.fetch_max(open.count() as u64, Ordering::SeqCst);
                std::thread::sleep(period); // the sampling period
            }
        });
        Sampler {
            running,
            peak_rss,
            peak_fds,
            handle,
        }
    }

    /// The highest resident memory seen so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.peak_rss.load(Ordering::SeqCst)
    }

    /// The most descriptors seen open so far.
    pub fn peak_fds(&self) -> u64 {
        self.peak_fds.load(Ordering::SeqCst)
    }

    /// Stops sampling; returns the peaks (RSS in KiB, descriptors).
    pub fn stop(self) -> (u64, u64) {
        let Sampler {
            running,
            peak_rss,
            peak_fds,
            handle,
        } = self;
        running.store(false, Ordering::SeqCst);
        handle.join().expect("sampler thread panicked");
        (
            peak_rss.load(Ordering::SeqCst),
            peak_fds.load(Ordering::SeqCst),
        )
    }
}

/// Watches, from a thread, for the process to end (a zombie not yet reaped,
/// or gone), polling every 5 ms up to `limit`; the thread returns when it
/// ended. Independent of whoever reaps it, and of how busy the caller is.
pub fn watch_exit(pid: u32, limit: Duration) -> JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let ended = || match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rfind(')')
                .and_then(|at| stat[at + 1..].split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
            Err(_) => true,
        };
        let deadline = Instant::now() + limit;
        loop {
            if ended() {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// A proptest configuration that tests the same cases on every run: a fixed
/// seed and case count (`PROPTEST_RNG_SEED` and `PROPTEST_CASES` still
/// override them) and no failure-persistence files.
pub fn repeatable_proptest_config(cases: u32, seed: u64) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let defaults = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            cases
        },
        rng_seed: match defaults.rng_seed {
            RngSeed::Random => RngSeed::Fixed(seed),
            seed => seed,
        },
        failure_persistence: None,
        ..defaults
    }
}

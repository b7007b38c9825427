//! Model-based test against the real server over loopback sockets.
//!
//! Each case starts a `chat-server` (4 worker ports, 20 ms tick) and plays a
//! short random sequence of joins, chat lines (alone or in bursts written at
//! once, some ending in `\r\n`, some posing as the server, some followed by
//! a termination in the same write), terminations, half-closes (with or without a last unterminated
//! line), abrupt disconnects and stray wrong-passcode connections. A small
//! model predicts every line each client must receive: the portal's port
//! (the free stack is LIFO), handshake notices, chat lines, partner notices,
//! "not delivered" notices, and the end of stream. Clients read exactly the
//! predicted lines, so a line delivered twice, out of order, or to anyone
//! but the sender's partner shows up as a mismatch. At the end every client
//! leaves, and joining again must hand out every worker port once and then
//! answer "full": no port leaked.
//!
//! No sleeps: every step waits for the line (or end of stream) that proves
//! the server has handled it, under a read timeout. An abrupt disconnect is
//! only used while the client has a partner, whose "left" notice proves the
//! port was freed; without a partner the client half-closes instead and
//! waits for the server's end of stream.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::TestServer;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const CASES: u32 = 16;
const MAX_OPS: usize = 40;
const SEED: u64 = 0x5eed_0005;
const WORKERS: usize = 4;
/// How long any expected line may take. Only a failing run waits this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const TERMINATE: &[u8] = b"CLIENT>>> TERMINATE\n";

#[derive(Debug, Clone)]
enum Op {
    Join,
    /// Lines of about `len` bytes, written in one `write`, and then, in the
    /// same write, the terminate line if `then_terminate`. Bursts are what
    /// the server's run-at-a-time forwarding handles; the other shapes
    /// must break a run in the right place.
    Lines {
        who: Index,
        shapes: Vec<Shape>,
        len: usize,
        then_terminate: bool,
    },
    Terminate {
        who: Index,
    },
    /// Shut down the sending side, after a last unterminated line if `tail`.
    HalfClose {
        who: Index,
        tail: bool,
    },
    /// Close the socket without a word (a half-close if there is no partner
    /// to prove the server noticed).
    Drop {
        who: Index,
    },
    /// A stranger presents a wrong passcode on a worker port.
    Stray {
        worker: Index,
    },
}

/// How one line of a burst is written.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Ends in `\n`: forwarded byte for byte.
    Plain,
    /// Ends in `\r\n`: forwarded without the `\r`.
    Crlf,
    /// Begins with `SERVER`: refused, and the sender is told.
    Spoof,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![6 => Just(Shape::Plain), 1 => Just(Shape::Crlf), 1 => Just(Shape::Spoof)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Join),
        6 => (
            any::<Index>(),
            proptest::collection::vec(shape(), 1..6),
            0..3000usize,
            proptest::bool::weighted(0.15),
        )
            .prop_map(|(who, shapes, len, then_terminate)| Op::Lines {
                who,
                shapes,
                len,
                then_terminate
            }),
        2 => any::<Index>().prop_map(|who| Op::Terminate { who }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(who, tail)| Op::HalfClose { who, tail }),
        2 => any::<Index>().prop_map(|who| Op::Drop { who }),
        1 => any::<Index>().prop_map(|worker| Op::Stray { worker }),
    ]
}

struct Client {
    worker: usize,
    port: u16,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

type Check = Result<(), TestCaseError>;

fn fail<T>(message: String) -> Result<T, TestCaseError> {
    Err(TestCaseError::fail(message))
}

fn connect(addr: SocketAddr) -> Result<(TcpStream, BufReader<TcpStream>), TestCaseError> {
    let stream = TcpStream::connect(addr).map_err(|e| TestCaseError::fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let reader = stream
        .try_clone()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok((stream, BufReader::new(reader)))
}

/// The next line without its `\n`, or `None` at end of stream.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    who: &str,
) -> Result<Option<Vec<u8>>, TestCaseError> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => Ok(None),
        Ok(_) => {
            if line.pop() != Some(b'\n') {
                return fail(format!("{who}: unterminated last line {line:?}"));
            }
            Ok(Some(line))
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            fail(format!("{who}: nothing arrived in {READ_TIMEOUT:?}"))
        }
        // A reset after the server's close counts as the end of the stream.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(None),
        Err(e) => fail(format!("{who}: read failed: {e}")),
    }
}

fn expect_line(reader: &mut BufReader<TcpStream>, who: &str, want: &[u8]) -> Check {
    match read_line(reader, who)? {
        Some(line) if line == want => Ok(()),
        got => fail(format!(
            "{who}: expected {:?}, got {:?}",
            String::from_utf8_lossy(want),
            got.map(|l| String::from_utf8_lossy(&l).into_owned())
        )),
    }
}

fn expect_eof(reader: &mut BufReader<TcpStream>, who: &str) -> Check {
    match read_line(reader, who)? {
        None => Ok(()),
        Some(line) => fail(format!(
            "{who}: expected end of stream, got {:?}",
            String::from_utf8_lossy(&line)
        )),
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    joins: u64,
    full: u64,
    lines: u64,
    delivered: u64,
    undelivered: u64,
    crlf: u64,
    refused: u64,
    terminations: u64,
    half_closes: u64,
    tails: u64,
    drops: u64,
    strays: u64,
}

/// The server under test and the model of it.
struct Run<'a> {
    server: TestServer,
    ports: Vec<u16>,
    /// Free workers; the top of the stack is the end.
    free: Vec<usize>,
    /// Which client holds each worker.
    holder: Vec<Option<usize>>,
    clients: BTreeMap<usize, Client>,
    next_client: usize,
    /// Lines each client must receive next, in order.
    pending: BTreeMap<usize, Vec<Vec<u8>>>,
    sent: u64,
    stats: &'a mut Stats,
}

impl Run<'_> {
    fn new(stats: &mut Stats) -> Run<'_> {
        let server = TestServer::start(&["--workers", &WORKERS.to_string()]);
        let ports = server.workers.iter().map(|a| a.port()).collect();
        Run {
            server,
            ports,
            free: (0..WORKERS).rev().collect(),
            holder: vec![None; WORKERS],
            clients: BTreeMap::new(),
            next_client: 0,
            pending: BTreeMap::new(),
            sent: 0,
            stats,
        }
    }

    fn expect(&mut self, client: usize, line: impl Into<Vec<u8>>) {
        self.pending.entry(client).or_default().push(line.into());
    }

    /// Reads every line the model says has been sent, client by client.
    fn receive_pending(&mut self) -> Check {
        for (id, lines) in std::mem::take(&mut self.pending) {
            let client = self.clients.get_mut(&id).expect("a live client");
            let who = format!("client {id} on port {}", client.port);
            for line in lines {
                expect_line(&mut client.reader, &who, &line)?;
            }
        }
        Ok(())
    }

    fn partner(&self, client: usize) -> Option<usize> {
        self.holder[self.clients[&client].worker ^ 1]
    }

    fn pick(&self, who: &Index) -> Option<usize> {
        let live: Vec<usize> = self.clients.keys().copied().collect();
        (!live.is_empty()).then(|| *who.get(&live))
    }

    /// Portal and handshake; returns the new client, or `None` if full.
    fn join(&mut self) -> Result<Option<usize>, TestCaseError> {
        let (_portal, mut reader) = connect(self.server.portal)?;
        let answer = read_line(&mut reader, "portal")?;
        expect_eof(&mut reader, "portal")?;
        let Some(worker) = self.free.pop() else {
            prop_assert_eq!(answer.as_deref(), Some(&b"SERVER>>>full"[..]));
            self.stats.full += 1;
            return Ok(None);
        };
        let port = self.ports[worker];
        let answer = String::from_utf8(answer.unwrap_or_default()).unwrap_or_default();
        let Some(code) = answer
            .strip_prefix(&format!("SERVER>>>Port=>{port},HandshakeCode="))
            .map(str::to_string)
        else {
            return fail(format!("portal: expected port {port}, got {answer:?}"));
        };
        let (mut writer, reader) = connect(self.server.workers[worker])?;
        writer
            .write_all(format!("CLIENT{port}>>>HandshakeCode={code}\n").as_bytes())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let id = self.next_client;
        self.next_client += 1;
        self.holder[worker] = Some(id);
        self.clients.insert(
            id,
            Client {
                worker,
                port,
                writer,
                reader,
            },
        );
        let partner_port = self.ports[worker ^ 1];
        self.expect(id, format!("SERVER{port}>>> Connection successful"));
        match self.partner(id) {
            Some(partner) => {
                self.expect(
                    id,
                    format!("SERVER{port}>>> Partner {partner_port} connected"),
                );
                self.expect(
                    partner,
                    format!("SERVER{partner_port}>>> Partner {port} connected"),
                );
            }
            None => self.expect(
                id,
                format!("SERVER{port}>>> Waiting for partner {partner_port}"),
            ),
        }
        self.stats.joins += 1;
        Ok(Some(id))
    }

    /// The model's view of a chat line from `id`.
    fn chat(&mut self, id: usize, line: Vec<u8>) {
        self.stats.lines += 1;
        match self.partner(id) {
            Some(partner) => {
                self.stats.delivered += 1;
                self.expect(partner, line);
            }
            None => {
                self.stats.undelivered += 1;
                let client = &self.clients[&id];
                let notice = format!(
                    "SERVER{}>>> Not delivered: partner {} is not connected",
                    client.port,
                    self.ports[client.worker ^ 1]
                );
                self.expect(id, notice);
            }
        }
    }

    fn unique_line(&mut self, id: usize, len: usize) -> Vec<u8> {
        self.sent += 1;
        let mut line = format!("c{id} #{} ", self.sent).into_bytes();
        line.extend((0..len).map(|i| b'a' + (i % 26) as u8));
        line
    }

    /// `id` is gone from the server: its partner is told, its port freed.
    /// Returns the client so the caller can read its last lines.
    fn leave(&mut self, id: usize) -> Client {
        if let Some(partner) = self.partner(id) {
            let client = &self.clients[&id];
            let notice = format!(
                "SERVER{}>>> Partner {} left",
                self.ports[client.worker ^ 1],
                client.port
            );
            self.expect(partner, notice);
        }
        let client = self.clients.remove(&id).expect("a live client");
        self.holder[client.worker] = None;
        self.free.push(client.worker);
        client
    }

    fn write(&mut self, id: usize, bytes: &[u8]) -> Check {
        let client = self.clients.get_mut(&id).expect("a live client");
        client
            .writer
            .write_all(bytes)
            .map_err(|e| TestCaseError::fail(format!("client {id}: write failed: {e}")))
    }

    /// The model's view of a line from `id` that poses as the server.
    fn refused(&mut self, id: usize) {
        self.stats.refused += 1;
        let notice = format!(
            "SERVER{}>>> Refused: chat lines may not begin with SERVER",
            self.clients[&id].port
        );
        self.expect(id, notice);
    }

    /// The model's view of `CLIENT>>> TERMINATE` from `id`: the server's
    /// goodbye to it, then what [`leave`](Self::leave) says.
    fn terminated(&mut self, id: usize) -> Client {
        self.stats.terminations += 1;
        let bye = format!("SERVER{}>>> Bye", self.clients[&id].port);
        self.expect(id, bye);
        self.leave(id)
    }

    fn terminate(&mut self, id: usize) -> Check {
        self.write(id, TERMINATE)?;
        let mut client = self.terminated(id);
        self.finish(id, &mut client)
    }

    /// Reads what a leaving client must still get, then its end of stream.
    fn finish(&mut self, id: usize, client: &mut Client) -> Check {
        let who = format!("client {id} on port {}", client.port);
        for line in self.pending.remove(&id).unwrap_or_default() {
            expect_line(&mut client.reader, &who, &line)?;
        }
        expect_eof(&mut client.reader, &who)
    }

    fn step(&mut self, op: &Op) -> Check {
        match op {
            Op::Join => {
                self.join()?;
            }
            Op::Lines {
                who,
                shapes,
                len,
                then_terminate,
            } => {
                let Some(id) = self.pick(who) else {
                    return Ok(());
                };
                let mut bytes = Vec::new();
                for shape in shapes {
                    let line = self.unique_line(id, *len);
                    match shape {
                        Shape::Plain => {
                            bytes.extend_from_slice(&line);
                            bytes.push(b'\n');
                            self.chat(id, line);
                        }
                        Shape::Crlf => {
                            bytes.extend_from_slice(&line);
                            bytes.extend_from_slice(b"\r\n");
                            self.stats.crlf += 1;
                            self.chat(id, line);
                        }
                        Shape::Spoof => {
                            bytes.extend_from_slice(b"SERVER");
                            bytes.extend_from_slice(&line);
                            bytes.push(b'\n');
                            self.refused(id);
                        }
                    }
                }
                if *then_terminate {
                    bytes.extend_from_slice(TERMINATE);
                    self.write(id, &bytes)?;
                    let mut client = self.terminated(id);
                    self.finish(id, &mut client)?;
                } else {
                    self.write(id, &bytes)?;
                }
            }
            Op::Terminate { who } => {
                let Some(id) = self.pick(who) else {
                    return Ok(());
                };
                self.terminate(id)?;
            }
            Op::HalfClose { who, tail } => {
                let Some(id) = self.pick(who) else {
                    return Ok(());
                };
                self.half_close(id, *tail)?;
            }
            Op::Drop { who } => {
                let Some(id) = self.pick(who) else {
                    return Ok(());
                };
                if self.partner(id).is_none() {
                    self.half_close(id, false)?;
                } else {
                    // The partner's "left" notice, read below, proves the
                    // server has noticed.
                    self.stats.drops += 1;
                    drop(self.leave(id));
                }
            }
            Op::Stray { worker } => {
                let worker = worker.index(WORKERS);
                let port = self.ports[worker];
                let (mut writer, mut reader) = connect(self.server.workers[worker])?;
                writer
                    .write_all(format!("CLIENT{port}>>>HandshakeCode=wrongwrongwrong\n").as_bytes())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let who = format!("stray on port {port}");
                expect_line(
                    &mut reader,
                    &who,
                    format!("SERVER{port}>>> Wrong handshake passcode").as_bytes(),
                )?;
                expect_eof(&mut reader, &who)?;
                self.stats.strays += 1;
            }
        }
        self.receive_pending()
    }

    fn half_close(&mut self, id: usize, tail: bool) -> Check {
        if tail {
            let line = self.unique_line(id, 10);
            self.write(id, &line)?;
            self.chat(id, line);
            self.stats.tails += 1;
        }
        self.stats.half_closes += 1;
        let client = &self.clients[&id];
        client
            .writer
            .shutdown(Shutdown::Write)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut client = self.leave(id);
        self.finish(id, &mut client)
    }

    /// Everyone leaves; then every port must be handed out once more, in
    /// LIFO order, and the portal must then be full.
    fn wind_up(&mut self) -> Check {
        while let Some(&id) = self.clients.keys().next() {
            self.terminate(id)?;
            self.receive_pending()?;
        }
        prop_assert_eq!(self.free.len(), WORKERS);
        let mut fresh = Vec::new();
        for _ in 0..WORKERS {
            let id = self.join()?;
            prop_assert!(id.is_some(), "a port leaked");
            fresh.extend(id);
            self.receive_pending()?;
        }
        prop_assert_eq!(self.join()?, None, "more ports than workers");
        for id in fresh {
            self.terminate(id)?;
            self.receive_pending()?;
        }
        Ok(())
    }
}

fn config() -> Config {
    Config {
        // Each shrinking step starts a server; keep a failing run short.
        max_shrink_iters: 200,
        ..common::repeatable_proptest_config(CASES, SEED)
    }
}

#[test]
fn server_matches_the_model() {
    let stats = std::cell::RefCell::new(Stats::default());
    let mut runner = TestRunner::new(config());
    let strategy = proptest::collection::vec(op(), 10..MAX_OPS);
    let result = runner.run(&strategy, |ops| {
        let mut case = Stats::default();
        let mut run = Run::new(&mut case);
        let result = ops
            .iter()
            .try_for_each(|op| run.step(op))
            .and_then(|()| run.wind_up());
        drop(run);
        let mut total = stats.borrow_mut();
        macro_rules! add {
            ($($f:ident)*) => { $(total.$f += case.$f;)* };
        }
        add!(joins full lines delivered undelivered crlf refused terminations half_closes tails drops strays);
        result
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let s = *stats.borrow();
    eprintln!("socket model test: {} cases, {s:?}", config().cases);
    for (what, count) in [
        ("joins", s.joins),
        ("full answers", s.full),
        ("delivered lines", s.delivered),
        ("undelivered lines", s.undelivered),
        ("lines ending in CR LF", s.crlf),
        ("refused lines", s.refused),
        ("terminations", s.terminations),
        ("half-closes", s.half_closes),
        ("last unterminated lines", s.tails),
        ("abrupt disconnects", s.drops),
        ("strays", s.strays),
    ] {
        assert!(
            count >= 3,
            "only {count} {what}: the generator misses a case"
        );
    }
}

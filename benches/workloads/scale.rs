//! Scale: one server with as many worker ports as the descriptor limit
//! allows, every port held by a client that joined through the portal,
//! measured beside a 4-worker server with the same flags.
//!
//! What it reads, and how:
//!
//! - the time from spawning the server to its last listener's announcement;
//! - memory (`VmRSS`, and `Private_Clean + Private_Dirty` from
//!   `smaps_rollup`) and open descriptors, bound and empty, then full;
//! - the tick's CPU cost: the server's CPU time (`/proc/PID/schedstat`, in
//!   nanoseconds) over a quiet window, divided by the ticks in it. Nothing
//!   else wakes a quiet server, so that is the tick and its wake-up;
//! - whether the tick keeps its time: clients that never send a passcode are
//!   turned away by the tick once the handshake deadline has passed, and the
//!   gaps between their notices show whether the ticks stay a whole number
//!   of periods apart;
//! - ping-pong on one pair while every other client is idle, and while 1,000
//!   pairs each send 10 lines a second, against the same on the 4-worker
//!   server, in interleaved rounds;
//! - joins per second with every other port held.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use super::footprint::status_field;
use super::{latency_histogram, message_of, ping_pong, setup};
use crate::peers::project;
use crate::peers::{ChildProcess, Pair, invalid};
use crate::report::{Cell, Table};
use portal_chat::wire::Wire;

/// The scale server's portal port; its workers take the ports above it.
/// Fixed, and below the ephemeral range, so that no client socket of this
/// machine can hold one of them: with `--port 0` the kernel searches its
/// ephemeral range for a free port on every `bind`, a search that grows with
/// every port already taken (see benches/README.md, Scale).
const BASE_PORT: u16 = 10000;

/// Descriptors the server holds besides its listeners and its clients:
/// stdin, stdout and stderr, the epoll instance, the signal pipe's two ends,
/// and room for portal connections and strays being answered.
const SERVER_SPARE: u64 = 16;

/// Descriptors this bench holds besides the scale server's clients: stdio,
/// the pipes to two servers, the 4-worker server's clients, the load's
/// epoll instance, strays and a portal connection being answered.
const BENCH_SPARE: u64 = 64;

/// The server's tick period (its default `--tick-ms`).
const TICK: Duration = Duration::from_secs(1);

/// The quiet window over which the tick's CPU is measured.
const QUIET: Duration = Duration::from_secs(10);

/// The handshake deadline both servers run with, in seconds: the strays'
/// notices come from the first tick after it.
const HANDSHAKE_TIMEOUT_SECS: u64 = 1;

/// Clients turned away by the tick, one after the other.
const STRAYS: usize = 5;

/// Rounds of ping-pong per condition, interleaved between the servers.
const PING_ROUNDS: usize = 3;
const PING_WARMUP: usize = 1_000;
const PING_SAMPLES: usize = 20_000;

/// The background load: this many pairs, each sending this many 64-byte
/// lines per second.
const LOAD_PAIRS: usize = 1_000;
const LOAD_RATE: f64 = 10.0;

/// How long the join rate is measured.
const JOIN_WINDOW: Duration = Duration::from_secs(2);

/// Time for a server to settle after starting or after clients join.
const SETTLE: Duration = Duration::from_millis(500);

/// What the descriptor limit allows.
struct Sizing {
    /// The soft limit before the bench raised it.
    soft_before: u64,
    /// The hard limit, now also the soft one.
    hard: u64,
    /// Worker ports of the scale server.
    workers: usize,
    /// Descriptors the server needs for them.
    server_needs: u64,
    /// Descriptors this bench needs for their clients.
    bench_needs: u64,
}

impl Sizing {
    /// The most workers (an even number) that both the server and this
    /// bench can hold descriptors for under `hard`, and that fit between
    /// [`BASE_PORT`] and the ephemeral range starting at `ephemeral_low`.
    fn new(soft_before: u64, hard: u64, ephemeral_low: u16) -> Sizing {
        // The server: a listener and a client per worker, and the portal.
        let by_server = hard.saturating_sub(1 + SERVER_SPARE) / 2;
        // This bench: one socket per client.
        let by_bench = hard.saturating_sub(BENCH_SPARE);
        let by_ports = u64::from(ephemeral_low.saturating_sub(BASE_PORT + 1));
        let workers = (by_server.min(by_bench).min(by_ports) / 2 * 2) as usize;
        Sizing {
            soft_before,
            hard,
            workers,
            server_needs: 2 * workers as u64 + 1 + SERVER_SPARE,
            bench_needs: workers as u64 + BENCH_SPARE,
        }
    }
}

/// A started server and what its start cost.
struct Server {
    process: ChildProcess,
    portal: SocketAddr,
    /// Worker 1's address: an occupied port, once clients have joined.
    first_worker: SocketAddr,
    workers: usize,
    /// From spawning the process to reading its last announcement.
    bind_time: Duration,
}

impl Server {
    /// Starts `chat-server --workers N --port PORT` with the flags both
    /// servers share, with its descriptor limit at `nofile` (through
    /// `prlimit`, which execs it in place, so the pid is the server's; or
    /// inherited from this process, whose soft limit is already raised).
    fn start(workers: usize, port: u16, nofile: u64) -> io::Result<Server> {
        let mut command = if prlimit_available() {
            let mut command = Command::new("prlimit");
            command
                .arg(format!("--nofile={nofile}:{nofile}"))
                .arg(project::server_binary());
            command
        } else {
            Command::new(project::server_binary())
        };
        command
            .args([
                "--workers",
                &workers.to_string(),
                "--port",
                &port.to_string(),
            ])
            .args(["--idle-timeout", "100000", "--assign-timeout", "60"])
            .args(["--handshake-timeout", &HANDSHAKE_TIMEOUT_SECS.to_string()])
            .env("RUST_LOG", "warn");
        let began = Instant::now();
        let mut process = ChildProcess::spawn(&mut command)?;
        let portal = process.read_announcement("portal ")?;
        let mut first_worker = portal;
        for n in 1..=workers {
            let addr = process.read_announcement(&format!("worker {n} "))?;
            if n == 1 {
                first_worker = addr;
            }
        }
        Ok(Server {
            process,
            portal,
            first_worker,
            workers,
            bind_time: began.elapsed(),
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

fn prlimit_available() -> bool {
    Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Memory and descriptors of a process at one moment.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    private_kib: u64,
    fds: u64,
}

fn memory(pid: u32) -> io::Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(Memory {
        rss_kib: status_field(&status, "VmRSS:")?,
        private_kib: status_field(&rollup, "Private_Clean:")?
            + status_field(&rollup, "Private_Dirty:")?,
        fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
    })
}

/// CPU time the process's (only) thread has used, in nanoseconds: the first
/// field of `/proc/PID/schedstat`. The 10 ms ticks of `/proc/PID/stat` are
/// far too coarse for a tick that costs microseconds.
fn cpu_ns(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| invalid(format!("unreadable /proc/{pid}/schedstat: {text:?}")))
}

/// The soft open-file limit of a process, from `/proc/PID/limits`.
fn nofile_soft(pid: u32) -> io::Result<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits"))?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| invalid(format!("no open-file limit in /proc/{pid}/limits")))
}

/// Raises this process's soft open-file limit to its hard limit (children
/// inherit it). Returns the soft limit before, and the hard limit.
fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives
    // across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    // An unlimited hard limit still stops at the kernel's nr_open.
    if limit.rlim_max == libc::RLIM_INFINITY {
        let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")?;
        limit.rlim_max = nr_open.trim().parse().map_err(|_| invalid(nr_open))?;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, limit.rlim_max))
}

/// The first port of the ephemeral range clients' sockets are given.
fn ephemeral_low() -> io::Result<u16> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    range
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| invalid(format!("unreadable ip_local_port_range: {range:?}")))
}

/// Joins `workers / 2` pairs, one client at a time, and passes a line each
/// way through each pair. Returns the pairs and every join's time (ns).
fn fill(server: &Server) -> io::Result<(Vec<Pair>, Histogram<u64>, Duration)> {
    let mut joins = latency_histogram();
    let mut joining = Duration::ZERO;
    let mut pairs = Vec::with_capacity(server.workers / 2);
    let mut join = || -> io::Result<_> {
        let began = Instant::now();
        let endpoint = project::join(server.portal, Wire::Line)?;
        let took = began.elapsed();
        joining += took;
        joins.saturating_record(took.as_nanos() as u64);
        Ok(endpoint)
    };
    for n in 0..server.workers / 2 {
        // On a fresh server the portal hands out ports in order, so two
        // joins in a row are partners.
        let mut pair = Pair {
            a: join()?,
            b: join()?,
        };
        pair.sync()?;
        pairs.push(pair);
        if (n + 1) % 1000 == 0 {
            crate::progress(&format!("scale: {} clients joined", 2 * (n + 1)));
        }
    }
    Ok((pairs, joins, joining))
}

/// CPU per tick of both servers over one quiet window.
fn cpu_per_tick(pids: [u32; 2]) -> io::Result<[Duration; 2]> {
    let before = [cpu_ns(pids[0])?, cpu_ns(pids[1])?];
    std::thread::sleep(QUIET);
    let ticks = (QUIET.as_nanos() / TICK.as_nanos()) as u64;
    let per_tick = |i: usize| -> io::Result<Duration> {
        Ok(Duration::from_nanos((cpu_ns(pids[i])? - before[i]) / ticks))
    };
    Ok([per_tick(0)?, per_tick(1)?])
}

/// How the tick turned strays away.
#[derive(Debug, Clone, Copy)]
struct TickTiming {
    /// From the first stray's connect to its notice (on time: between the
    /// handshake deadline and one tick after it).
    first_notice: Duration,
    /// The largest distance of a gap between consecutive notices from a
    /// whole number of tick periods.
    worst_drift: Duration,
}

/// Connects to `worker` without a passcode and returns when the server's
/// "Handshake timeout" notice has arrived.
fn stray(worker: SocketAddr) -> io::Result<Instant> {
    let mut stream = TcpStream::connect_timeout(&worker, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = Vec::new();
    let mut buffer = [0; 256];
    while !got.contains(&b'\n') {
        match stream.read(&mut buffer)? {
            0 => break,
            n => got.extend_from_slice(&buffer[..n]),
        }
    }
    let arrived = Instant::now();
    if !got.ends_with(b">>> Handshake timeout\n") {
        let got = String::from_utf8_lossy(&got).into_owned();
        return Err(invalid(format!(
            "a stray expected its timeout, got {got:?}"
        )));
    }
    Ok(arrived)
}

/// [`STRAYS`] strays, each connecting 0.3 s after the previous one's notice,
/// so each deadline falls 0.3 s after a tick and the next notice comes two
/// periods after the previous one.
fn tick_timing(worker: SocketAddr) -> io::Result<TickTiming> {
    let connected = Instant::now();
    let mut last = stray(worker)?;
    let first_notice = last - connected;
    let mut worst_drift = Duration::ZERO;
    for _ in 1..STRAYS {
        std::thread::sleep(
            (last + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
        );
        let arrived = stray(worker)?;
        let gap = (arrived - last).as_secs_f64() / TICK.as_secs_f64();
        let drift = (gap - gap.round()).abs() * TICK.as_secs_f64();
        worst_drift = worst_drift.max(Duration::from_secs_f64(drift));
        last = arrived;
    }
    Ok(TickTiming {
        first_notice,
        worst_drift,
    })
}

/// Ping-pong on each pair in `pairs` (one per server), [`PING_ROUNDS`]
/// rounds, the servers taking turns.
fn ping_rounds(pairs: &mut [&mut Pair]) -> io::Result<Vec<Histogram<u64>>> {
    let mut histograms: Vec<Histogram<u64>> = pairs.iter().map(|_| latency_histogram()).collect();
    for round in 0..PING_ROUNDS {
        for k in 0..pairs.len() {
            let i = (k + round) % pairs.len();
            ping_pong::run(pairs[i], 64, PING_WARMUP, PING_SAMPLES, &mut histograms[i])?;
        }
    }
    Ok(histograms)
}

/// Sends [`LOAD_RATE`] 64-byte lines per second from every A of `pairs`
/// (evenly spread in time) and reads every B, from one thread and one mio
/// loop, until `stop` is set; then waits for the lines in flight. Returns
/// the lines sent, every one of which arrived.
///
/// The B sockets are clones of the endpoints' own; made non-blocking for
/// the loop (which changes the endpoint too: the flag belongs to the open
/// file, which clones share), and made blocking again at the end.
fn background_load(pairs: &[Pair], stop: &AtomicBool) -> io::Result<u64> {
    let poll = Poll::new()?;
    let mut writers = Vec::with_capacity(pairs.len());
    let mut readers = Vec::with_capacity(pairs.len());
    for (i, pair) in pairs.iter().enumerate() {
        writers.push(pair.a.stream().try_clone()?);
        let b = pair.b.stream().try_clone()?;
        b.set_nonblocking(true)?;
        let mut b = mio::net::TcpStream::from_std(b);
        poll.registry()
            .register(&mut b, Token(i), Interest::READABLE)?;
        readers.push(b);
    }
    let result = (|| -> io::Result<u64> {
        let mut poll = poll;
        let (line, _) = message_of(Wire::Line, 64, b"load");
        let rate = LOAD_RATE * pairs.len() as f64;
        let mut events = Events::with_capacity(1024);
        let mut buffer = vec![0; 64 * 1024];
        let (mut sent, mut received) = (0u64, 0u64);
        let began = Instant::now();
        let mut drain_until = None;
        while drain_until.is_none_or(|until| received < sent && Instant::now() < until) {
            if drain_until.is_none() {
                if stop.load(Ordering::Relaxed) {
                    drain_until = Some(Instant::now() + Duration::from_secs(10));
                }
                // Whatever is due goes out now: the schedule, not the
                // loop's wake-ups (whole milliseconds), sets the rate.
                let due = (began.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    let writer = (sent % pairs.len() as u64) as usize;
                    writers[writer].write_all(&line)?;
                    sent += 1;
                }
            }
            poll.poll(&mut events, Some(Duration::from_millis(1)))?;
            for event in events.iter() {
                let reader = &mut readers[event.token().0];
                loop {
                    match reader.read(&mut buffer) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => {
                            received += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if received != sent {
            return Err(invalid(format!(
                "the load sent {sent} lines and {received} arrived"
            )));
        }
        Ok(sent)
    })();
    for pair in pairs {
        pair.b.stream().set_nonblocking(false)?;
    }
    result
}

/// Sessions per second through `portal`, one client joining and leaving.
fn join_rate(portal: SocketAddr) -> io::Result<f64> {
    let mut histogram = latency_histogram();
    Ok(setup::run(portal, 1, JOIN_WINDOW, 20_000, &mut histogram)?.per_sec)
}

/// Everything measured, per server: the 4-worker one first.
struct Measured {
    sizing: Sizing,
    /// The scale server's soft limit, as it runs.
    server_nofile: u64,
    bind: [Duration; 2],
    bound: [Memory; 2],
    joined: [Memory; 2],
    /// Clients connected in `joined`.
    clients: [usize; 2],
    tick_empty: [Duration; 2],
    tick_joined: [Duration; 2],
    timing: [TickTiming; 2],
    ping_idle: [Histogram<u64>; 2],
    ping_loaded: [Histogram<u64>; 2],
    load_lines: u64,
    load_secs: f64,
    /// The scale server's CPU while the load ran, in nanoseconds.
    load_cpu_ns: u64,
    fill_joins: Histogram<u64>,
    fill_joining: Duration,
    join_rate: [f64; 2],
}

/// Runs the whole scale workload and returns its tables.
pub fn run() -> io::Result<Vec<Table>> {
    let (soft_before, hard) = raise_nofile()?;
    let sizing = Sizing::new(soft_before, hard, ephemeral_low()?);
    crate::progress(&format!(
        "scale: open-file limit {soft_before} soft, {hard} hard, now {hard} soft; \
         {} workers: the server needs {} descriptors, this bench {}",
        sizing.workers, sizing.server_needs, sizing.bench_needs
    ));
    if sizing.workers < 2 * (LOAD_PAIRS + 2) {
        return Err(invalid(format!(
            "{} workers are too few for {LOAD_PAIRS} load pairs beside the measured one",
            sizing.workers
        )));
    }
    let small = Server::start(4, 0, hard)?;
    let big = Server::start(sizing.workers, BASE_PORT, hard)?;
    let server_nofile = nofile_soft(big.pid())?;
    crate::progress(&format!(
        "scale: {} listeners bound in {:.0} ms; the server's open-file limit is {server_nofile}",
        big.workers + 1,
        big.bind_time.as_secs_f64() * 1e3
    ));
    let pids = [small.pid(), big.pid()];
    std::thread::sleep(SETTLE);
    let bound = [memory(pids[0])?, memory(pids[1])?];
    crate::progress("scale: CPU of the tick with no client");
    let tick_empty = cpu_per_tick(pids)?;

    crate::progress(&format!("scale: joining {} clients", big.workers));
    let mut small_pair = Pair {
        a: project::join(small.portal, Wire::Line)?,
        b: project::join(small.portal, Wire::Line)?,
    };
    small_pair.sync()?;
    let (mut pairs, fill_joins, fill_joining) = fill(&big)?;
    std::thread::sleep(SETTLE);
    let joined = [memory(pids[0])?, memory(pids[1])?];
    crate::progress("scale: CPU of the tick with every client joined");
    let tick_joined = cpu_per_tick(pids)?;

    crate::progress("scale: strays, to time the tick");
    let timing = std::thread::scope(|scope| {
        let small_timing = scope.spawn(|| tick_timing(small.first_worker));
        let big_timing = tick_timing(big.first_worker);
        Ok::<_, io::Error>([small_timing.join().expect("stray thread")?, big_timing?])
    })?;

    crate::progress("scale: ping-pong with every other client idle");
    let (active, rest) = pairs.split_at_mut(1);
    let [idle_small, idle_big] = ping_rounds(&mut [&mut small_pair, &mut active[0]])?
        .try_into()
        .expect("two servers");

    crate::progress(&format!(
        "scale: ping-pong while {LOAD_PAIRS} pairs send {LOAD_RATE} lines/s each"
    ));
    let stop = AtomicBool::new(false);
    let load_pairs = &rest[..LOAD_PAIRS];
    let (loaded, load_lines, load_secs, load_cpu_ns) = std::thread::scope(|scope| {
        let load = scope.spawn(|| background_load(load_pairs, &stop));
        // Let the load reach its pace first.
        std::thread::sleep(Duration::from_secs(1));
        let (began, cpu_before) = (Instant::now(), cpu_ns(pids[1]));
        let loaded = ping_rounds(&mut [&mut small_pair, &mut active[0]]);
        let (secs, cpu_after) = (began.elapsed().as_secs_f64(), cpu_ns(pids[1]));
        stop.store(true, Ordering::Relaxed);
        let lines = load.join().expect("load thread");
        io::Result::Ok((loaded?, lines?, secs, cpu_after? - cpu_before?))
    })?;
    let [loaded_small, loaded_big] = loaded.try_into().expect("two servers");

    crate::progress("scale: join rate with all but two ports held");
    // The last pair leaves, so each server has two ports free.
    drop(pairs.pop());
    std::thread::sleep(SETTLE);
    let join_rate = [join_rate(small.portal)?, join_rate(big.portal)?];

    let measured = Measured {
        sizing,
        server_nofile,
        bind: [small.bind_time, big.bind_time],
        bound,
        joined,
        clients: [2, big.workers],
        tick_empty,
        tick_joined,
        timing,
        ping_idle: [idle_small, idle_big],
        ping_loaded: [loaded_small, loaded_big],
        load_lines,
        load_secs,
        load_cpu_ns,
        fill_joins,
        fill_joining,
        join_rate,
    };
    drop(pairs);
    Ok(tables(&measured))
}

/// The scale table and its targets.
fn tables(m: &Measured) -> Vec<Table> {
    let w = m.sizing.workers;
    let mut table = Table::new(
        "scale",
        format!("Scale: {w} clients on one loop"),
        &["measure", "4 workers", &format!("{w} workers")],
    );
    let both = |table: &mut Table, name: &str, cells: [Cell; 2]| {
        let [small, big] = cells;
        table.row(vec![Cell::text(name), small, big]);
    };
    let us = |d: Duration| Cell::number(d.as_nanos() as f64 / 1e3, 1);
    let ms = |d: Duration| Cell::number(d.as_secs_f64() * 1e3, 1);
    let count = |n: u64| Cell::number(n as f64, 0);
    let quantile =
        |h: &Histogram<u64>, q: f64| Cell::number(h.value_at_quantile(q) as f64 / 1e3, 1);
    both(
        &mut table,
        "bind: spawn to the last listener announced (ms)",
        m.bind.map(ms),
    );
    both(
        &mut table,
        "RSS, bound, no client (KiB)",
        m.bound.map(|b| count(b.rss_kib)),
    );
    both(
        &mut table,
        "clients joined (each pair has passed a line each way)",
        m.clients.map(|n| count(n as u64)),
    );
    both(
        &mut table,
        "RSS, joined (KiB)",
        m.joined.map(|j| count(j.rss_kib)),
    );
    both(
        &mut table,
        "private memory, joined (KiB)",
        m.joined.map(|j| count(j.private_kib)),
    );
    let per_client = (m.joined[1].rss_kib as f64 - m.bound[1].rss_kib as f64) * 1024.0 / w as f64;
    both(
        &mut table,
        "RSS per joined client (bytes)",
        [Cell::empty(), Cell::number(per_client, 0)],
    );
    both(
        &mut table,
        "open descriptors, joined",
        m.joined.map(|j| count(j.fds)),
    );
    both(
        &mut table,
        "CPU per tick, no client (µs)",
        m.tick_empty.map(us),
    );
    both(
        &mut table,
        "CPU per tick, joined (µs)",
        m.tick_joined.map(us),
    );
    both(
        &mut table,
        &format!("a {HANDSHAKE_TIMEOUT_SECS} s handshake deadline: connect to notice (ms)"),
        m.timing.map(|t| ms(t.first_notice)),
    );
    both(
        &mut table,
        "tick drift: worst gap between notices off whole periods (ms)",
        m.timing.map(|t| ms(t.worst_drift)),
    );
    for (label, histograms) in [
        ("others idle", &m.ping_idle),
        ("1,000 pairs × 10 lines/s on the big server", &m.ping_loaded),
    ] {
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            both(
                &mut table,
                &format!("ping-pong {name}, {label} (µs)"),
                [quantile(&histograms[0], q), quantile(&histograms[1], q)],
            );
        }
    }
    let load_core = m.load_cpu_ns as f64 / (m.load_secs * 1e9) * 100.0;
    both(
        &mut table,
        "server CPU while the load runs, its ping-pong rounds included (% of a core)",
        [Cell::empty(), Cell::number(load_core, 1)],
    );
    let fill_rate = m.fill_joins.len() as f64 / m.fill_joining.as_secs_f64();
    both(
        &mut table,
        "joins/s while filling every port (join time only)",
        [Cell::empty(), Cell::number(fill_rate, 0)],
    );
    both(
        &mut table,
        "join p50 / p99 while filling (µs)",
        [
            Cell::empty(),
            Cell::text(format!(
                "{:.0} / {:.0}",
                m.fill_joins.value_at_quantile(0.5) as f64 / 1e3,
                m.fill_joins.value_at_quantile(0.99) as f64 / 1e3
            )),
        ],
    );
    both(
        &mut table,
        "join rate, two ports free (sessions/s)",
        m.join_rate.map(|r| Cell::number(r, 0)),
    );
    let s = &m.sizing;
    table.note(format!(
        "Open-file limit: {} soft and {} hard when the bench started; it raised its soft limit \
         to the hard one (setrlimit), and the server ran with {}. {w} workers is the most that \
         fit: the server needs a listener and a client socket per worker, the portal and {} \
         spare descriptors ({} in all), this bench one socket per client and {} spare ({}). \
         Both servers run with --idle-timeout 100000 --assign-timeout 60 --handshake-timeout \
         {HANDSHAKE_TIMEOUT_SECS} and the default 1 s tick; the big one on ports {BASE_PORT} and \
         up, the small one on ports the OS chose.",
        s.soft_before,
        s.hard,
        m.server_nofile,
        SERVER_SPARE,
        s.server_needs,
        BENCH_SPARE,
        s.bench_needs,
    ));
    table.note(format!(
        "CPU per tick is the server's CPU time (/proc/PID/schedstat) over {} quiet seconds \
         divided by the {} ticks in them, wake-up included. Tick timing: {STRAYS} clients \
         connect to an occupied port and never send a passcode, each 0.3 s after the previous \
         one was turned away, so their notices should come exactly two tick periods apart. \
         Ping-pong: 64-byte lines, {PING_ROUNDS} rounds of {PING_SAMPLES} round trips after \
         {PING_WARMUP} untimed ones per server and condition, the servers taking turns; under \
         load, {LOAD_PAIRS} other pairs of the big server each send {LOAD_RATE} lines/s \
         ({} lines in all, every one arrived), and the 4-worker figures show what that load \
         does to the machine rather than to the server. The join rate is one client joining \
         and leaving for {} s.",
        QUIET.as_secs(),
        QUIET.as_secs() / TICK.as_secs(),
        m.load_lines,
        JOIN_WINDOW.as_secs()
    ));

    let mut targets = Table::new(
        "scale_targets",
        "Scale targets",
        &["target", "measured", "met"],
    );
    let mut check = |target: String, measured: String, met: bool| {
        targets.row(vec![
            Cell::text(target),
            Cell::text(measured),
            Cell::labelled(met as u8 as f64, if met { "yes" } else { "**no**" }),
        ]);
    };
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64;
    for (label, histograms, against) in [
        ("others idle", &m.ping_idle, &m.ping_idle[0]),
        ("under the load", &m.ping_loaded, &m.ping_idle[0]),
    ] {
        let ratio = p99(&histograms[1]) / p99(against);
        check(
            format!("active pair's p99, {label}, within 1.2× the 4-worker figure (idle)"),
            format!(
                "{:.1} µs against {:.1} µs: {ratio:.2}×",
                p99(&histograms[1]) / 1e3,
                p99(against) / 1e3
            ),
            ratio <= 1.2,
        );
    }
    let under_load = p99(&m.ping_loaded[1]) / p99(&m.ping_loaded[0]);
    check(
        "the same under the load, against the 4-worker figure in the same rounds".into(),
        format!("{under_load:.2}×"),
        under_load <= 1.2,
    );
    check(
        "RSS per connected client under 1 KiB".into(),
        format!("{per_client:.0} bytes"),
        per_client < 1024.0,
    );
    check(
        "the tick under 1 ms of CPU with every client joined".into(),
        format!("{:.1} µs", m.tick_joined[1].as_nanos() as f64 / 1e3),
        m.tick_joined[1] < Duration::from_millis(1),
    );
    vec![table, targets]
}

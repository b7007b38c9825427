//! `chat-bench`: measures a running `chat-server` from the outside, over
//! whatever network lies between, the way `redis-benchmark` and `wrk2`
//! measure their servers.
//!
//! It joins through the portal like any client (the client library's portal
//! request and its retry policy while the server is full), drives one
//! workload, and prints HdrHistogram percentiles and the rate achieved, as
//! text, CSV or JSON.
//!
//! # Layout
//!
//! - [`Options`] and [`parse_args`]: the command line.
//! - Joining and leaving are the client library's ([`Session`]), in
//!   either wire; the workloads then take the socket over.
//! - [`engine`]: one mio loop that drives every joined client at once, and
//!   the three workloads that run on it: [`engine::PingPong`],
//!   [`engine::OpenLoop`] and [`engine::Stream`].
//! - [`join_workload`]: the `join` workload, one blocking thread per client,
//!   since joining is a sequence of blocking steps by nature.
//! - [`Report`]: what a run measured, and its three forms.
//!
//! Every data message begins with a [stamp](stamp): a time as 16 hex digits,
//! so that whoever receives it knows when it was sent (or, in the open loop,
//! when it was meant to be sent) without any state per message. Hex digits
//! never begin a server notice (`SERVER…`), so the two cannot be confused.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use portal_chat::client::{self, FULL_RETRY_DELAY, JoinError, PortalAnswer, RetryPolicy, Session};
use portal_chat::wire::Wire;

/// Usage text printed by `chat-bench --help`.
const USAGE: &str = "\
Usage: chat-bench [OPTIONS] WORKLOAD

Measures a running chat-server: joins through its portal like any client,
runs one workload, and prints latency percentiles (HdrHistogram) and the rate
achieved. Each pair is two clients on paired worker ports, A and B.

Workloads:
  ping-pong        A sends, B echoes, A times the round trip; one message in
                   flight per pair
  open-loop        A sends --rate messages per second (all pairs together) on
                   a fixed schedule, whatever the server does; latency runs
                   from each message's scheduled send time to its arrival at
                   B, so a stall counts for every message it delays
  stream           every A sends as fast as the server takes it; B counts
                   messages/s and MB/s, and the delay from each write
  join             2 x --pairs clients join (portal, passcode) and leave
                   (TERMINATE), over and over: sessions per second

Options:
  --host HOST         server address or name; every address of a name
                      is tried in order                         [127.0.0.1]
  --port PORT         the server's portal port                  [50000]
  --wire line|dotnet  the server's --wire                       [line]
  --pairs N           client pairs; the server needs 2N free
                      worker ports                              [1]
  --size BYTES        bytes per message on the wire, framing
                      included (17 to 1048576)                  [64]
  --messages M        stop after M round trips, messages or sessions
  --duration SECS     stop after SECS seconds    [5 without --messages]
  --rate R            open-loop: messages per second in all
  --csv               print a CSV header and one row instead of text
  --json              print one JSON object instead of text
  -h, --help          print this help
  -V, --version       print the version

With both --messages and --duration, whichever comes first ends the run.
Progress is shown on stderr while it is a terminal. While the portal is
full, it asks again every 2 s, 5 times at most.

Exit status:
  0  the workload ran
  1  the server failed us: unreachable, full, a refused passcode, a closed
     connection, a notice that ends a session, or 10 s without a message
  2  bad flag or value";

/// The run ends after this long if neither `--messages` nor `--duration`
/// says otherwise.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// The shortest message: a stamp and its framing (a newline, or a one-byte
/// length prefix).
const MIN_SIZE: usize = STAMP_DIGITS + 1;

/// The longest message. The server's own limit is its `--max-line` (8192
/// bytes by default); a longer message makes it end the session, which is
/// reported. This bound only keeps a typo from allocating gigabytes.
const MAX_SIZE: usize = 1 << 20;

/// The most pairs: two worker ports each, and there are 65,535 ports.
const MAX_PAIRS: usize = 32_767;

/// How often a full portal is asked again, and how many times.
const FULL_POLICY: RetryPolicy = RetryPolicy {
    retries: Some(5),
    delay: FULL_RETRY_DELAY,
};

/// A run fails after this long without any message from the server.
const STALL: Duration = Duration::from_secs(10);

/// After `CLIENT>>> TERMINATE`, how long to wait for the server to close.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// Hex digits of a stamp.
const STAMP_DIGITS: usize = 16;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Run(Options),
    Help,
    Version,
}

/// The workloads, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    PingPong,
    OpenLoop {
        /// Messages per second, all pairs together.
        rate: f64,
    },
    Stream,
    Join,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::PingPong => "ping-pong",
            Workload::OpenLoop { .. } => "open-loop",
            Workload::Stream => "stream",
            Workload::Join => "join",
        }
    }
}

/// How the results are printed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Text,
    Csv,
    Json,
}

/// Everything a run needs to know.
#[derive(Debug, PartialEq)]
struct Options {
    host: String,
    port: u16,
    wire: Wire,
    pairs: usize,
    /// Bytes per message on the wire, framing included.
    size: usize,
    workload: Workload,
    /// Stop after this many units (round trips, messages, sessions).
    messages: Option<u64>,
    /// Stop after this long.
    duration: Option<Duration>,
    format: Format,
}

impl Options {
    /// The message text's length for [`size`](Self::size) on this wire.
    fn text_len(&self) -> usize {
        text_len(self.wire, self.size).expect("checked by parse_args")
    }
}

/// The text length that makes a message of exactly `size` bytes on `wire`,
/// if there is one. On the .NET wire the length prefix grows by a byte at
/// 128 and at 16,384 bytes of text, so sizes 129 and 16,386 cannot be made.
fn text_len(wire: Wire, size: usize) -> Option<usize> {
    match wire {
        Wire::Line => size.checked_sub(1),
        Wire::Dotnet => (size.saturating_sub(5)..size).find(|&t| t + dotnet_prefix_len(t) == size),
    }
}

/// The bytes .NET's 7-bit length prefix takes for a text of `len` bytes.
fn dotnet_prefix_len(len: usize) -> usize {
    let bits = usize::BITS - len.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("chat-bench {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("chat-bench: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(report) => {
            let text = match options.format {
                Format::Text => report.text(),
                Format::Csv => report.csv(),
                Format::Json => report.json(),
            };
            // Nothing useful is left to do if stdout is gone.
            let _ = io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("chat-bench: {reason}");
            ExitCode::from(1)
        }
    }
}

/// Parses the arguments after the program name. Flags may come before or
/// after the workload. The error is one line, ready to print.
fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let mut host = "127.0.0.1".to_string();
    let mut port = 50000;
    let mut wire = Wire::Line;
    let mut pairs = 1;
    let mut size = None;
    let mut workload = None;
    let mut rate = None;
    let mut messages = None;
    let mut duration = None;
    let mut format = Format::Text;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long(name) => format!("--{name}"),
            Short(c) => return Err(format!("unknown option -{c} (see --help)")),
            Value(value) => {
                let name = value.to_string_lossy();
                if workload.is_some() {
                    return Err(format!("unexpected argument {name:?} (one workload only)"));
                }
                workload = Some(match name.as_ref() {
                    "ping-pong" => Workload::PingPong,
                    "open-loop" => Workload::OpenLoop { rate: 0.0 },
                    "stream" => Workload::Stream,
                    "join" => Workload::Join,
                    _ => {
                        return Err(format!(
                            "unknown workload {name:?}: expected ping-pong, open-loop, \
                             stream or join"
                        ));
                    }
                });
                continue;
            }
        };
        if flag == "--csv" || flag == "--json" {
            let wanted = if flag == "--csv" {
                Format::Csv
            } else {
                Format::Json
            };
            if format != Format::Text && format != wanted {
                return Err("--csv and --json exclude each other".into());
            }
            format = wanted;
            continue;
        }
        if ![
            "--host",
            "--port",
            "--wire",
            "--pairs",
            "--size",
            "--messages",
            "--duration",
            "--rate",
        ]
        .contains(&flag.as_str())
        {
            return Err(format!("unknown option {flag} (see --help)"));
        }
        let value = parser.value().map_err(|e| e.to_string())?;
        let value = value
            .into_string()
            .map_err(|_| format!("invalid value for {flag}: not UTF-8"))?;
        let bad = |why: &str| format!("invalid value {value:?} for {flag}: {why}");
        match flag.as_str() {
            "--host" if value.is_empty() => return Err(bad("empty")),
            "--host" => host = value,
            "--port" => {
                port = match value.parse() {
                    Ok(0) | Err(_) => return Err(bad("not a port number (1-65535)")),
                    Ok(port) => port,
                }
            }
            "--wire" => wire = value.parse().map_err(|e| bad(&format!("{e}")))?,
            "--pairs" => {
                pairs = match value.parse() {
                    Ok(n) if (1..=MAX_PAIRS).contains(&n) => n,
                    _ => return Err(bad(&format!("not a whole number from 1 to {MAX_PAIRS}"))),
                }
            }
            "--size" => {
                size = match value.parse() {
                    Ok(n) if (MIN_SIZE..=MAX_SIZE).contains(&n) => Some(n),
                    _ => {
                        return Err(bad(&format!(
                            "not a whole number from {MIN_SIZE} to {MAX_SIZE}"
                        )));
                    }
                }
            }
            "--messages" => {
                messages = match value.parse() {
                    Ok(n) if n > 0 => Some(n),
                    _ => return Err(bad("not a whole number above 0")),
                }
            }
            "--duration" => {
                duration = Some(
                    positive_seconds(&value)
                        .ok_or_else(|| bad("not a positive number of seconds"))?,
                )
            }
            "--rate" => {
                rate = match value.parse::<f64>() {
                    Ok(r) if r > 0.0 && r <= 1e9 => Some(r),
                    _ => return Err(bad("not a number of messages per second above 0")),
                }
            }
            _ => unreachable!("every flag of the list above is handled"),
        }
    }
    let mut workload = workload.ok_or(
        "no workload given: ping-pong, open-loop, stream or join (see --help)".to_string(),
    )?;
    match (&mut workload, rate) {
        (Workload::OpenLoop { rate: wanted }, Some(rate)) => *wanted = rate,
        (Workload::OpenLoop { .. }, None) => {
            return Err("open-loop needs --rate (messages per second)".into());
        }
        (_, Some(_)) => return Err("--rate applies to open-loop only".into()),
        (_, None) => {}
    }
    if workload == Workload::Join && size.is_some() {
        return Err("--size does not apply to join".into());
    }
    let size = size.unwrap_or(64);
    if text_len(wire, size).is_none() {
        return Err(format!(
            "invalid value \"{size}\" for --size: no .NET message is exactly {size} bytes \
             (its length prefix grows by a byte there); use {} or {}",
            size - 1,
            size + 1
        ));
    }
    if messages.is_none() && duration.is_none() {
        duration = Some(DEFAULT_DURATION);
    }
    Ok(Command::Run(Options {
        host,
        port,
        wire,
        pairs,
        size,
        workload,
        messages,
        duration,
        format,
    }))
}

/// A positive, finite number of seconds, fractions allowed.
fn positive_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.parse().ok()?;
    (secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// Resolves, joins, runs the workload and leaves.
fn run(options: &Options) -> Result<Report, String> {
    let addrs: Vec<SocketAddr> = (options.host.as_str(), options.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", options.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} has no address", options.host));
    }
    let mut progress = Progress::new(options.workload.name());
    if options.workload == Workload::Join {
        return join_workload::run(options, &addrs, &mut progress);
    }
    let (portal, pairs) = join_pairs(options, &addrs)?;
    let mut net = engine::Net::new(options.wire, pairs, options.size)?;
    let report = engine::run_workload(options, &mut net, &mut progress);
    progress.clear();
    // Leaving frees the worker ports at once, for the next run; whether the
    // run failed or not.
    net.leave(LEAVE_WAIT);
    let measured = report?;
    Ok(Report {
        server: portal,
        wire: options.wire,
        pairs: options.pairs,
        size: Some(options.size),
        ..measured
    })
}

/// Asks the portal at each address in turn until one answers; returns that
/// address and the answer. Only a failure to connect moves on to the next
/// address: a portal that answers is the server, whatever it says.
fn reach(addrs: &[SocketAddr], wire: Wire) -> Result<(SocketAddr, PortalAnswer), String> {
    let mut failures = Vec::new();
    for &addr in addrs {
        match client::request_port_with_wire(addr, wire) {
            Ok(answer) => return Ok((addr, answer)),
            Err(JoinError::Io(e)) => failures.push(format!("{addr}: {e}")),
            Err(JoinError::Protocol(answer)) => {
                // The usual cause: the other wire, whose framing turns the
                // answer into something else (line) or into half a message
                // (.NET).
                let other = if wire == Wire::Line { "dotnet" } else { "line" };
                let answered = match answer.as_str() {
                    "" => "closed before a whole answer".to_string(),
                    _ => format!("answered {answer:?}"),
                };
                return Err(format!(
                    "the portal at {addr} {answered}, which is no {wire}-wire portal answer \
                     (does the server speak --wire {other}?)"
                ));
            }
            Err(e) => return Err(format!("the portal at {addr}: {e}")),
        }
    }
    Err(format!("cannot reach the portal: {}", failures.join("; ")))
}

/// Joins clients one after the other until `pairs` of them are pairs (two
/// clients on partner ports), and returns those pairs, the earlier client of
/// each first (A), and the portal's address.
///
/// The portal hands out ports from a stack, so once clients have come and
/// gone, two joins in a row need not land on partner ports. A client whose
/// partner port is not ours yet waits for it; the ones still waiting when
/// there are enough pairs are let go before the run begins.
fn join_pairs(
    options: &Options,
    addrs: &[SocketAddr],
) -> Result<(SocketAddr, Vec<(Session, Session)>), String> {
    let wanted = options.pairs;
    let (portal, first) = reach(addrs, options.wire)?;
    let mut first = Some(first);
    let mut waiting: HashMap<u16, Session> = HashMap::new();
    let mut pairs = Vec::with_capacity(wanted);
    let mut joins = 0;
    // Joining is one client at a time: with many, say how far it got.
    let show_joins = wanted > 50 && io::stderr().is_terminal();
    while pairs.len() < wanted {
        let result = match first.take() {
            // The answer `reach` got is a reservation already: use it.
            Some(PortalAnswer::Assigned(assignment)) => {
                match Session::handshake_with_wire(portal.ip(), &assignment, options.wire) {
                    Err(JoinError::Refused) => join(portal, options.wire),
                    result => result,
                }
            }
            _ => join(portal, options.wire),
        };
        joins += 1;
        let joined = result.map_err(|e| {
            let hint = match e {
                JoinError::Full { .. } => format!(
                    "; --pairs {wanted} needs {} free worker ports that are partners, and \
                     {} pair(s) of them were found",
                    2 * wanted,
                    pairs.len()
                ),
                _ => String::new(),
            };
            format!("joining client {joins}: {e}{hint}")
        })?;
        match waiting.remove(&joined.partner_port) {
            Some(a) => pairs.push((a, joined)),
            None => {
                waiting.insert(joined.port, joined);
            }
        }
        if show_joins {
            eprint!("\rjoined {} of {wanted} pairs\x1b[K", pairs.len());
        }
    }
    if show_joins {
        eprint!("\r\x1b[K");
    }
    for (_, alone) in waiting {
        // Its port is freed either way: by the TERMINATE, or by the close.
        let _ = alone.terminate(LEAVE_WAIT);
    }
    Ok((portal, pairs))
}

/// Portal (asked again while full, as [`FULL_POLICY`] says), then handshake.
fn join(portal: SocketAddr, wire: Wire) -> Result<Session, JoinError> {
    Session::join_any_with_wire(&[portal.ip()], portal.port(), FULL_POLICY, wire, |_| {})
}

/// Writes `nanos` as the first [`STAMP_DIGITS`] bytes of `text`, in hex.
fn stamp(text: &mut [u8], nanos: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in text[..STAMP_DIGITS].iter_mut().enumerate() {
        let shift = 4 * (STAMP_DIGITS - 1 - i);
        *byte = HEX[(nanos >> shift) as usize & 0xf];
    }
}

/// Reads the stamp at the start of `text`, if it has one.
fn read_stamp(text: &[u8]) -> Option<u64> {
    let digits = text.get(..STAMP_DIGITS)?;
    digits.iter().try_fold(0u64, |value, &byte| {
        let digit = (byte as char).to_digit(16)?;
        Some(value << 4 | u64::from(digit))
    })
}

/// A message text of `len` bytes: a stamp (zero for now), then filler.
fn message_text(len: usize) -> Vec<u8> {
    let mut text = vec![b'x'; len];
    stamp(&mut text, 0);
    text
}

/// A latency histogram in nanoseconds: 1 ns to 1,000 s, three significant
/// digits (every value is kept within 0.1 %).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("valid histogram bounds")
}

/// The progress line on stderr, redrawn twice a second, only if stderr is a
/// terminal (a log file should not fill with carriage returns).
struct Progress {
    enabled: bool,
    label: &'static str,
    began: Instant,
    next: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(500);

    fn new(label: &'static str) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: io::stderr().is_terminal(),
            label,
            began: now,
            next: now + Progress::EVERY,
        }
    }

    /// Restarts the clock: the workload begins now.
    fn begin(&mut self, now: Instant) {
        self.began = now;
        self.next = now + Progress::EVERY;
    }

    /// When [`show`](Self::show) next has something to do.
    fn next(&self) -> Instant {
        self.next
    }

    fn show(&mut self, now: Instant, done: u64, unit: &str) {
        if !self.enabled || now < self.next {
            return;
        }
        self.next = now + Progress::EVERY;
        let secs = now.duration_since(self.began).as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        eprint!(
            "\r{}: {secs:.1} s, {} {unit}, {}/s\x1b[K",
            self.label,
            grouped(done),
            grouped(rate.round() as u64)
        );
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What one run measured.
struct Report {
    workload: Workload,
    server: SocketAddr,
    wire: Wire,
    pairs: usize,
    /// Bytes per message; `None` for join.
    size: Option<usize>,
    /// Units done: round trips, messages or sessions.
    count: u64,
    /// What a unit is, in the plural.
    unit: &'static str,
    /// The time `count` took.
    seconds: f64,
    /// Message bytes received over `seconds` (stream only).
    bytes: Option<u64>,
    /// What the histogram holds, for the text form.
    latency: &'static str,
    histogram: Histogram<u64>,
    /// Times the portal answered "full" (join only).
    full_answers: Option<u64>,
    /// The longest the sender was behind its schedule (open-loop only).
    send_lag: Option<Duration>,
}

impl Report {
    /// An empty report for `options`; the workloads fill in the rest.
    fn new(options: &Options, unit: &'static str, latency: &'static str) -> Report {
        Report {
            workload: options.workload,
            server: SocketAddr::from(([0, 0, 0, 0], 0)),
            wire: options.wire,
            pairs: options.pairs,
            size: None,
            count: 0,
            unit,
            seconds: 0.0,
            bytes: None,
            latency,
            histogram: latency_histogram(),
            full_answers: None,
            send_lag: None,
        }
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }

    fn megabytes_per_sec(&self) -> Option<f64> {
        self.bytes.map(|b| b as f64 / self.seconds.max(1e-9) / 1e6)
    }

    fn offered(&self) -> Option<f64> {
        match self.workload {
            Workload::OpenLoop { rate } => Some(rate),
            _ => None,
        }
    }

    /// The six percentiles, in microseconds, with their names.
    fn percentiles(&self) -> [(&'static str, f64); 6] {
        let h = &self.histogram;
        let us = |ns: u64| ns as f64 / 1000.0;
        [
            ("min", us(h.min())),
            ("p50", us(h.value_at_quantile(0.5))),
            ("p90", us(h.value_at_quantile(0.9))),
            ("p99", us(h.value_at_quantile(0.99))),
            ("p99.9", us(h.value_at_quantile(0.999))),
            ("max", us(h.max())),
        ]
    }

    fn text(&self) -> String {
        let mut out = format!(
            "chat-bench {}: {} against {} ({} wire)",
            self.workload.name(),
            plural(self.pairs as u64, "pair"),
            self.server,
            self.wire
        );
        if let Some(size) = self.size {
            out += &format!(", {size}-byte messages");
        }
        if let Some(offered) = self.offered() {
            out += &format!(", offered {} messages/s", grouped(offered.round() as u64));
        }
        out += &format!(
            "\n{} {} in {:.2} s: {} {}/s",
            grouped(self.count),
            self.unit,
            self.seconds,
            grouped(self.rate().round() as u64),
            self.unit
        );
        if let Some(mb) = self.megabytes_per_sec() {
            out += &format!(", {mb:.1} MB/s");
        }
        if let Some(offered) = self.offered() {
            out += &format!(" ({:.1} % of offered)", 100.0 * self.rate() / offered);
        }
        if let Some(full) = self.full_answers {
            out += &format!("; the portal answered full {}", plural(full, "time"));
        }
        out += &format!("\n{} (µs):", self.latency);
        for (i, (name, us)) in self.percentiles().into_iter().enumerate() {
            out += &format!("{} {name} {us:.1}", if i == 0 { "" } else { "," });
        }
        out.push('\n');
        if let Some(lag) = self.send_lag {
            out += &format!(
                "the sender was at most {:.1} µs behind its schedule\n",
                lag.as_nanos() as f64 / 1000.0
            );
        }
        out
    }

    /// The columns of [`csv`](Self::csv), in order.
    const CSV_COLUMNS: &'static str = "workload,server,wire,pairs,size,offered_rate,count,unit,\
        seconds,rate,mb_per_s,full_answers,send_lag_us,min_us,p50_us,p90_us,p99_us,p99.9_us,max_us";

    fn csv(&self) -> String {
        let or_empty = |v: Option<String>| v.unwrap_or_default();
        let mut row = vec![
            self.workload.name().to_string(),
            self.server.to_string(),
            self.wire.to_string(),
            self.pairs.to_string(),
            or_empty(self.size.map(|s| s.to_string())),
            or_empty(self.offered().map(|r| format!("{r}"))),
            self.count.to_string(),
            self.unit.to_string(),
            format!("{:.6}", self.seconds),
            format!("{:.1}", self.rate()),
            or_empty(self.megabytes_per_sec().map(|mb| format!("{mb:.3}"))),
            or_empty(self.full_answers.map(|n| n.to_string())),
            or_empty(
                self.send_lag
                    .map(|d| format!("{:.1}", d.as_nanos() as f64 / 1e3)),
            ),
        ];
        row.extend(self.percentiles().map(|(_, us)| format!("{us:.1}")));
        format!("{}\n{}\n", Report::CSV_COLUMNS, row.join(","))
    }

    /// One JSON object on one line. Every string in it is ours (names, an
    /// address), so none needs escaping; absent values are `null`.
    fn json(&self) -> String {
        let or_null = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let latency = self
            .percentiles()
            .map(|(name, us)| format!("\"{name}\":{us:.1}"))
            .join(",");
        format!(
            "{{\"workload\":\"{}\",\"server\":\"{}\",\"wire\":\"{}\",\"pairs\":{},\"size\":{},\
             \"offered_rate\":{},\"count\":{},\"unit\":\"{}\",\"seconds\":{:.6},\"rate\":{:.1},\
             \"mb_per_s\":{},\"full_answers\":{},\"send_lag_us\":{},\"latency\":\"{}\",\
             \"latency_us\":{{{latency}}}}}\n",
            self.workload.name(),
            self.server,
            self.wire,
            self.pairs,
            or_null(self.size.map(|s| s.to_string())),
            or_null(self.offered().map(|r| format!("{r}"))),
            self.count,
            self.unit,
            self.seconds,
            self.rate(),
            or_null(self.megabytes_per_sec().map(|mb| format!("{mb:.3}"))),
            or_null(self.full_answers.map(|n| n.to_string())),
            or_null(
                self.send_lag
                    .map(|d| format!("{:.1}", d.as_nanos() as f64 / 1e3))
            ),
            self.latency,
        )
    }
}

/// `3 pairs`, `1 pair`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", grouped(n))
    }
}

mod engine {
    //! One mio loop for every joined client, and the workloads that run on
    //! it. A single thread drives all pairs, as `redis-benchmark` does, so
    //! the bench takes one core, not one per pair, from a machine it shares
    //! with the server it measures.
    //!
    //! The loop owns the sockets ([`Net`]); a [`Workload`] is told what
    //! arrives and what can be written, and sends through [`Net`]. Open-loop
    //! sends are paced by a `timerfd`, because `epoll_wait`'s timeout (and so
    //! mio's) is in whole milliseconds, and a schedule that can only be kept
    //! to the millisecond would put that error into every latency.

    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    use hdrhistogram::Histogram;
    use mio::net::TcpStream;
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use portal_chat::client::{Session, TERMINATE_LINE};
    use portal_chat::wire::{Codec, Inbox, Wire};

    use super::{
        Options, Progress, Report, STALL, Workload as Kind, latency_histogram, message_text,
        read_stamp, stamp,
    };

    /// The pacing timer's token; clients use their index.
    const PACER: Token = Token(usize::MAX);

    /// Every client sends something at least this often: the server ends a
    /// session that has been silent for its idle timeout (60 s by default),
    /// and in the one-way workloads B would otherwise never speak. The
    /// message is dropped on arrival, unseen by the workloads. Rare enough
    /// to be no load: 1,000 pairs send 200 a second.
    const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

    /// What a keepalive says. It has no stamp, so it is never taken for
    /// data, and it does not begin with `SERVER`, so the server forwards it.
    const KEEPALIVE: &[u8] = b"chat-bench keepalive";

    /// Bytes a stream writer hands to the kernel per `write`.
    const STREAM_WRITE: usize = 64 * 1024;

    /// Writes a stream writer makes in one turn before the loop looks at
    /// the other sockets again.
    const STREAM_WRITES_PER_TURN: usize = 4;

    /// Bytes read from one socket in one turn. A stream reader that drained
    /// its socket to the end before anything else could stay there for tens
    /// of milliseconds while the server refills it, and the writers and the
    /// clock would wait; the rest is read on the next turn.
    const READ_BUDGET: usize = 256 * 1024;

    /// One client connection.
    struct Peer {
        stream: TcpStream,
        port: u16,
        inbox: Inbox,
        /// Framed bytes not yet written: `out[written..]`.
        out: Vec<u8>,
        written: usize,
        last_sent: Instant,
        closed: bool,
    }

    /// Every client of the run; pair `i` is peers `2i` (A) and `2i + 1` (B).
    pub struct Net {
        poll: Poll,
        wire: Wire,
        peers: Vec<Peer>,
        read_buffer: Vec<u8>,
        /// The longest message accepted from the server.
        max_message: usize,
        /// Stamps count nanoseconds from here.
        epoch: Instant,
        pacer: Option<File>,
        /// Peers whose read budget ran out before their socket was drained.
        unread: Vec<usize>,
    }

    /// What a workload wants after a wake-up.
    pub enum Wake {
        /// To be woken at this time at the latest.
        At(Instant),
        /// Nothing until a message arrives or a socket takes bytes again.
        Waiting,
        /// The run is over.
        Done,
    }

    /// A workload on the loop.
    pub trait Workload {
        /// The run begins.
        fn begin(&mut self, net: &mut Net, now: Instant) -> Result<(), String>;
        /// A data message arrived on `peer` (not a notice, not a keepalive).
        fn message(
            &mut self,
            net: &mut Net,
            peer: usize,
            text: &[u8],
            now: Instant,
        ) -> Result<(), String>;
        /// `peer` has written everything queued and can take more.
        fn writable(&mut self, _net: &mut Net, _peer: usize, _now: Instant) -> Result<(), String> {
            Ok(())
        }
        /// Called after every wake-up of the loop.
        fn wake(&mut self, net: &mut Net, now: Instant) -> Result<Wake, String>;
        /// Units done so far, for the progress line.
        fn done(&self) -> u64;
    }

    impl Net {
        /// Takes over the joined pairs' sockets (and whatever their inboxes
        /// already hold).
        pub fn new(wire: Wire, pairs: Vec<(Session, Session)>, size: usize) -> Result<Net, String> {
            let poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
            let now = Instant::now();
            let mut peers = Vec::with_capacity(2 * pairs.len());
            for session in pairs.into_iter().flat_map(|(a, b)| [a, b]) {
                let port = session.port;
                let (stream, inbox) = session.into_parts();
                let setup = |stream: std::net::TcpStream| -> io::Result<TcpStream> {
                    stream.set_nonblocking(true)?;
                    let mut stream = TcpStream::from_std(stream);
                    // WRITABLE stays registered: a client socket is seldom
                    // full outside the stream workload, and with edge
                    // triggering a socket that is not full reports nothing.
                    poll.registry().register(
                        &mut stream,
                        Token(peers.len()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    Ok(stream)
                };
                let stream = setup(stream).map_err(|e| format!("port {port}: {e}"))?;
                peers.push(Peer {
                    stream,
                    port,
                    inbox,
                    out: Vec::new(),
                    written: 0,
                    last_sent: now,
                    closed: false,
                });
            }
            Ok(Net {
                poll,
                wire,
                peers,
                read_buffer: vec![0; 64 * 1024],
                max_message: size.max(64 * 1024),
                epoch: now,
                pacer: None,
                unread: Vec::new(),
            })
        }

        /// Pairs on the loop.
        pub fn pairs(&self) -> usize {
            self.peers.len() / 2
        }

        /// `at` as a stamp: nanoseconds since the loop was set up.
        pub fn nanos(&self, at: Instant) -> u64 {
            at.saturating_duration_since(self.epoch).as_nanos() as u64
        }

        /// Frames `text` into `peer`'s output without writing it yet.
        pub fn queue(&mut self, peer: usize, text: &[u8]) {
            let p = &mut self.peers[peer];
            self.wire.encode(text, &mut p.out);
        }

        /// Frames `text` and writes what the socket takes now.
        pub fn send(&mut self, peer: usize, text: &[u8]) -> Result<(), String> {
            self.queue(peer, text);
            self.flush(peer)
        }

        /// Bytes queued for `peer` and not yet written.
        pub fn queued(&self, peer: usize) -> usize {
            let p = &self.peers[peer];
            p.out.len() - p.written
        }

        /// Writes `peer`'s queued output until it is all written or the
        /// socket is full (then its next writable event comes back here).
        pub fn flush(&mut self, peer: usize) -> Result<(), String> {
            let p = &mut self.peers[peer];
            while p.written < p.out.len() {
                match p.stream.write(&p.out[p.written..]) {
                    Ok(0) => return Err(format!("port {}: the connection took no bytes", p.port)),
                    Ok(n) => {
                        p.written += n;
                        p.last_sent = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("port {}: writing failed: {e}", p.port)),
                }
            }
            p.out.clear();
            p.written = 0;
            Ok(())
        }

        /// Starts a timer that wakes the loop every `period`, first at once.
        pub fn start_pacer(&mut self, period: Duration) -> Result<(), String> {
            let failed = |e: io::Error| format!("cannot set up the pacing timer: {e}");
            // SAFETY: timerfd_create takes no pointers; on success the
            // descriptor it returns belongs to no one else, so OwnedFd may
            // own (and close) it.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(failed(io::Error::last_os_error()));
            }
            // SAFETY: see above; `fd` is open and ours alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let spec = libc::itimerspec {
                it_interval: timespec(period),
                // Zero would disarm the timer: 1 ns is "at once".
                it_value: timespec(Duration::from_nanos(1)),
            };
            // SAFETY: `spec` is a valid itimerspec for the duration of the
            // call, and a null old-value pointer is allowed.
            if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0
            {
                return Err(failed(io::Error::last_os_error()));
            }
            self.poll
                .registry()
                .register(&mut SourceFd(&fd.as_raw_fd()), PACER, Interest::READABLE)
                .map_err(failed)?;
            self.pacer = Some(File::from(fd));
            Ok(())
        }

        /// Reads the pacer's expiry count, which re-arms its readiness.
        fn drain_pacer(&mut self) {
            if let Some(pacer) = &mut self.pacer {
                let mut expirations = [0; 8];
                while pacer.read(&mut expirations).is_ok() {}
            }
        }

        /// Sends a keepalive from every client that has sent nothing for a
        /// while.
        fn keep_alive(&mut self, now: Instant) -> Result<(), String> {
            for peer in 0..self.peers.len() {
                if now.duration_since(self.peers[peer].last_sent) >= KEEPALIVE_EVERY {
                    self.peers[peer].last_sent = now;
                    self.send(peer, KEEPALIVE)?;
                }
            }
            Ok(())
        }

        /// Reads `peer` until the socket is drained or the turn's budget is
        /// spent (then it goes on the `unread` list) and hands each data
        /// message to `workload`. Returns whether anything arrived.
        fn read(&mut self, peer: usize, workload: &mut dyn Workload) -> Result<bool, String> {
            let mut heard = false;
            let mut spent = 0;
            loop {
                if spent >= READ_BUDGET {
                    // Edge-triggered: no event will come for what is left.
                    self.unread.push(peer);
                    return Ok(heard);
                }
                let port = self.peers[peer].port;
                match self.peers[peer].stream.read(&mut self.read_buffer) {
                    Ok(0) => {
                        self.peers[peer].closed = true;
                        return Err(format!("the server closed the connection on port {port}"));
                    }
                    Ok(n) => {
                        // Timed per read, not per wake-up: the messages of
                        // the last socket of a wake-up arrived later than
                        // those of the first.
                        let now = Instant::now();
                        let mut inbox = std::mem::take(&mut self.peers[peer].inbox);
                        inbox.extend(&self.read_buffer[..n]);
                        let result = self.deliver(peer, &mut inbox, workload, now);
                        self.peers[peer].inbox = inbox;
                        result?;
                        heard = true;
                        spent += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(heard),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("port {port}: reading failed: {e}")),
                }
            }
        }

        /// Hands every complete message in `inbox` to `workload`, except
        /// keepalives and the partner's arrival; any other notice ends the
        /// run, since the server only sends one when something is wrong (a
        /// timeout, a partner gone, a line too long, a shutdown).
        fn deliver(
            &mut self,
            peer: usize,
            inbox: &mut Inbox,
            workload: &mut dyn Workload,
            now: Instant,
        ) -> Result<(), String> {
            let port = self.peers[peer].port;
            loop {
                let next = inbox
                    .next_message(&self.wire, self.max_message)
                    .map_err(|e| format!("port {port}: a message from the server: {e:?}"))?;
                let Some((text, _)) = next else {
                    return Ok(());
                };
                let text = inbox.get(text);
                if text == KEEPALIVE {
                    continue;
                }
                if text.starts_with(b"SERVER") {
                    let notice = String::from_utf8_lossy(text);
                    if notice.contains(">>> Partner ") && notice.ends_with(" connected") {
                        continue;
                    }
                    return Err(format!("port {port}: the server said {notice:?}"));
                }
                workload.message(self, peer, text, now)?;
            }
        }

        /// Says `TERMINATE` on every connection and waits, up to `wait`, for
        /// the server to close them all, so that their ports are free as
        /// soon as the run is over. Whatever arrives meanwhile is dropped.
        pub fn leave(&mut self, wait: Duration) {
            for peer in 0..self.peers.len() {
                let _ = self.send(peer, TERMINATE_LINE.as_bytes());
            }
            let deadline = Instant::now() + wait;
            let mut events = Events::with_capacity(1024);
            while self.peers.iter().any(|p| !p.closed) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || self.poll.poll(&mut events, Some(left)).is_err() {
                    return;
                }
                for event in events.iter() {
                    let Token(peer) = event.token();
                    if peer == PACER.0 {
                        continue;
                    }
                    let _ = self.flush(peer);
                    let p = &mut self.peers[peer];
                    loop {
                        match p.stream.read(&mut self.read_buffer) {
                            Ok(0) => {
                                p.closed = true;
                                break;
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                p.closed = e.kind() != io::ErrorKind::WouldBlock;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    fn timespec(d: Duration) -> libc::timespec {
        libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        }
    }

    /// Runs `workload` until it is done, the server fails it, or nothing
    /// arrives for [`STALL`].
    pub fn run(
        net: &mut Net,
        workload: &mut dyn Workload,
        progress: &mut Progress,
        unit: &str,
    ) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        let now = Instant::now();
        progress.begin(now);
        workload.begin(net, now)?;
        let mut last_heard = now;
        let mut next_keepalive = now + KEEPALIVE_EVERY;
        loop {
            let now = Instant::now();
            let wake = workload.wake(net, now)?;
            if let Wake::Done = wake {
                return Ok(());
            }
            if now >= next_keepalive {
                net.keep_alive(now)?;
                next_keepalive = now + KEEPALIVE_EVERY;
            }
            if now.duration_since(last_heard) >= STALL {
                return Err(format!(
                    "no message from the server for {} s",
                    STALL.as_secs()
                ));
            }
            progress.show(now, workload.done(), unit);
            let mut until = (last_heard + STALL)
                .min(next_keepalive)
                .min(progress.next());
            if let Wake::At(at) = wake {
                until = until.min(at);
            }
            if !net.unread.is_empty() {
                until = now; // sockets with bytes left: look, but do not wait
            }
            let timeout = until.saturating_duration_since(Instant::now());
            match net.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            for event in events.iter() {
                if event.token() == PACER {
                    net.drain_pacer();
                    continue;
                }
                let Token(peer) = event.token();
                if event.is_writable() {
                    net.flush(peer)?;
                    if net.queued(peer) == 0 {
                        workload.writable(net, peer, Instant::now())?;
                    }
                }
                // A close or an error shows up as readable (or as an error
                // alone): the read tells which.
                if (event.is_readable() || event.is_read_closed() || event.is_error())
                    && net.read(peer, workload)?
                {
                    last_heard = Instant::now();
                }
            }
            // Their turn comes after this wake-up's events, so that a busy
            // socket is read once per wake-up like the others.
            for peer in std::mem::take(&mut net.unread) {
                if net.read(peer, workload)? {
                    last_heard = Instant::now();
                }
            }
        }
    }

    /// Runs the workload `options` names and reports what it measured.
    pub fn run_workload(
        options: &Options,
        net: &mut Net,
        progress: &mut Progress,
    ) -> Result<Report, String> {
        let stop = Stop {
            limit: options.messages,
            duration: options.duration,
            end: None,
        };
        let text = message_text(options.text_len());
        match options.workload {
            Kind::PingPong => {
                let mut w = PingPong::new(text, stop);
                run(net, &mut w, progress, "round trips")?;
                let mut report = Report::new(options, "round trips", "round trip");
                report.count = w.completed;
                report.seconds = w.last.duration_since(w.first).as_secs_f64();
                report.histogram = w.histogram;
                Ok(report)
            }
            Kind::OpenLoop { rate } => {
                let mut w = OpenLoop::new(text, stop, rate);
                net.start_pacer(Duration::from_secs_f64(1.0 / rate).max(Duration::from_micros(1)))?;
                run(net, &mut w, progress, "messages")?;
                let mut report = Report::new(
                    options,
                    "messages",
                    "latency from the scheduled send to arrival",
                );
                report.count = w.received;
                report.seconds = w.last_arrival.duration_since(w.start).as_secs_f64();
                report.histogram = w.histogram;
                report.send_lag = Some(w.max_lag);
                Ok(report)
            }
            Kind::Stream => {
                let mut w = Stream::new(text, stop, options.size);
                run(net, &mut w, progress, "messages")?;
                let mut report =
                    Report::new(options, "messages", "delay from the write to arrival");
                let end = match options.messages {
                    // Stopped by the count: the run lasted until the last
                    // message arrived.
                    Some(_) if w.stopped_by_count => w.last_arrival,
                    _ => w.stopped.expect("a finished stream has stopped"),
                };
                report.count = w.counted;
                report.seconds = end.duration_since(w.start).as_secs_f64();
                report.bytes = Some(w.counted * options.size as u64);
                report.histogram = w.histogram;
                Ok(report)
            }
            Kind::Join => unreachable!("join does not run on the loop"),
        }
    }

    /// When a workload stops starting new units.
    struct Stop {
        limit: Option<u64>,
        duration: Option<Duration>,
        /// `duration` after the start, once started.
        end: Option<Instant>,
    }

    impl Stop {
        fn begin(&mut self, now: Instant) {
            self.end = self.duration.map(|d| now + d);
        }

        /// Whether unit number `started` (from 0) may start at `at`.
        fn may_start(&self, started: u64, at: Instant) -> bool {
            self.limit.is_none_or(|limit| started < limit) && self.end.is_none_or(|end| at < end)
        }
    }

    /// `ping-pong`: each pair has one message in flight; A stamps it, B
    /// sends it back as it came, A takes the round trip from the stamp.
    pub struct PingPong {
        text: Vec<u8>,
        stop: Stop,
        started: u64,
        completed: u64,
        /// Pairs with a message on its way.
        in_flight: usize,
        histogram: Histogram<u64>,
        first: Instant,
        last: Instant,
    }

    impl PingPong {
        fn new(text: Vec<u8>, stop: Stop) -> PingPong {
            let now = Instant::now();
            PingPong {
                text,
                stop,
                started: 0,
                completed: 0,
                in_flight: 0,
                histogram: latency_histogram(),
                first: now,
                last: now,
            }
        }

        /// Sends pair `pair`'s next message, if the run goes on.
        fn ping(&mut self, net: &mut Net, pair: usize) -> Result<(), String> {
            let now = Instant::now();
            if !self.stop.may_start(self.started, now) {
                return Ok(());
            }
            stamp(&mut self.text, net.nanos(now));
            self.started += 1;
            self.in_flight += 1;
            net.send(2 * pair, &self.text)
        }
    }

    impl Workload for PingPong {
        fn begin(&mut self, net: &mut Net, now: Instant) -> Result<(), String> {
            self.stop.begin(now);
            (self.first, self.last) = (now, now);
            (0..net.pairs()).try_for_each(|pair| self.ping(net, pair))
        }

        fn message(
            &mut self,
            net: &mut Net,
            peer: usize,
            text: &[u8],
            now: Instant,
        ) -> Result<(), String> {
            if !peer.is_multiple_of(2) {
                return net.send(peer, text); // B echoes
            }
            let port = net.peers[peer].port;
            let sent = read_stamp(text)
                .filter(|_| text.len() == self.text.len())
                .ok_or_else(|| {
                    format!(
                        "port {port}: the echo is not the message sent ({} bytes, not {})",
                        text.len(),
                        self.text.len()
                    )
                })?;
            self.histogram
                .saturating_record(net.nanos(now).saturating_sub(sent).max(1));
            self.completed += 1;
            self.in_flight -= 1;
            self.last = now;
            self.ping(net, peer / 2)
        }

        fn wake(&mut self, _net: &mut Net, _now: Instant) -> Result<Wake, String> {
            Ok(if self.in_flight > 0 {
                Wake::Waiting
            } else {
                Wake::Done
            })
        }

        fn done(&self) -> u64 {
            self.completed
        }
    }

    /// `open-loop`: message `k` is due at `start + k / rate`, on pair
    /// `k mod pairs`, and is stamped with that time, not with the time it
    /// actually left: whatever delays it, the bench included, counts.
    pub struct OpenLoop {
        text: Vec<u8>,
        stop: Stop,
        rate: f64,
        start: Instant,
        /// The next message to send.
        next: u64,
        received: u64,
        histogram: Histogram<u64>,
        max_lag: Duration,
        last_arrival: Instant,
    }

    impl OpenLoop {
        fn new(text: Vec<u8>, stop: Stop, rate: f64) -> OpenLoop {
            let now = Instant::now();
            OpenLoop {
                text,
                stop,
                rate,
                start: now,
                next: 0,
                received: 0,
                histogram: latency_histogram(),
                max_lag: Duration::ZERO,
                last_arrival: now,
            }
        }

        fn due(&self, k: u64) -> Instant {
            self.start + Duration::from_secs_f64(k as f64 / self.rate)
        }
    }

    impl Workload for OpenLoop {
        fn begin(&mut self, _net: &mut Net, now: Instant) -> Result<(), String> {
            self.stop.begin(now);
            (self.start, self.last_arrival) = (now, now);
            Ok(())
        }

        fn message(
            &mut self,
            net: &mut Net,
            peer: usize,
            text: &[u8],
            now: Instant,
        ) -> Result<(), String> {
            if peer.is_multiple_of(2) {
                return Ok(()); // A only sends
            }
            let port = net.peers[peer].port;
            let due = read_stamp(text)
                .ok_or_else(|| format!("port {port}: a message without a stamp"))?;
            self.histogram
                .saturating_record(net.nanos(now).saturating_sub(due).max(1));
            self.received += 1;
            self.last_arrival = now;
            Ok(())
        }

        /// Sends every message that is due (all at once if the loop woke
        /// late), then flushes.
        fn wake(&mut self, net: &mut Net, now: Instant) -> Result<Wake, String> {
            let pairs = net.pairs() as u64;
            let first = self.next;
            while self.stop.may_start(self.next, self.due(self.next)) && self.due(self.next) <= now
            {
                let due = self.due(self.next);
                self.max_lag = self.max_lag.max(now - due);
                stamp(&mut self.text, net.nanos(due));
                net.queue(2 * (self.next % pairs) as usize, &self.text);
                self.next += 1;
            }
            // Consecutive messages go to consecutive pairs: these are the
            // ones that got any.
            for k in first..self.next.min(first + pairs) {
                net.flush(2 * (k % pairs) as usize)?;
            }
            let more = self.stop.may_start(self.next, self.due(self.next));
            Ok(if !more && self.received == self.next {
                Wake::Done
            } else {
                // The pacer wakes the loop for the next message.
                Wake::Waiting
            })
        }

        fn done(&self) -> u64 {
            self.received
        }
    }

    /// `stream`: every A writes as fast as its socket takes it, in writes
    /// of [`STREAM_WRITE`] bytes, each message stamped with the time its
    /// batch was made; every B counts.
    pub struct Stream {
        text: Vec<u8>,
        stop: Stop,
        per_write: u64,
        start: Instant,
        sent: u64,
        received: u64,
        /// Received before the stop.
        counted: u64,
        stopped: Option<Instant>,
        stopped_by_count: bool,
        /// Writers whose socket still took bytes when their turn ended.
        hungry: Vec<usize>,
        histogram: Histogram<u64>,
        last_arrival: Instant,
    }

    impl Stream {
        fn new(text: Vec<u8>, stop: Stop, size: usize) -> Stream {
            let now = Instant::now();
            Stream {
                text,
                stop,
                per_write: (STREAM_WRITE / size).max(1) as u64,
                start: now,
                sent: 0,
                received: 0,
                counted: 0,
                stopped: None,
                stopped_by_count: false,
                hungry: Vec::new(),
                histogram: latency_histogram(),
                last_arrival: now,
            }
        }

        /// A's turn: a few writes while its socket takes them all.
        fn fill(&mut self, net: &mut Net, pair: usize) -> Result<(), String> {
            let a = 2 * pair;
            for _ in 0..STREAM_WRITES_PER_TURN {
                if self.stopped.is_some() || net.queued(a) > 0 {
                    return Ok(()); // stopped, or full: a writable event follows
                }
                let count = match self.stop.limit {
                    Some(limit) => self.per_write.min(limit - self.sent),
                    None => self.per_write,
                };
                if count == 0 {
                    return Ok(());
                }
                stamp(&mut self.text, net.nanos(Instant::now()));
                for _ in 0..count {
                    net.queue(a, &self.text);
                }
                self.sent += count;
                net.flush(a)?;
            }
            if net.queued(a) == 0 {
                self.hungry.push(pair);
            }
            Ok(())
        }
    }

    impl Workload for Stream {
        fn begin(&mut self, net: &mut Net, now: Instant) -> Result<(), String> {
            self.stop.begin(now);
            (self.start, self.last_arrival) = (now, now);
            (0..net.pairs()).try_for_each(|pair| self.fill(net, pair))
        }

        fn message(
            &mut self,
            net: &mut Net,
            peer: usize,
            text: &[u8],
            now: Instant,
        ) -> Result<(), String> {
            if peer.is_multiple_of(2) {
                return Ok(()); // A only sends
            }
            let port = net.peers[peer].port;
            let written = read_stamp(text)
                .ok_or_else(|| format!("port {port}: a message without a stamp"))?;
            self.histogram
                .saturating_record(net.nanos(now).saturating_sub(written).max(1));
            self.received += 1;
            if self.stopped.is_none() {
                self.counted += 1;
            }
            self.last_arrival = now;
            Ok(())
        }

        fn writable(&mut self, net: &mut Net, peer: usize, _now: Instant) -> Result<(), String> {
            if peer.is_multiple_of(2) {
                self.fill(net, peer / 2)?;
            }
            Ok(())
        }

        fn wake(&mut self, net: &mut Net, now: Instant) -> Result<Wake, String> {
            if self.stopped.is_none() {
                let all_sent = self.stop.limit.is_some_and(|limit| self.sent >= limit);
                let time_up = self.stop.end.is_some_and(|end| now >= end);
                if all_sent && self.received == self.sent {
                    self.stopped = Some(now);
                    self.stopped_by_count = true;
                } else if time_up {
                    self.stopped = Some(now);
                }
            }
            if self.stopped.is_some() {
                // What is in flight still comes in, so that the server's
                // queues are empty when the run ends; it is not counted.
                return Ok(if self.received == self.sent {
                    Wake::Done
                } else {
                    Wake::Waiting
                });
            }
            for pair in std::mem::take(&mut self.hungry) {
                self.fill(net, pair)?;
            }
            Ok(match (self.hungry.is_empty(), self.stop.end) {
                (false, _) => Wake::At(now),
                (true, Some(end)) => Wake::At(end),
                (true, None) => Wake::Waiting,
            })
        }

        fn done(&self) -> u64 {
            self.received
        }
    }
}

mod join_workload {
    //! `join`: `2 × pairs` threads, each a client that joins (portal and
    //! passcode, with the client library on the line wire) and leaves
    //! (`TERMINATE`, until the server closes), over and over. Blocking
    //! threads, because a join is a chain of blocking steps, each waiting
    //! for the server's answer.

    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use hdrhistogram::Histogram;
    use portal_chat::client::{JoinEvent, PortalAnswer, Session};
    use portal_chat::wire::Wire;

    use super::{FULL_POLICY, LEAVE_WAIT, Options, Progress, Report, latency_histogram, reach};

    /// What the clients share.
    struct Shared {
        portal: SocketAddr,
        wire: Wire,
        limit: Option<u64>,
        end: Option<Instant>,
        /// Sessions begun, to stop at `limit`.
        begun: AtomicU64,
        completed: AtomicU64,
        full_answers: AtomicU64,
        failed: AtomicBool,
        /// Every client's join times. One histogram for all (a histogram
        /// takes a few hundred KiB), locked once per join, which takes far
        /// longer than the lock.
        joins: Mutex<Histogram<u64>>,
    }

    pub fn run(
        options: &Options,
        addrs: &[SocketAddr],
        progress: &mut Progress,
    ) -> Result<Report, String> {
        let (portal, first) = reach(addrs, options.wire)?;
        // The port `reach` was given is taken and left once, untimed, so
        // that the reservation does not hold a port until it lapses.
        if let PortalAnswer::Assigned(assignment) = first
            && let Ok(session) =
                Session::handshake_with_wire(portal.ip(), &assignment, options.wire)
        {
            let _ = session.terminate(LEAVE_WAIT);
        }
        let begin = Instant::now();
        let shared = Shared {
            portal,
            wire: options.wire,
            limit: options.messages,
            end: options.duration.map(|d| begin + d),
            begun: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            full_answers: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            joins: Mutex::new(latency_histogram()),
        };
        progress.begin(begin);
        let results = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..2 * options.pairs)
                .map(|_| scope.spawn(|| client(&shared)))
                .collect();
            while !clients.iter().all(|c| c.is_finished()) {
                progress.show(
                    Instant::now(),
                    shared.completed.load(Ordering::Relaxed),
                    "sessions",
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            clients
                .into_iter()
                .map(|c| c.join().expect("a join client panicked"))
                .collect::<Vec<_>>()
        });
        progress.clear();
        let mut report = Report::new(
            options,
            "sessions",
            "join, portal connect to partner status",
        );
        let mut last = begin;
        for result in results {
            last = last.max(result?);
        }
        report.histogram = shared.joins.into_inner().expect("no client panicked");
        report.server = portal;
        report.count = report.histogram.len();
        report.seconds = last.duration_since(begin).as_secs_f64();
        report.full_answers = Some(shared.full_answers.load(Ordering::Relaxed));
        Ok(report)
    }

    /// One client: join, leave, again, until the run is over. Returns when
    /// its last session ended.
    fn client(shared: &Shared) -> Result<Instant, String> {
        let mut last = Instant::now();
        let record = |joined: Instant| {
            let nanos = joined.elapsed().as_nanos() as u64;
            shared
                .joins
                .lock()
                .expect("no client panicked")
                .saturating_record(nanos);
        };
        let on_event = |event: JoinEvent| {
            if let JoinEvent::Full { .. } = event {
                shared.full_answers.fetch_add(1, Ordering::Relaxed);
            }
        };
        loop {
            if shared.failed.load(Ordering::Relaxed)
                || shared.end.is_some_and(|end| Instant::now() >= end)
                || shared
                    .limit
                    .is_some_and(|limit| shared.begun.fetch_add(1, Ordering::Relaxed) >= limit)
            {
                return Ok(last);
            }
            let begun = Instant::now();
            let portal = shared.portal;
            let result = Session::join_any_with_wire(
                &[portal.ip()],
                portal.port(),
                FULL_POLICY,
                shared.wire,
                on_event,
            )
            .map_err(|e| format!("joining: {e}"))
            .and_then(|session| {
                record(begun);
                session
                    .terminate(LEAVE_WAIT)
                    .map(drop)
                    .map_err(|e| format!("leaving: {e}"))
            });
            if let Err(e) = result {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            last = Instant::now();
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use portal_chat::wire::Codec;

    use super::*;

    fn options(args: &[&str]) -> Result<Options, String> {
        match parse_args(args.iter().copied())? {
            Command::Run(options) => Ok(options),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let o = options(&["ping-pong"]).unwrap();
        assert_eq!(
            o,
            Options {
                host: "127.0.0.1".into(),
                port: 50000,
                wire: Wire::Line,
                pairs: 1,
                size: 64,
                workload: Workload::PingPong,
                messages: None,
                duration: Some(DEFAULT_DURATION),
                format: Format::Text,
            }
        );
        assert_eq!(
            options(&["stream", "--messages", "9"]).unwrap().duration,
            None
        );
    }

    #[test]
    fn flags_go_before_or_after_the_workload() {
        let o = options(&[
            "--host",
            "example.org",
            "--port=6000",
            "open-loop",
            "--rate",
            "2500",
            "--pairs",
            "3",
            "--wire",
            "dotnet",
            "--size",
            "128",
            "--json",
            "--duration",
            "0.5",
        ])
        .unwrap();
        assert_eq!(o.host, "example.org");
        assert_eq!(o.port, 6000);
        assert_eq!(o.workload, Workload::OpenLoop { rate: 2500.0 });
        assert_eq!((o.pairs, o.size, o.wire), (3, 128, Wire::Dotnet));
        assert_eq!(o.duration, Some(Duration::from_millis(500)));
        assert_eq!(o.format, Format::Json);
        assert_eq!(parse_args(["--help"]).unwrap(), Command::Help);
        assert_eq!(parse_args(["join", "-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn bad_input_is_a_one_line_error_that_names_the_flag() {
        for (args, names) in [
            (&["ping-pong", "--frobnicate"][..], "--frobnicate"),
            (&["ping-pong", "-x"], "-x"),
            (&["ping-pong", "--port", "0"], "--port"),
            (&["ping-pong", "--pairs", "0"], "--pairs"),
            (&["ping-pong", "--size", "16"], "--size"),
            (
                &["ping-pong", "--size", "129", "--wire", "dotnet"],
                "--size",
            ),
            (&["ping-pong", "--wire", "xml"], "--wire"),
            (&["ping-pong", "--duration", "-1"], "--duration"),
            (&["ping-pong", "--messages", "0"], "--messages"),
            (&["ping-pong", "--rate", "10"], "--rate"),
            (&["open-loop"], "--rate"),
            (&["open-loop", "--rate", "0"], "--rate"),
            (&["join", "--size", "64"], "--size"),
            (&["ping-pong", "--csv", "--json"], "--json"),
            (&["ping-pong", "--csv=yes"], "--csv"),
            (&["ping-pong", "stream"], "stream"),
            (&["pingpong"], "pingpong"),
            (&[], "workload"),
        ] {
            let err = options(args).unwrap_err();
            assert!(!err.contains('\n'), "{args:?}: {err}");
            assert!(err.contains(names), "{args:?}: {err:?} should name {names}");
        }
    }

    #[test]
    fn a_size_is_the_whole_message_on_either_wire() {
        for size in MIN_SIZE..20_000 {
            assert_eq!(text_len(Wire::Line, size), Some(size - 1));
            match text_len(Wire::Dotnet, size) {
                Some(text) => {
                    let mut framed = Vec::new();
                    Wire::Dotnet.encode(&vec![b'x'; text], &mut framed);
                    assert_eq!(framed.len(), size);
                }
                None => assert!([129, 16386].contains(&size), "{size}"),
            }
        }
    }

    #[test]
    fn a_stamp_reads_back_and_nothing_else_passes_for_one() {
        let mut text = message_text(40);
        for nanos in [0, 1, 0xdead_beef, u64::MAX] {
            stamp(&mut text, nanos);
            assert_eq!(read_stamp(&text), Some(nanos));
        }
        assert_eq!(read_stamp(b"SERVER50001>>> Partner 50002 left"), None);
        assert_eq!(read_stamp(b"0123"), None);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
    }

    #[test]
    fn the_machine_readable_forms_hold_every_figure() {
        let options = options(&["open-loop", "--rate", "1000"]).unwrap();
        let mut report = Report::new(&options, "messages", "latency");
        for ns in [10_000, 20_000, 30_000] {
            report.histogram.record(ns).unwrap();
        }
        report.count = 3;
        report.seconds = 0.003;
        let csv = report.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].split(',').count(),
            lines[1].split(',').count(),
            "{csv}"
        );
        let json = report.json();
        assert!(json.starts_with('{') && json.ends_with("}\n"), "{json}");
        assert!(json.contains("\"rate\":1000.0"), "{json}");
        assert!(json.contains("\"offered_rate\":1000,"), "{json}");
        assert!(json.contains("\"p50\":20.0"), "{json}");
        assert!(json.contains("\"mb_per_s\":null"), "{json}");
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }
}

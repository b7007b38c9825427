//! `cargo bench --bench relay`: the chat server measured the way servers are
//! measured, side by side with what one would otherwise use.
//!
//! Systems (see [`peers`]): the project (the real `chat-server`, release
//! build, joined through the portal), the same server with its spin off and
//! on the .NET wire, optionally another build of it to compare with, a
//! direct loopback connection (the floor), a thread-per-connection relay,
//! and tokio relays on the current-thread and the multi-thread runtime.
//!
//! Workloads (see [`workloads`]; each has its section of the report in
//! [`sections`]): ping-pong round trips (64-byte and 1 KiB messages),
//! open-loop latency over a sweep of rates on one pair and on 50 pairs,
//! streaming throughput on one pair and on 50 pairs at once, ping-pong beside
//! a streaming pair, session setup through the portal, the server's
//! footprint (memory, idle CPU, binary size), and the line codec's newline
//! search against the one it replaced.
//!
//! Every workload gives all systems the same client code, in the same run,
//! interleaved in rounds (the order rotates each round) so that drift of a
//! shared, noisy machine hits all of them alike.
//!
//! Output: one Markdown table per workload on stdout (progress goes to
//! stderr), the same tables in `target/bench/relay.md`, every number in
//! `target/bench/relay.csv`, the round-trip percentile plot in
//! `target/bench/latency.svg` and the open loop's p99 against offered rate
//! in `target/bench/open_loop.svg`.
//!
//! Environment: `PORTAL_CHAT_SERVER=PATH` runs the project's rows on another
//! `chat-server` binary; `PORTAL_CHAT_BASELINE=PATH` adds one as a system of
//! its own, for a before/after table (see [`peers::project`]).
//!
//! `--quick` is a smoke run of well under a minute: fewer samples, shorter
//! windows, numbers not to be quoted.
//!
//! `--scale` runs the scale workload instead, and only it
//! ([`workloads::scale`]): a server with as many worker ports as the
//! descriptor limit allows, every one joined, beside a 4-worker server. It
//! writes `scale.md` and `scale.csv`.

mod peers;
mod report;
mod sections;
mod workloads;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use peers::{Kind, Pair, System};
use report::{Cell, Table};
use sections::Results;

/// Pairs connected to every system; the project runs with twice as many
/// worker ports (`--workers 100`).
const PAIRS: usize = 50;

/// How much of each workload to run.
pub struct Plan {
    quick: bool,
    /// Rounds of the ping-pong and session-setup workloads.
    rounds: usize,
    /// Untimed round trips before each timed batch.
    ping_warmup: usize,
    /// Timed round trips per system, message size and round.
    ping_samples: usize,
    /// Offered rates of the one-pair open-loop sweep, messages per second.
    open_loop_rates: &'static [f64],
    /// Offered rates, all pairs together, of the many-pairs sweep.
    many_pairs_rates: &'static [f64],
    /// Rounds at each rate (one pair).
    open_loop_rounds: usize,
    /// Rounds at each rate (many pairs).
    many_pairs_rounds: usize,
    /// Sending time per system, rate and round.
    open_loop_step: Duration,
    /// Rounds of the streaming workload.
    stream_rounds: usize,
    /// Streaming time before the measured window.
    stream_warmup: Duration,
    /// The measured streaming window.
    stream_window: Duration,
    /// Rounds of ping-pong beside a stream.
    beside_rounds: usize,
    /// Pinging time per system and round, beside the stream.
    beside_window: Duration,
    /// One ping per this, beside the stream.
    beside_pace: Duration,
    /// Concurrent joining clients in the session-setup workload.
    setup_concurrency: &'static [usize],
    /// Joining time per concurrency level and round.
    setup_window: Duration,
    /// At most this many sessions per concurrency level and round.
    setup_max_sessions: u64,
    /// Clients connected for the footprint.
    footprint_clients: usize,
    /// Length of each idle window of the footprint.
    idle_window: Duration,
    /// Rounds of the newline-search comparison.
    newline_rounds: usize,
    /// Time per scan, line length and round.
    newline_window: Duration,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            rounds: 5,
            ping_warmup: 1_000,
            ping_samples: 20_000,
            open_loop_rates: &[
                1e3, 2e3, 5e3, 10e3, 20e3, 50e3, 100e3, 200e3, 500e3, 1e6, 2e6, 5e6, 10e6,
            ],
            many_pairs_rates: &[
                1e3, 2e3, 5e3, 10e3, 20e3, 50e3, 100e3, 200e3, 500e3, 1e6, 2e6, 5e6,
            ],
            open_loop_rounds: 3,
            many_pairs_rounds: 2,
            open_loop_step: Duration::from_secs(1),
            stream_rounds: 5,
            stream_warmup: Duration::from_millis(300),
            stream_window: Duration::from_millis(1500),
            beside_rounds: 3,
            beside_window: Duration::from_secs(3),
            beside_pace: Duration::from_millis(1),
            setup_concurrency: &[1, 4],
            setup_window: Duration::from_secs(1),
            setup_max_sessions: 3_000,
            footprint_clients: 1_000,
            idle_window: Duration::from_secs(10),
            newline_rounds: 5,
            newline_window: Duration::from_millis(200),
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            rounds: 1,
            ping_warmup: 200,
            ping_samples: 2_000,
            open_loop_rates: &[1e3, 10e3, 100e3, 1e6],
            many_pairs_rates: &[10e3, 100e3],
            open_loop_rounds: 1,
            many_pairs_rounds: 1,
            open_loop_step: Duration::from_millis(200),
            stream_rounds: 1,
            stream_warmup: Duration::from_millis(100),
            stream_window: Duration::from_millis(300),
            beside_rounds: 1,
            beside_window: Duration::from_millis(500),
            beside_pace: Duration::from_millis(1),
            setup_concurrency: &[1, 4],
            setup_window: Duration::from_millis(300),
            setup_max_sessions: 1_000,
            footprint_clients: 1_000,
            idle_window: Duration::from_secs(2),
            newline_rounds: 1,
            newline_window: Duration::from_millis(20),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        peers::serve(args.get(i + 1).map_or("", String::as_str));
    }
    if args.iter().any(|a| a == "--scale") {
        return match run_scale() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relay bench failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Cargo adds `--bench`; other arguments are ignored.
    let plan = if args.iter().any(|a| a == "--quick") {
        Plan::quick()
    } else {
        Plan::full()
    };
    match run(&plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A system and its connected pairs. Pair 0 serves the one-pair workloads;
/// beside a stream, pair 0 pings while pair 1 streams.
pub struct Contender {
    system: System,
    pairs: Vec<Pair>,
}

impl Contender {
    fn kind(&self) -> Kind {
        self.system.kind
    }

    /// CPU time the server process has used so far, in nanoseconds; `None`
    /// without one.
    fn cpu_ns(&self) -> io::Result<Option<u64>> {
        self.system
            .pid()
            .map(workloads::footprint::cpu_ns)
            .transpose()
    }
}

/// Server CPU time per unit of work, in nanoseconds; `None` where there is
/// no server process.
fn cpu_ns_per(ns: Option<u64>, units: u64) -> Option<f64> {
    ns.map(|ns| ns as f64 / units.max(1) as f64)
}

/// The workloads, for choosing who takes part in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PingPong,
    OpenLoop,
    Streaming,
    BesideStream,
}

impl Workload {
    /// Whether `kind` takes part. Every system runs ping-pong and streaming;
    /// the open loop leaves out the dotnet wire and the baseline (the issues
    /// ask for neither, and the sweep is the longest workload); the baseline
    /// does not run beside a stream, because a build with the livelock of
    /// the reliability issue can stall a pinger past the bench's timeout.
    fn includes(self, kind: Kind) -> bool {
        match self {
            Workload::PingPong | Workload::Streaming => true,
            Workload::OpenLoop => !matches!(kind, Kind::ProjectDotnet | Kind::Baseline),
            Workload::BesideStream => kind != Kind::Baseline,
        }
    }
}

/// The indices of the contenders that take part in `workload`.
fn members(contenders: &[Contender], workload: Workload) -> Vec<usize> {
    (0..contenders.len())
        .filter(|&i| workload.includes(contenders[i].kind()))
        .collect()
}

fn run(plan: &Plan) -> io::Result<()> {
    let started = Instant::now();
    let cpu_before = CpuUse::now()?;
    let load_before = load_average();
    let kinds = Kind::available();
    progress(&format!(
        "{} run; systems: {}",
        if plan.quick { "quick" } else { "full" },
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut contenders = Vec::new();
    for &kind in &kinds {
        let system = System::start(kind, 2 * PAIRS).map_err(context(kind, "starting"))?;
        let pairs = (0..PAIRS)
            .map(|_| system.connect_pair())
            .collect::<io::Result<_>>()
            .map_err(context(kind, "connecting pairs"))?;
        contenders.push(Contender { system, pairs });
    }

    let mut tables = Vec::new();
    let mut results = Results::new(kinds.clone());
    sections::ping_pong::run(plan, &mut contenders, &mut tables, &mut results)?;
    sections::open_loop::run(plan, &mut contenders, &mut tables, &mut results)?;
    sections::streaming::run(plan, &mut contenders, &mut tables, &mut results)?;
    sections::beside_stream::run(plan, &mut contenders, &mut tables, &mut results)?;
    drop(contenders); // stop the servers before the footprint's quiet windows
    sections::setup::run(plan, &mut tables)?;
    sections::footprint::run(plan, &kinds, &mut tables, &mut results)?;
    sections::newline::run(plan, &mut tables, &mut results);
    sections::summary::tables(plan, &results, &mut tables);

    let cpu = CpuUse::now()?.since(&cpu_before);
    let header = format!(
        "Machine: {}. Run: `{}cargo bench --bench relay{}`, {:.0} s. The 1-minute load average \
         was {} when it started and {} when it ended. During the run the bench and its servers \
         used {:.0} % of the machine's CPU time, other processes {:.0} %, and the hypervisor \
         took {:.1} % (steal): the more the others took, the noisier the numbers.",
        machine_description(),
        if kinds.contains(&Kind::Baseline) {
            "PORTAL_CHAT_BASELINE=… "
        } else {
            ""
        },
        if plan.quick { " -- --quick" } else { "" },
        started.elapsed().as_secs_f64(),
        load_before,
        load_average(),
        cpu.percent(cpu.own),
        cpu.percent(cpu.others),
        cpu.percent(cpu.steal),
    );
    write_outputs(&header, &tables, &results)
}

/// `--scale`: the scale workload alone; its tables go to stdout and to
/// `scale.md` and `scale.csv` in the output directory.
fn run_scale() -> io::Result<()> {
    let started = Instant::now();
    let cpu_before = CpuUse::now()?;
    let tables = workloads::scale::run()?;
    let cpu = CpuUse::now()?.since(&cpu_before);
    let mut markdown = format!(
        "## Scale\n\nMachine: {}. Run: `cargo bench --bench relay -- --scale`, {:.0} s. During \
         the run the bench and its servers used {:.0} % of the machine's CPU time, other \
         processes {:.0} %, and the hypervisor took {:.1} % (steal).\n",
        machine_description(),
        started.elapsed().as_secs_f64(),
        cpu.percent(cpu.own),
        cpu.percent(cpu.others),
        cpu.percent(cpu.steal),
    );
    for table in &tables {
        markdown.push('\n');
        markdown.push_str(&table.markdown());
    }
    println!("{markdown}");
    let dir = output_dir();
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("scale.md"), &markdown)?;
    fs::write(dir.join("scale.csv"), report::csv(&tables))?;
    progress(&format!(
        "wrote scale.md and scale.csv to {}",
        dir.display()
    ));
    Ok(())
}

/// Prints the tables and writes them, the CSV and the plots to
/// `target/bench/`.
fn write_outputs(header: &str, tables: &[Table], results: &Results) -> io::Result<()> {
    let mut markdown = format!("## Relay benchmark\n\n{header}\n");
    for table in tables {
        markdown.push('\n');
        markdown.push_str(&table.markdown());
    }
    println!("{markdown}");
    let dir = output_dir();
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("relay.md"), &markdown)?;
    fs::write(dir.join("relay.csv"), report::csv(tables))?;
    fs::write(dir.join("latency.svg"), sections::ping_pong::plot(results))?;
    fs::write(
        dir.join("open_loop.svg"),
        sections::open_loop::plot(results),
    )?;
    progress(&format!(
        "wrote relay.md, relay.csv, latency.svg and open_loop.svg to {}",
        dir.display()
    ));
    Ok(())
}

/// `target/bench`, or the same under `CARGO_TARGET_DIR`.
fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

/// Each system's colour in the plots; the project's variants are shades of
/// its red.
fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Project => "#d62728",
        Kind::ProjectSpinOff => "#ff9896",
        Kind::ProjectDotnet => "#e377c2",
        Kind::Baseline => "#8c564b",
        Kind::Direct => "#555555",
        Kind::Threaded => "#1f77b4",
        Kind::TokioCurrentThread => "#2ca02c",
        Kind::TokioMultiThread => "#9467bd",
    }
}

/// The systems' indices in round `round`: all of them, the starting one
/// moving by one each round.
fn round_order(round: usize, count: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |k| (k + round) % count)
}

/// The median (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Nanoseconds as a microseconds cell.
fn micros(ns: u64) -> Cell {
    Cell::number(ns as f64 / 1000.0, 1)
}

fn size_label(bytes: usize) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes}-byte")
    }
}

/// `2000` as `2k`, `1500000` as `1.5M`.
fn rate_label(rate: f64) -> String {
    let (value, suffix) = match rate {
        r if r >= 1e6 => (r / 1e6, "M"),
        r if r >= 1e3 => (r / 1e3, "k"),
        r => (r, ""),
    };
    let text = format!("{value:.1}");
    format!("{}{suffix}", text.strip_suffix(".0").unwrap_or(&text))
}

/// CPU model, core count and kernel, for the report header.
fn machine_description() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, name)| name.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}

/// CPU time on the whole machine, split by who used it, in clock ticks:
/// how noisy a run was.
struct CpuUse {
    /// All CPU time that passed, over all cores.
    total: u64,
    /// Used by this bench and the servers it started (once they are reaped).
    own: u64,
    /// Used by every other process.
    others: u64,
    /// Taken by the hypervisor for other virtual machines.
    steal: u64,
}

impl CpuUse {
    /// The counters since boot, from `/proc/stat` and `/proc/self/stat`.
    fn now() -> io::Result<CpuUse> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/stat");
        let stat = fs::read_to_string("/proc/stat")?;
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .ok_or_else(bad)?
            .split_whitespace()
            .take(8)
            .map(|n| n.parse().map_err(|_| bad()))
            .collect::<io::Result<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
            return Err(bad());
        };
        // utime, stime, cutime, cstime: fields 14 to 17 of /proc/self/stat.
        let own_stat = fs::read_to_string("/proc/self/stat")?;
        let own: u64 = own_stat[own_stat.rfind(')').ok_or_else(bad)? + 1..]
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        let busy = user + nice + system + irq + softirq;
        Ok(CpuUse {
            total: busy + idle + iowait + steal,
            own,
            others: busy.saturating_sub(own),
            steal,
        })
    }

    /// The use between `before` and this reading.
    fn since(&self, before: &CpuUse) -> CpuUse {
        CpuUse {
            total: self.total - before.total,
            own: self.own - before.own,
            others: self.others.saturating_sub(before.others),
            steal: self.steal - before.steal,
        }
    }

    /// `ticks` as a percentage of all the CPU time that passed.
    fn percent(&self, ticks: u64) -> f64 {
        100.0 * ticks as f64 / self.total.max(1) as f64
    }
}

/// `/proc/loadavg`'s 1-minute figure, as text (`?` if unreadable). It
/// counts the bench's own threads once they run.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Prefixes an error with the system and the step that failed.
fn context(kind: Kind, step: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{}, {step}: {e}", kind.name()))
}

fn progress(message: &str) {
    eprintln!("[relay bench] {message}");
}

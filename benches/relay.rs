//! `cargo bench --bench relay`: the chat server measured the way servers are
//! measured, side by side with what one would otherwise use.
//!
//! Systems (see [`peers`]): the project (the real `chat-server`, release
//! build, joined through the portal), a direct loopback connection (the
//! floor), a thread-per-connection relay, and tokio relays on the
//! current-thread and the multi-thread runtime.
//!
//! Workloads (see [`workloads`]): ping-pong round trips (64-byte and 1 KiB
//! lines), open-loop latency over a sweep of rates, streaming throughput on
//! one pair and on 50 pairs at once, session setup through the portal, and
//! the server's footprint (memory, idle CPU, binary size).
//!
//! Every workload gives all systems the same client code, in the same run,
//! interleaved in rounds (the order rotates each round) so that drift of a
//! shared, noisy machine hits all of them alike.
//!
//! Output: one Markdown table per workload on stdout (progress goes to
//! stderr), the same tables in `target/bench/relay.md`, every number in
//! `target/bench/relay.csv`, and the round-trip percentile plot in
//! `target/bench/latency.svg`.
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
mod workloads;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use peers::{Kind, Pair, System};
use report::plot::{self, Panel, Series};
use report::{Cell, Table};
use workloads::footprint::{self, Footprint, TICK_MS};
use workloads::open_loop::{self, Crossing};
use workloads::{latency_histogram, ping_pong, setup, streaming};

/// Pairs connected to every system; the project runs with twice as many
/// worker ports (`--workers 100`).
const PAIRS: usize = 50;

/// The line sizes of the ping-pong workload, newline included.
const PING_SIZES: [usize; 2] = [64, 1024];

/// The open-loop latency threshold: 1 ms.
const OPEN_LOOP_THRESHOLD_NS: f64 = 1e6;

/// How much of each workload to run.
struct Plan {
    quick: bool,
    /// Rounds of the ping-pong and session-setup workloads.
    rounds: usize,
    /// Untimed round trips before each timed batch.
    ping_warmup: usize,
    /// Timed round trips per system, line size and round.
    ping_samples: usize,
    /// Offered rates of the open-loop sweep, lines per second.
    open_loop_rates: &'static [f64],
    /// Rounds at each rate.
    open_loop_rounds: usize,
    /// Sending time per system, rate and round.
    open_loop_step: Duration,
    /// Rounds of the streaming workload.
    stream_rounds: usize,
    /// Streaming time before the measured window.
    stream_warmup: Duration,
    /// The measured streaming window.
    stream_window: Duration,
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
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            rounds: 5,
            ping_warmup: 1_000,
            ping_samples: 20_000,
            open_loop_rates: &[1e3, 2e3, 5e3, 10e3, 20e3, 50e3, 100e3, 200e3, 400e3],
            open_loop_rounds: 3,
            open_loop_step: Duration::from_secs(1),
            stream_rounds: 3,
            stream_warmup: Duration::from_millis(300),
            stream_window: Duration::from_millis(1500),
            setup_concurrency: &[1, 4],
            setup_window: Duration::from_secs(1),
            setup_max_sessions: 3_000,
            footprint_clients: 1_000,
            idle_window: Duration::from_secs(10),
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            rounds: 1,
            ping_warmup: 200,
            ping_samples: 2_000,
            open_loop_rates: &[1e3, 10e3, 100e3],
            open_loop_rounds: 1,
            open_loop_step: Duration::from_millis(200),
            stream_rounds: 1,
            stream_warmup: Duration::from_millis(100),
            stream_window: Duration::from_millis(300),
            setup_concurrency: &[1, 4],
            setup_window: Duration::from_millis(300),
            setup_max_sessions: 1_000,
            footprint_clients: 1_000,
            idle_window: Duration::from_secs(2),
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

/// A system and its connected pairs. Pair 0 serves the one-pair workloads.
struct Contender {
    system: System,
    pairs: Vec<Pair>,
}

impl Contender {
    fn kind(&self) -> Kind {
        self.system.kind
    }

    /// CPU ticks the server process has used so far; `None` without one.
    fn cpu_ticks(&self) -> io::Result<Option<u64>> {
        self.system.pid().map(footprint::cpu_ticks).transpose()
    }
}

/// Server CPU time per unit of work, in nanoseconds, from a count of
/// [`TICK_MS`] ticks; `None` where there is no server process.
fn cpu_ns_per(ticks: Option<u64>, units: u64) -> Option<f64> {
    ticks.map(|t| (t * TICK_MS) as f64 * 1e6 / units as f64)
}

/// What the summary needs from the workloads.
struct Results {
    /// Per ping size, per system: the round trips.
    ping: Vec<Vec<Histogram<u64>>>,
    /// Per system: where open-loop p99 reaches 1 ms.
    crossings: Vec<Option<Crossing>>,
    /// Per system: median lines/s on one pair.
    stream_one: Vec<f64>,
    /// Per system: median lines/s on all pairs at once.
    stream_all: Vec<f64>,
    footprint: Vec<Footprint>,
    binary_bytes: u64,
}

fn run(plan: &Plan) -> io::Result<()> {
    let started = Instant::now();
    let cpu_before = CpuUse::now()?;
    progress(&format!(
        "{} run; systems: {}",
        if plan.quick { "quick" } else { "full" },
        Kind::ALL.map(Kind::name).join(", ")
    ));
    let mut contenders = Vec::new();
    for kind in Kind::ALL {
        let system = System::start(kind, 2 * PAIRS).map_err(context(kind, "starting"))?;
        let pairs = (0..PAIRS)
            .map(|_| system.connect_pair())
            .collect::<io::Result<_>>()
            .map_err(context(kind, "connecting pairs"))?;
        contenders.push(Contender { system, pairs });
    }

    let mut tables = Vec::new();
    let ping = run_ping_pong(plan, &mut contenders, &mut tables)?;
    let crossings = run_open_loop(plan, &mut contenders, &mut tables)?;
    let (stream_one, stream_all) = run_streaming(plan, &mut contenders, &mut tables)?;
    drop(contenders); // stop the servers before the footprint's quiet windows
    run_setup(plan, &mut tables)?;
    let footprint = run_footprint(plan, &mut tables)?;
    let binary_bytes = fs::metadata(peers::project::SERVER_BINARY)?.len();

    let results = Results {
        ping,
        crossings,
        stream_one,
        stream_all,
        footprint,
        binary_bytes,
    };
    tables.push(ratio_table(&results));
    tables.push(target_table(&results, plan));

    let cpu = CpuUse::now()?.since(&cpu_before);
    let header = format!(
        "Machine: {}. Run: `cargo bench --bench relay{}`, {:.0} s. During the run the bench \
         and its servers used {:.0} % of the machine's CPU time, other processes {:.0} %, \
         and the hypervisor took {:.1} % (steal): the more the others took, the noisier the \
         numbers.",
        machine_description(),
        if plan.quick { " -- --quick" } else { "" },
        started.elapsed().as_secs_f64(),
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

/// Ping-pong for every line size, interleaved in rounds.
fn run_ping_pong(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
) -> io::Result<Vec<Vec<Histogram<u64>>>> {
    let mut histograms: Vec<Vec<Histogram<u64>>> = PING_SIZES
        .iter()
        .map(|_| contenders.iter().map(|_| latency_histogram()).collect())
        .collect();
    // Server CPU ticks per line size and system, warm-up included.
    let mut ticks = vec![vec![Some(0); contenders.len()]; PING_SIZES.len()];
    for round in 0..plan.rounds {
        progress(&format!(
            "ping-pong, round {} of {}",
            round + 1,
            plan.rounds
        ));
        for (s, size) in PING_SIZES.iter().enumerate() {
            for i in round_order(round, contenders.len()) {
                let kind = contenders[i].kind();
                let before = contenders[i].cpu_ticks()?;
                let pair = &mut contenders[i].pairs[0];
                let (warmup, samples) = (plan.ping_warmup, plan.ping_samples);
                ping_pong::run(pair, *size, warmup, samples, &mut histograms[s][i])
                    .map_err(context(kind, "ping-pong"))?;
                let used = contenders[i].cpu_ticks()?.zip(before).map(|(a, b)| a - b);
                ticks[s][i] = ticks[s][i].zip(used).map(|(sum, t)| sum + t);
            }
        }
    }
    let round_trips = (plan.rounds * (plan.ping_warmup + plan.ping_samples)) as u64;
    for ((size, per_system), ticks) in PING_SIZES.iter().zip(&histograms).zip(&ticks) {
        let mut table = Table::new(
            if *size == 64 {
                "ping_pong_64"
            } else {
                "ping_pong_1024"
            },
            format!("Ping-pong round trip, {} lines (µs)", size_label(*size)),
            &[
                "system",
                "samples",
                "min",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max",
                "server CPU per round trip (µs)",
            ],
        );
        for ((contender, histogram), ticks) in contenders.iter().zip(per_system).zip(ticks) {
            let mut row = vec![
                Cell::text(contender.kind().name()),
                Cell::number(histogram.len() as f64, 0),
                micros(histogram.min()),
            ];
            for quantile in [0.5, 0.9, 0.99, 0.999] {
                row.push(micros(histogram.value_at_quantile(quantile)));
            }
            row.push(micros(histogram.max()));
            let cpu = cpu_ns_per(*ticks, round_trips);
            row.push(cpu.map_or_else(Cell::empty, |ns| Cell::number(ns / 1000.0, 1)));
            table.row(row);
        }
        table.note(format!(
            "A sends a line, B echoes it, A times the round trip; one line in flight. \
             {} rounds of {} round trips per system after {} untimed ones. Server CPU is the \
             relay process's user + system time over all round trips (it forwards two lines \
             each); direct has no relay process.",
            plan.rounds, plan.ping_samples, plan.ping_warmup
        ));
        tables.push(table);
    }
    Ok(histograms)
}

/// The open-loop sweep: each rate, all systems, interleaved in rounds. A
/// system leaves the sweep once its p99, having been below 1 ms at some
/// rate, is at or above 1 ms at two rates in a row. (The lowest rates do not
/// count: there every line wakes idle threads, which on a virtual machine
/// can cost milliseconds even with no relay at all; see the direct row.)
fn run_open_loop(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
) -> io::Result<Vec<Option<Crossing>>> {
    let rates = plan.open_loop_rates;
    let mut p99: Vec<Vec<Option<f64>>> = vec![vec![None; rates.len()]; contenders.len()];
    let mut over_in_a_row = vec![0; contenders.len()];
    let mut was_below = vec![false; contenders.len()];
    for (r, &rate) in rates.iter().enumerate() {
        let active: Vec<bool> = over_in_a_row.iter().map(|&n| n < 2).collect();
        if !active.contains(&true) {
            break;
        }
        progress(&format!("open loop at {} lines/s", rate_label(rate)));
        let mut histograms: Vec<Histogram<u64>> =
            contenders.iter().map(|_| latency_histogram()).collect();
        for round in 0..plan.open_loop_rounds {
            for i in round_order(round, contenders.len()).filter(|&i| active[i]) {
                let pair = &mut contenders[i].pairs[0];
                open_loop::run(pair, rate, plan.open_loop_step, &mut histograms[i])
                    .map_err(context(contenders[i].kind(), "open loop"))?;
            }
        }
        for i in (0..contenders.len()).filter(|&i| active[i]) {
            let value = histograms[i].value_at_quantile(0.99) as f64;
            p99[i][r] = Some(value);
            if value < OPEN_LOOP_THRESHOLD_NS {
                was_below[i] = true;
                over_in_a_row[i] = 0;
            } else if was_below[i] {
                over_in_a_row[i] += 1;
            }
        }
    }
    let mut columns = vec!["system".to_string()];
    columns.extend(rates.iter().map(|&rate| format!("{}/s", rate_label(rate))));
    columns.push("p99 reaches 1 ms at (lines/s)".to_string());
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(
        "open_loop_p99",
        "Open-loop latency: p99 by offered rate (µs)",
        &columns,
    );
    let mut crossings = Vec::new();
    for (contender, sweep) in contenders.iter().zip(&p99) {
        let mut row = vec![Cell::text(contender.kind().name())];
        row.extend(
            sweep
                .iter()
                .map(|v| v.map_or_else(Cell::empty, |ns| micros(ns as u64))),
        );
        let points: Vec<(f64, f64)> = rates
            .iter()
            .zip(sweep)
            .filter_map(|(&rate, v)| Some((rate, (*v)?)))
            .collect();
        let crossing = open_loop::crossing(&points, OPEN_LOOP_THRESHOLD_NS);
        row.push(match crossing {
            Some(Crossing::At(rate)) => Cell::labelled(rate, format!("≈ {}", rate_label(rate))),
            Some(Crossing::Below(rate)) => Cell::labelled(rate, format!("< {}", rate_label(rate))),
            Some(Crossing::Above(rate)) => Cell::labelled(rate, format!("> {}", rate_label(rate))),
            None => Cell::empty(),
        });
        crossings.push(crossing);
        table.row(row);
    }
    table.note(format!(
        "A sends {}-byte lines at a fixed rate; latency is from each line's intended send time \
         to its arrival at B (no coordinated omission). {} rounds of {} ms per system and rate. \
         A system leaves the sweep (—) after two rates in a row at or above 1 ms, once it has \
         been below; the crossing is taken after its last rate below 1 ms, interpolated on log \
         scales. At the lowest rates every line wakes idle threads, which on a virtual machine \
         can cost milliseconds with no relay at all (see direct).",
        open_loop::LINE_LEN,
        plan.open_loop_rounds,
        plan.open_loop_step.as_millis()
    ));
    tables.push(table);
    Ok(crossings)
}

/// Streaming on one pair and on all pairs, interleaved in rounds; the
/// medians of the rounds are reported.
fn run_streaming(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
) -> io::Result<(Vec<f64>, Vec<f64>)> {
    /// One system's runs of one variant (one pair, or all pairs).
    #[derive(Default, Clone)]
    struct Runs {
        lines_per_sec: Vec<f64>,
        megabytes_per_sec: Vec<f64>,
        /// Server CPU ticks over all runs; `None` without a server process.
        ticks: Option<u64>,
        total_lines: u64,
    }
    let n = contenders.len();
    let first = Runs {
        ticks: Some(0),
        ..Runs::default()
    };
    // [one pair, all pairs] for each system.
    let mut runs = vec![[first.clone(), first]; n];
    for round in 0..plan.stream_rounds {
        progress(&format!(
            "streaming, round {} of {}",
            round + 1,
            plan.stream_rounds
        ));
        for i in round_order(round, n) {
            for (variant, pair_count) in [1, PAIRS].into_iter().enumerate() {
                let kind = contenders[i].kind();
                let before = contenders[i].cpu_ticks()?;
                let pairs = &mut contenders[i].pairs[..pair_count];
                let throughput = streaming::run(pairs, plan.stream_warmup, plan.stream_window)
                    .map_err(context(kind, "streaming"))?;
                let used = contenders[i].cpu_ticks()?.zip(before).map(|(a, b)| a - b);
                let runs = &mut runs[i][variant];
                runs.lines_per_sec.push(throughput.lines_per_sec);
                runs.megabytes_per_sec.push(throughput.bytes_per_sec / 1e6);
                runs.ticks = runs.ticks.zip(used).map(|(sum, t)| sum + t);
                runs.total_lines += throughput.total_lines;
            }
        }
    }
    let mut table = Table::new(
        "streaming",
        "Streaming throughput",
        &[
            "system",
            "1 pair: lines/s",
            "1 pair: MB/s",
            "1 pair: server CPU per line (ns)",
            &format!("{PAIRS} pairs: lines/s"),
            &format!("{PAIRS} pairs: MB/s"),
            &format!("{PAIRS} pairs: server CPU per line (ns)"),
        ],
    );
    let (mut one_lines, mut all_lines) = (Vec::new(), Vec::new());
    for (contender, [one, all]) in contenders.iter().zip(&runs) {
        one_lines.push(median(one.lines_per_sec.clone()));
        all_lines.push(median(all.lines_per_sec.clone()));
        let mut row = vec![Cell::text(contender.kind().name())];
        for variant in [one, all] {
            let cpu = cpu_ns_per(variant.ticks, variant.total_lines);
            row.push(Cell::number(median(variant.lines_per_sec.clone()), 0));
            row.push(Cell::number(median(variant.megabytes_per_sec.clone()), 1));
            row.push(cpu.map_or_else(Cell::empty, |ns| Cell::number(ns, 0)));
        }
        table.row(row);
    }
    table.note(format!(
        "Each pair's writer sends {}-byte lines, 64 KiB per write, never waiting; rates are \
         counted at the readers over {} ms after {} ms of warm-up. Median of {} rounds. Server \
         CPU is the relay process's user + system time over every line it forwarded, warm-up \
         and drain included: unlike the rates, it hardly depends on what else the machine \
         runs. The project runs with --workers {}.",
        streaming::LINE_LEN,
        plan.stream_window.as_millis(),
        plan.stream_warmup.as_millis(),
        plan.stream_rounds,
        2 * PAIRS
    ));
    tables.push(table);
    Ok((one_lines, all_lines))
}

/// Session setup through the portal, on a server of its own.
fn run_setup(plan: &Plan, tables: &mut Vec<Table>) -> io::Result<()> {
    progress("session setup");
    let (_server, portal) = peers::project::start(64)?;
    let levels = plan.setup_concurrency;
    let mut histograms: Vec<Histogram<u64>> = levels.iter().map(|_| latency_histogram()).collect();
    let mut rates = vec![Vec::new(); levels.len()];
    let mut full_answers = vec![0; levels.len()];
    for round in 0..plan.rounds {
        for i in round_order(round, levels.len()) {
            let sessions = setup::run(
                portal,
                levels[i],
                plan.setup_window,
                plan.setup_max_sessions,
                &mut histograms[i],
            )?;
            rates[i].push(sessions.per_sec);
            full_answers[i] += sessions.full_answers;
        }
    }
    let mut table = Table::new(
        "session_setup",
        "Session setup, project: portal to handshake success",
        &[
            "concurrent clients",
            "sessions",
            "p50 (µs)",
            "p99 (µs)",
            "sessions/s",
            "\"full\" answers",
        ],
    );
    for (i, &level) in levels.iter().enumerate() {
        table.row(vec![
            Cell::number(level as f64, 0),
            Cell::number(histograms[i].len() as f64, 0),
            micros(histograms[i].value_at_quantile(0.5)),
            micros(histograms[i].value_at_quantile(0.99)),
            Cell::number(median(rates[i].clone()), 0),
            Cell::number(full_answers[i] as f64, 0),
        ]);
    }
    table.note(format!(
        "Each client joins with the client library (`Session::join`: portal connect, reply, \
         worker connect, passcode, \"Connection successful\" and the status line), closes, and \
         joins again; --workers 64. sessions/s is the median of {} rounds of {} ms. The other \
         systems have no portal or handshake, so they have no row.",
        plan.rounds,
        plan.setup_window.as_millis()
    ));
    tables.push(table);
    Ok(())
}

/// The footprint of the project and of the relays.
fn run_footprint(plan: &Plan, tables: &mut Vec<Table>) -> io::Result<Vec<Footprint>> {
    // The bench holds one socket per client of four servers at once, and
    // the project server one listener and one socket per client.
    let limit = footprint::raise_fd_limit(8 * 1024)?;
    let fitting = (limit.saturating_sub(128) / 4) as usize;
    let clients = plan.footprint_clients.min(fitting) / 2 * 2;
    progress(&format!(
        "footprint: {clients} clients, two idle windows of {} s",
        plan.idle_window.as_secs()
    ));
    let footprints = footprint::run(clients, plan.idle_window)?;
    let idle_secs = plan.idle_window.as_secs();
    let binary_kib = fs::metadata(peers::project::SERVER_BINARY)?.len() as f64 / 1024.0;
    let mut table = Table::new(
        "footprint",
        "Footprint",
        &[
            "server",
            "idle RSS (KiB)",
            "idle private (KiB)",
            &format!("RSS, {clients} clients (KiB)"),
            "RSS per client (bytes)",
            &format!("CPU ticks, {idle_secs} s idle"),
            &format!("wake-ups, {idle_secs} s idle"),
            &format!("CPU ticks, {idle_secs} s with {clients} idle clients"),
            &format!("wake-ups, {idle_secs} s with {clients} idle clients"),
            "threads",
            "binary (KiB)",
        ],
    );
    for (i, f) in footprints.iter().enumerate() {
        let connected = f.connected.map(|(_, window)| window);
        let count = |v: u64| Cell::number(v as f64, 0);
        table.row(vec![
            Cell::text(f.name.clone()),
            count(f.idle.rss_kib),
            count(f.idle.private_kib),
            connected.map_or_else(Cell::empty, |w| count(w.rss_kib)),
            f.rss_per_client()
                .map_or_else(Cell::empty, |b| Cell::number(b, 0)),
            count(f.idle.cpu_ticks),
            count(f.idle.wakeups),
            connected.map_or_else(Cell::empty, |w| count(w.cpu_ticks)),
            connected.map_or_else(Cell::empty, |w| count(w.wakeups)),
            count(connected.unwrap_or(f.idle).threads),
            if i < 2 {
                Cell::number(binary_kib, 1)
            } else {
                Cell::empty()
            },
        ]);
    }
    table.note(format!(
        "Resident memory (VmRSS) at the end of each window; private is the part no other \
         process shares (smaps_rollup Private_Clean + Private_Dirty), the rest being mostly \
         shared C library pages. CPU ticks are utime + stime of {TICK_MS} ms; wake-ups are voluntary context switches over all threads. The clients \
         are paired and each pair has exchanged one line. The project's binary is the bench \
         profile's, which has the release settings; the other relays live in the bench binary.",
    ));
    tables.push(table);
    Ok(footprints)
}

/// The project against each other system, as project ÷ peer.
fn ratio_table(results: &Results) -> Table {
    let mut table = Table::new(
        "ratios",
        "Project ÷ peer (latency: below 1 is better; rate: above 1 is better)",
        &[
            "peer",
            "p50 RTT 64 B",
            "p99 RTT 64 B",
            "p50 RTT 1 KiB",
            "p99 RTT 1 KiB",
            "open-loop 1 ms rate",
            "streaming, 1 pair",
            &format!("streaming, {PAIRS} pairs"),
        ],
    );
    let project = Kind::ALL
        .iter()
        .position(|&k| k == Kind::Project)
        .expect("project");
    let quantile =
        |size: usize, system: usize, q: f64| results.ping[size][system].value_at_quantile(q) as f64;
    let rate = |system: usize| match results.crossings[system] {
        Some(Crossing::At(r)) => Some(r),
        _ => None,
    };
    for (peer, kind) in Kind::ALL.iter().enumerate().filter(|&(i, _)| i != project) {
        let ratio = |value: f64| Cell::number(value, 2);
        table.row(vec![
            Cell::text(kind.name()),
            ratio(quantile(0, project, 0.5) / quantile(0, peer, 0.5)),
            ratio(quantile(0, project, 0.99) / quantile(0, peer, 0.99)),
            ratio(quantile(1, project, 0.5) / quantile(1, peer, 0.5)),
            ratio(quantile(1, project, 0.99) / quantile(1, peer, 0.99)),
            match (rate(project), rate(peer)) {
                (Some(mine), Some(theirs)) => ratio(mine / theirs),
                _ => Cell::empty(),
            },
            ratio(results.stream_one[project] / results.stream_one[peer]),
            ratio(results.stream_all[project] / results.stream_all[peer]),
        ]);
    }
    table.note(
        "Open-loop rates are compared only where both systems crossed 1 ms inside the sweep.",
    );
    table
}

/// The targets of the issue, each met or not.
fn target_table(results: &Results, plan: &Plan) -> Table {
    let mut table = Table::new("targets", "Targets", &["target", "measured", "met"]);
    let mut check = |target: String, measured: String, met: bool| {
        table.row(vec![
            Cell::text(target),
            Cell::text(measured),
            Cell::labelled(met as u8 as f64, if met { "yes" } else { "**no**" }),
        ]);
    };
    let index = |kind: Kind| {
        Kind::ALL
            .iter()
            .position(|&k| k == kind)
            .expect("every kind")
    };
    let project = index(Kind::Project);
    let relays = [
        Kind::Threaded,
        Kind::TokioCurrentThread,
        Kind::TokioMultiThread,
    ];
    for (s, &size) in PING_SIZES.iter().enumerate() {
        let value = |system: usize, q: f64| results.ping[s][system].value_at_quantile(q);
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            let mine = value(project, q);
            let best = relays
                .iter()
                .map(|&k| (value(index(k), q), k))
                .min_by_key(|&(v, _)| v)
                .expect("relays");
            check(
                format!("{label} RTT, {} lines, below every relay", size_label(size)),
                format!(
                    "project {} µs; best relay ({}) {} µs",
                    us(mine),
                    best.1.name(),
                    us(best.0)
                ),
                mine < best.0,
            );
        }
        let ratio = value(project, 0.5) as f64 / value(index(Kind::Direct), 0.5) as f64;
        check(
            format!("p50 RTT, {} lines, within 1.4× direct", size_label(size)),
            format!("{ratio:.2}×"),
            ratio <= 1.4,
        );
    }
    let stream = |kind: Kind| results.stream_one[index(kind)];
    let over_tokio = stream(Kind::Project) / stream(Kind::TokioCurrentThread);
    check(
        "streaming lines/s ≥ 1.5× tokio current-thread".into(),
        format!("{over_tokio:.2}×"),
        over_tokio >= 1.5,
    );
    let over_threaded = stream(Kind::Project) / stream(Kind::Threaded);
    check(
        "streaming lines/s above the threaded relay".into(),
        format!("{over_threaded:.2}×"),
        over_threaded > 1.0,
    );
    let default = &results.footprint[0];
    let loaded = &results.footprint[1];
    check(
        format!(
            "0 CPU ticks over {} idle s (apart from the tick)",
            plan.idle_window.as_secs()
        ),
        format!(
            "{} ticks, {} wake-ups; with {} clients: {} ticks",
            default.idle.cpu_ticks,
            default.idle.wakeups,
            loaded.connected.map_or(0, |(n, _)| n),
            loaded.connected.map_or(0, |(_, w)| w.cpu_ticks)
        ),
        default.idle.cpu_ticks == 0,
    );
    check(
        "idle RSS under 2 MiB".into(),
        format!(
            "{} KiB, of which {} KiB private",
            default.idle.rss_kib, default.idle.private_kib
        ),
        default.idle.rss_kib < 2048,
    );
    let per_client = loaded.rss_per_client().unwrap_or(f64::NAN);
    check(
        "RSS per idle connected client under 8 KiB".into(),
        format!("{per_client:.0} bytes"),
        per_client < 8192.0,
    );
    check(
        "release binary under 512 KiB".into(),
        format!("{:.1} KiB", results.binary_bytes as f64 / 1024.0),
        results.binary_bytes < 512 * 1024,
    );
    table
}

/// Prints the tables and writes them, the CSV and the plot to
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
    let panels: Vec<Panel> = PING_SIZES
        .iter()
        .zip(&results.ping)
        .map(|(&size, histograms)| Panel {
            title: format!("{} lines", size_label(size)),
            series: Kind::ALL
                .iter()
                .zip(histograms)
                .map(|(&kind, histogram)| Series {
                    name: kind.name(),
                    color: color(kind),
                    dashed: kind == Kind::Direct,
                    histogram,
                })
                .collect(),
        })
        .collect();
    let svg = plot::percentile_plot("Ping-pong round trip through each system", &panels);
    fs::write(dir.join("latency.svg"), svg)?;
    progress(&format!(
        "wrote relay.md, relay.csv and latency.svg to {}",
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

/// Each system's colour in the plot.
fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Project => "#d62728",
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

/// Nanoseconds as microseconds text.
fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
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

/// Prefixes an error with the system and the step that failed.
fn context(kind: Kind, step: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{}, {step}: {e}", kind.name()))
}

fn progress(message: &str) {
    eprintln!("[relay bench] {message}");
}

//! The open-loop sweeps, as wrk2 and HdrHistogram users measure capacity:
//! every rate for every system, no early exit on latency, until the system
//! falls behind the offered rate; on one pair, then on many pairs sharing
//! one aggregate rate.
//!
//! A system leaves a sweep once it has fallen behind, over a whole step
//! (delivered less than 99 % of the offered rate), at two rates in a row:
//! above that it is only further behind. (Two, not one, so that a burst of
//! other work on a shared machine during one step does not end a sweep.) Its capacity is the highest offered rate at which it
//! kept up (within 1 %) with p99 under 1 ms. The lowest rates get a table of
//! their own: there every message wakes idle threads, and on a virtual
//! machine that costs what it costs with no relay at all (see direct).

use std::io;

use hdrhistogram::Histogram;

use super::{ByKind, CAPACITY_P99_NS, Capacity, Results, Step, Sweep};
use crate::peers::Kind;
use crate::report::plot::{self, RatePanel, RateSeries};
use crate::report::{Cell, Table};
use crate::workloads::{latency_histogram, open_loop};
use crate::{
    Contender, PAIRS, Plan, Workload, color, context, cpu_ns_per, members, progress, rate_label,
    round_order,
};

/// How many of the lowest rates the sparse-traffic table shows.
const SPARSE_RATES: usize = 3;

/// Both sweeps and their tables.
pub fn run(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
    results: &mut Results,
) -> io::Result<()> {
    let one = sweep(
        plan,
        contenders,
        1,
        plan.open_loop_rates,
        plan.open_loop_rounds,
    )?;
    tables.push(p99_table(
        "open_loop_p99",
        "Open loop, one pair: p99 by offered rate (µs), and capacity",
        &one,
        plan.open_loop_rates,
    ));
    tables.push(steps_table(
        "open_loop_steps",
        "Open loop, one pair: every step",
        &one,
        plan,
        1,
        plan.open_loop_rounds,
    ));
    tables.push(sparse_table(&one, plan.open_loop_rates));
    let many = sweep(
        plan,
        contenders,
        PAIRS,
        plan.many_pairs_rates,
        plan.many_pairs_rounds,
    )?;
    tables.push(p99_table(
        "open_loop_many_p99",
        &format!("Open loop, {PAIRS} pairs: p99 by aggregate offered rate (µs), and capacity"),
        &many,
        plan.many_pairs_rates,
    ));
    tables.push(steps_table(
        "open_loop_many_steps",
        &format!("Open loop, {PAIRS} pairs: every step"),
        &many,
        plan,
        PAIRS,
        plan.many_pairs_rounds,
    ));
    results.open_loop = one;
    results.many_pairs = many;
    Ok(())
}

/// Runs `rates` in increasing order on the first `pair_count` pairs of every
/// open-loop system, interleaved in rounds; a system leaves once it has
/// fallen behind at two rates in a row.
fn sweep(
    plan: &Plan,
    contenders: &mut [Contender],
    pair_count: usize,
    rates: &[f64],
    rounds: usize,
) -> io::Result<ByKind<Sweep>> {
    let members = members(contenders, Workload::OpenLoop);
    let mut sweeps: Vec<Sweep> = members.iter().map(|_| Sweep::default()).collect();
    let mut behind_in_a_row = vec![0; members.len()];
    let mut active = vec![true; members.len()];
    for (r, &rate) in rates.iter().enumerate() {
        if !active.contains(&true) {
            break;
        }
        progress(&format!(
            "open loop, {pair_count} pair{}, at {} messages/s",
            if pair_count == 1 { "" } else { "s" },
            rate_label(rate)
        ));
        let mut histograms: Vec<Histogram<u64>> =
            members.iter().map(|_| latency_histogram()).collect();
        let mut messages = vec![0u64; members.len()];
        // Delivered messages (after the first) and their delivery time, for
        // the achieved rate.
        let mut delivered = vec![0u64; members.len()];
        let mut secs = vec![0f64; members.len()];
        let mut cpu = vec![Some(0u64); members.len()];
        for round in 0..rounds {
            for m in round_order(round, members.len()).filter(|&m| active[m]) {
                let contender = &mut contenders[members[m]];
                let kind = contender.kind();
                let before = contender.cpu_ns()?;
                let pairs = &mut contender.pairs[..pair_count];
                let run = open_loop::run(pairs, rate, plan.open_loop_step, &mut histograms[m])
                    .map_err(context(kind, "open loop"))?;
                let used = contender.cpu_ns()?.zip(before).map(|(a, b)| a - b);
                cpu[m] = cpu[m].zip(used).map(|(sum, t)| sum + t);
                messages[m] += run.messages;
                delivered[m] += run.messages - 1;
                secs[m] += run.delivery.as_secs_f64();
            }
        }
        for m in 0..members.len() {
            if !active[m] {
                continue;
            }
            let h = &histograms[m];
            let step = Step {
                offered: rate,
                achieved: delivered[m] as f64 / secs[m].max(1e-9),
                p50: h.value_at_quantile(0.5) as f64,
                p99: h.value_at_quantile(0.99) as f64,
                p999: h.value_at_quantile(0.999) as f64,
                max: h.max() as f64,
                cpu_ns_per_message: cpu_ns_per(cpu[m], messages[m]),
            };
            behind_in_a_row[m] = if step.kept_up() {
                0
            } else {
                behind_in_a_row[m] + 1
            };
            active[m] = behind_in_a_row[m] < 2;
            sweeps[m].ran_out_of_rates = step.kept_up() && r + 1 == rates.len();
            sweeps[m].steps.push(step);
        }
    }
    let mut by_kind = ByKind::default();
    for (&i, sweep) in members.iter().zip(sweeps) {
        by_kind.push(contenders[i].kind(), sweep);
    }
    Ok(by_kind)
}

/// The capacity as a cell: `≈ rate`, `≥ rate` (never fell behind), or a dash.
fn capacity_cell(capacity: Capacity) -> Cell {
    match capacity {
        Capacity::At(rate) => Cell::labelled(rate, rate_label(rate)),
        Capacity::AtLeast(rate) => Cell::labelled(rate, format!("≥ {}", rate_label(rate))),
        Capacity::None => Cell::empty(),
    }
}

/// p99 per rate, one row per system, and the capacity.
fn p99_table(id: &'static str, title: &str, sweeps: &ByKind<Sweep>, rates: &[f64]) -> Table {
    let mut columns = vec!["system".to_string()];
    columns.extend(rates.iter().map(|&rate| format!("{}/s", rate_label(rate))));
    columns.push("capacity (messages/s)".to_string());
    columns.push("keeps up to (messages/s)".to_string());
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(id, title, &columns);
    for (kind, sweep) in sweeps.iter() {
        let mut row = vec![Cell::text(kind.name())];
        for &rate in rates {
            row.push(sweep.at(rate).map_or_else(Cell::empty, |step| {
                let text = micros_text(step.p99);
                // A step the system fell behind in is marked: its latency
                // grows with the step's length, not a property of the system.
                if step.kept_up() {
                    Cell::labelled(step.p99 / 1000.0, text)
                } else {
                    Cell::labelled(step.p99 / 1000.0, format!("{text} (behind)"))
                }
            }));
        }
        row.push(capacity_cell(sweep.capacity()));
        row.push(capacity_cell(sweep.keeps_up_to()));
        table.row(row);
    }
    table.note(format!(
        "Latency is from each message's intended send time to its arrival at B (no \
         coordinated omission). Capacity: the highest offered rate at which the whole step's \
         achieved rate was within 1 % of the offered rate and p99 was under {} ms; keeps up to: \
         the highest at which it was within 1 %, whatever the latency; ≥ when the sweep ran out \
         of rates first. A step the system fell behind in (delivered under 99 % of \
         the offered rate) is marked \"behind\"; after two such rates in a row it leaves the \
         sweep (—).",
        CAPACITY_P99_NS / 1e6
    ));
    table
}

/// Every step of a sweep: percentiles, achieved ÷ offered, server CPU.
fn steps_table(
    id: &'static str,
    title: &str,
    sweeps: &ByKind<Sweep>,
    plan: &Plan,
    pair_count: usize,
    rounds: usize,
) -> Table {
    let mut table = Table::new(
        id,
        title,
        &[
            "system, offered rate",
            "achieved ÷ offered",
            "p50 (µs)",
            "p99 (µs)",
            "p99.9 (µs)",
            "max (µs)",
            "server CPU per message (µs)",
        ],
    );
    for (kind, sweep) in sweeps.iter() {
        for step in &sweep.steps {
            table.row(vec![
                Cell::text(format!("{}, {}/s", kind.name(), rate_label(step.offered))),
                Cell::number(step.achieved / step.offered, 3),
                micros_cell(step.p50),
                micros_cell(step.p99),
                micros_cell(step.p999),
                micros_cell(step.max),
                step.cpu_ns_per_message
                    .map_or_else(Cell::empty, |ns| Cell::number(ns / 1000.0, 2)),
            ]);
        }
    }
    table.note(format!(
        "A sends {}-byte lines on a fixed schedule{}; {} rounds of {} ms per system and rate. \
         Achieved is the step's messages over the time it took to deliver them: each round's \
         schedule, plus how much its median latency grew from the round's first tenth to its \
         last (a system that keeps up delivers as fast as it was sent, whatever its latency). \
         Server CPU is the relay process's on-CPU time over the \
         step's messages.",
        open_loop::LINE_LEN,
        if pair_count == 1 {
            String::new()
        } else {
            format!(", message k on pair k mod {pair_count} (one sender, one receiver per pair)")
        },
        rounds,
        plan.open_loop_step.as_millis()
    ));
    table
}

/// The lowest rates, with direct beside every system.
fn sparse_table(sweeps: &ByKind<Sweep>, rates: &[f64]) -> Table {
    let sparse = &rates[..SPARSE_RATES.min(rates.len())];
    let mut columns = vec!["system".to_string()];
    for &rate in sparse {
        columns.push(format!("p50 at {}/s", rate_label(rate)));
        columns.push(format!("p99 at {}/s", rate_label(rate)));
    }
    for &rate in sparse {
        columns.push(format!("p99 ÷ direct's at {}/s", rate_label(rate)));
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(
        "open_loop_sparse",
        "Open loop, one pair: the sparse-traffic tail (µs)",
        &columns,
    );
    let direct = sweeps.get(Kind::Direct);
    for (kind, sweep) in sweeps.iter() {
        let mut row = vec![Cell::text(kind.name())];
        for &rate in sparse {
            let step = sweep.at(rate);
            row.push(step.map_or_else(Cell::empty, |s| micros_cell(s.p50)));
            row.push(step.map_or_else(Cell::empty, |s| micros_cell(s.p99)));
        }
        for &rate in sparse {
            let theirs = direct.and_then(|d| d.at(rate));
            row.push(match (sweep.at(rate), theirs) {
                (Some(mine), Some(theirs)) => Cell::number(mine.p99 / theirs.p99, 2),
                _ => Cell::empty(),
            });
        }
        table.row(row);
    }
    table.note(
        "At these rates every message finds the relay, and the receiving client, asleep. \
         Waking a halted virtual CPU costs tens of microseconds to milliseconds, with no relay \
         at all: the direct connection's row is that cost alone, and the ratio is what a relay \
         adds to it.",
    );
    table
}

/// p99 against offered rate, log–log, one panel per sweep.
pub fn plot(results: &Results) -> String {
    let panel = |title: String, sweeps: &ByKind<Sweep>| RatePanel {
        title,
        series: sweeps
            .iter()
            .map(|(kind, sweep)| RateSeries {
                name: kind.name(),
                color: color(kind),
                dashed: kind == Kind::Direct,
                points: sweep.steps.iter().map(|s| (s.offered, s.p99)).collect(),
            })
            .collect(),
    };
    plot::rate_plot(
        "Open loop: p99 latency against offered rate",
        "p99 latency",
        CAPACITY_P99_NS,
        "1 ms",
        &[
            panel("one pair".into(), &results.open_loop),
            panel(
                format!("{PAIRS} pairs, aggregate rate"),
                &results.many_pairs,
            ),
        ],
    )
}

fn micros_cell(ns: f64) -> Cell {
    Cell::number(ns / 1000.0, 1)
}

fn micros_text(ns: f64) -> String {
    micros_cell(ns).shown().to_string()
}

//! Ping-pong round trips at two message sizes, and their percentile plot.

use std::io;

use hdrhistogram::Histogram;

use super::{Ping, Results};
use crate::report::plot::{self, Panel, Series};
use crate::report::{Cell, Table};
use crate::workloads::{latency_histogram, ping_pong};
use crate::{
    Contender, Plan, Workload, color, context, cpu_ns_per, members, micros, progress, round_order,
    size_label,
};

/// The message sizes, framing included.
pub const SIZES: [usize; 2] = [64, 1024];

/// Ping-pong for every message size, interleaved in rounds.
pub fn run(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
    results: &mut Results,
) -> io::Result<()> {
    let members = members(contenders, Workload::PingPong);
    let mut histograms: Vec<Vec<Histogram<u64>>> = SIZES
        .iter()
        .map(|_| members.iter().map(|_| latency_histogram()).collect())
        .collect();
    // Server CPU per size and member, warm-up included.
    let mut cpu = vec![vec![Some(0); members.len()]; SIZES.len()];
    for round in 0..plan.rounds {
        progress(&format!(
            "ping-pong, round {} of {}",
            round + 1,
            plan.rounds
        ));
        for (s, &size) in SIZES.iter().enumerate() {
            for m in round_order(round, members.len()) {
                let contender = &mut contenders[members[m]];
                let kind = contender.kind();
                let before = contender.cpu_ns()?;
                let (warmup, samples) = (plan.ping_warmup, plan.ping_samples);
                ping_pong::run(
                    &mut contender.pairs[0],
                    size,
                    warmup,
                    samples,
                    &mut histograms[s][m],
                )
                .map_err(context(kind, "ping-pong"))?;
                let used = contender.cpu_ns()?.zip(before).map(|(a, b)| a - b);
                cpu[s][m] = cpu[s][m].zip(used).map(|(sum, t)| sum + t);
            }
        }
    }
    let round_trips = (plan.rounds * (plan.ping_warmup + plan.ping_samples)) as u64;
    for (s, &size) in SIZES.iter().enumerate() {
        let mut table = Table::new(
            if size == 64 {
                "ping_pong_64"
            } else {
                "ping_pong_1024"
            },
            format!("Ping-pong round trip, {} messages (µs)", size_label(size)),
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
        let histograms = std::mem::take(&mut histograms[s]);
        for ((&i, histogram), cpu) in members.iter().zip(histograms).zip(&cpu[s]) {
            let kind = contenders[i].kind();
            let mut row = vec![
                Cell::text(kind.name()),
                Cell::number(histogram.len() as f64, 0),
                micros(histogram.min()),
            ];
            for quantile in [0.5, 0.9, 0.99, 0.999] {
                row.push(micros(histogram.value_at_quantile(quantile)));
            }
            row.push(micros(histogram.max()));
            let cpu_ns_per_rt = cpu_ns_per(*cpu, round_trips);
            row.push(cpu_ns_per_rt.map_or_else(Cell::empty, |ns| Cell::number(ns / 1000.0, 1)));
            table.row(row);
            results.ping[s].push(
                kind,
                Ping {
                    histogram,
                    cpu_ns_per_rt,
                },
            );
        }
        table.note(format!(
            "A sends a message, B echoes it, A times the round trip; one message in flight. \
             {} rounds of {} round trips per system after {} untimed ones. A message is a line \
             of {size} bytes with its newline, or on the dotnet wire a length prefix and text \
             of {size} bytes together. Server CPU is the relay process's on-CPU time (user + \
             system) over all round trips, warm-up included (it forwards two messages each); \
             direct has no relay process.",
            plan.rounds, plan.ping_samples, plan.ping_warmup
        ));
        tables.push(table);
    }
    Ok(())
}

/// The round-trip percentile plot: one panel per message size, one line per
/// system.
pub fn plot(results: &Results) -> String {
    let panels: Vec<Panel> = SIZES
        .iter()
        .zip(&results.ping)
        .map(|(&size, pings)| Panel {
            title: format!("{} messages", size_label(size)),
            series: pings
                .iter()
                .map(|(kind, ping)| Series {
                    name: kind.name(),
                    color: color(kind),
                    dashed: kind == crate::peers::Kind::Direct,
                    histogram: &ping.histogram,
                })
                .collect(),
        })
        .collect();
    plot::percentile_plot("Ping-pong round trip through each system", &panels)
}

//! Streaming throughput on one pair and on every pair at once.

use std::io;

use super::{Rate, Results, Streams};
use crate::report::{Cell, Table};
use crate::workloads::streaming;
use crate::{
    Contender, PAIRS, Plan, Workload, context, cpu_ns_per, median, members, progress, round_order,
};

/// Streaming on one pair and on all pairs, interleaved in rounds; the
/// medians of the rounds are reported.
pub fn run(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
    results: &mut Results,
) -> io::Result<()> {
    /// One system's runs of one variant (one pair, or all pairs).
    #[derive(Default, Clone)]
    struct Runs {
        lines_per_sec: Vec<f64>,
        megabytes_per_sec: Vec<f64>,
        /// Server CPU over all runs; `None` without a server process.
        cpu_ns: Option<u64>,
        total_lines: u64,
    }
    let members = members(contenders, Workload::Streaming);
    let first = Runs {
        cpu_ns: Some(0),
        ..Runs::default()
    };
    // [one pair, all pairs] for each member.
    let mut runs = vec![[first.clone(), first]; members.len()];
    for round in 0..plan.stream_rounds {
        progress(&format!(
            "streaming, round {} of {}",
            round + 1,
            plan.stream_rounds
        ));
        for m in round_order(round, members.len()) {
            for (variant, pair_count) in [1, PAIRS].into_iter().enumerate() {
                let contender = &mut contenders[members[m]];
                let kind = contender.kind();
                let before = contender.cpu_ns()?;
                let pairs = &mut contender.pairs[..pair_count];
                let throughput = streaming::run(pairs, plan.stream_warmup, plan.stream_window)
                    .map_err(context(kind, "streaming"))?;
                let used = contender.cpu_ns()?.zip(before).map(|(a, b)| a - b);
                let runs = &mut runs[m][variant];
                runs.lines_per_sec.push(throughput.lines_per_sec);
                runs.megabytes_per_sec.push(throughput.bytes_per_sec / 1e6);
                runs.cpu_ns = runs.cpu_ns.zip(used).map(|(sum, t)| sum + t);
                runs.total_lines += throughput.total_lines;
            }
        }
    }
    let mut table = Table::new(
        "streaming",
        "Streaming throughput",
        &[
            "system",
            "1 pair: messages/s",
            "1 pair: MB/s",
            "1 pair: server CPU per message (ns)",
            &format!("{PAIRS} pairs: messages/s"),
            &format!("{PAIRS} pairs: MB/s"),
            &format!("{PAIRS} pairs: server CPU per message (ns)"),
        ],
    );
    for (&i, [one, all]) in members.iter().zip(&runs) {
        let kind = contenders[i].kind();
        let rate = |runs: &Runs| Rate {
            lines_per_sec: median(runs.lines_per_sec.clone()),
            megabytes_per_sec: median(runs.megabytes_per_sec.clone()),
            cpu_ns_per_line: cpu_ns_per(runs.cpu_ns, runs.total_lines),
        };
        let streams = Streams {
            one: rate(one),
            all: rate(all),
        };
        let mut row = vec![Cell::text(kind.name())];
        for variant in [streams.one, streams.all] {
            row.push(Cell::number(variant.lines_per_sec, 0));
            row.push(Cell::number(variant.megabytes_per_sec, 1));
            row.push(
                variant
                    .cpu_ns_per_line
                    .map_or_else(Cell::empty, |ns| Cell::number(ns, 0)),
            );
        }
        table.row(row);
        results.streaming.push(kind, streams);
    }
    table.note(format!(
        "Each pair's writer sends {}-byte messages (lines, or length-prefixed on the dotnet \
         wire), 64 KiB per write, never waiting; each reader cuts every message out with the \
         wire's codec and counts it. Rates are counted at the readers over {} ms after {} ms of \
         warm-up; median of {} rounds. Server CPU is the relay process's on-CPU time over every \
         message it forwarded, warm-up and drain included: unlike the rates, it hardly depends \
         on what else the machine runs. The project runs with --workers {}.",
        streaming::LINE_LEN,
        plan.stream_window.as_millis(),
        plan.stream_warmup.as_millis(),
        plan.stream_rounds,
        2 * PAIRS
    ));
    tables.push(table);
    Ok(())
}

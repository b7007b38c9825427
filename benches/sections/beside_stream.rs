//! Ping-pong beside a streaming pair: the reliability issue's livelock, as a
//! row for every system.

use std::io;

use hdrhistogram::Histogram;

use super::{Beside, Results};
use crate::report::{Cell, Table};
use crate::workloads::{beside_stream, latency_histogram};
use crate::{Contender, Plan, Workload, context, median, members, micros, progress, round_order};

/// Every system's pinger beside its stream, interleaved in rounds.
pub fn run(
    plan: &Plan,
    contenders: &mut [Contender],
    tables: &mut Vec<Table>,
    results: &mut Results,
) -> io::Result<()> {
    let members = members(contenders, Workload::BesideStream);
    let mut histograms: Vec<Histogram<u64>> = members.iter().map(|_| latency_histogram()).collect();
    let mut stream_rates = vec![Vec::new(); members.len()];
    let mut pace_kept = vec![Vec::new(); members.len()];
    for round in 0..plan.beside_rounds {
        progress(&format!(
            "ping-pong beside a stream, round {} of {}",
            round + 1,
            plan.beside_rounds
        ));
        for m in round_order(round, members.len()) {
            let contender = &mut contenders[members[m]];
            let kind = contender.kind();
            let (pinger, rest) = contender.pairs.split_first_mut().expect("two pairs");
            let outcome = beside_stream::run(
                pinger,
                &mut rest[..1],
                plan.stream_warmup,
                plan.beside_window,
                plan.beside_pace,
                &mut histograms[m],
            )
            .map_err(context(kind, "ping-pong beside a stream"))?;
            stream_rates[m].push(outcome.stream.lines_per_sec);
            let planned = plan.beside_pace * outcome.pings as u32;
            pace_kept[m].push(outcome.elapsed.as_secs_f64() / planned.as_secs_f64());
        }
    }
    let mut table = Table::new(
        "beside_stream",
        "Ping-pong beside a streaming pair: the pinger's round trips (µs)",
        &[
            "system",
            "pings",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "time taken ÷ planned",
            "stream meanwhile: messages/s",
        ],
    );
    for ((&i, histogram), (rates, kept)) in members
        .iter()
        .zip(histograms)
        .zip(stream_rates.into_iter().zip(pace_kept))
    {
        let kind = contenders[i].kind();
        let mut row = vec![
            Cell::text(kind.name()),
            Cell::number(histogram.len() as f64, 0),
        ];
        for quantile in [0.5, 0.9, 0.99, 0.999] {
            row.push(micros(histogram.value_at_quantile(quantile)));
        }
        row.push(micros(histogram.max()));
        let beside = Beside {
            histogram,
            stream_lines_per_sec: median(rates),
            pace_kept: median(kept),
        };
        row.push(Cell::number(beside.pace_kept, 3));
        row.push(Cell::number(beside.stream_lines_per_sec, 0));
        table.row(row);
        results.beside.push(kind, beside);
    }
    table.note(format!(
        "Pair 1 streams flat out as in the streaming table (a writer that never waits, a \
         reader that keeps pace) while pair 0 ping-pongs {}-byte messages, one every {} ms, \
         closed-loop (a late answer delays the next ping, and the time taken grows past the \
         plan); {} rounds of {} ms per system after {} ms of streaming alone. The stream's rate \
         is the median over the rounds.",
        beside_stream::PING_LEN,
        plan.beside_pace.as_secs_f64() * 1e3,
        plan.beside_rounds,
        plan.beside_window.as_millis(),
        plan.stream_warmup.as_millis(),
    ));
    tables.push(table);
    Ok(())
}

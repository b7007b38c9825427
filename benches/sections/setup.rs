//! Session setup through the portal, for the project only.

use std::io;

use hdrhistogram::Histogram;

use crate::peers::project;
use crate::report::{Cell, Table};
use crate::workloads::{latency_histogram, setup};
use crate::{Plan, median, micros, progress, round_order};

/// Session setup on a server of its own, at each concurrency level.
pub fn run(plan: &Plan, tables: &mut Vec<Table>) -> io::Result<()> {
    progress("session setup");
    let server = project::Server::new(project::server_binary());
    let (_server, portal) = server.start(64)?;
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

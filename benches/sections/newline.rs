//! The newline search, old SWAR loop against `memchr`, in this process.

use super::Results;
use crate::report::{Cell, Table};
use crate::workloads::newline::{self, Scan};
use crate::{Plan, median, progress, round_order};

/// The line lengths compared, newline included: the bench's 64 bytes, and
/// enough others to show where the two searches cross.
pub const LINE_LENS: [usize; 5] = [32, 64, 128, 256, 1024];

/// Times every scan at every line length, interleaved in rounds; reports
/// the medians.
pub fn run(plan: &Plan, tables: &mut Vec<Table>, results: &mut Results) {
    progress("newline search: SWAR against memchr");
    let buffers: Vec<Vec<u8>> = LINE_LENS
        .iter()
        .map(|&len| newline::buffer_of_lines(len))
        .collect();
    let mut samples = vec![vec![Vec::new(); LINE_LENS.len()]; Scan::ALL.len()];
    for round in 0..plan.newline_rounds {
        for s in round_order(round, Scan::ALL.len()) {
            for (l, &len) in LINE_LENS.iter().enumerate() {
                let ns = newline::time_scan(Scan::ALL[s], &buffers[l], len, plan.newline_window);
                samples[s][l].push(ns);
            }
        }
    }
    let mut columns = vec!["scan".to_string()];
    for &len in &LINE_LENS {
        columns.push(format!("{len}-byte lines"));
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(
        "newline_search",
        "Newline search: ed29771's SWAR loop against memchr (ns per line)",
        &columns,
    );
    for (scan, per_len) in Scan::ALL.into_iter().zip(samples) {
        let medians: Vec<f64> = per_len.into_iter().map(median).collect();
        let mut row = vec![Cell::text(scan.name())];
        for &ns in &medians {
            row.push(Cell::number(ns, 2));
        }
        table.row(row);
        results.newline.push((scan, medians));
    }
    table.note(format!(
        "Each scan walks a 64 KiB buffer of complete lines, line by line, as the relay's fast \
         path does with one read's worth of a streaming client's bytes; {} rounds of {} ms per \
         scan and line length, median. The SWAR loop and ed29771's take_run are copied from \
         the project's history into benches/workloads/newline.rs; the memchr scans are the \
         library's own (LineCodec).",
        plan.newline_rounds,
        plan.newline_window.as_millis()
    ));
    tables.push(table);
}

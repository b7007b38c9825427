//! The footprint of every server: the project's configurations and the
//! relays, all idling through the same windows.

use std::fs;
use std::io;

use super::Results;
use crate::peers::{Kind, project};
use crate::report::{Cell, Table};
use crate::workloads::footprint::{self, Subject, TICK_MS};
use crate::{Plan, progress};

/// Measures every `chat-server` of the run (4 workers and one worker per
/// client), and the relays.
pub fn run(
    plan: &Plan,
    kinds: &[Kind],
    tables: &mut Vec<Table>,
    results: &mut Results,
) -> io::Result<()> {
    let mut subjects = Vec::new();
    let mut with_clients = 0;
    for &kind in kinds {
        // The dotnet wire costs an idle server nothing the line wire does
        // not: it has no footprint rows of its own.
        if kind == Kind::Direct || kind == Kind::ProjectDotnet {
            continue;
        }
        if kind.is_project() {
            subjects.push(Subject {
                name: format!("{}, 4 workers (default)", kind.name()),
                kind,
                workers: 4,
                connect: false,
            });
        }
        with_clients += 1;
        subjects.push(Subject {
            name: if kind.is_project() {
                format!("{}, {} workers", kind.name(), plan.footprint_clients)
            } else {
                kind.name().to_string()
            },
            kind,
            workers: plan.footprint_clients,
            connect: true,
        });
    }
    // The bench holds one socket per client of every server that takes
    // clients, and each project server one listener and one socket per
    // client.
    let limit = footprint::raise_fd_limit(2048 * with_clients as u64)?;
    let fitting = (limit.saturating_sub(128) / with_clients.max(1) as u64) as usize;
    let clients = plan.footprint_clients.min(fitting) / 2 * 2;
    for subject in &mut subjects {
        if subject.connect && subject.kind.is_project() {
            subject.workers = clients;
        }
    }
    progress(&format!(
        "footprint: {} servers, {clients} clients on {with_clients} of them, two idle windows \
         of {} s",
        subjects.len(),
        plan.idle_window.as_secs()
    ));
    let footprints = footprint::run(subjects, clients, plan.idle_window)?;
    let idle_secs = plan.idle_window.as_secs();
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
            &format!("CPU (µs), {idle_secs} s idle"),
            &format!("wake-ups, {idle_secs} s idle"),
            &format!("CPU ticks, {idle_secs} s with {clients} idle clients"),
            &format!("wake-ups, {idle_secs} s with {clients} idle clients"),
            "threads",
            "binary (KiB)",
        ],
    );
    for f in &footprints {
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
            count(f.idle.cpu_us),
            count(f.idle.wakeups),
            connected.map_or_else(Cell::empty, |w| count(w.cpu_ticks)),
            connected.map_or_else(Cell::empty, |w| count(w.wakeups)),
            count(connected.unwrap_or(f.idle).threads),
            binary_kib(f.kind).map_or_else(Cell::empty, |kib| Cell::number(kib, 1)),
        ]);
    }
    table.note(format!(
        "Resident memory (VmRSS) at the end of each window; private is the part no other \
         process shares (smaps_rollup Private_Clean + Private_Dirty), the rest being mostly \
         shared C library pages. All servers idle at the same time, so the servers started \
         from one binary share its pages, and neither counts them as private. CPU ticks are \
         utime + stime of {TICK_MS} ms, CPU (µs) the threads' on-CPU time; wake-ups are \
         voluntary context switches over all threads. The clients are paired and each pair has \
         exchanged one message. The project's binary is the bench profile's, which has the \
         release settings; the other relays live in the bench binary.",
    ));
    tables.push(table);
    results.footprint = footprints;
    Ok(())
}

/// The size of the binary a `chat-server` system runs, in KiB.
pub fn binary_kib(kind: Kind) -> Option<f64> {
    let binary = match kind {
        Kind::Baseline => project::baseline_binary()?,
        kind if kind.is_project() => project::server_binary(),
        _ => return None,
    };
    fs::metadata(binary).ok().map(|m| m.len() as f64 / 1024.0)
}

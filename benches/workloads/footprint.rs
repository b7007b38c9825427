//! Footprint: what a server costs while it does nothing, empty and with many
//! idle clients connected. Readings come from `/proc/PID/…`: resident memory
//! (`VmRSS`, and its private part from `smaps_rollup`), CPU time (`utime +
//! stime`, in clock ticks of 10 ms, and the threads' `schedstat`, in
//! nanoseconds) and
//! wake-ups (voluntary context switches, summed over the process's threads;
//! a single-threaded event loop wakes once per wait that ends).
//!
//! All subjects are started together and idle through the same windows.

use std::fs;
use std::io;
use std::process::Command;
use std::time::Duration;

use crate::peers::{Kind, Pair, System};

/// Time given to a process to settle after starting or after clients join.
const SETTLE: Duration = Duration::from_millis(500);

/// Linux reports CPU time in units of `USER_HZ`, which is 100 on every
/// mainstream architecture: one tick is 10 ms.
pub const TICK_MS: u64 = 10;

/// One process's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    rss_kib: u64,
    private_kib: u64,
    cpu_ticks: u64,
    cpu_ns: u64,
    wakeups: u64,
    threads: u64,
}

/// What a process cost over one idle window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Resident memory at the end of the window.
    pub rss_kib: u64,
    /// The part of it that is the process's own: resident pages no other
    /// process shares (`Private_Clean + Private_Dirty`). The rest is mostly
    /// the C library's code, shared with every process that uses it.
    pub private_kib: u64,
    /// CPU ticks (10 ms) used during the window.
    pub cpu_ticks: u64,
    /// CPU time used during the window, to the microsecond.
    pub cpu_us: u64,
    /// Wake-ups during the window.
    pub wakeups: u64,
    /// Threads at the end of the window.
    pub threads: u64,
}

/// The footprint of one subject.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Which server, in which configuration.
    pub name: String,
    /// The system.
    pub kind: Kind,
    /// With no client.
    pub idle: Window,
    /// With `clients` idle clients connected (and paired, each pair having
    /// exchanged one line); `None` for subjects measured empty only.
    pub connected: Option<(usize, Window)>,
}

impl Footprint {
    /// Resident memory added per connected client, in bytes.
    pub fn rss_per_client(&self) -> Option<f64> {
        let (clients, connected) = self.connected?;
        let added = connected.rss_kib as f64 - self.idle.rss_kib as f64;
        Some(added * 1024.0 / clients as f64)
    }
}

/// A server to measure: its name in the table, the system, how many worker
/// ports (the project's rows), and whether clients connect to it for the
/// second window.
pub struct Subject {
    /// Which server, in which configuration.
    pub name: String,
    /// The system.
    pub kind: Kind,
    /// Worker ports, for a `chat-server`.
    pub workers: usize,
    /// Whether `clients` clients connect for the second window.
    pub connect: bool,
}

/// Starts every subject, measures them all through an idle window, connects
/// `clients` clients to each subject that takes them, and measures another
/// window; every window lasts `idle_window`.
pub fn run(
    subjects: Vec<Subject>,
    clients: usize,
    idle_window: Duration,
) -> io::Result<Vec<Footprint>> {
    let systems: Vec<System> = subjects
        .iter()
        .map(|s| System::start(s.kind, s.workers))
        .collect::<io::Result<_>>()?;
    let pids: Vec<u32> = systems
        .iter()
        .map(|s| s.pid().expect("a server process"))
        .collect();

    std::thread::sleep(SETTLE);
    let idle = measure_window(&pids, idle_window)?;

    // Kept alive (and so connected) until the second window ends.
    let mut pairs: Vec<Pair> = Vec::new();
    for (subject, system) in subjects.iter().zip(&systems) {
        if subject.connect {
            for _ in 0..clients / 2 {
                pairs.push(system.connect_pair()?);
            }
        }
    }
    std::thread::sleep(SETTLE);
    let connected = measure_window(&pids, idle_window)?;
    drop(pairs);

    Ok(subjects
        .into_iter()
        .zip(idle.into_iter().zip(connected))
        .map(|(subject, (idle, connected))| Footprint {
            name: subject.name,
            kind: subject.kind,
            idle,
            connected: subject.connect.then_some((clients, connected)),
        })
        .collect())
}

/// Reads every process, waits `window`, reads again.
fn measure_window(pids: &[u32], window: Duration) -> io::Result<Vec<Window>> {
    let before: Vec<Reading> = pids
        .iter()
        .map(|&pid| read(pid))
        .collect::<io::Result<_>>()?;
    std::thread::sleep(window);
    pids.iter()
        .zip(before)
        .map(|(&pid, before)| {
            let after = read(pid)?;
            Ok(Window {
                rss_kib: after.rss_kib,
                private_kib: after.private_kib,
                cpu_ticks: after.cpu_ticks - before.cpu_ticks,
                cpu_us: after.cpu_ns.saturating_sub(before.cpu_ns) / 1000,
                wakeups: after.wakeups - before.wakeups,
                threads: after.threads,
            })
        })
        .collect()
}

/// Reads one process's counters from `/proc`.
fn read(pid: u32) -> io::Result<Reading> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status_field(&status, "VmRSS:")?;
    let threads = status_field(&status, "Threads:")?;
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let private_kib =
        status_field(&rollup, "Private_Clean:")? + status_field(&rollup, "Private_Dirty:")?;
    let cpu_ticks = cpu_ticks(pid)?;
    let cpu_ns = cpu_ns(pid)?;
    let mut wakeups = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may end between listing and reading: skip it.
        if let Ok(status) = fs::read_to_string(task?.path().join("status")) {
            wakeups += status_field(&status, "voluntary_ctxt_switches:")?;
        }
    }
    Ok(Reading {
        rss_kib,
        private_kib,
        cpu_ticks,
        cpu_ns,
        wakeups,
        threads,
    })
}

/// CPU time the process has used so far (user and system), in ticks of
/// [`TICK_MS`].
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    // In /proc/PID/stat, utime and stime are fields 14 and 15; the second
    // field (the command name) may hold spaces, so count from its ')'.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').ok_or_else(|| bad("stat"))? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("stat"))
    };
    Ok(field(11)? + field(12)?)
}

/// CPU time the process has used so far, user and system, in nanoseconds:
/// the sum of its threads' time on a CPU (`/proc/PID/task/TID/schedstat`),
/// which the kernel keeps to the nanosecond where `stat` rounds to ticks. A
/// thread that has ended no longer counts; the relays measured keep theirs
/// for as long as their pairs are connected.
pub fn cpu_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may end between listing and reading: skip it.
        if let Ok(schedstat) = fs::read_to_string(task?.path().join("schedstat")) {
            total += schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .ok_or_else(|| bad("schedstat"))?;
        }
    }
    Ok(total)
}

/// The number after `name` in a `/proc/…/status` (or `smaps_rollup`) text.
pub fn status_field(status: &str, name: &str) -> io::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| bad(name))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable /proc field {what}"),
    )
}

/// Makes sure this process may open `wanted` files, raising the soft limit
/// (up to the hard limit) with the `prlimit` tool if needed. Processes
/// started afterwards inherit the limit. Returns the soft limit in force.
pub fn raise_fd_limit(wanted: u64) -> io::Result<u64> {
    let (soft, hard) = fd_limits()?;
    if soft >= wanted {
        return Ok(soft);
    }
    let target = wanted.min(hard);
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={target}:{hard}"))
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("relay bench: could not raise the open-file limit above {soft}");
    }
    Ok(fd_limits()?.0)
}

/// The soft and hard open-file limits, from `/proc/self/limits`.
fn fd_limits() -> io::Result<(u64, u64)> {
    let limits = fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| bad("Max open files"))?;
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX)); // "unlimited"
    match (numbers.next(), numbers.next()) {
        (Some(soft), Some(hard)) => Ok((soft, hard)),
        _ => Err(bad("Max open files")),
    }
}

//! The report's sections: each runs one workload over every system that
//! takes part, in interleaved rounds, and writes its tables; [`summary`]
//! compares the results across sections. What later sections need is kept
//! in [`Results`].

pub mod beside_stream;
pub mod footprint;
pub mod newline;
pub mod open_loop;
pub mod ping_pong;
pub mod setup;
pub mod streaming;
pub mod summary;

use hdrhistogram::Histogram;

use crate::peers::Kind;
use crate::workloads::footprint::Footprint;
use crate::workloads::newline::Scan;

/// One value per system, for the systems that took part.
pub struct ByKind<T> {
    entries: Vec<(Kind, T)>,
}

impl<T> Default for ByKind<T> {
    fn default() -> Self {
        ByKind {
            entries: Vec::new(),
        }
    }
}

impl<T> ByKind<T> {
    /// Records `kind`'s value.
    pub fn push(&mut self, kind: Kind, value: T) {
        self.entries.push((kind, value));
    }

    /// `kind`'s value, if it took part.
    pub fn get(&self, kind: Kind) -> Option<&T> {
        self.entries
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }

    /// Every system's value, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, &T)> {
        self.entries.iter().map(|(k, v)| (*k, v))
    }
}

/// One system's round trips at one message size.
pub struct Ping {
    /// Every timed round trip (ns).
    pub histogram: Histogram<u64>,
    /// Server CPU per round trip (ns); `None` without a server process.
    pub cpu_ns_per_rt: Option<f64>,
}

/// One rate of an open-loop sweep, all its rounds together.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Messages per second offered.
    pub offered: f64,
    /// Messages per second delivered: the messages over the time the system
    /// took to deliver them (see `workloads::open_loop::Run::delivery`).
    pub achieved: f64,
    /// Latency percentiles (ns).
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Server CPU per message (ns); `None` without a server process.
    pub cpu_ns_per_message: Option<f64>,
}

impl Step {
    /// Whether the system kept up: the whole step's achieved rate is within
    /// 1 % of the offered one.
    pub fn kept_up(&self) -> bool {
        self.achieved >= 0.99 * self.offered
    }
}

/// Where a sweep's capacity is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// No rate qualified.
    None,
    /// The highest qualifying rate; a higher one was measured and failed.
    At(f64),
    /// The highest rate of the sweep qualified: the capacity is at least
    /// this.
    AtLeast(f64),
}

/// The open-loop latency threshold of the capacity: 1 ms.
pub const CAPACITY_P99_NS: f64 = 1e6;

/// One system's open-loop sweep: every rate it ran, in increasing order.
#[derive(Default)]
pub struct Sweep {
    pub steps: Vec<Step>,
    /// Whether the system ran the sweep's highest rate and kept up there.
    pub ran_out_of_rates: bool,
}

impl Sweep {
    /// The highest offered rate at which the system kept up (within 1 %)
    /// with p99 under [`CAPACITY_P99_NS`].
    pub fn capacity(&self) -> Capacity {
        let best = self
            .steps
            .iter()
            .rposition(|s| s.kept_up() && s.p99 < CAPACITY_P99_NS);
        match best {
            None => Capacity::None,
            Some(i) if i + 1 == self.steps.len() && self.ran_out_of_rates => {
                Capacity::AtLeast(self.steps[i].offered)
            }
            Some(i) => Capacity::At(self.steps[i].offered),
        }
    }

    /// The highest offered rate at which the system kept up (within 1 %),
    /// whatever its latency: its throughput under an open loop.
    pub fn keeps_up_to(&self) -> Capacity {
        match self.steps.iter().rposition(Step::kept_up) {
            None => Capacity::None,
            Some(i) if i + 1 == self.steps.len() && self.ran_out_of_rates => {
                Capacity::AtLeast(self.steps[i].offered)
            }
            Some(i) => Capacity::At(self.steps[i].offered),
        }
    }

    /// The step at `offered`, if the system ran it.
    pub fn at(&self, offered: f64) -> Option<&Step> {
        self.steps.iter().find(|s| s.offered == offered)
    }
}

/// One streaming variant's medians.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub lines_per_sec: f64,
    pub megabytes_per_sec: f64,
    /// Server CPU per message (ns); `None` without a server process.
    pub cpu_ns_per_line: Option<f64>,
}

/// One system's streaming: one pair, and every pair at once.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub one: Rate,
    pub all: Rate,
}

/// One system's pinger beside a stream.
pub struct Beside {
    /// Every timed round trip (ns).
    pub histogram: Histogram<u64>,
    /// The stream's median rate meanwhile, messages per second.
    pub stream_lines_per_sec: f64,
    /// The time the pings took over the time planned for them (1: on pace).
    pub pace_kept: f64,
}

/// What the summary needs from the sections.
pub struct Results {
    /// The systems of this run, in table order.
    pub kinds: Vec<Kind>,
    /// Per ping size ([`ping_pong::SIZES`]).
    pub ping: [ByKind<Ping>; 2],
    pub open_loop: ByKind<Sweep>,
    pub many_pairs: ByKind<Sweep>,
    pub streaming: ByKind<Streams>,
    pub beside: ByKind<Beside>,
    pub footprint: Vec<Footprint>,
    /// Per scan, ns per line at each of [`newline::LINE_LENS`].
    pub newline: Vec<(Scan, Vec<f64>)>,
}

impl Results {
    /// Empty results for a run of `kinds`.
    pub fn new(kinds: Vec<Kind>) -> Results {
        Results {
            kinds,
            ping: Default::default(),
            open_loop: ByKind::default(),
            many_pairs: ByKind::default(),
            streaming: ByKind::default(),
            beside: ByKind::default(),
            footprint: Vec::new(),
            newline: Vec::new(),
        }
    }
}

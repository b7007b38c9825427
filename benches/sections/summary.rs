//! Comparisons across sections: the project against each other system, the
//! dotnet wire against the line wire, the spin on against off, the baseline
//! build against this one, and the targets the issues set, each met or not.

use super::{Capacity, Results};
use crate::peers::Kind;
use crate::report::{Cell, Table};
use crate::workloads::footprint::Footprint;
use crate::{PAIRS, Plan, rate_label, size_label};

/// Every summary table this run has the systems for.
pub fn tables(plan: &Plan, results: &Results, tables: &mut Vec<Table>) {
    tables.push(ratio_table(results));
    if let Some(table) = comparison(results, Kind::Project, Kind::ProjectDotnet, &Wires) {
        tables.push(table);
    }
    if let Some(table) = comparison(results, Kind::Project, Kind::ProjectSpinOff, &Spin(plan)) {
        tables.push(table);
    }
    if let Some(table) = comparison(results, Kind::Baseline, Kind::Project, &BeforeAfter) {
        tables.push(table);
    }
    tables.push(target_table(plan, results));
}

/// A percentile of `kind`'s round trips at ping size `size` (an index into
/// [`super::ping_pong::SIZES`]), in ns.
fn rtt(results: &Results, size: usize, kind: Kind, quantile: f64) -> Option<f64> {
    let ping = results.ping[size].get(kind)?;
    Some(ping.histogram.value_at_quantile(quantile) as f64)
}

/// A percentile of `kind`'s pinger beside a stream, in ns.
fn beside(results: &Results, kind: Kind, quantile: f64) -> Option<f64> {
    let beside = results.beside.get(kind)?;
    Some(beside.histogram.value_at_quantile(quantile) as f64)
}

/// A capacity as a number, where it is one.
fn capacity_value(capacity: Capacity) -> Option<f64> {
    match capacity {
        Capacity::At(rate) | Capacity::AtLeast(rate) => Some(rate),
        Capacity::None => None,
    }
}

/// The project's footprint rows for `kind`: (4 workers, one per client).
fn footprints(results: &Results, kind: Kind) -> (Option<&Footprint>, Option<&Footprint>) {
    let mut rows = results.footprint.iter().filter(|f| f.kind == kind);
    let first = rows.next();
    let second = rows.next();
    match (first, second) {
        (Some(f), None) if f.connected.is_some() => (None, Some(f)),
        other => other,
    }
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
            "p99 RTT beside a stream",
            "open-loop capacity, 1 pair",
            &format!("open-loop capacity, {PAIRS} pairs"),
            "open loop keeps up to, 1 pair",
            "streaming, 1 pair",
            &format!("streaming, {PAIRS} pairs"),
        ],
    );
    let ratio = |mine: Option<f64>, theirs: Option<f64>| match (mine, theirs) {
        (Some(a), Some(b)) if b > 0.0 => Cell::number(a / b, 2),
        _ => Cell::empty(),
    };
    let me = Kind::Project;
    let capacity = |sweeps: &super::ByKind<super::Sweep>, kind| {
        sweeps.get(kind).and_then(|s| capacity_value(s.capacity()))
    };
    let keeps_up = |kind| {
        results
            .open_loop
            .get(kind)
            .and_then(|s| capacity_value(s.keeps_up_to()))
    };
    let stream = |kind, all: bool| {
        results
            .streaming
            .get(kind)
            .map(|s| if all { s.all } else { s.one }.lines_per_sec)
    };
    let peers = results.kinds.iter().copied().filter(|k| !k.is_project());
    for peer in peers {
        table.row(vec![
            Cell::text(peer.name()),
            ratio(rtt(results, 0, me, 0.5), rtt(results, 0, peer, 0.5)),
            ratio(rtt(results, 0, me, 0.99), rtt(results, 0, peer, 0.99)),
            ratio(rtt(results, 1, me, 0.5), rtt(results, 1, peer, 0.5)),
            ratio(rtt(results, 1, me, 0.99), rtt(results, 1, peer, 0.99)),
            ratio(beside(results, me, 0.99), beside(results, peer, 0.99)),
            ratio(
                capacity(&results.open_loop, me),
                capacity(&results.open_loop, peer),
            ),
            ratio(
                capacity(&results.many_pairs, me),
                capacity(&results.many_pairs, peer),
            ),
            ratio(keeps_up(me), keeps_up(peer)),
            ratio(stream(me, false), stream(peer, false)),
            ratio(stream(me, true), stream(peer, true)),
        ]);
    }
    table.note(
        "Capacities (and the rates kept up to) are compared where both systems have one; \
         \"≥ rate\" (the sweep ran out of rates) counts as that rate.",
    );
    table
}

/// One measure of a two-system comparison: its name, the value for each
/// side, how many decimals to show, and whether a higher value is better.
struct Measure {
    name: String,
    values: [Option<f64>; 2],
    decimals: usize,
}

/// A two-system comparison: which measures, and how the table reads.
trait Comparison {
    fn id(&self) -> &'static str;
    fn title(&self) -> String;
    /// Column headers for the two sides and their ratio.
    fn columns(&self) -> [&'static str; 3];
    fn note(&self) -> String;
    fn measures(&self, results: &Results, sides: [Kind; 2]) -> Vec<Measure>;
}

/// The table of `comparison` between `sides` (the ratio is second ÷ first),
/// if both systems were in the run.
fn comparison(
    results: &Results,
    first: Kind,
    second: Kind,
    comparison: &dyn Comparison,
) -> Option<Table> {
    if !results.kinds.contains(&first) || !results.kinds.contains(&second) {
        return None;
    }
    let [a, b, ratio] = comparison.columns();
    let mut table = Table::new(
        comparison.id(),
        comparison.title(),
        &["measure", a, b, ratio],
    );
    for measure in comparison.measures(results, [first, second]) {
        let cell =
            |v: Option<f64>| v.map_or_else(Cell::empty, |v| Cell::number(v, measure.decimals));
        let ratio = match measure.values {
            [Some(x), Some(y)] if x > 0.0 => Cell::number(y / x, 2),
            _ => Cell::empty(),
        };
        table.row(vec![
            Cell::text(measure.name),
            cell(measure.values[0]),
            cell(measure.values[1]),
            ratio,
        ]);
    }
    table.note(comparison.note());
    Some(table)
}

/// The measures every comparison shares: streaming, ping-pong, and the
/// pinger beside a stream.
fn common_measures(results: &Results, sides: [Kind; 2]) -> Vec<Measure> {
    let both = |f: &dyn Fn(Kind) -> Option<f64>| [f(sides[0]), f(sides[1])];
    let micros = |v: Option<f64>| v.map(|ns| ns / 1000.0);
    let mut measures = Vec::new();
    for (label, all) in [("1 pair", false), (&format!("{PAIRS} pairs") as &str, true)] {
        let rate = |k| {
            results
                .streaming
                .get(k)
                .map(|s| if all { s.all } else { s.one })
        };
        measures.push(Measure {
            name: format!("streaming, {label}: messages/s"),
            values: both(&|k| rate(k).map(|r| r.lines_per_sec)),
            decimals: 0,
        });
        measures.push(Measure {
            name: format!("streaming, {label}: server CPU per message (ns)"),
            values: both(&|k| rate(k).and_then(|r| r.cpu_ns_per_line)),
            decimals: 0,
        });
    }
    for (s, &size) in super::ping_pong::SIZES.iter().enumerate() {
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            measures.push(Measure {
                name: format!("ping-pong {}: {label} (µs)", size_label(size)),
                values: both(&|k| micros(rtt(results, s, k, q))),
                decimals: 1,
            });
        }
        measures.push(Measure {
            name: format!(
                "ping-pong {}: server CPU per round trip (µs)",
                size_label(size)
            ),
            values: both(&|k| micros(results.ping[s].get(k).and_then(|p| p.cpu_ns_per_rt))),
            decimals: 1,
        });
    }
    if sides.iter().all(|&k| results.beside.get(k).is_some()) {
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
            measures.push(Measure {
                name: format!("ping-pong beside a stream: {label} (µs)"),
                values: both(&|k| micros(beside(results, k, q))),
                decimals: 1,
            });
        }
    }
    measures
}

/// The dotnet wire against the line wire.
struct Wires;

impl Comparison for Wires {
    fn id(&self) -> &'static str {
        "wires"
    }
    fn title(&self) -> String {
        "The dotnet wire against the line wire (the same server)".into()
    }
    fn columns(&self) -> [&'static str; 3] {
        ["line", "dotnet", "dotnet ÷ line"]
    }
    fn note(&self) -> String {
        "The same chat-server binary, started with --wire dotnet, and clients that frame every \
         message with a 7-bit length prefix (the project's DotnetCodec) instead of a newline; \
         a message takes the same bytes on both wires (64 = 1 prefix byte + 63 of text). The \
         values are the rows of the tables above."
            .into()
    }
    fn measures(&self, results: &Results, sides: [Kind; 2]) -> Vec<Measure> {
        common_measures(results, sides)
    }
}

/// The spin on (the default) against off.
struct Spin<'a>(&'a Plan);

impl Comparison for Spin<'_> {
    fn id(&self) -> &'static str {
        "spin"
    }
    fn title(&self) -> String {
        "The spin: on (--spin-us 20, the default) against off (--spin-us 0)".into()
    }
    fn columns(&self) -> [&'static str; 3] {
        ["spin on", "spin off", "off ÷ on"]
    }
    fn note(&self) -> String {
        "The same chat-server binary twice, with its default spin and with --spin-us 0. The \
         values are the rows of the tables above; open-loop CPU is per message delivered, \
         ping-pong CPU per round trip (two messages)."
            .into()
    }
    fn measures(&self, results: &Results, sides: [Kind; 2]) -> Vec<Measure> {
        let both = |f: &dyn Fn(Kind) -> Option<f64>| [f(sides[0]), f(sides[1])];
        let mut measures = common_measures(results, sides);
        for &rate in self.0.open_loop_rates {
            let step = |k| results.open_loop.get(k).and_then(|s| s.at(rate)).copied();
            if both(&|k| step(k).map(|s| s.p99)).contains(&None) {
                continue;
            }
            measures.push(Measure {
                name: format!("open loop, 1 pair, {}/s: p99 (µs)", rate_label(rate)),
                values: both(&|k| step(k).map(|s| s.p99 / 1000.0)),
                decimals: 1,
            });
            measures.push(Measure {
                name: format!(
                    "open loop, 1 pair, {}/s: server CPU per message (µs)",
                    rate_label(rate)
                ),
                values: both(&|k| {
                    step(k)
                        .and_then(|s| s.cpu_ns_per_message)
                        .map(|ns| ns / 1e3)
                }),
                decimals: 2,
            });
        }
        for (label, sweeps) in [
            ("1 pair", &results.open_loop),
            (&format!("{PAIRS} pairs") as &str, &results.many_pairs),
        ] {
            measures.push(Measure {
                name: format!("open-loop capacity, {label} (messages/s)"),
                values: both(&|k| sweeps.get(k).and_then(|s| capacity_value(s.capacity()))),
                decimals: 0,
            });
            measures.push(Measure {
                name: format!("open loop keeps up to, {label} (messages/s)"),
                values: both(&|k| sweeps.get(k).and_then(|s| capacity_value(s.keeps_up_to()))),
                decimals: 0,
            });
        }
        footprint_measures(results, sides, &mut measures);
        measures
    }
}

/// The footprint rows both sides have.
fn footprint_measures(results: &Results, sides: [Kind; 2], measures: &mut Vec<Measure>) {
    let rows = sides.map(|k| footprints(results, k));
    let pick = |f: &dyn Fn(&Footprint) -> Option<f64>, loaded: bool| {
        rows.map(|(small, large)| if loaded { large } else { small }.and_then(f))
    };
    let count = |v: u64| Some(v as f64);
    measures.extend([
        Measure {
            name: "idle, 4 workers: RSS (KiB)".into(),
            values: pick(&|f| count(f.idle.rss_kib), false),
            decimals: 0,
        },
        Measure {
            name: "idle, 4 workers: private (KiB)".into(),
            values: pick(&|f| count(f.idle.private_kib), false),
            decimals: 0,
        },
        Measure {
            name: "idle, 4 workers: CPU (µs per idle window)".into(),
            values: pick(&|f| count(f.idle.cpu_us), false),
            decimals: 0,
        },
        Measure {
            name: "idle, 4 workers: wake-ups per idle window".into(),
            values: pick(&|f| count(f.idle.wakeups), false),
            decimals: 0,
        },
        Measure {
            name: "idle clients connected: RSS (KiB)".into(),
            values: pick(&|f| f.connected.map(|(_, w)| w.rss_kib as f64), true),
            decimals: 0,
        },
        Measure {
            name: "idle clients connected: RSS per client (bytes)".into(),
            values: pick(&Footprint::rss_per_client, true),
            decimals: 0,
        },
        Measure {
            name: "idle clients connected: CPU (µs per idle window)".into(),
            values: pick(&|f| f.connected.map(|(_, w)| w.cpu_us as f64), true),
            decimals: 0,
        },
    ]);
}

/// The baseline build against this one.
struct BeforeAfter;

impl Comparison for BeforeAfter {
    fn id(&self) -> &'static str {
        "before_after"
    }
    fn title(&self) -> String {
        "Before and after: the baseline build (PORTAL_CHAT_BASELINE) against this one".into()
    }
    fn columns(&self) -> [&'static str; 3] {
        ["before (baseline)", "after (this build)", "after ÷ before"]
    }
    fn note(&self) -> String {
        "Both servers in the same run, interleaved in every round, on the line wire with \
         their default spin; the baseline gets only the flags every version has. The values \
         are the rows of the tables above. The baseline does not run beside a stream (a \
         build with the livelock can stall a pinger past the bench's 10 s timeout)."
            .into()
    }
    fn measures(&self, results: &Results, sides: [Kind; 2]) -> Vec<Measure> {
        let mut measures = common_measures(results, sides);
        footprint_measures(results, sides, &mut measures);
        measures.push(Measure {
            name: "binary (KiB)".into(),
            values: sides.map(super::footprint::binary_kib),
            decimals: 1,
        });
        measures
    }
}

/// The targets of the issues, each met or not.
fn target_table(plan: &Plan, results: &Results) -> Table {
    let mut table = Table::new("targets", "Targets", &["target", "measured", "met"]);
    let mut check = |target: String, measured: String, met: bool| {
        table.row(vec![
            Cell::text(target),
            Cell::text(measured),
            Cell::labelled(met as u8 as f64, if met { "yes" } else { "**no**" }),
        ]);
    };
    let us = |ns: f64| format!("{:.1}", ns / 1000.0);
    let best_relay = |size: usize, q: f64| {
        Kind::RELAYS
            .iter()
            .filter_map(|&k| Some((rtt(results, size, k, q)?, k)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    let me = Kind::Project;
    for (s, &size) in super::ping_pong::SIZES.iter().enumerate() {
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            if let (Some(mine), Some((best, kind))) = (rtt(results, s, me, q), best_relay(s, q)) {
                check(
                    format!(
                        "{label} RTT, {} messages, below every relay",
                        size_label(size)
                    ),
                    format!(
                        "project {} µs; best relay ({}) {} µs",
                        us(mine),
                        kind.name(),
                        us(best)
                    ),
                    mine < best,
                );
            }
        }
        if let (Some(mine), Some(direct)) =
            (rtt(results, s, me, 0.5), rtt(results, s, Kind::Direct, 0.5))
        {
            let ratio = mine / direct;
            check(
                format!("p50 RTT, {} messages, within 1.4× direct", size_label(size)),
                format!("{ratio:.2}×"),
                ratio <= 1.4,
            );
        }
    }
    let stream = |kind| results.streaming.get(kind).map(|s| s.one.lines_per_sec);
    if let (Some(mine), Some(tokio), Some(threaded)) = (
        stream(me),
        stream(Kind::TokioCurrentThread),
        stream(Kind::Threaded),
    ) {
        check(
            "streaming messages/s ≥ 1.5× tokio current-thread".into(),
            format!("{:.2}×", mine / tokio),
            mine / tokio >= 1.5,
        );
        check(
            "streaming messages/s above the threaded relay".into(),
            format!("{:.2}×", mine / threaded),
            mine > threaded,
        );
    }

    // Reliability issue, §1: the pinger beside a stream.
    if let (Some(p99), Some(max)) = (beside(results, me, 0.99), beside(results, me, 1.0)) {
        check(
            "beside a streaming pair: the pinger's p99 under 10 ms".into(),
            format!("{} µs", us(p99)),
            p99 < 10e6,
        );
        check(
            "beside a streaming pair: the pinger's worst round trip under 200 ms".into(),
            format!("{} µs", us(max)),
            max < 200e6,
        );
    }

    // Reliability §1 and architecture: this build against the baseline.
    if results.kinds.contains(&Kind::Baseline) {
        let before = Kind::Baseline;
        for (label, all) in [("1 pair", false), (&format!("{PAIRS} pairs") as &str, true)] {
            let rate = |k| {
                results
                    .streaming
                    .get(k)
                    .map(|s| if all { s.all } else { s.one }.lines_per_sec)
            };
            if let (Some(after), Some(old)) = (rate(me), rate(before)) {
                check(
                    format!("streaming, {label}: no more than 10 % below the baseline"),
                    format!("{:.2}× the baseline", after / old),
                    after >= 0.9 * old,
                );
            }
        }
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            if let (Some(after), Some(old)) = (rtt(results, 0, me, q), rtt(results, 0, before, q)) {
                check(
                    format!("{label} RTT, 64 B: within 10 % of the baseline (the noise)"),
                    format!(
                        "{} µs against {} µs: {:.2}×",
                        us(after),
                        us(old),
                        after / old
                    ),
                    after <= 1.1 * old,
                );
            }
        }
        if let ((Some(after), _), (Some(old), _)) =
            (footprints(results, me), footprints(results, before))
        {
            let ratio = after.idle.rss_kib as f64 / old.idle.rss_kib as f64;
            check(
                "idle RSS within 10 % of the baseline".into(),
                format!(
                    "{} KiB against {} KiB: {ratio:.2}×",
                    after.idle.rss_kib, old.idle.rss_kib
                ),
                ratio <= 1.1,
            );
        }
    }

    // The .NET wire issue: dotnet within 10 % of line mode.
    let dotnet = Kind::ProjectDotnet;
    if results.kinds.contains(&dotnet) {
        for (label, all) in [("1 pair", false), (&format!("{PAIRS} pairs") as &str, true)] {
            let rate = |k| {
                results
                    .streaming
                    .get(k)
                    .map(|s| if all { s.all } else { s.one }.lines_per_sec)
            };
            if let (Some(line), Some(net)) = (rate(me), rate(dotnet)) {
                check(
                    format!("--wire dotnet streaming, {label}: within 10 % of line mode"),
                    format!("{:.2}× line mode", net / line),
                    net >= 0.9 * line,
                );
            }
        }
        for (s, &size) in super::ping_pong::SIZES.iter().enumerate() {
            if let (Some(line), Some(net)) =
                (rtt(results, s, me, 0.5), rtt(results, s, dotnet, 0.5))
            {
                check(
                    format!(
                        "--wire dotnet p50 RTT, {}: within 10 % of line mode",
                        size_label(size)
                    ),
                    format!("{} µs against {} µs: {:.2}×", us(net), us(line), net / line),
                    net <= 1.1 * line,
                );
            }
        }
    }

    // Performance issue, §3: both sides of the spin.
    let off = Kind::ProjectSpinOff;
    let cpu = |k| results.ping[0].get(k).and_then(|p| p.cpu_ns_per_rt);
    if let (Some(off_cpu), Some(tokio_cpu)) = (cpu(off), cpu(Kind::TokioCurrentThread)) {
        check(
            "spin off: server CPU per 64 B round trip ≤ tokio current-thread's".into(),
            format!("{} µs against {} µs", us(off_cpu), us(tokio_cpu)),
            off_cpu <= tokio_cpu,
        );
    }
    if let Some((best, kind)) = best_relay(0, 0.5) {
        if let Some(p50) = rtt(results, 0, off, 0.5) {
            check(
                "spin off: p50 RTT, 64 B, no worse than the best relay's".into(),
                format!("{} µs; {} {} µs", us(p50), kind.name(), us(best)),
                p50 <= best,
            );
        }
        if let Some(p50) = rtt(results, 0, me, 0.5) {
            check(
                "spin on: p50 RTT, 64 B, at most 0.8× the best relay's".into(),
                format!("{:.2}× ({})", p50 / best, kind.name()),
                p50 <= 0.8 * best,
            );
        }
    }

    // Performance issue, §1: a capacity for every system.
    let capacities: Vec<String> = results
        .open_loop
        .iter()
        .map(|(kind, sweep)| {
            let shown = match sweep.capacity() {
                Capacity::At(rate) => rate_label(rate),
                Capacity::AtLeast(rate) => format!("≥ {}", rate_label(rate)),
                Capacity::None => "none".into(),
            };
            format!("{} {shown}", kind.name())
        })
        .collect();
    if !capacities.is_empty() {
        check(
            "open loop: a capacity from a full sweep for every system".into(),
            capacities.join("; "),
            results
                .open_loop
                .iter()
                .all(|(_, s)| matches!(s.capacity(), Capacity::At(_))),
        );
    }

    // The footprint targets, on the default configuration.
    if let (Some(default), Some(loaded)) = footprints(results, me) {
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
    }
    if let Some(kib) = super::footprint::binary_kib(me) {
        check(
            "release binary under 512 KiB".into(),
            format!("{kib:.1} KiB"),
            kib < 512.0,
        );
    }
    table
}

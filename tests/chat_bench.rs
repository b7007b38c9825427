//! `chat-bench` end to end: the real binary against a real `chat-server`,
//! every workload briefly, in each output form and on both wires.
//!
//! Nothing here judges the figures: a loaded test machine makes any
//! threshold flaky. The checks are that a run finishes, says everything it
//! should (the six percentiles, a rate above zero), that its machine-readable
//! forms hold the same, and that it gives every worker port back.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use common::{TestServer, wait_every_port_free};

/// The percentile names, in the order every form gives them.
const PERCENTILES: [&str; 6] = ["min", "p50", "p90", "p99", "p99.9", "max"];

/// Runs `chat-bench --port PORTAL ARGS...` to the end.
fn chat_bench(portal_port: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["--port", &portal_port.to_string()])
        .args(args)
        .output()
        .expect("run chat-bench")
}

/// Runs it, expects success, and returns its stdout.
fn succeeds(server: &TestServer, args: &[&str]) -> String {
    let out = chat_bench(server.portal.port(), args);
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chat-bench {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

/// The rate in the text form's second line, `N UNIT in S s: RATE UNIT/s`.
fn text_rate(text: &str) -> f64 {
    let line = text.lines().nth(1).unwrap_or_default();
    let after = line.split_once(" s: ").map_or("", |(_, rest)| rest);
    let number = after.split_whitespace().next().unwrap_or_default();
    number
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no rate in {text:?}"))
}

/// Checks the text form: a heading for `workload`, a rate above zero, and
/// the six percentiles, each a number, in order.
fn check_text(text: &str, workload: &str) {
    assert!(
        text.starts_with(&format!("chat-bench {workload}: ")),
        "{text}"
    );
    assert!(text_rate(text) > 0.0, "{text}");
    let latency = text
        .lines()
        .find(|line| line.contains(" (µs): "))
        .unwrap_or_else(|| panic!("no percentile line in {text:?}"));
    let (_, figures) = latency.split_once(" (µs): ").unwrap();
    let named: Vec<(&str, f64)> = figures
        .split(", ")
        .map(|figure| {
            let (name, value) = figure.split_once(' ').expect("name and value");
            (name, value.parse().expect("a number"))
        })
        .collect();
    let names: Vec<&str> = named.iter().map(|&(name, _)| name).collect();
    assert_eq!(names, PERCENTILES, "{latency}");
    assert!(
        named.windows(2).all(|w| w[0].1 <= w[1].1),
        "percentiles out of order: {latency}"
    );
}

/// The number after `"key":` in a JSON text (no nesting needed: the keys
/// checked are unique in the object).
fn json_number(json: &str, key: &str) -> f64 {
    let pattern = format!("\"{key}\":");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + pattern.len()..];
    let end = rest.find([',', '}']).expect("a value ends");
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// Checks the JSON form: one object on one line, balanced, naming the
/// workload, with a rate above zero and every percentile.
fn check_json(json: &str, workload: &str) {
    assert_eq!(json.lines().count(), 1, "{json}");
    let json = json.trim_end();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert_eq!(json.matches('{').count(), json.matches('}').count());
    assert_eq!(json.matches('"').count() % 2, 0, "{json}");
    assert!(
        json.contains(&format!("\"workload\":\"{workload}\"")),
        "{json}"
    );
    assert!(json_number(json, "rate") > 0.0, "{json}");
    assert!(json_number(json, "count") > 0.0, "{json}");
    let latency = &json[json.find("\"latency_us\":{").expect("latency_us")..];
    for name in PERCENTILES {
        assert!(json_number(latency, name) > 0.0, "{name} in {json}");
    }
}

/// A run gives every port back: the next one (or any client) finds them
/// all free.
fn check_ports_free(server: &TestServer) {
    wait_every_port_free(server, Duration::from_secs(5)).expect("every port free after a run");
}

#[test]
fn every_workload_runs_and_reports_percentiles_and_a_rate() {
    let server = TestServer::start(&["--workers", "4"]);
    for args in [
        &["ping-pong", "--duration", "1"][..],
        &["open-loop", "--rate", "500", "--duration", "1"],
        &["stream", "--duration", "1"],
        &["join", "--duration", "1"],
    ] {
        let text = succeeds(&server, args);
        check_text(&text, args[0]);
        check_ports_free(&server);
    }
}

#[test]
fn two_pairs_and_a_message_count() {
    let server = TestServer::start(&["--workers", "4"]);
    let text = succeeds(&server, &["--pairs", "2", "--messages", "500", "ping-pong"]);
    check_text(&text, "ping-pong");
    assert!(text.contains("\n500 round trips in "), "{text}");
    let text = succeeds(&server, &["stream", "--pairs", "2", "--messages", "20000"]);
    assert!(text.contains("\n20,000 messages in "), "{text}");
    assert!(text.contains(" MB/s"), "{text}");
    check_ports_free(&server);
}

#[test]
fn json_and_csv_hold_the_same_figures() {
    let server = TestServer::start(&["--workers", "4"]);
    for args in [
        &["ping-pong", "--messages", "200"][..],
        &["open-loop", "--rate", "2000", "--messages", "200"],
        &["stream", "--messages", "5000", "--size", "100"],
        &["join", "--messages", "20"],
    ] {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        check_json(&succeeds(&server, &with_json), args[0]);
    }
    let json = succeeds(&server, &["stream", "--messages", "5000", "--json"]);
    assert!(json_number(&json, "mb_per_s") > 0.0, "{json}");
    assert_eq!(json_number(&json, "size"), 64.0);
    let json = succeeds(
        &server,
        &["open-loop", "--rate", "1000", "--messages", "100", "--json"],
    );
    assert_eq!(json_number(&json, "offered_rate"), 1000.0);

    let csv = succeeds(&server, &["ping-pong", "--messages", "100", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(header.len(), row.len(), "{csv}");
    let column = |name: &str| row[header.iter().position(|&h| h == name).expect(name)];
    assert_eq!(column("workload"), "ping-pong");
    assert_eq!(column("count"), "100");
    assert!(column("rate").parse::<f64>().unwrap() > 0.0, "{csv}");
    for name in PERCENTILES {
        let value: f64 = column(&format!("{name}_us")).parse().unwrap();
        assert!(value > 0.0, "{name}: {csv}");
    }
    check_ports_free(&server);
}

#[test]
fn the_dotnet_wire_runs_every_workload() {
    let server = TestServer::start(&["--wire", "dotnet"]);
    for args in [
        &["ping-pong", "--messages", "300"][..],
        &["open-loop", "--rate", "1000", "--messages", "300"],
        &["stream", "--duration", "1", "--size", "300"],
        &["join", "--messages", "20"],
    ] {
        let mut dotnet = vec!["--wire", "dotnet"];
        dotnet.extend_from_slice(args);
        let text = succeeds(&server, &dotnet);
        check_text(&text, args[0]);
        assert!(text.contains("(dotnet wire)"), "{text}");
    }
}

#[test]
fn a_wire_mismatch_is_a_one_line_failure_that_suggests_the_other() {
    let server = TestServer::start(&["--wire", "dotnet"]);
    let out = chat_bench(server.portal.port(), &["ping-pong", "--messages", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--wire dotnet"), "{stderr}");
}

#[test]
fn an_unreachable_server_exits_1_with_the_reason() {
    // A port that was just free, with nothing listening on it any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = chat_bench(port, &["ping-pong"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("chat-bench: cannot reach"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    for (args, named) in [
        (&["ping-pong", "--frobnicate"][..], "--frobnicate"),
        (&["stream", "--rate", "5"], "--rate"),
        (&["open-loop"], "--rate"),
        (&["ping-pong", "--pairs", "x"], "--pairs"),
        (&["teleport"], "teleport"),
    ] {
        let out = chat_bench(1, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_and_version() {
    let out = chat_bench(1, &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.starts_with("Usage: chat-bench"), "{help}");
    for word in [
        "ping-pong",
        "open-loop",
        "stream",
        "join",
        "--wire",
        "--json",
    ] {
        assert!(help.contains(word), "{word} missing from --help");
    }
    let out = chat_bench(1, &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("chat-bench {}", env!("CARGO_PKG_VERSION"))
    );
}

//! The server's command line: flags, defaults and their checks.

use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use crate::core::Timeouts;
use crate::wire::Wire;

/// Usage text printed by `chat-server --help`.
pub const USAGE: &str = "\
Usage: chat-server [OPTIONS]

A single-thread chat relay. Clients ask the portal port for a worker port and a
one-time passcode, then chat with the client on the paired worker port.

Options:
  --bind ADDR               IP address or host name to listen on [127.0.0.1]
  --port PORT               portal port; workers use PORT+1..PORT+N;
                            0 lets the OS choose every port      [50000]
  --workers N               worker ports, even and at least 2    [4]
  --assign-timeout SECS     portal reservation lifetime          [10]
  --handshake-timeout SECS  time to send the passcode line       [5]
  --idle-timeout SECS       longest silence in a session         [60]
  --session-limit SECS      longest session, 0 for no limit      [0]
  --tick-ms MS              timer tick                           [1000]
  --max-line BYTES          longest chat line, 16777216 at most  [8192]
  --max-per-ip N            worker ports one source address may hold
                            (reservations and sessions), 0 for no
                            limit; it may also have 4N unauthenticated
                            worker connections                   [0]
  --max-queued-mib M        output queued for all clients together
                            before every sender is held back     [256]
  --wire line|dotnet        how messages are framed on every port [line]
  --spin-us US              busy-poll this long before sleeping after
                            traffic: lower latency for more CPU; 0 off [20]
  --allow-low-nofile        start even if the open-file limit is too low
                            for --workers (warn instead of exit 1)
  -V, --version             print the version
  -h, --help                print this help

A host name is resolved, and the server listens on one of its addresses: the
first, in the resolver's order, that can be bound on this machine.
SECS may have a fraction (0.5). At start the soft open-file limit is raised to
the hard one, which must cover 3 descriptors per worker + 33, or the server
exits 1 (see --allow-low-nofile). Logs go to stderr; set RUST_LOG=debug or
RUST_LOG=trace to watch the event loop.";

/// The largest `--max-line`: 16 MiB. A line is held whole in its sender's
/// input buffer until its newline arrives, so this is also the memory one
/// connection can pin with a single unfinished line; chat lines are far
/// shorter, and bulk data has no business being one line.
pub const MAX_LINE_LIMIT: usize = 16 * 1024 * 1024;

/// Everything the server needs to know before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address every listener binds to.
    pub bind: IpAddr,
    /// Portal port; 0 means every listener gets an OS-chosen port.
    pub port: u16,
    /// Number of worker ports (even, at least 2).
    pub workers: usize,
    /// The protocol's deadlines.
    pub timeouts: Timeouts,
    /// Period of the timer tick that evaluates the deadlines.
    pub tick: Duration,
    /// Longest chat line in bytes, terminator excluded; at most
    /// [`MAX_LINE_LIMIT`].
    pub max_line: usize,
    /// Worker ports one source address may hold at once; 0: no limit.
    pub max_per_ip: usize,
    /// Bytes queued for all clients together before senders are held back.
    pub max_queued: usize,
    /// How messages are framed on every listener.
    pub wire: Wire,
    /// How long the loop may busy-poll before it sleeps (0: never).
    pub spin: Duration,
    /// Start even if the open-file limit cannot cover `workers`, with a
    /// warning, instead of refusing to start.
    pub allow_low_nofile: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 50000,
            workers: 4,
            timeouts: Timeouts::default(),
            tick: Duration::from_millis(1000),
            max_line: 8192,
            max_per_ip: 0,
            max_queued: 256 << 20,
            wire: Wire::Line,
            spin: crate::spin::DEFAULT_WINDOW,
            allow_low_nofile: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Serve with this configuration.
    Run(Config),
    /// Print [`USAGE`] and exit.
    Help,
    /// Print the program's name and version and exit.
    Version,
}

/// The options that take a value, as they are spelt on the command line.
const VALUE_OPTIONS: [&str; 13] = [
    "--bind",
    "--port",
    "--workers",
    "--assign-timeout",
    "--handshake-timeout",
    "--idle-timeout",
    "--session-limit",
    "--tick-ms",
    "--max-line",
    "--max-per-ip",
    "--max-queued-mib",
    "--wire",
    "--spin-us",
];

/// The options that take none.
const SWITCHES: [&str; 5] = ["-h", "--help", "-V", "--version", "--allow-low-nofile"];

/// Parses the arguments after the program name. The error is one line,
/// ready to print.
///
/// It works in two passes. The first reads the words: it knows which
/// options exist and which take a value, so a misspelt option is reported
/// as unknown wherever it stands (last, or where a value was expected), and
/// `--help` or `--version` ends it. The second checks the values, in order;
/// a repeated option takes its last value.
pub fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let mut given: Vec<(String, Option<std::ffi::OsString>)> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            Long(name) => format!("--{name}"),
            Short(c) => format!("-{c}"),
            Value(v) => return Err(format!("unexpected argument {v:?}")),
        };
        if SWITCHES.contains(&flag.as_str()) {
            if parser.optional_value().is_some() {
                return Err(format!("{flag} takes no value"));
            }
            match flag.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                _ => given.push((flag, None)),
            }
            continue;
        }
        if !VALUE_OPTIONS.contains(&flag.as_str()) {
            return Err(unknown(&flag));
        }
        // `--flag=value` is taken as written. A separate word is the value
        // unless it is an option itself: no value of ours starts with `--`
        // or with `-` and a letter, while `-1` is a (bad) number.
        let value = match parser.optional_value() {
            Some(value) => value,
            None => match parser.value() {
                Ok(word) => match option_name(&word) {
                    Some(name) if is_known(&name) => return Err(missing(&flag)),
                    Some(name) => return Err(unknown(&name)),
                    None => word,
                },
                Err(_) => return Err(missing(&flag)),
            },
        };
        given.push((flag, Some(value)));
    }

    let mut config = Config::default();
    for (flag, value) in given {
        let Some(value) = value else {
            // The only switch that gets this far.
            config.allow_low_nofile = true;
            continue;
        };
        let value = value
            .to_str()
            .ok_or_else(|| format!("invalid value for {flag}: not UTF-8"))?;
        let bad = |why: &str| format!("invalid value {value:?} for {flag}: {why}");
        match flag.as_str() {
            "--bind" => config.bind = bind_address(value).map_err(|why| bad(&why))?,
            "--port" => config.port = value.parse().map_err(|_| bad("not a port number"))?,
            "--workers" => {
                config.workers = value.parse().map_err(|_| bad("not a whole number"))?;
                if config.workers < 2 || !config.workers.is_multiple_of(2) {
                    return Err(bad("must be even and at least 2"));
                }
            }
            "--assign-timeout" => {
                config.timeouts.assign =
                    seconds(value).ok_or_else(|| bad("not a positive number of seconds"))?
            }
            "--handshake-timeout" => {
                config.timeouts.handshake =
                    seconds(value).ok_or_else(|| bad("not a positive number of seconds"))?
            }
            "--idle-timeout" => {
                config.timeouts.idle =
                    seconds(value).ok_or_else(|| bad("not a positive number of seconds"))?
            }
            "--session-limit" => {
                config.timeouts.session = match value.parse::<f64>() {
                    Ok(0.0) => None,
                    _ => Some(seconds(value).ok_or_else(|| bad("not a number of seconds"))?),
                }
            }
            "--tick-ms" => {
                let ms: u64 = value.parse().map_err(|_| bad("not a whole number"))?;
                if ms == 0 {
                    return Err(bad("must be at least 1"));
                }
                config.tick = Duration::from_millis(ms);
            }
            "--max-line" => {
                config.max_line = value.parse().map_err(|_| bad("not a whole number"))?;
                if config.max_line == 0 {
                    return Err(bad("must be at least 1"));
                }
                if config.max_line > MAX_LINE_LIMIT {
                    return Err(bad(&format!("must be at most {MAX_LINE_LIMIT} (16 MiB)")));
                }
            }
            "--max-per-ip" => {
                config.max_per_ip = value.parse().map_err(|_| bad("not a whole number"))?
            }
            "--max-queued-mib" => {
                let mib: usize = value.parse().map_err(|_| bad("not a whole number"))?;
                if mib == 0 || mib > 1 << 20 {
                    return Err(bad("must be from 1 to 1048576"));
                }
                config.max_queued = mib << 20;
            }
            "--wire" => {
                config.wire = value
                    .parse()
                    .map_err(|e: crate::wire::UnknownWire| bad(&e.to_string()))?
            }
            "--spin-us" => {
                let us: u64 = value.parse().map_err(|_| bad("not a whole number"))?;
                config.spin = Duration::from_micros(us);
            }
            _ => unreachable!("{flag} is in VALUE_OPTIONS but has no check"),
        }
    }
    if config.port != 0 && usize::from(config.port) + config.workers > usize::from(u16::MAX) {
        return Err(format!(
            "--port {} with --workers {} needs ports above 65535",
            config.port, config.workers
        ));
    }
    Ok(Command::Run(config))
}

fn unknown(flag: &str) -> String {
    format!("unknown option {flag} (see --help)")
}

fn missing(flag: &str) -> String {
    format!("missing value for {flag}")
}

fn is_known(flag: &str) -> bool {
    VALUE_OPTIONS.contains(&flag) || SWITCHES.contains(&flag)
}

/// The option a word spells (`--name` of `--name=value`, or `-x`), if it
/// looks like one rather than like a value.
fn option_name(word: &std::ffi::OsStr) -> Option<String> {
    let word = word.to_string_lossy();
    if word.starts_with("--") && word.len() > 2 {
        Some(word.split('=').next().unwrap_or_default().to_string())
    } else if word.starts_with('-') && word[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some(word.chars().take(2).collect())
    } else {
        None
    }
}

/// The address to listen on for `--bind`: an IP address as written, or one
/// address of a host name.
///
/// A name may have several addresses (`localhost` often has `::1` and
/// `127.0.0.1`), but the server listens on one. It takes the first, in the
/// resolver's order, that this machine can bind (tried with port 0 and
/// dropped at once), so a name whose IPv6 address is not configured here
/// still works. If none can be bound, the first is kept, and binding the real
/// ports reports why.
fn bind_address(value: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = value.parse() {
        return Ok(ip);
    }
    let resolved = (value, 0)
        .to_socket_addrs()
        .map_err(|e| format!("not an IP address or a known host name ({e})"))?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for addr in resolved {
        if !addrs.contains(&addr.ip()) {
            addrs.push(addr.ip());
        }
    }
    match addrs[..] {
        [] => Err("the name has no address".into()),
        [only] => Ok(only),
        [first, ..] => Ok(addrs
            .iter()
            .copied()
            .find(|&ip| TcpListener::bind((ip, 0)).is_ok())
            .unwrap_or(first)),
    }
}

/// A positive, finite number of seconds, fractions allowed.
fn seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.parse().ok()?;
    (secs > 0.0 && secs.is_finite() && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().copied())? {
            Command::Run(config) => Ok(config),
            other => Err(format!("{other:?}")),
        }
    }

    /// Each option with a good value for it.
    const GOOD: [&[&str]; 14] = [
        &["--bind", "127.0.0.1"],
        &["--port", "0"],
        &["--workers", "6"],
        &["--assign-timeout", "2"],
        &["--handshake-timeout", "0.5"],
        &["--idle-timeout", "3"],
        &["--session-limit", "9"],
        &["--tick-ms", "20"],
        &["--max-line", "100"],
        &["--max-per-ip", "2"],
        &["--max-queued-mib", "8"],
        &["--wire", "dotnet"],
        &["--spin-us", "0"],
        &["--allow-low-nofile"],
    ];

    #[test]
    fn the_option_tables_match_the_usage_text() {
        assert_eq!(GOOD.len(), VALUE_OPTIONS.len() + 1);
        for option in VALUE_OPTIONS.iter().chain(&SWITCHES) {
            assert!(USAGE.contains(option), "USAGE lacks {option}");
        }
        for args in GOOD {
            assert!(is_known(args[0]), "{args:?}");
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = run(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.port, 50000);
        assert_eq!(config.workers, 4);
        assert_eq!(config.timeouts.assign, Duration::from_secs(10));
        assert_eq!(config.timeouts.handshake, Duration::from_secs(5));
        assert_eq!(config.timeouts.idle, Duration::from_secs(60));
        assert_eq!(config.timeouts.session, None);
        assert_eq!(config.tick, Duration::from_secs(1));
        assert_eq!(config.max_line, 8192);
        assert!(!config.allow_low_nofile);
    }

    #[test]
    fn every_flag_is_read() {
        let config = run(&GOOD.concat()).unwrap();
        assert_eq!(config.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.port, 0);
        assert_eq!(config.workers, 6);
        assert_eq!(config.timeouts.assign, Duration::from_secs(2));
        assert_eq!(config.timeouts.handshake, Duration::from_millis(500));
        assert_eq!(config.timeouts.idle, Duration::from_secs(3));
        assert_eq!(config.timeouts.session, Some(Duration::from_secs(9)));
        assert_eq!(config.tick, Duration::from_millis(20));
        assert_eq!(config.max_line, 100);
        assert_eq!(config.max_per_ip, 2);
        assert_eq!(config.max_queued, 8 << 20);
        assert_eq!(config.wire, Wire::Dotnet);
        assert_eq!(config.spin, Duration::ZERO);
        assert!(config.allow_low_nofile);
        assert_eq!(
            run(&["--port=7", "--session-limit=0"])
                .unwrap()
                .timeouts
                .session,
            None
        );
        assert_eq!(
            run(&["--bind", "::1"]).unwrap().bind,
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            run(&["--port", "1", "--port", "2"]).unwrap().port,
            2,
            "the last one wins"
        );
        assert_eq!(
            run(&["--idle-timeout", "-1"]).unwrap_err(),
            "invalid value \"-1\" for --idle-timeout: not a positive number of seconds",
            "-1 is a value, not an option"
        );
    }

    #[test]
    fn an_unknown_option_is_reported_as_unknown_wherever_it_stands() {
        let unknown = "unknown option --bogus (see --help)";
        for args in GOOD {
            let flag = args[0];
            let mut cases = vec![
                [args, &["--bogus"]].concat(),
                [&["--bogus"], args].concat(),
                [&["--bogus=1"], args].concat(),
                [&["--bogus", "1"], args].concat(),
            ];
            if args.len() == 2 {
                // Where the value should be.
                cases.push(vec![flag, "--bogus"]);
                cases.push(vec![flag, "--bogus", args[1]]);
            }
            for case in cases {
                assert_eq!(run(&case).unwrap_err(), unknown, "{case:?}");
            }
        }
        assert_eq!(run(&["-x"]).unwrap_err(), "unknown option -x (see --help)");
        assert_eq!(
            run(&["--port", "-x"]).unwrap_err(),
            "unknown option -x (see --help)"
        );
        // The unknown option wins over a bad value before it.
        assert_eq!(run(&["--workers", "3", "--bogus"]).unwrap_err(), unknown);
    }

    #[test]
    fn a_missing_value_is_named() {
        for option in VALUE_OPTIONS {
            let want = format!("missing value for {option}");
            assert_eq!(run(&[option]).unwrap_err(), want);
            assert_eq!(run(&[option, "--workers", "4"]).unwrap_err(), want);
            assert_eq!(run(&[option, "-h"]).unwrap_err(), want);
        }
        assert_eq!(
            run(&["--allow-low-nofile=yes"]).unwrap_err(),
            "--allow-low-nofile takes no value"
        );
    }

    #[test]
    fn help_and_version_end_the_parse() {
        for flag in ["--help", "-h"] {
            assert_eq!(parse_args([flag]).unwrap(), Command::Help);
            assert_eq!(parse_args(["--workers", "3", flag]).unwrap(), Command::Help);
        }
        for flag in ["--version", "-V"] {
            assert_eq!(parse_args([flag]).unwrap(), Command::Version);
            assert_eq!(parse_args(["--port", "0", flag]).unwrap(), Command::Version);
        }
        assert_eq!(
            run(&["--version=2"]).unwrap_err(),
            "--version takes no value"
        );
    }

    #[test]
    fn a_host_name_is_resolved() {
        // /etc/hosts names localhost on every Linux machine, without DNS.
        let bind = run(&["--bind", "localhost"]).unwrap().bind;
        assert!(bind.is_loopback(), "localhost is {bind}");
        // Whichever of its addresses was picked can be bound here.
        assert!(TcpListener::bind((bind, 0)).is_ok());
        // The .invalid top-level domain never resolves (RFC 2606).
        let err = run(&["--bind", "no-such-host.invalid"]).unwrap_err();
        assert!(
            err.starts_with("invalid value \"no-such-host.invalid\" for --bind: not an IP address or a known host name"),
            "{err}"
        );
    }

    #[test]
    fn max_line_is_capped_at_16_mib() {
        assert_eq!(
            run(&["--max-line", "16777216"]).unwrap().max_line,
            MAX_LINE_LIMIT
        );
        assert_eq!(
            run(&["--max-line", "16777217"]).unwrap_err(),
            "invalid value \"16777217\" for --max-line: must be at most 16777216 (16 MiB)"
        );
        assert!(run(&["--max-line", "99999999999999999999999"]).is_err());
    }

    #[test]
    fn bad_input_is_a_one_line_error() {
        for args in [
            &["--workers", "3"][..],
            &["--workers", "0"],
            &["--port", "70000"],
            &["--port", "65534", "--workers", "2"],
            &["--idle-timeout", "-1"],
            &["--tick-ms", "0"],
            &["--max-line", "x"],
            &["--max-line", "0"],
            &["--max-line", "16777217"],
            &["--bind", "no-such-host.invalid"],
            &["--frobnicate"],
            &["--port"],
            &["--port", "--frobnicate"],
            &["stray"],
        ] {
            let err = run(args).unwrap_err();
            assert!(!err.contains('\n') && !err.is_empty(), "{args:?}: {err}");
        }
    }
}

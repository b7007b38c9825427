//! The server's command line: flags, defaults and their checks.

use std::net::IpAddr;
use std::time::Duration;

use crate::core::Timeouts;
use crate::wire::Wire;

/// Usage text printed by `chat-server --help`.
pub const USAGE: &str = "\
Usage: chat-server [OPTIONS]

A single-thread chat relay. Clients ask the portal port for a worker port and a
one-time passcode, then chat with the client on the paired worker port.

Options:
  --bind ADDR               address to listen on                [127.0.0.1]
  --port PORT               portal port; workers use PORT+1..PORT+N;
                            0 lets the OS choose every port      [50000]
  --workers N               worker ports, even and at least 2    [4]
  --assign-timeout SECS     portal reservation lifetime          [10]
  --handshake-timeout SECS  time to send the passcode line       [5]
  --idle-timeout SECS       longest silence in a session         [60]
  --session-limit SECS      longest session, 0 for no limit      [0]
  --tick-ms MS              timer tick                           [1000]
  --max-line BYTES          longest chat line                    [8192]
  --max-per-ip N            worker ports one source address may hold
                            (reservations and sessions), 0 for no
                            limit; it may also have 4N unauthenticated
                            worker connections                   [0]
  --max-queued-mib M        output queued for all clients together
                            before every sender is held back     [256]
  --wire line|dotnet        how messages are framed on every port [line]
  --spin-us US              busy-poll this long before sleeping after
                            traffic: lower latency for more CPU; 0 off [20]
  -h, --help                print this help

SECS may have a fraction (0.5). Logs go to stderr; set RUST_LOG=debug or
RUST_LOG=trace to watch the event loop.";

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
    /// Longest chat line in bytes, terminator excluded.
    pub max_line: usize,
    /// Worker ports one source address may hold at once; 0: no limit.
    pub max_per_ip: usize,
    /// Bytes queued for all clients together before senders are held back.
    pub max_queued: usize,
    /// How messages are framed on every listener.
    pub wire: Wire,
    /// How long the loop may busy-poll before it sleeps (0: never).
    pub spin: Duration,
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
}

/// Parses the arguments after the program name. The error is one line,
/// ready to print.
pub fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let mut config = Config::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let flag = match &arg {
            Long(name) => format!("--{name}"),
            Short(c) => format!("-{c}"),
            Value(v) => return Err(format!("unexpected argument {v:?}")),
        };
        if matches!(arg, Short('h') | Long("help")) {
            return Ok(Command::Help);
        }
        let value = parser.value().map_err(|e| e.to_string())?;
        let value = value
            .to_str()
            .ok_or_else(|| format!("invalid value for {flag}: not UTF-8"))?;
        let bad = |why: &str| format!("invalid value {value:?} for {flag}: {why}");
        match flag.as_str() {
            "--bind" => config.bind = value.parse().map_err(|_| bad("not an IP address"))?,
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
            _ => return Err(format!("unknown option {flag} (see --help)")),
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
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = run(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.port, 50000);
        assert_eq!(config.workers, 4);
        assert_eq!(config.timeouts.assign, Duration::from_secs(10));
        assert_eq!(config.timeouts.handshake, Duration::from_secs(5));
        assert_eq!(config.timeouts.idle, Duration::from_secs(60));
        assert_eq!(config.timeouts.session, None);
        assert_eq!(config.tick, Duration::from_secs(1));
        assert_eq!(config.max_line, 8192);
    }

    #[test]
    fn every_flag_is_read() {
        let config = run(&[
            "--bind",
            "::1",
            "--port",
            "0",
            "--workers",
            "6",
            "--assign-timeout",
            "2",
            "--handshake-timeout",
            "0.5",
            "--idle-timeout",
            "3",
            "--session-limit",
            "9",
            "--tick-ms",
            "20",
            "--max-line",
            "100",
        ])
        .unwrap();
        assert_eq!(config.bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(config.port, 0);
        assert_eq!(config.workers, 6);
        assert_eq!(config.timeouts.assign, Duration::from_secs(2));
        assert_eq!(config.timeouts.handshake, Duration::from_millis(500));
        assert_eq!(config.timeouts.idle, Duration::from_secs(3));
        assert_eq!(config.timeouts.session, Some(Duration::from_secs(9)));
        assert_eq!(config.tick, Duration::from_millis(20));
        assert_eq!(config.max_line, 100);
        assert_eq!(
            run(&["--port=7", "--session-limit=0"])
                .unwrap()
                .timeouts
                .session,
            None
        );
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
            &["--bind", "localhost"],
            &["--frobnicate"],
            &["--port"],
            &["stray"],
        ] {
            let err = run(args).unwrap_err();
            assert!(!err.contains('\n') && !err.is_empty(), "{args:?}: {err}");
        }
        assert_eq!(parse_args(["--help"]).unwrap(), Command::Help);
    }
}

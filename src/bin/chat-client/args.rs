//! The command line: flags, their defaults and their checks.

use portal_chat::wire::{UnknownWire, Wire};

use crate::DEFAULT_MAX_LINE;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Chat with these options.
    Run(Options),
    /// Print [`USAGE`](crate::USAGE) and exit.
    Help,
    /// Print the name and version and exit.
    Version,
}

/// Where the server is and how patient to be with it.
#[derive(Debug, PartialEq)]
pub struct Options {
    /// An IP address or a host name.
    pub host: String,
    /// The portal port.
    pub port: u16,
    /// Retries while the portal is full; `None` retries without limit.
    pub retries: Option<u32>,
    /// The longest line sent, in bytes, without its line ending: the
    /// server's `--max-line`, past which it would end the session.
    pub max_line: usize,
    /// How messages are framed: the server's `--wire`.
    pub wire: Wire,
}

/// The flags [`parse_args`] knows, for telling a missing value from an
/// unknown flag.
const FLAGS: [&str; 8] = [
    "--host",
    "--port",
    "--retries",
    "--max-line",
    "--wire",
    "-h",
    "--help",
    "--version",
];

/// Parses the arguments after the program name. The error is one line,
/// ready to print.
pub fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let mut options = Options {
        host: "127.0.0.1".to_string(),
        port: 50000,
        retries: None,
        max_line: DEFAULT_MAX_LINE,
        wire: Wire::Line,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("version") => return Ok(Command::Version),
            Long("host") => {
                let value = flag_value(&mut parser, "--host")?;
                if value.is_empty() {
                    return Err(invalid(&value, "--host", "empty"));
                }
                options.host = value;
            }
            Long("port") => {
                let value = flag_value(&mut parser, "--port")?;
                options.port = match value.parse() {
                    Ok(0) | Err(_) => {
                        return Err(invalid(&value, "--port", "not a port number (1-65535)"));
                    }
                    Ok(port) => port,
                };
            }
            Long("retries") => {
                let value = flag_value(&mut parser, "--retries")?;
                let retries = value
                    .parse()
                    .map_err(|_| invalid(&value, "--retries", "not a whole number"))?;
                options.retries = Some(retries);
            }
            Long("max-line") => {
                let value = flag_value(&mut parser, "--max-line")?;
                options.max_line = match value.parse() {
                    Ok(0) | Err(_) => {
                        return Err(invalid(&value, "--max-line", "not a whole number above 0"));
                    }
                    Ok(bytes) => bytes,
                };
            }
            Long("wire") => {
                let value = flag_value(&mut parser, "--wire")?;
                options.wire = value
                    .parse()
                    .map_err(|e: UnknownWire| invalid(&value, "--wire", &e.to_string()))?;
            }
            Long(name) => return Err(unknown(&format!("--{name}"))),
            Short(c) => return Err(unknown(&format!("-{c}"))),
            Value(v) => return Err(format!("unexpected argument {v:?}")),
        }
    }
    Ok(Command::Run(options))
}

/// The value of `flag`, which must be UTF-8: what follows `=` in
/// `--flag=VALUE`, or else the next argument, unless that is a flag itself.
/// `--port --bogus` is then an unknown flag, as `--bogus` is anywhere, and
/// `--port --host x` a missing value.
fn flag_value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let value = match parser.optional_value() {
        Some(value) => value,
        None => {
            let mut rest = parser.raw_args().map_err(|e| e.to_string())?;
            if let Some(next) = rest.peek().and_then(|next| next.to_str())
                && looks_like_a_flag(next)
            {
                let name = next.split_once('=').map_or(next, |(name, _)| name);
                return Err(if FLAGS.contains(&name) {
                    missing(flag)
                } else {
                    unknown(name)
                });
            }
            rest.next().ok_or_else(|| missing(flag))?
        }
    };
    value
        .into_string()
        .map_err(|_| format!("invalid value for {flag}: not UTF-8"))
}

/// Whether an argument is a flag rather than a value: `--name`, or `-x`
/// with a letter. `-1` is a value (a wrong one for every flag here, which
/// the flag's own check says), and so is `-`.
fn looks_like_a_flag(arg: &str) -> bool {
    match arg.as_bytes() {
        [b'-', b'-', _, ..] => true,
        [b'-', second, ..] => !second.is_ascii_digit(),
        _ => false,
    }
}

/// The one-line message for an unknown flag.
fn unknown(flag: &str) -> String {
    format!("unknown option {flag} (see --help)")
}

/// The one-line message for a flag given without its value.
fn missing(flag: &str) -> String {
    format!("missing value for {flag} (see --help)")
}

/// The one-line message for a value that `flag` does not accept.
fn invalid(value: &str, flag: &str, why: &str) -> String {
    format!("invalid value {value:?} for {flag}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Result<Options, String> {
        match parse_args(args.iter().copied())? {
            Command::Run(options) => Ok(options),
            Command::Help => Err("help".into()),
            Command::Version => Err("version".into()),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        assert_eq!(
            options(&[]).unwrap(),
            Options {
                host: "127.0.0.1".into(),
                port: 50000,
                retries: None,
                max_line: 8192,
                wire: Wire::Line,
            }
        );
    }

    #[test]
    fn every_flag_is_read() {
        assert_eq!(
            options(&[
                "--host",
                "example.org",
                "--port",
                "6000",
                "--retries=3",
                "--max-line",
                "100",
                "--wire",
                "dotnet"
            ])
            .unwrap(),
            Options {
                host: "example.org".into(),
                port: 6000,
                retries: Some(3),
                max_line: 100,
                wire: Wire::Dotnet,
            }
        );
        assert_eq!(options(&["--wire=line"]).unwrap().wire, Wire::Line);
        assert_eq!(parse_args(["--version"]).unwrap(), Command::Version);
        assert_eq!(parse_args(["-h"]).unwrap(), Command::Help);
        assert_eq!(
            parse_args(["--port", "1", "--help"]).unwrap(),
            Command::Help
        );
    }

    #[test]
    fn bad_input_is_a_one_line_error() {
        for args in [
            &["--port", "0"][..],
            &["--port", "65536"],
            &["--port"],
            &["--retries", "-1"],
            &["--retries", "x"],
            &["--host", ""],
            &["--max-line", "0"],
            &["--max-line", "x"],
            &["--wire", "x"],
            &["--wire", "Dotnet"],
            &["--wire"],
            &["--frobnicate"],
            &["-x"],
            &["stray"],
        ] {
            let err = options(args).unwrap_err();
            assert!(!err.contains('\n') && !err.is_empty(), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_unknown_flag_is_unknown_wherever_it_stands() {
        let unknown = Err("unknown option --bogus (see --help)".to_string());
        for (flag, good) in [
            ("--host", "1"),
            ("--port", "1"),
            ("--retries", "1"),
            ("--max-line", "1"),
            ("--wire", "dotnet"),
        ] {
            // Last, first, and where a value is expected.
            assert_eq!(options(&[flag, good, "--bogus"]), unknown, "{flag}");
            assert_eq!(options(&["--bogus", flag, good]), unknown, "{flag}");
            assert_eq!(options(&[flag, "--bogus"]), unknown, "{flag}");
            assert_eq!(options(&[flag, "--bogus=1"]), unknown, "{flag}");
            // A known flag where a value is expected: the value is missing.
            let missing = Err(format!("missing value for {flag} (see --help)"));
            assert_eq!(options(&[flag, "--version"]), missing, "{flag}");
            assert_eq!(options(&[flag, "-h"]), missing, "{flag}");
            assert_eq!(options(&[flag]), missing, "{flag}");
        }
        assert_eq!(
            options(&["-x"]),
            Err("unknown option -x (see --help)".to_string())
        );
        // `--flag=VALUE` takes the value as it is, and `-1` is a value.
        assert_eq!(
            options(&["--host=--bogus"]).unwrap().host,
            "--bogus".to_string()
        );
        assert_eq!(
            options(&["--retries", "-1"]),
            Err("invalid value \"-1\" for --retries: not a whole number".to_string())
        );
        assert_eq!(
            options(&["--wire", "net"]),
            Err(r#"invalid value "net" for --wire: expected "line" or "dotnet""#.to_string())
        );
    }
}

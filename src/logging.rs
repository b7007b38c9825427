//! The server's log: one line per record on stderr, stamped with the UTC
//! time in RFC 3339 form.
//!
//! ```text
//! 2026-12-01T21:03:54.828Z INFO  [portal_chat::server] stopped
//! ```
//!
//! Milliseconds are enough to order what an operator reads at `info`; at
//! `trace` one wake-up of the loop takes microseconds, so the stamps carry
//! microseconds for the whole run (one width per run keeps the lines
//! sortable as text).
//!
//! The time comes from [`SystemTime`] and is turned into a date here, with
//! no date crate: that is a few lines of arithmetic, where a crate for it
//! costs about 40 KiB of the server's binary.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the logger for the process at the level `RUST_LOG` names
/// (`error`, `warn`, `info`, `debug`, `trace` or `off`, in any case), `info`
/// if it is unset or empty. A value that names no level is reported in the
/// log itself, and `info` is used. Returns the level in force.
pub fn init() -> LevelFilter {
    let setting = std::env::var("RUST_LOG").ok();
    let (level, complaint) = match level_from(setting.as_deref()) {
        Ok(level) => (level, None),
        Err(complaint) => (LevelFilter::Info, Some(complaint)),
    };
    let logger = StderrLogger {
        level,
        micros: level == LevelFilter::Trace,
    };
    // Only the first call in a process installs a logger; a later one
    // (a test calling init twice) changes nothing.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
    if let Some(complaint) = complaint {
        log::warn!("{complaint}; logging at info");
    }
    level
}

/// The level a `RUST_LOG` value asks for; `None` or blank is `info`.
pub fn level_from(setting: Option<&str>) -> Result<LevelFilter, String> {
    match setting.map(str::trim) {
        None | Some("") => Ok(LevelFilter::Info),
        Some(name) => name.parse().map_err(|_| {
            format!("RUST_LOG={name:?} is not one of error, warn, info, debug, trace, off")
        }),
    }
}

struct StderrLogger {
    level: LevelFilter,
    micros: bool,
}

impl Log for StderrLogger {
    /// Other crates' lines (mio's own registration traces, with raw token
    /// numbers) are left out below info: the trace is this server's story.
    fn enabled(&self, metadata: &Metadata) -> bool {
        let ours = metadata.target().starts_with("portal_chat")
            || metadata.target().starts_with("chat_server");
        metadata.level() <= self.level && (ours || metadata.level() <= log::Level::Info)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // A clock set before 1970 is stamped 1970-01-01: the line still goes out.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format_line(now, self.micros, record);
        // One write per line, so lines from a second thread (a test's) do
        // not interleave. A closed or full stderr loses the line and nothing
        // else: logging must never be what stops the server.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// One log line, newline included: `now` is the time since the Unix epoch.
pub fn format_line(now: Duration, micros: bool, record: &Record) -> String {
    let mut line = String::with_capacity(64);
    write_timestamp(&mut line, now, micros);
    // `{:<5}` pads INFO and WARN to line up with ERROR, DEBUG and TRACE.
    let _ = writeln!(
        line,
        " {:<5} [{}] {}",
        record.level(),
        record.target(),
        record.args()
    );
    line
}

/// Appends `since_epoch` as an RFC 3339 UTC time, `1970-01-01T00:00:00.000Z`,
/// with six fraction digits instead of three if `micros`.
pub fn write_timestamp(out: &mut String, since_epoch: Duration, micros: bool) {
    const DAY: u64 = 24 * 60 * 60;
    let secs = since_epoch.as_secs();
    // Unix time has no leap seconds: every day is 86,400 of its seconds.
    let (year, month, day) = civil_from_days((secs / DAY) as i64);
    let of_day = secs % DAY;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    let _ = if micros {
        write!(out, "{:06}Z", since_epoch.subsec_micros())
    } else {
        write!(out, "{:03}Z", since_epoch.subsec_millis())
    };
}

/// The date `days` after 1970-01-01 (before it if negative) in the
/// proleptic Gregorian calendar: year, month 1 to 12, day 1 to 31.
///
/// The count is moved to start on 1 March of year 0. With years that begin
/// in March, February's leap day is the last day of a year, so a year's
/// length only shows at its end, and the months from March repeat a
/// 31, 30, 31, 30, 31 pattern: 153 days per five months. Gregorian years
/// repeat every 400 years, which are exactly 146,097 days.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    /// Days from 0000-03-01 to 1970-01-01.
    const EPOCH_FROM_MARCH_0: i64 = 719_468;
    const DAYS_PER_400_YEARS: i64 = 146_097;
    let since_march_0 = days + EPOCH_FROM_MARCH_0;
    let cycle = since_march_0.div_euclid(DAYS_PER_400_YEARS);
    let day_of_cycle = since_march_0.rem_euclid(DAYS_PER_400_YEARS); // 0..=146_096
    // Without leap days, the year would be day / 365. Take out one day per
    // four years (1,460 days), put one back per century (36,524 days), and
    // take out the cycle's final leap day (day 146,096): what remains is a
    // count of 365-day years.
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365; // 0..=399
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100); // 0..=365
    // The month that holds the day, counting March as 0: the 153-day
    // pattern spread evenly, with the +2 placing the months' edges.
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9 // January and February: the next calendar year
    };
    let year = cycle * 400 + year_of_cycle + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn stamp(secs: u64, nanos: u32, micros: bool) -> String {
        let mut out = String::new();
        write_timestamp(&mut out, Duration::new(secs, nanos), micros);
        out
    }

    #[test]
    fn known_dates() {
        // Each checked with Python's `date(1970, 1, 1) + timedelta(days)`.
        for (days, date) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (-25_567, (1900, 1, 1)),
            (-719_162, (1, 1, 1)),
            (10_957, (2000, 1, 1)),
            (11_016, (2000, 2, 29)), // 2000 is a leap year: divisible by 400
            (11_017, (2000, 3, 1)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)), // 2100 is not: divisible by 100
            (19_782, (2024, 2, 29)),
            (20_453, (2025, 12, 31)),
            (2_932_896, (9999, 12, 31)),
        ] {
            assert_eq!(civil_from_days(days), date, "day {days}");
        }
    }

    /// From 1 January of year -400 to the end of year 9999, every day is
    /// the day after the one before, by the calendar's own rules: negative
    /// years, century years and 400-year cycles included.
    #[test]
    fn every_day_follows_the_one_before() {
        fn leap(year: i64) -> bool {
            year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        }
        fn days_in(year: i64, month: u32) -> u32 {
            match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            }
        }
        // 0001-01-01 is day -719,162; year 0 (a leap year) has 366 days
        // and the 400 years before it 146,097.
        let first = -719_162 - 366 - 146_097;
        let mut date = civil_from_days(first);
        assert_eq!(date, (-400, 1, 1));
        for days in first + 1..=2_932_896 {
            let (year, month, day) = date;
            let next = if day < days_in(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
            date = civil_from_days(days);
            assert_eq!(date, next, "day {days}");
        }
    }

    #[test]
    fn timestamps_are_rfc_3339_utc() {
        assert_eq!(stamp(0, 0, false), "1970-01-01T00:00:00.000Z");
        assert_eq!(stamp(0, 0, true), "1970-01-01T00:00:00.000000Z");
        // The last second of a leap day, checked with
        // `date -u -d @951868799 +%FT%T`.
        assert_eq!(
            stamp(951_868_799, 123_456_789, false),
            "2000-02-29T23:59:59.123Z"
        );
        assert_eq!(
            stamp(951_868_799, 123_456_789, true),
            "2000-02-29T23:59:59.123456Z"
        );
        // 2^31 seconds: where a signed 32-bit time_t ends.
        assert_eq!(
            stamp(1 << 31, 999_999_999, false),
            "2038-01-19T03:14:08.999Z"
        );
        assert_eq!(stamp(1_000_000_000, 0, false), "2001-09-09T01:46:40.000Z");
    }

    #[test]
    fn a_line_is_stamp_level_target_message() {
        let line = |level, micros| {
            format_line(
                Duration::new(1_000_000_000, 5_000),
                micros,
                &Record::builder()
                    .level(level)
                    .target("portal_chat::server")
                    .args(format_args!("stopped"))
                    .build(),
            )
        };
        assert_eq!(
            line(Level::Info, false),
            "2001-09-09T01:46:40.000Z INFO  [portal_chat::server] stopped\n"
        );
        assert_eq!(
            line(Level::Trace, true),
            "2001-09-09T01:46:40.000005Z TRACE [portal_chat::server] stopped\n"
        );
    }

    #[test]
    fn rust_log_names_a_level() {
        assert_eq!(level_from(None), Ok(LevelFilter::Info));
        assert_eq!(level_from(Some("")), Ok(LevelFilter::Info));
        for (name, level) in [
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
            ("TRACE", LevelFilter::Trace),
            (" debug ", LevelFilter::Debug),
            ("off", LevelFilter::Off),
        ] {
            assert_eq!(level_from(Some(name)), Ok(level), "{name:?}");
        }
        let err = level_from(Some("portal_chat=debug")).unwrap_err();
        assert_eq!(
            err,
            "RUST_LOG=\"portal_chat=debug\" is not one of error, warn, info, debug, trace, off"
        );
    }
}

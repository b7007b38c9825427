//! Session setup, for the project only (the other systems have no portal
//! and no handshake): `concurrency` clients each join with the client
//! library (`Session::join`: portal, then passcode on the worker port) and
//! leave again, over and over. Each join is timed from the portal connect
//! to "Connection successful" and the partner status line.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use portal_chat::client::{RetryPolicy, Session};

use super::latency_histogram;

/// How often a client asks a full portal again.
const FULL_RETRY: RetryPolicy = RetryPolicy {
    retries: Some(1000),
    delay: Duration::from_millis(1),
};

/// What one run of joins achieved.
#[derive(Debug, Clone, Copy)]
pub struct Sessions {
    /// Sessions set up per second, all clients together.
    pub per_sec: f64,
    /// Times the portal answered "full" (a port not yet freed).
    pub full_answers: u64,
}

/// Joins and leaves from `concurrency` threads until `window` has passed or
/// `max_sessions` joins are done, adding each join's time (ns) to
/// `histogram`.
pub fn run(
    portal: SocketAddr,
    concurrency: usize,
    window: Duration,
    max_sessions: u64,
    histogram: &mut Histogram<u64>,
) -> io::Result<Sessions> {
    let started = Instant::now();
    let deadline = started + window;
    let per_thread = max_sessions.div_ceil(concurrency as u64);
    let results: Vec<io::Result<(Histogram<u64>, u64)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..concurrency)
            .map(|_| scope.spawn(move || join_repeatedly(portal, deadline, per_thread)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("join thread panicked"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut count, mut full_answers) = (0, 0);
    for result in results {
        let (thread_histogram, fulls) = result?;
        histogram
            .add(&thread_histogram)
            .expect("same histogram bounds");
        count += thread_histogram.len();
        full_answers += fulls;
    }
    Ok(Sessions {
        per_sec: count as f64 / elapsed,
        full_answers,
    })
}

/// One client: join, leave (by closing), repeat.
fn join_repeatedly(
    portal: SocketAddr,
    deadline: Instant,
    max_sessions: u64,
) -> io::Result<(Histogram<u64>, u64)> {
    let mut histogram = latency_histogram();
    let mut full_answers = 0;
    while histogram.len() < max_sessions && Instant::now() < deadline {
        let begun = Instant::now();
        let session = Session::join(portal.ip(), portal.port(), FULL_RETRY, |_| {
            full_answers += 1
        })
        .map_err(io::Error::other)?;
        histogram.saturating_record(begun.elapsed().as_nanos() as u64);
        drop(session);
    }
    Ok((histogram, full_answers))
}

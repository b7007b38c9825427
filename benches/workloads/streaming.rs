//! Streaming throughput: on every pair, A's writer sends batches of messages
//! as fast as the system takes them (it never waits for an answer) and B's
//! reader counts the messages that come out. The rate is taken at the
//! readers, over a window that starts after a warm-up, so buffers filling at
//! the start do not count as throughput.
//!
//! The same stream is the load of the "beside a stream" workload
//! ([`run_during`]): there the window is however long another pair's
//! measurement takes.

use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::message_of;
use crate::peers::{Pair, invalid};

/// Bytes per message, newline or prefix included.
pub const LINE_LEN: usize = 64;

/// Messages per `write`: 64 KiB at a time.
const LINES_PER_WRITE: u64 = 1024;

/// How often a draining reader looks whether its writer has finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// How long a writer may wait on one `write` before the system counts as
/// stalled. Longer than [`STALL_TIMEOUT`]: with 50 pairs the threaded relay,
/// which holds its one lock while it blocks writing to a partner, has left
/// a pair without progress for over 10 s, and a write that times out cannot
/// be resumed (how much of the batch went is lost), so the run would fail.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// What the readers received during the window, per second.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Messages per second, all pairs together.
    pub lines_per_sec: f64,
    /// Bytes per second (framing included), all pairs together.
    pub bytes_per_sec: f64,
    /// Every message received, warm-up and drain included.
    pub total_lines: u64,
}

/// Streams on every pair at once; measures for `window` after `warmup`.
/// Afterwards each reader drains everything its writer sent, so the pairs
/// are clean for the next workload.
pub fn run(pairs: &mut [Pair], warmup: Duration, window: Duration) -> io::Result<Throughput> {
    let (throughput, ()) = run_during(pairs, warmup, || {
        std::thread::sleep(window);
        Ok(())
    })?;
    Ok(throughput)
}

/// Streams on every pair at once and, after `warmup`, runs `during` on this
/// thread; the window is the time `during` takes. Stops and drains the
/// streams afterwards, and returns their rate over the window with what
/// `during` returned.
pub fn run_during<T>(
    pairs: &mut [Pair],
    warmup: Duration,
    during: impl FnOnce() -> io::Result<T>,
) -> io::Result<(Throughput, T)> {
    let wire = pairs.first().map(|p| p.a.wire()).unwrap_or_default();
    let batch = message_of(wire, LINE_LEN, b"stream")
        .0
        .repeat(LINES_PER_WRITE as usize);
    let lines = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // Messages each pair's writer sent, published once it has stopped.
    let sent_per_pair: Vec<AtomicU64> = pairs.iter().map(|_| AtomicU64::new(u64::MAX)).collect();
    let (lines, bytes, stop, batch) = (&lines, &bytes, &stop, &batch);
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for (pair, sent) in pairs.iter_mut().zip(&sent_per_pair) {
            let Pair { a, b } = pair;
            threads.push(scope.spawn(move || -> io::Result<()> {
                a.set_write_timeout(Some(WRITE_STALL))?;
                let mut count = 0;
                while !stop.load(Ordering::Relaxed) {
                    a.write_all(batch)?;
                    count += LINES_PER_WRITE;
                }
                sent.store(count, Ordering::Release);
                a.set_write_timeout(None)
            }));
            threads.push(scope.spawn(move || -> io::Result<()> {
                b.set_read_timeout(Some(DRAIN_POLL))?;
                let mut received = 0;
                let mut last_progress = Instant::now();
                while received != sent.load(Ordering::Acquire) {
                    match b.fill() {
                        Ok(()) => {
                            // Every message is cut out with the wire's codec,
                            // as a client that uses them would.
                            let (mut n, mut len) = (0, 0);
                            while let Some((frame_len, _)) = b.buffered()? {
                                n += 1;
                                len += frame_len as u64;
                            }
                            received += n;
                            lines.fetch_add(n, Ordering::Relaxed);
                            bytes.fetch_add(len, Ordering::Relaxed);
                            last_progress = Instant::now();
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            if last_progress.elapsed() > WRITE_STALL {
                                return Err(invalid("streaming stalled".into()));
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                b.set_read_timeout(None)
            }));
        }
        std::thread::sleep(warmup);
        let (lines0, bytes0, t0) = (
            lines.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            Instant::now(),
        );
        let outcome = during();
        let (lines1, bytes1, t1) = (
            lines.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            Instant::now(),
        );
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("streaming thread panicked")?;
        }
        let secs = (t1 - t0).as_secs_f64();
        let throughput = Throughput {
            lines_per_sec: (lines1 - lines0) as f64 / secs,
            bytes_per_sec: (bytes1 - bytes0) as f64 / secs,
            total_lines: lines.load(Ordering::Relaxed),
        };
        Ok((throughput, outcome?))
    })
}

//! Streaming throughput: on every pair, A's writer sends batches of lines as
//! fast as the system takes them (it never waits for an answer) and B's
//! reader counts the lines that come out. The rate is taken at the readers,
//! over a window that starts after a warm-up, so buffers filling at the start
//! do not count as throughput.

use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::line_of;
use crate::peers::{Pair, STALL_TIMEOUT, invalid};

/// Bytes per line, newline included.
pub const LINE_LEN: usize = 64;

/// Lines per `write`: 64 KiB at a time.
const LINES_PER_WRITE: u64 = 1024;

/// How often a draining reader looks whether its writer has finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// What the readers received during the window, per second.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Lines per second, all pairs together.
    pub lines_per_sec: f64,
    /// Bytes per second (newlines included), all pairs together.
    pub bytes_per_sec: f64,
    /// Every line received, warm-up and drain included.
    pub total_lines: u64,
}

/// Streams on every pair at once; measures for `window` after `warmup`.
/// Afterwards each reader drains everything its writer sent, so the pairs
/// are clean for the next workload.
pub fn run(pairs: &mut [Pair], warmup: Duration, window: Duration) -> io::Result<Throughput> {
    let batch = line_of(LINE_LEN, b"stream").repeat(LINES_PER_WRITE as usize);
    let lines = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // Lines each pair's writer sent, published once it has stopped.
    let sent_per_pair: Vec<AtomicU64> = pairs.iter().map(|_| AtomicU64::new(u64::MAX)).collect();
    let (lines, bytes, stop, batch) = (&lines, &bytes, &stop, &batch);
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for (pair, sent) in pairs.iter_mut().zip(&sent_per_pair) {
            let Pair { a, b } = pair;
            threads.push(scope.spawn(move || -> io::Result<()> {
                let mut count = 0;
                while !stop.load(Ordering::Relaxed) {
                    a.write_all(batch)?;
                    count += LINES_PER_WRITE;
                }
                sent.store(count, Ordering::Release);
                Ok(())
            }));
            threads.push(scope.spawn(move || -> io::Result<()> {
                b.set_read_timeout(Some(DRAIN_POLL))?;
                let mut received = 0;
                let mut last_progress = Instant::now();
                while received != sent.load(Ordering::Acquire) {
                    match b.read_chunk() {
                        Ok([]) => return Err(ErrorKind::UnexpectedEof.into()),
                        Ok(chunk) => {
                            let n = chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
                            received += n;
                            lines.fetch_add(n, Ordering::Relaxed);
                            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            last_progress = Instant::now();
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            if last_progress.elapsed() > STALL_TIMEOUT {
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
        std::thread::sleep(window);
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
        Ok(Throughput {
            lines_per_sec: (lines1 - lines0) as f64 / secs,
            bytes_per_sec: (bytes1 - bytes0) as f64 / secs,
            total_lines: lines.load(Ordering::Relaxed),
        })
    })
}

//! Fairness of the one loop: no connection, however fast, may keep the loop
//! from the others.
//!
//! One pair streams as fast as loopback allows (a writer and a reader that
//! keep pace), while a second pair ping-pongs a short line every 10 ms. If
//! the loop served the streaming pair until it ran out of work, which it
//! never does, the pinger's lines would sit unread in the kernel; so the
//! pinger's round trips, a portal request and a handshake deadline are all
//! timed while the stream runs. Run with `--nocapture` to see the figures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Peer, TestServer, ask_portal, connect};
use portal_chat::client::PortalAnswer;

/// How long the pinger pings while the stream runs.
const PINGING: Duration = Duration::from_secs(10);

/// Starts a writer that sends 64 KiB blocks of chat lines until `stop`, and
/// a reader on the partner that reads everything as it comes. Returns the
/// byte count the reader has seen.
fn stream_flat_out(
    (mut writer, reader): (Peer, Peer),
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Vec<thread::JoinHandle<()>>) {
    let mut line = vec![b'x'; 63];
    line.push(b'\n');
    let block: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
    let received = Arc::new(AtomicU64::new(0));
    let stop_writer = stop.clone();
    let write = thread::spawn(move || {
        yield_to_the_measurement();
        while !stop_writer.load(Ordering::Relaxed) {
            if writer.send(&block).is_err() {
                return;
            }
        }
    });
    let (stop_reader, counter) = (stop.clone(), received.clone());
    let read = thread::spawn(move || {
        yield_to_the_measurement();
        let mut stream = reader.stream;
        let mut buf = vec![0; 256 * 1024];
        while !stop_reader.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => counter.fetch_add(n as u64, Ordering::Relaxed),
            };
        }
    });
    (received, vec![write, read])
}

/// Lowers the calling thread's priority (nice 10). The streaming threads
/// are load, not measurement: on a machine with two cores they would
/// otherwise compete with the pinger and its echo for the CPU, and the
/// pinger's tail would measure the test's own threads rather than the
/// server's loop. They still stream flat out whenever a core is free; the
/// server keeps its normal priority.
fn yield_to_the_measurement() {
    // SAFETY: gettid takes nothing; setpriority on our own thread id only
    // changes this thread's niceness (raising it needs no privilege).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// The partner of the pinger: answers every line with the same line.
fn echo(peer: Peer) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = peer.reader;
        let mut stream = peer.stream;
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if stream.write_all(&line).is_ok() => {}
                Ok(_) => return,
            }
        }
    })
}

/// Sends a numbered line every 10 ms for [`PINGING`] and waits for each to
/// come back; returns every round trip.
fn ping_every_10_ms(pinger: Peer) -> Vec<Duration> {
    let mut reader: BufReader<TcpStream> = pinger.reader;
    let mut stream = pinger.stream;
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut answer = Vec::new();
    for seq in 0.. {
        let due = start + Duration::from_millis(10 * seq);
        if due >= start + PINGING {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait); // the traffic's own pace, not a wait for a condition
        }
        let ping = format!("ping {seq}\n");
        let sent = Instant::now();
        stream.write_all(ping.as_bytes()).expect("send ping");
        answer.clear();
        reader.read_until(b'\n', &mut answer).expect("read pong");
        rtts.push(sent.elapsed());
        assert_eq!(answer, ping.as_bytes(), "the echo is the ping");
    }
    rtts
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn a_streaming_pair_does_not_keep_the_loop_from_a_pinging_pair() {
    let server = TestServer::start(&[
        "--workers",
        "6",
        "--tick-ms",
        "50",
        "--handshake-timeout",
        "1",
    ]);
    let streamers = Peer::pair(&server);
    let (pinger, echoer) = Peer::pair(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let (streamed, streaming) = stream_flat_out(streamers, &stop);
    // Let the stream reach full speed before measuring anything.
    assert!(
        common::wait_until(Duration::from_secs(10), || streamed.load(Ordering::Relaxed)
            > 64 << 20),
        "the streaming pair moves data"
    );
    let echoing = echo(echoer);
    let pinging = thread::spawn(move || ping_every_10_ms(pinger));

    // Meanwhile: the portal answers at once, and a connection that never
    // sends its passcode is told off at its 1 s deadline, give or take a tick.
    let asked = Instant::now();
    let answer = ask_portal(&server);
    let portal_time = asked.elapsed();
    let PortalAnswer::Assigned(assignment) = answer else {
        panic!("the portal had a free port")
    };
    let mut silent = connect(std::net::SocketAddr::new(server.host(), assignment.port)).unwrap();
    let connected = Instant::now();
    let mut notice = String::new();
    BufReader::new(&mut silent)
        .read_line(&mut notice)
        .expect("the handshake deadline notice");
    let deadline_time = connected.elapsed();
    assert_eq!(
        notice,
        format!("SERVER{}>>> Handshake timeout\n", assignment.port)
    );

    let mut rtts = pinging.join().expect("pinger");
    let streamed_bytes = streamed.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    drop(server); // ends the streaming sockets and the echo
    for handle in streaming {
        handle.join().unwrap();
    }
    echoing.join().unwrap();

    rtts.sort_unstable();
    let (p50, p99, worst) = (
        percentile(&rtts, 0.50),
        percentile(&rtts, 0.99),
        *rtts.last().unwrap(),
    );
    println!(
        "{} round trips: p50 {p50:?}, p99 {p99:?}, worst {worst:?}; \
         portal answered in {portal_time:?}; 1 s handshake deadline fired after {deadline_time:?}; \
         {} MiB streamed meanwhile",
        rtts.len(),
        streamed_bytes >> 20
    );
    assert!(
        rtts.len() >= 900,
        "a round trip per 10 ms for 10 s: {}",
        rtts.len()
    );
    assert!(p99 < Duration::from_millis(10), "p99 {p99:?}");
    assert!(worst < Duration::from_millis(200), "worst {worst:?}");
    assert!(
        portal_time < Duration::from_millis(200),
        "portal {portal_time:?}"
    );
    assert!(
        deadline_time < Duration::from_millis(1500),
        "handshake deadline {deadline_time:?}"
    );
}

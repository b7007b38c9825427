//! The original design, ported: blocking sockets, one thread per connection,
//! and one lock around the state the threads share.
//!
//! Each connection's thread reads a line (through an 8 KiB buffered reader,
//! as the original's buffered line reader did), takes the lock, finds its
//! partner and writes the line to the partner's socket, then lets go. A line
//! is one `write`, and every forwarded line in the server passes through the
//! one lock. Connections are paired in the order they arrive: the first with
//! the second, the third with the fourth, and so on; a connection is read
//! only once its partner is there, so no line is lost to an empty seat.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What every connection thread shares.
#[derive(Default)]
struct Shared {
    /// Partner of each paired connection, both ways.
    partner: HashMap<usize, usize>,
    /// Each connection's socket, for whoever forwards to it.
    writers: HashMap<usize, TcpStream>,
    next_id: usize,
}

/// Accepts connections two at a time, forever, and gives each its thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    loop {
        let pair = [listener.accept()?.0, listener.accept()?.0];
        let first_id = {
            let mut state = shared.lock().unwrap();
            let first_id = state.next_id;
            state.next_id += 2;
            for (id, stream) in (first_id..).zip(&pair) {
                stream.set_nodelay(true)?;
                state.writers.insert(id, stream.try_clone()?);
            }
            state.partner.insert(first_id, first_id + 1);
            state.partner.insert(first_id + 1, first_id);
            first_id
        };
        for (id, stream) in (first_id..).zip(pair) {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || connection(id, stream, &shared));
        }
    }
}

/// One connection's thread: forward each complete line until the client
/// leaves, then forget the connection.
fn connection(id: usize, stream: TcpStream, shared: &Mutex<Shared>) {
    let mut reader = BufReader::with_capacity(8 * 1024, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.last() != Some(&b'\n') => break, // unterminated at the end
            Ok(_) => {}
        }
        let mut state = shared.lock().unwrap();
        if let Some(partner) = state.partner.get(&id).copied()
            && let Some(writer) = state.writers.get_mut(&partner)
        {
            // A partner that has gone away shows up as its thread's own
            // end of stream; here the failed write is simply dropped.
            let _ = writer.write_all(&line);
        }
    }
    let mut state = shared.lock().unwrap();
    state.writers.remove(&id);
    if let Some(partner) = state.partner.remove(&id) {
        state.partner.remove(&partner);
    }
}

//! The floor: A and B are the two ends of one loopback TCP connection, so a
//! line costs one `write` and one `read` and nothing relays it.

use std::io;
use std::net::{TcpListener, TcpStream};

use portal_chat::wire::Wire;

use super::{Endpoint, Pair, STALL_TIMEOUT};

/// Connects a fresh loopback connection and returns its two ends.
pub fn connect_pair() -> io::Result<Pair> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect_timeout(&listener.local_addr()?, STALL_TIMEOUT)?;
    let (b, _) = listener.accept()?;
    Ok(Pair {
        a: Endpoint::new(a, Wire::Line)?,
        b: Endpoint::new(b, Wire::Line)?,
    })
}

//! What a Rust user would write instead: tokio, two tasks per pair, each
//! copying lines from one socket to the other.
//!
//! The copy is written the way a careful user writes it, not a straw man: a
//! buffered reader splits lines, a buffered writer collects them, and the
//! writer is flushed only when no further complete line is already waiting,
//! so a burst of lines read together leaves in one `write`, just as the
//! project batches them. Connections are paired in the order they arrive.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Which tokio runtime runs the relay.
#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    /// Every task on the thread that calls `block_on`.
    Current,
    /// Work-stealing workers, one per core.
    Multi,
}

/// Serves forever on `listener` with a runtime of the given flavor.
pub fn serve(listener: std::net::TcpListener, flavor: Flavor) -> io::Result<()> {
    let mut builder = match flavor {
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_io()
        .build()?
        .block_on(accept_pairs(listener))
}

/// Accepts connections two at a time and starts the two copying tasks of
/// each pair.
async fn accept_pairs(listener: std::net::TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    loop {
        let (first, _) = listener.accept().await?;
        let (second, _) = listener.accept().await?;
        first.set_nodelay(true)?;
        second.set_nodelay(true)?;
        let (first_read, first_write) = first.into_split();
        let (second_read, second_write) = second.into_split();
        tokio::spawn(copy_lines(first_read, second_write));
        tokio::spawn(copy_lines(second_read, first_write));
    }
}

/// Forwards complete lines from `from` to `to` until `from` ends.
async fn copy_lines(from: OwnedReadHalf, to: OwnedWriteHalf) -> io::Result<()> {
    let mut reader = BufReader::new(from);
    let mut writer = BufWriter::new(to);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 || line.last() != Some(&b'\n') {
            return Ok(()); // end of stream (an unterminated tail is dropped)
        }
        writer.write_all(&line).await?;
        if !reader.buffer().contains(&b'\n') {
            writer.flush().await?;
        }
    }
}

//! # portal-chat
//!
//! A chat relay in one thread and one `mio::Poll` loop. A client asks the
//! portal for a worker port and a one-time passcode, connects to that port,
//! proves itself with the passcode, and then chats with the client on the
//! paired port (worker 1 with 2, 3 with 4, ...).
//!
//! # Layout
//!
//! - [`config`]: the server's command line, its defaults and checks.
//! - [`core`]: the protocol itself (port stack, passcodes, pairing,
//!   deadlines) with no I/O; time and randomness are passed in.
//! - [`wire`]: wire codecs on plain bytes: how messages are cut out of a
//!   byte stream and framed again, with a length limit.
//! - [`output`]: a connection's queued output and the backpressure marks.
//! - [`relay`]: everything decided about connections, with no I/O: buffers,
//!   backpressure, the closing lifecycle, and the turns that keep one busy
//!   client from holding the loop.
//! - [`spin`]: when the loop busy-polls before it sleeps.
//! - [`server`]: the event loop, the only module that touches mio: listeners,
//!   the slab of sockets, the tick and signals; it only moves bytes.
//! - [`logging`]: the server's log lines on stderr, with UTC timestamps.
//! - [`rlimit`]: the open-file limit a configuration needs; raising it.
//! - `sim` (for tests, or with the `sim` feature): a simulated network,
//!   fake clock and peers, that drives the relay as the server does; the
//!   relay's unit tests and its fuzz target run on it.
//! - [`client`]: the client's side of the protocol, shared by `chat-client`,
//!   the tests and the benchmarks.
//!
//! Reading order for a newcomer: `core` (what the rules are), then `relay`
//! (what happens to a connection's bytes), then `server` (how readiness
//! events become calls on the relay, and its answers system calls).

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod core;
pub mod logging;
pub mod output;
pub mod relay;
pub mod rlimit;
pub mod server;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod spin;
pub mod wire;

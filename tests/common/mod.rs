//! Shared helpers for the integration tests: start the real `chat-server`
//! binary on OS-chosen loopback ports and stop it when the test ends.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use portal_chat::client::{RetryPolicy, Session};

/// A `chat-server` child process. Killed when dropped.
pub struct TestServer {
    child: Child,
    pub portal: SocketAddr,
    pub workers: Vec<SocketAddr>,
    /// Kept open so the server never gets a broken pipe on stdout.
    _stdout: BufReader<ChildStdout>,
}

impl TestServer {
    /// Starts the server with `--port 0 --tick-ms 20` and then `args` (later
    /// flags win), and waits for it to print its listeners.
    pub fn start(args: &[&str]) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--port", "0", "--tick-ms", "20"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chat-server");
        let workers: usize = args
            .iter()
            .position(|a| *a == "--workers")
            .map(|i| args[i + 1].parse().unwrap())
            .unwrap_or(4);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut read_addr = |prefix: String| -> SocketAddr {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read server stdout");
            let addr = line
                .trim_end()
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"));
            addr.parse().unwrap()
        };
        let portal = read_addr("portal ".into());
        let workers = (1..=workers)
            .map(|n| read_addr(format!("worker {n} ")))
            .collect();
        TestServer {
            child,
            portal,
            workers,
            _stdout: stdout,
        }
    }

    pub fn host(&self) -> IpAddr {
        self.portal.ip()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Joins through the portal and the handshake, failing at once if full.
    pub fn join(&self) -> Session {
        let policy = RetryPolicy {
            retries: Some(0),
            delay: Duration::ZERO,
        };
        Session::join(self.host(), self.portal.port(), policy, |_| {}).expect("join")
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

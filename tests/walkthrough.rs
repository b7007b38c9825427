//! The README's walk-through with the real `nc` (netcat-openbsd), run as the
//! README writes it.
//!
//! The `nc` commands are read from the README's walk-through section itself,
//! so the flags run here are the flags written there; only the port numbers
//! (and the passcodes the portal hands out) are those of a test server on
//! OS-chosen ports. Every line a test expects from nc is also checked to
//! appear in that section, written with the README's ports. nc's stdin and
//! stdout are pipes: writing a line is typing it, and closing stdin is the
//! README's Ctrl-D. The test keeps nc's stdin open whenever the README has
//! the reader leave the keyboard alone, as a terminal would.
//!
//! Without netcat-openbsd on `PATH` these tests say that they skipped and
//! pass, unless `PORTAL_CHAT_REQUIRE_NC=1` (CI sets it), which makes that a
//! failure.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use common::{TestServer, wait_until};
use portal_chat::core::{PASSCODE_ALPHABET, PASSCODE_LEN};

/// The longest wait for any one expected thing: each happens within
/// milliseconds on loopback, and the margin is for loaded CI machines.
const LIMIT: Duration = Duration::from_secs(10);

const README: &str = include_str!("../README.md");

/// The ports the README's walk-through shows: the portal and the first pair.
const README_PORTAL: u16 = 50000;
const README_W1: u16 = 50001;
const README_W2: u16 = 50002;

/// The README's walk-through section, from its heading to the next one.
fn walk_through() -> &'static str {
    let heading = "\n## Walk-through with `nc`";
    let start = README
        .find(heading)
        .expect("README.md has a section headed \"Walk-through with `nc`\"")
        + 1;
    let rest = &README[start..];
    let end = rest[heading.len()..]
        .find("\n## ")
        .map_or(rest.len(), |i| i + heading.len());
    &rest[..end]
}

/// Whether the tests can run: netcat-openbsd is on `PATH`. If it is not,
/// says so (past the test harness's capture, so that a plain `cargo test`
/// shows it) and the test passes, unless `PORTAL_CHAT_REQUIRE_NC=1`.
fn netcat_present(test: &str) -> bool {
    let problem = match Command::new("nc").arg("-h").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "nc is not on PATH".to_string(),
        Err(e) => format!("nc cannot be run: {e}"),
        // `nc -h` prints its name and usage on stderr, and exits 1.
        Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("OpenBSD netcat") => {
            "the nc on PATH is not netcat-openbsd, the nc the README is written for".to_string()
        }
        Ok(_) => return true,
    };
    if std::env::var_os("PORTAL_CHAT_REQUIRE_NC").is_some_and(|v| v == "1") {
        panic!("{problem}, and PORTAL_CHAT_REQUIRE_NC=1 requires it: install netcat-openbsd");
    }
    let _ = writeln!(
        std::io::stderr(),
        "walkthrough: {test} SKIPPED: {problem} (install netcat-openbsd to run it; \
         PORTAL_CHAT_REQUIRE_NC=1 makes this a failure)"
    );
    false
}

/// Panics unless `code` has the form of a passcode the server hands out.
fn assert_passcode(code: &str, whose: &str) {
    assert!(
        code.len() == PASSCODE_LEN && code.bytes().all(|b| PASSCODE_ALPHABET.contains(&b)),
        "{whose} passcode {code:?} is not {PASSCODE_LEN} characters of {:?}",
        String::from_utf8_lossy(PASSCODE_ALPHABET)
    );
}

/// The README's ports, mapped to a test server's.
struct Walk {
    server: TestServer,
    /// (README port, the test server's port).
    ports: [(u16, u16); 3],
}

impl Walk {
    fn new(server: TestServer) -> Walk {
        assert_eq!(
            server.host().to_string(),
            "127.0.0.1",
            "the README's commands name 127.0.0.1"
        );
        let ports = [
            (README_PORTAL, server.portal.port()),
            (README_W1, server.workers[0].port()),
            (README_W2, server.workers[1].port()),
        ];
        Walk { server, ports }
    }

    /// `text` as the README writes it, with the test server's ports in
    /// place of the README's. In two steps, in case a port of the test
    /// server is one of the README's.
    fn real(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (i, (readme, _)) in self.ports.iter().enumerate() {
            out = out.replace(&readme.to_string(), &format!("\u{0}{i}\u{0}"));
        }
        for (i, (_, real)) in self.ports.iter().enumerate() {
            out = out.replace(&format!("\u{0}{i}\u{0}"), &real.to_string());
        }
        out
    }

    /// Panics unless the README's walk-through shows `text`.
    fn shown(&self, text: &str) {
        assert!(
            walk_through().contains(text),
            "the README's walk-through does not show {text:?}, which this test expects"
        );
    }

    /// Starts the README's `nc` command for `readme_port`, pointed at the
    /// test server's port instead.
    fn nc(&self, readme_port: u16) -> Nc {
        let wanted = readme_port.to_string();
        let commands: Vec<Vec<&str>> = walk_through()
            .lines()
            .filter_map(|line| line.strip_prefix("$ "))
            .map(|command| command.split_whitespace().collect::<Vec<_>>())
            .filter(|words| words.first() == Some(&"nc") && words.last() == Some(&wanted.as_str()))
            .collect();
        let Some(words) = commands.first() else {
            panic!("the README's walk-through has no `$ nc ... {readme_port}`");
        };
        assert!(
            commands.iter().all(|c| c == words),
            "the README's walk-through runs nc on port {readme_port} in different ways: {commands:?}"
        );
        let args: Vec<String> = words[1..].iter().map(|word| self.real(word)).collect();
        Nc::start(&args)
    }

    /// Asks the portal with the README's command, which must print one
    /// answer for the port that the README shows as `readme_port` and exit
    /// by itself with its stdin still open. Returns the passcode.
    fn ask_portal(&self, readme_port: u16) -> String {
        let mut portal = self.nc(README_PORTAL);
        let prefix = format!("SERVER>>>Port=>{readme_port},HandshakeCode=");
        let shown_code = walk_through()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("the README's walk-through does not show {prefix:?}"));
        assert_passcode(shown_code, "the README's example");
        let answer = portal.next_line();
        let code = answer
            .as_deref()
            .and_then(|line| line.strip_prefix(&self.real(&prefix)))
            .unwrap_or_else(|| panic!("{}: portal answered {answer:?}", portal.what))
            .to_string();
        assert_passcode(&code, "the portal's");
        portal.exits_by_itself();
        code
    }

    /// Connects to the worker port the README shows as `readme_port` with
    /// the README's command and pastes `code` as the first line.
    fn join(&self, readme_port: u16, code: &str) -> Nc {
        let mut nc = self.nc(readme_port);
        nc.type_line(code);
        self.expect(
            &nc,
            &format!("SERVER{readme_port}>>> Connection successful"),
        );
        nc
    }

    /// Panics unless the README shows `readme_line` and `nc` prints it next,
    /// with the test server's ports.
    fn expect(&self, nc: &Nc, readme_line: &str) {
        self.shown(readme_line);
        let want = self.real(readme_line);
        let got = nc.next_line();
        assert_eq!(got.as_deref(), Some(&*want), "{}", nc.what);
    }
}

/// A running `nc`. Killed if the test ends before it exits.
struct Nc {
    /// The command line, for messages.
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// nc's output, line by line; `None` once it has ended.
    stdout: Receiver<Option<String>>,
    /// What nc said on stderr, for messages.
    stderr: Receiver<String>,
}

impl Nc {
    fn start(args: &[String]) -> Nc {
        let mut child = Command::new("nc")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nc");
        let (out_tx, stdout) = mpsc::channel();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            loop {
                let mut line = String::new();
                match out.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = line.strip_suffix('\n').unwrap_or(&line).to_string();
                        if out_tx.send(Some(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = out_tx.send(None);
        });
        let (err_tx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = err_tx.send(text);
        });
        Nc {
            what: format!("nc {}", args.join(" ")),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Types `line` and Enter.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: typing {line:?}: {e}", self.what));
    }

    /// Ctrl-D: the end of nc's input.
    fn ctrl_d(&mut self) {
        self.stdin = None;
    }

    /// The next line nc prints; `None` if its output ended instead.
    fn next_line(&self) -> Option<String> {
        self.stdout
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("{}: printed nothing for {LIMIT:?}", self.what))
    }

    /// Panics unless nc prints nothing more and exits with status 0, without
    /// anything else being typed or closed.
    fn exits_by_itself(&mut self) {
        match self.stdout.recv_timeout(LIMIT) {
            Ok(None) => {}
            Ok(Some(line)) => panic!("{}: printed {line:?} instead of exiting", self.what),
            Err(_) => panic!("{}: still running after {LIMIT:?}", self.what),
        }
        let exited = wait_until(LIMIT, || self.child.try_wait().unwrap().is_some());
        assert!(exited, "{}: closed its output but did not exit", self.what);
        let status = self.child.wait().unwrap();
        let said = self.stderr.recv_timeout(LIMIT).unwrap_or_default();
        assert!(
            status.success(),
            "{}: {status}; stderr: {said:?}",
            self.what
        );
    }
}

impl Drop for Nc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The walk-through from the portal to both ways of leaving: Ctrl-D, which
/// ends nc by itself, and `CLIENT>>> TERMINATE`, after which the README has
/// the reader press Ctrl-D.
#[test]
fn the_walk_through_works_as_written() {
    if !netcat_present("the_walk_through_works_as_written") {
        return;
    }
    // The server's defaults, bar the ports: as `cargo run --bin chat-server`.
    let walk = Walk::new(TestServer::start(&[]));

    // Terminal 2.
    let code = walk.ask_portal(README_W1);
    let mut t2 = walk.join(README_W1, &code);
    walk.expect(&t2, "SERVER50001>>> Waiting for partner 50002");

    // Terminal 3.
    let code = walk.ask_portal(README_W2);
    let mut t3 = walk.join(README_W2, &code);
    walk.expect(&t3, "SERVER50002>>> Partner 50001 connected");
    t3.type_line("hello from 3");
    walk.expect(&t2, "SERVER50001>>> Partner 50002 connected");
    walk.expect(&t2, "hello from 3");
    t2.type_line("hello from 2");
    walk.expect(&t3, "hello from 2");

    // Terminal 2 leaves with Ctrl-D: nc -N passes it on, the server ends the
    // session and closes, and nc exits.
    t2.ctrl_d();
    t2.exits_by_itself();
    walk.expect(&t3, "SERVER50002>>> Partner 50001 left");

    // Terminal 3 leaves with TERMINATE, and is told; then Ctrl-D ends nc.
    t3.type_line("CLIENT>>> TERMINATE");
    walk.expect(&t3, "SERVER50002>>> Bye");
    t3.ctrl_d();
    t3.exits_by_itself();

    // Both ports are free again.
    common::wait_every_port_free(&walk.server, LIMIT).unwrap();
}

/// A session left silent: the server says TIMEOUT and closes, and Ctrl-D
/// ends nc, as the README says.
#[test]
fn a_silent_session_is_timed_out_as_the_walk_through_says() {
    if !netcat_present("a_silent_session_is_timed_out_as_the_walk_through_says") {
        return;
    }
    let walk = Walk::new(TestServer::start(&["--idle-timeout", "1"]));
    let code = walk.ask_portal(README_W1);
    let mut t2 = walk.join(README_W1, &code);
    walk.expect(&t2, "SERVER50001>>> Waiting for partner 50002");
    walk.expect(&t2, "SERVER>>> TIMEOUT");
    t2.ctrl_d();
    t2.exits_by_itself();
    common::wait_every_port_free(&walk.server, LIMIT).unwrap();
}

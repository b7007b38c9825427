//! Interoperability with real .NET framing: tests/dotnet/InteropClient.cs,
//! a C# client that talks through `BinaryReader`/`BinaryWriter` as the
//! original design's clients did, is compiled with Mono's `mcs`. It echoes
//! messages framed by `DotnetCodec` through .NET's own reader and writer,
//! and two instances of it chat through `chat-server --wire dotnet`.
//!
//! Without `mcs` and `mono` on PATH these tests say that they skipped and
//! pass, so a plain `cargo test` works on any machine; with
//! `PORTAL_CHAT_REQUIRE_MONO=1` (CI sets it) a missing tool is a failure.

mod common;

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use portal_chat::wire::{Codec, DotnetCodec, Inbox};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dotnet/InteropClient.cs");

/// How long one client may take for its whole script. Each of its reads
/// times out after 10 s by itself; this only stops a client that hangs in
/// some other way.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// Whether `tool` runs at all.
fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether `mcs` and `mono` are there; if not, either says so plainly (the
/// caller then returns, and the test passes) or, when CI requires them,
/// fails.
fn mono_available(test: &str) -> bool {
    let missing: Vec<&str> = ["mcs", "mono"]
        .into_iter()
        .filter(|tool| !available(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = format!("{} not on PATH", missing.join(" and "));
    if std::env::var_os("PORTAL_CHAT_REQUIRE_MONO").is_some_and(|v| v == "1") {
        panic!("{test}: {what}, and PORTAL_CHAT_REQUIRE_MONO=1 requires them");
    }
    // Straight to stderr, not through eprintln!, which the test harness
    // captures and hides for a test that passes.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {what} (install the Debian packages mono-mcs and mono-runtime to run it)"
    );
    false
}

/// Compiles the C# client into a directory of the test's own (tests run in
/// parallel) and returns the program's path. Warnings are errors, so the
/// client stays clean.
fn compile_client(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    fs::create_dir_all(&dir).expect("create the build directory");
    let exe = dir.join("InteropClient.exe");
    let output = Command::new("mcs")
        .arg("-warn:4")
        .arg("-warnaserror+")
        .arg(format!("-out:{}", exe.display()))
        .arg(SOURCE)
        .output()
        .expect("run mcs");
    assert!(
        output.status.success(),
        "mcs failed on {SOURCE}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// One running instance of the C# client, its output going to files (a
/// pipe nobody reads could fill up and stall it).
struct DotnetClient {
    role: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl DotnetClient {
    fn start(exe: &Path, server: &TestServer, role: &'static str) -> DotnetClient {
        let dir = exe.parent().unwrap();
        let stdout = dir.join(format!("{role}.stdout"));
        let stderr = dir.join(format!("{role}.stderr"));
        let child = Command::new("mono")
            .arg(exe)
            .arg(server.host().to_string())
            .arg(server.portal.port().to_string())
            .arg(role)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("start mono");
        DotnetClient {
            role,
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the client to exit (killing it after `limit`) and returns
    /// its status, or `None` if it had to be killed, with its output.
    fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = format!(
            "--- {} stdout\n{}--- {} stderr\n{}",
            self.role,
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.role,
            fs::read_to_string(&self.stderr).unwrap_or_default(),
        );
        (status, output)
    }
}

impl Drop for DotnetClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The codec and .NET agree on the format both ways: Mono reads what
/// `DotnetCodec` writes, and what Mono writes back is byte for byte the same
/// and decodes to the same texts. It needs no server, so it runs (and
/// compiles the C# client) even while the end-to-end test below waits. Lengths are chosen at the prefix's width
/// boundaries; texts are valid UTF-8, since .NET decodes them into strings.
#[test]
fn dotnet_reads_and_writes_what_the_codec_does() {
    if !mono_available("dotnet_reads_and_writes_what_the_codec_does") {
        return;
    }
    let exe = compile_client("dotnet_reads_and_writes_what_the_codec_does");
    let mut texts: Vec<Vec<u8>> = vec![
        b"hi".to_vec(),
        Vec::new(),
        "h\u{e9}llo \u{4f60}\u{597d} \u{1f642}".as_bytes().to_vec(),
        b"two\nlines\r\n".to_vec(),
    ];
    for len in [127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
        // Multi-byte characters across the whole text, topped up with ASCII
        // to the exact byte length.
        let mut text = "\u{e9}\u{4f60}\u{1f642}".repeat(len / 9).into_bytes();
        text.resize(len, b'x');
        texts.push(text);
    }
    let mut sent = Vec::new();
    for text in &texts {
        DotnetCodec.encode(text, &mut sent);
    }
    assert_eq!(sent[..3], [0x02, b'h', b'i']);

    let mut child = Command::new("mono")
        .arg(&exe)
        .arg("echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mono");
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread, so neither side waits on a full pipe.
    let writer = std::thread::spawn(move || stdin.write_all(&sent).map(|()| sent));
    let output = child.wait_with_output().expect("run the echo");
    let sent = writer.join().unwrap().expect("write to the echo");
    assert!(
        output.status.success(),
        "echo failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout == sent,
        "Mono wrote other bytes than the codec"
    );

    let mut inbox = Inbox::new();
    inbox.extend(&output.stdout);
    let mut got = Vec::new();
    while let Some((text, _)) = inbox.next_message(&DotnetCodec, usize::MAX).unwrap() {
        got.push(inbox.get(text).to_vec());
    }
    assert_eq!(inbox.pending(), 0);
    assert!(got == texts, "decoded other texts");
}

#[test]
fn two_dotnet_clients_chat_through_the_server() {
    if !mono_available("two_dotnet_clients_chat_through_the_server") {
        return;
    }
    let exe = compile_client("two_dotnet_clients_chat_through_the_server");
    // One pair of worker ports, so the two clients can only be each other's
    // partners.
    let server = TestServer::start(&["--wire", "dotnet", "--workers", "2"]);
    let first = DotnetClient::start(&exe, &server, "first");
    let second = DotnetClient::start(&exe, &server, "second");
    let results = [first.finish(CLIENT_LIMIT), second.finish(CLIENT_LIMIT)];
    let report: String = results.iter().map(|(_, output)| output.as_str()).collect();
    for (status, _) in &results {
        match status {
            Some(status) if status.success() => {}
            Some(status) => panic!("a .NET client failed ({status}):\n{report}"),
            None => panic!("a .NET client ran over {CLIENT_LIMIT:?} and was killed:\n{report}"),
        }
    }
    println!("{report}");
}

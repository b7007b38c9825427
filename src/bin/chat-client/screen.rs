//! What the user sees: the partner's lines, the server's notices and the
//! client's own messages.
//!
//! A stream that is a pipe or a file gets the bytes as they came, for
//! scripts. A stream that is a terminal is read by a person, and the
//! partner's bytes must not drive it: every control character is shown as
//! text ([`visible`]), so a partner can neither move the cursor (`\r`),
//! colour the screen (`ESC [31m`), retitle the window (OSC) nor draw a line
//! that passes for a server notice. There, chat lines are labelled with the
//! time and the partner's port, and notices with the time (in bold, which a
//! partner cannot write, unless `NO_COLOR` is set). A partner's line too
//! long for one row goes on in rows of its own, indented under the label
//! ([`wrap`]), so that no row the partner fills begins where a notice or
//! one of the user's lines would.
//!
//! With `--wire dotnet` a partner's message may hold any byte, `\r` and
//! `\n` included, since its length says where it ends. It is shown by the
//! same rules as a line: on a terminal `\n` is `^J` and `\r` is `^M`, so one
//! message is one row (and the rows it wraps onto), never a second row the
//! partner begins; in a pipe or a file the message is written byte for
//! byte and then `\n`, as a line is, so a script that reads lines reads a
//! message holding a `\n` as several. Escaping there would hand scripts
//! bytes the partner did not send, in the one place where bytes are meant
//! to pass as they are.
//!
//! While the line editor runs, everything meant for the terminal goes
//! through it ([`Editor::print`]), so that it appears above the prompt and
//! the user's half-typed line is drawn again below it.

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write};

use crate::editor::Editor;

/// Where each kind of output goes, and in which form.
pub struct Screen {
    /// Whether stdout is a terminal: chat lines are labelled and made
    /// visible.
    stdout_is_terminal: bool,
    /// Whether stderr is a terminal: notices are time-stamped and made
    /// visible.
    stderr_is_terminal: bool,
    /// Whether notices on a terminal are in bold.
    bold: bool,
    /// The partner's port, for the label of its lines.
    partner: u16,
    /// The line editor, while it runs.
    editor: Option<Editor>,
}

impl Screen {
    /// Output for a chat with the partner on port `partner`, printed through
    /// `editor` if there is one.
    pub fn new(partner: u16, editor: Option<Editor>) -> Screen {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
        Screen {
            stdout_is_terminal: io::stdout().is_terminal(),
            stderr_is_terminal: io::stderr().is_terminal(),
            bold: !no_color && !dumb,
            partner,
            editor,
        }
    }

    /// The prompt of the line editor: "you> ", right-aligned under the
    /// partner's label so that both sides of the chat line up.
    pub fn prompt(partner: u16) -> String {
        let label = partner_label("00:00:00", partner);
        format!("{:>width$}", "you> ", width = label.len())
    }

    /// Prints a partner's line (a whole message, on either wire), as it
    /// arrives.
    pub fn partner_line(&mut self, line: &[u8]) -> io::Result<()> {
        if !self.stdout_is_terminal {
            let mut stdout = io::stdout().lock();
            stdout.write_all(line)?;
            stdout.write_all(b"\n")?;
            // Flushed here rather than left to the buffering rules: a person
            // or a script reading stdout must see each line as it arrives.
            return stdout.flush();
        }
        let label = partner_label(&clock(), self.partner);
        let text = visible(line);
        let text = match terminal_width() {
            Some(width) => format!("{label}{}", wrap(&text, label.len(), width)),
            None => format!("{label}{text}"),
        };
        match &self.editor {
            Some(editor) => {
                editor.print(text);
                Ok(())
            }
            None => {
                let mut stdout = io::stdout().lock();
                writeln!(stdout, "{text}")?;
                stdout.flush()
            }
        }
    }

    /// Prints a server notice (a line beginning with `SERVER`).
    pub fn notice(&mut self, notice: &str) {
        if !self.stderr_is_terminal {
            eprintln!("{notice}");
            return;
        }
        // The server writes its notices itself, but a terminal is shown
        // nothing raw, whoever wrote it.
        let text = format!("[{}] {}", clock(), visible(notice.as_bytes()));
        let text = if self.bold {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text
        };
        self.print_as_stderr(text);
    }

    /// Prints one of the client's own messages: `chat-client: ...`. A
    /// message of several lines is printed as they are.
    pub fn say(&mut self, message: impl fmt::Display) {
        self.print_as_stderr(format!("chat-client: {message}"));
    }

    /// Prints `text` on stderr, through the line editor if it is drawing on
    /// the same terminal.
    fn print_as_stderr(&mut self, text: String) {
        match &self.editor {
            Some(editor) if self.stderr_is_terminal => {
                for line in text.lines() {
                    editor.print(line.to_string());
                }
            }
            _ => eprintln!("{text}"),
        }
    }

    /// Stops the line editor, if there is one, once everything given to it
    /// is on the screen, and gives the terminal back as it was.
    pub fn finish(&mut self) {
        if let Some(editor) = self.editor.take() {
            editor.finish();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The label before a partner's line: `[14:03:07] 50002> `.
fn partner_label(clock: &str, partner: u16) -> String {
    format!("[{clock}] {partner}> ")
}

/// `bytes` as text that shows every character and drives nothing:
///
/// - the C0 controls and DEL in caret notation, as `cat -v` and readline
///   show them: `^M` for `\r`, `^[` for ESC, `^I` for a tab, `^?` for DEL;
/// - the C1 controls (U+0080 to U+009F, which some terminals obey as ESC
///   sequences), the bidirectional overrides, embeddings and isolates (which
///   reorder what follows on the screen) and the line and paragraph
///   separators, as `\u{9b}`, `\u{202e}`, ...;
/// - bytes that are not UTF-8 as `\xNN`, each;
/// - everything else as it is.
///
/// A partner can type `^[` or `\x1b` as text, which shows the same as the
/// escaped character: that is harmless, since neither drives the terminal.
pub fn visible(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\0'..='\x1f' => {
                    text.push('^');
                    text.push(char::from(c as u8 + b'@'));
                }
                '\x7f' => text.push_str("^?"),
                '\u{80}'..='\u{9f}'
                | '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' => {
                    let _ = write!(text, "\\u{{{:x}}}", u32::from(c));
                }
                _ => text.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

/// `text` (made [`visible`]) broken into rows for a terminal `width`
/// columns wide, after a label `indent` columns wide: each row after the
/// first begins with `indent` spaces.
///
/// Left to the terminal, a long line would go on at the left edge of the
/// next row, and a partner could pad a line with spaces so that the next
/// row reads `[14:03:08] SERVER50001>>> Partner 50002 left`. So rows are
/// broken here, one column short of the edge, counting every character but
/// printable ASCII as two columns wide: a row may end early, but never
/// reaches the edge and is never carried on by the terminal. On a terminal
/// too narrow for that, `text` is left whole.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    // At least this many columns for the text, or it is not worth it.
    const NARROWEST: usize = 8;
    let room = width.saturating_sub(indent + 1);
    if room < NARROWEST {
        return text.to_string();
    }
    let mut wrapped = String::with_capacity(text.len());
    let mut used = 0;
    for c in text.chars() {
        let columns = if c == ' ' || c.is_ascii_graphic() {
            1
        } else {
            2
        };
        if used + columns > room {
            wrapped.push('\n');
            wrapped.extend(std::iter::repeat_n(' ', indent));
            used = 0;
        }
        wrapped.push(c);
        used += columns;
    }
    wrapped
}

/// The width of the terminal on stdout, in columns, if it says.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills in a `winsize`, plain data, or fails, in
    // which case it is not read.
    let size = unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) != 0 {
            return None;
        }
        size
    };
    (size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// The local time of day, `HH:MM:SS`.
fn clock() -> String {
    // SAFETY: `time` with a null pointer only returns the time. `tm` is
    // plain data that `localtime_r` fills in, in a buffer of our own (the
    // re-entrant form, as other threads run); a null result means it failed
    // and `tm` is not read.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return "--:--:--".to_string();
        }
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        for (raw, shown) in [
            (
                &b"x\rSERVER50003>>> Partner 50004 left"[..],
                "x^MSERVER50003>>> Partner 50004 left",
            ),
            (b"\x1b[31mred", "^[[31mred"),
            (b"\x1b]0;title\x07", "^[]0;title^G"),
            (b"tab\there\0nul\x7fdel", "tab^Ihere^@nul^?del"),
            (b"\x1f\x01", "^_^A"),
            // A .NET message may hold line ends: they stay on one row.
            (
                b"one\ntwo\r\n[12:00:00] SERVER>>> x",
                "one^Jtwo^M^J[12:00:00] SERVER>>> x",
            ),
            // C1 controls in UTF-8: CSI (U+009B) and OSC (U+009D).
            (
                "\u{9b}31m \u{9d}0;t\u{9c}".as_bytes(),
                "\\u{9b}31m \\u{9d}0;t\\u{9c}",
            ),
            // A right-to-left override would turn what follows around.
            ("abc\u{202e}fed".as_bytes(), "abc\\u{202e}fed"),
            // Not UTF-8: a lone CSI byte, a cut-off sequence.
            (b"\x9b31m \xe2\x82", "\\x9b31m \\xe2\\x82"),
            // Text, accents and all, is left alone.
            (
                "h\u{e9}llo \u{4e16}\u{754c} ^M \\x1b".as_bytes(),
                "h\u{e9}llo \u{4e16}\u{754c} ^M \\x1b",
            ),
        ] {
            assert_eq!(visible(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn nothing_shown_can_drive_a_terminal() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let shown = visible(&every_byte);
        assert!(
            shown.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
            "{shown:?}"
        );
    }

    #[test]
    fn long_lines_go_on_indented_and_short_of_the_edge() {
        // 4 columns of label, 13 of terminal: 8 for the text on each row.
        assert_eq!(
            wrap("abcdefghijklmnopqrst", 4, 13),
            "abcdefgh\n    ijklmnop\n    qrst"
        );
        assert_eq!(wrap("abcdefgh", 4, 13), "abcdefgh");
        // Anything but printable ASCII counts as two columns.
        assert_eq!(
            wrap("abcdef\u{e9}\u{e9}x", 4, 13),
            "abcdef\u{e9}\n    \u{e9}x"
        );
        // Too narrow to be worth it.
        assert_eq!(wrap("abcdefghijklmnopqrst", 4, 12), "abcdefghijklmnopqrst");
    }

    #[test]
    fn the_prompt_lines_up_with_the_partner_label() {
        let label = partner_label("14:03:07", 50002);
        assert_eq!(label, "[14:03:07] 50002> ");
        let prompt = Screen::prompt(50002);
        assert_eq!(prompt.len(), label.len());
        assert!(prompt.ends_with(" you> "), "{prompt:?}");
        assert_eq!(clock().len(), 8);
    }
}

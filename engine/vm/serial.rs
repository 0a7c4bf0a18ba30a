//! A VM's serial console: the guest's first serial port as QEMU serves it on
//! a Unix socket (`-chardev socket,id=serial0,path=...,server=on,wait=off,
//! logfile=<run>/logs/serial.log,logappend=on -serial chardev:serial0`;
//! QEMU itself writes the raw transcript to the run's logs).
//!
//! A background reader keeps a bounded transcript of what the guest printed,
//! with ANSI/VT escape sequences and carriage returns removed, so
//! [`SerialConsole::expect`] matches plain text. Like `expect(1)`, each match
//! moves a mark past it: the next `expect` only sees newer text. The reader
//! answers the cursor-position query `ESC [ 6 n` (busybox ash sends it after
//! its prompt and waits for the reply) with `ESC [ 24 ; 1 R`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;

/// Text kept for matching; older text is dropped (the log file has it all).
const KEEP_TEXT: usize = 1 << 20;
/// What the reader answers to `ESC [ 6 n`: a 24-line terminal, cursor at the
/// start of its last line.
const CURSOR_REPORT: &[u8] = b"\x1b[24;1R";

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot connect to the serial console at {}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("serial console: {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("no serial output matched /{pattern}/ within {:.1}s; last output:\n{tail}", waited.as_secs_f64())]
    Timeout { pattern: String, waited: Duration, tail: String },
    #[error("the serial console closed before output matched /{pattern}/; last output:\n{tail}")]
    Closed { pattern: String, tail: String },
}

/// What an `expect` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialMatch {
    /// The matched text.
    pub matched: String,
    /// Text between the previous mark and the match.
    pub before: String,
    /// Capture groups (index 0 is the whole match); `None` for groups that did not take part.
    pub groups: Vec<Option<String>>,
}

/// A connected serial console.
pub struct SerialConsole {
    path: PathBuf,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SerialConsole({})", self.path.display())
    }
}

struct Shared {
    state: Mutex<Transcript>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// The cleaned text with absolute offsets (text dropped from the front
/// still counts), and the `expect` mark.
#[derive(Default)]
struct Transcript {
    text: String,
    /// Absolute offset of `text[0]`.
    base: usize,
    /// Absolute offset where the next `expect` starts looking.
    mark: usize,
    closed: bool,
    raw_bytes: u64,
    cursor_queries: u64,
}

impl Transcript {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        if self.text.len() > KEEP_TEXT {
            let mut cut = self.text.len() - KEEP_TEXT / 2;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.base += cut;
        }
    }

    fn tail(&self, chars: usize) -> String {
        let skip = self.text.chars().count().saturating_sub(chars);
        self.text.chars().skip(skip).collect()
    }
}

impl SerialConsole {
    /// Connect to the socket QEMU serves, retrying until it appears (QEMU
    /// creates it right after start) or `timeout` passes.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<SerialConsole, SerialError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(SerialError::Connect { path: path.to_path_buf(), source: e });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        Ok(SerialConsole::from_stream(path, stream))
    }

    /// Run a console over an already connected stream.
    pub fn from_stream(path: &Path, stream: UnixStream) -> SerialConsole {
        let (read, write) = stream.into_split();
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared { state: Mutex::new(Transcript::default()), changed });
        let reader = tokio::spawn(read_loop(read, shared.clone(), writer.clone()));
        SerialConsole { path: path.to_path_buf(), writer, shared, reader }
    }

    /// Wait until the text after the mark matches `pattern`, then move the
    /// mark past the match.
    pub async fn expect(&self, pattern: &regex::Regex, timeout: Duration) -> Result<SerialMatch, SerialError> {
        let started = Instant::now();
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let mut t = self.lock();
                let from = t.mark.max(t.base) - t.base;
                if let Some(c) = pattern.captures(&t.text[from..]) {
                    let (start, end) = c.get(0).map(|m| (m.start(), m.end())).unwrap_or((0, 0));
                    let found = SerialMatch {
                        matched: t.text[from + start..from + end].to_string(),
                        before: t.text[from..from + start].to_string(),
                        groups: c.iter().map(|g| g.map(|g| g.as_str().to_string())).collect(),
                    };
                    t.mark = t.base + from + end;
                    return Ok(found);
                }
                if t.closed {
                    return Err(SerialError::Closed { pattern: pattern.as_str().to_string(), tail: t.tail(400) });
                }
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                let tail = self.lock().tail(400);
                return Err(SerialError::Timeout {
                    pattern: pattern.as_str().to_string(),
                    waited: started.elapsed(),
                    tail,
                });
            }
        }
    }

    /// Send bytes to the guest as typed.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), SerialError> {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await.map_err(|e| SerialError::Io { what: "send".into(), source: e })?;
        w.flush().await.map_err(|e| SerialError::Io { what: "send".into(), source: e })
    }

    /// Send a line of text followed by Enter (a carriage return, as a
    /// terminal sends it).
    pub async fn send_line(&self, line: &str) -> Result<(), SerialError> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\r');
        self.send(&bytes).await
    }

    /// Forget everything received so far for `expect` (the transcript keeps it).
    pub fn mark_end(&self) {
        let mut t = self.lock();
        t.mark = t.base + t.text.len();
    }

    /// The cleaned text still kept (up to about 1 MiB, newest last).
    pub fn transcript(&self) -> String {
        self.lock().text.clone()
    }

    /// Raw bytes received since connecting.
    pub fn bytes_received(&self) -> u64 {
        self.lock().raw_bytes
    }

    /// How many cursor-position queries the guest sent (and got answered).
    pub fn cursor_queries(&self) -> u64 {
        self.lock().cursor_queries
    }

    /// Whether the peer (QEMU) closed the connection.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Transcript> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SerialConsole {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    mut read: tokio::net::unix::OwnedReadHalf,
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
) {
    let mut strip = EscapeStripper::default();
    let mut utf8_tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut count = 0u64;
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut clean = std::mem::take(&mut utf8_tail);
        let queries = strip.feed(&buf[..n], &mut clean);
        for _ in 0..queries {
            let mut w = writer.lock().await;
            if w.write_all(CURSOR_REPORT).await.is_err() {
                tracing::debug!("serial: could not answer a cursor position query");
            }
        }
        let text = decode_utf8(&mut clean, &mut utf8_tail);
        {
            let mut t = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            t.raw_bytes += n as u64;
            t.cursor_queries += queries as u64;
            t.push(&text);
        }
        count += 1;
        shared.changed.send_replace(count);
    }
    shared.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
    shared.changed.send_replace(count + 1);
}

/// Decode `bytes` as UTF-8 (invalid sequences become U+FFFD), keeping an
/// incomplete sequence at the end in `tail` for the next read.
fn decode_utf8(bytes: &mut Vec<u8>, tail: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(len) => {
                        out.push('\u{fffd}');
                        rest = &bad[len..];
                    }
                    None => {
                        tail.extend_from_slice(bad);
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Removes ANSI/VT escape sequences (CSI, OSC, DCS and friends, two-byte
/// escapes, charset selections), carriage returns and other control bytes
/// except newline and tab, across read boundaries; counts `ESC [ 6 n`.
#[derive(Default)]
pub struct EscapeStripper {
    state: StripState,
    params: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum StripState {
    #[default]
    Ground,
    Escape,
    /// ESC followed by an intermediate (`(`, `)`, `#`...): one more byte.
    EscapeIntermediate,
    Csi,
    /// OSC, DCS, SOS, PM, APC: until BEL or ESC \.
    String,
    StringEscape,
}

impl EscapeStripper {
    /// Append the plain bytes of `input` to `out`; returns how many
    /// cursor-position queries it contained.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut queries = 0;
        for &b in input {
            match self.state {
                StripState::Ground => match b {
                    0x1b => self.state = StripState::Escape,
                    b'\n' | b'\t' => out.push(b),
                    0x00..=0x1f | 0x7f => {}
                    _ => out.push(b),
                },
                StripState::Escape => {
                    self.state = match b {
                        b'[' => {
                            self.params.clear();
                            StripState::Csi
                        }
                        b']' | b'P' | b'X' | b'^' | b'_' => StripState::String,
                        0x20..=0x2f => StripState::EscapeIntermediate,
                        0x1b => StripState::Escape,
                        _ => StripState::Ground,
                    }
                }
                StripState::EscapeIntermediate => self.state = StripState::Ground,
                StripState::Csi => match b {
                    0x20..=0x3f if self.params.len() < 32 => self.params.push(b),
                    0x20..=0x3f => {}
                    0x40..=0x7e => {
                        if b == b'n' && self.params == b"6" {
                            queries += 1;
                        }
                        self.state = StripState::Ground;
                    }
                    0x1b => self.state = StripState::Escape,
                    // control bytes inside a sequence are executed, not part of it
                    b'\n' => out.push(b),
                    _ => {}
                },
                StripState::String => match b {
                    0x07 => self.state = StripState::Ground,
                    0x1b => self.state = StripState::StringEscape,
                    _ => {}
                },
                StripState::StringEscape => {
                    self.state = if b == b'\\' { StripState::Ground } else { StripState::String };
                }
            }
        }
        queries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip_all(chunks: &[&[u8]]) -> (String, usize) {
        let mut s = EscapeStripper::default();
        let mut out = Vec::new();
        let mut q = 0;
        for c in chunks {
            q += s.feed(c, &mut out);
        }
        (String::from_utf8(out).unwrap(), q)
    }

    #[test]
    fn escapes_and_carriage_returns_are_removed_even_when_split() {
        let (text, q) = strip_all(&[
            b"\x1b[1;32mOK\x1b[0m done\r\n",
            b"\x1b]0;title\x07A\x1b[",
            b"?25lB\x1b(BC\x1b7D\x1b8\x1bP1$r\x1b\\E\x1b[6",
            b"n~ \x08\n",
        ]);
        assert_eq!(text, "OK done\nABCDE~ \n");
        assert_eq!(q, 1);
    }

    #[test]
    fn utf8_split_across_reads_is_kept_whole() {
        let mut tail = Vec::new();
        let mut a = "gr\u{fc}".as_bytes().to_vec();
        let last = a.pop().unwrap();
        let first = decode_utf8(&mut a, &mut tail);
        let mut b = tail.clone();
        tail.clear();
        b.push(last);
        b.extend_from_slice(b"n\xff");
        let second = decode_utf8(&mut b, &mut tail);
        assert_eq!(format!("{first}{second}"), "gr\u{fc}n\u{fffd}");
        assert!(tail.is_empty());
    }

    #[tokio::test]
    async fn expect_moves_a_mark_send_reaches_the_peer_and_cursor_queries_are_answered() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let console = SerialConsole::from_stream(Path::new("pair"), ours);
        peer.write_all(b"boot\r\n\x1b[1mREADY-1\x1b[0m\r\nguest# \x1b[6n").await.unwrap();
        let re = regex::Regex::new(r"READY-(\d)").unwrap();
        let m = console.expect(&re, Duration::from_secs(5)).await.unwrap();
        assert_eq!((m.matched.as_str(), m.before.as_str()), ("READY-1", "boot\n"));
        assert_eq!(m.groups[1].as_deref(), Some("1"));
        let mut reply = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut reply)).await.unwrap().unwrap();
        assert_eq!(&reply, CURSOR_REPORT);
        assert_eq!(console.cursor_queries(), 1);
        // the same text is not matched twice
        let e = console.expect(&re, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, SerialError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("guest# "), "{e}");
        console.send_line("echo hi").await.unwrap();
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"echo hi\r");
        peer.write_all(b"READY-2").await.unwrap();
        let m = console.expect(&re, Duration::from_secs(5)).await.unwrap();
        assert_eq!(m.matched, "READY-2");
        drop(peer);
        let e = console.expect(&re, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, SerialError::Closed { .. }), "{e}");
        assert!(console.is_closed());
    }

    #[test]
    fn transcript_is_bounded_and_offsets_stay_absolute() {
        let mut t = Transcript::default();
        let chunk = "x".repeat(4096);
        for _ in 0..(KEEP_TEXT / 4096 + 10) {
            t.push(&chunk);
        }
        assert!(t.text.len() <= KEEP_TEXT);
        assert_eq!(t.base + t.text.len(), (KEEP_TEXT / 4096 + 10) * 4096);
    }
}

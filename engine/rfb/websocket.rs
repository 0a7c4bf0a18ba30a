//! RFB over a websocket (RFC 6455), client side: what noVNC-style proxies
//! (websockify, Proxmox VE's `vncwebsocket`) speak.
//!
//! [`connect`] runs the HTTP/1.1 upgrade on an already open stream (plain TCP
//! for `ws://`, TLS for `wss://`) and returns a [`WebSocketStream`]: a byte
//! stream again. RFB bytes go out as masked binary frames; incoming binary
//! and continuation frames are concatenated, whatever way the server split
//! the RFB messages. Pings are answered, a close frame is answered and ends
//! the stream. Frame sizes are bounded, so a hostile server cannot make the
//! client allocate without limit.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The GUID RFC 6455 appends to the key for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The subprotocol of raw RFB bytes in binary frames.
pub const SUBPROTOCOL: &str = "binary";
/// Largest handshake response accepted (headers only).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest frame payload accepted from the server. Proxies send at most a
/// socket read (Proxmox: 128 KiB; websockify: 64 KiB) per frame.
pub const MAX_FRAME_PAYLOAD: u64 = 16 * 1024 * 1024;
/// Largest payload of one frame we send (Proxmox accepts up to 128 KiB).
const MAX_SEND_PAYLOAD: usize = 64 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Why the websocket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    #[error("websocket URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the websocket upgrade was refused: {status_line}{}", if body.is_empty() { String::new() } else { format!(" ({body})") })]
    Refused { status_line: String, body: String },
    #[error("the websocket upgrade answer is wrong: {0}")]
    Handshake(String),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
}

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketUrl {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub resource: String,
}

impl WebSocketUrl {
    pub fn parse(text: &str) -> Result<WebSocketUrl, WebSocketError> {
        let bad = |reason: &str| WebSocketError::Url { url: redact_query(text), reason: reason.to_string() };
        let (secure, rest) = if let Some(rest) = text.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(bad("must start with ws:// or wss://"));
        };
        let (authority, resource) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("user:password@ in the URL is not supported: give credentials as headers"));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("an IPv6 address needs a closing ]"))?;
            let host = &v6[..end];
            let port = match &v6[end + 1..] {
                "" => default_port,
                p => p.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(|| bad("the port is not a number"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => {
                    (h.to_string(), p.parse().map_err(|_| bad("the port is not a number from 1 to 65535"))?)
                }
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(WebSocketUrl { secure, host, port, resource })
    }

    /// `Host:` header value.
    fn host_header(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default { host } else { format!("{host}:{}", self.port) }
    }
}

impl std::fmt::Display for WebSocketUrl {
    /// The URL without its query (queries carry tickets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        let path = self.resource.split('?').next().unwrap_or("/");
        let query = if self.resource.contains('?') { "?..." } else { "" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}{path}{query}", self.port)
    }
}

/// A URL for messages: its query (which may carry a ticket) replaced by `...`.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_string(),
    }
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(ACCEPT_GUID.as_bytes());
    data_encoding::BASE64.encode(&hasher.finalize())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], WebSocketError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| WebSocketError::Io { what: "getting random bytes", source: io::Error::other(e.to_string()) })?;
    Ok(bytes)
}

/// Run the upgrade on `stream` and return the websocket byte stream.
/// `headers` go into the request as given (authentication, cookies).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    url: &WebSocketUrl,
    headers: &[(String, String)],
) -> Result<WebSocketStream<S>, WebSocketError> {
    let key = data_encoding::BASE64.encode(&random_bytes::<16>()?);
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n",
        url.resource,
        url.host_header()
    );
    for (name, value) in headers {
        if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
            return Err(WebSocketError::Handshake(format!("header {name:?} contains a line break or colon")));
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let io_err = |what| move |source| WebSocketError::Io { what, source };
    stream.write_all(request.as_bytes()).await.map_err(io_err("sending the websocket upgrade"))?;
    stream.flush().await.map_err(io_err("sending the websocket upgrade"))?;

    // Read the response head byte-wise chunks until the blank line; keep
    // whatever follows it (the server may already have sent RFB bytes).
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(pos) = find_head_end(&head) {
            break pos;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(WebSocketError::Handshake(format!("no end of headers in the first {MAX_RESPONSE_HEAD} bytes")));
        }
        let n = stream.read(&mut chunk).await.map_err(io_err("reading the websocket upgrade answer"))?;
        if n == 0 {
            return Err(WebSocketError::Handshake(
                "the server closed the connection instead of answering the upgrade".into(),
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let leftover = head.split_off(end + 4);
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "101" {
        let body = String::from_utf8_lossy(&leftover).chars().take(200).collect::<String>().trim().to_string();
        return Err(WebSocketError::Refused { status_line, body });
    }
    let mut accept = None;
    let mut protocol = None;
    let mut upgrade = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "sec-websocket-accept" => accept = Some(value.to_string()),
            "sec-websocket-protocol" => protocol = Some(value.to_string()),
            "upgrade" => upgrade = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    if upgrade.as_deref() != Some("websocket") {
        return Err(WebSocketError::Handshake("no `Upgrade: websocket` header".into()));
    }
    if accept.as_deref() != Some(accept_key(&key).as_str()) {
        return Err(WebSocketError::Handshake("Sec-WebSocket-Accept does not match the key sent".into()));
    }
    if let Some(p) = protocol
        && !p.eq_ignore_ascii_case(SUBPROTOCOL)
    {
        return Err(WebSocketError::Handshake(format!("the server chose subprotocol {p:?}, not {SUBPROTOCOL:?}")));
    }
    Ok(WebSocketStream::new(stream, leftover))
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A frame header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
    /// Bytes the header took.
    pub header_len: usize,
}

/// Parse a frame header from the start of `bytes`: `Ok(None)` when more bytes
/// are needed; an error for what RFC 6455 forbids or the limits refuse.
pub fn parse_header(bytes: &[u8]) -> io::Result<Option<FrameHeader>> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    let fin = bytes[0] & 0x80 != 0;
    if bytes[0] & 0x70 != 0 {
        return Err(protocol_error("a frame has reserved bits set (no extension was agreed)"));
    }
    let opcode = bytes[0] & 0x0f;
    let masked = bytes[1] & 0x80 != 0;
    let (len, mut at) = match bytes[1] & 0x7f {
        126 => {
            if bytes.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4)
        }
        127 => {
            if bytes.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        if bytes.len() < at + 4 {
            return Ok(None);
        }
        let m = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    if opcode >= 0x8 && (len > 125 || !fin) {
        return Err(protocol_error("a control frame is fragmented or longer than 125 bytes"));
    }
    if len > MAX_FRAME_PAYLOAD {
        return Err(protocol_error(&format!("a frame of {len} bytes (at most {MAX_FRAME_PAYLOAD} accepted)")));
    }
    Ok(Some(FrameHeader { fin, opcode, mask, len, header_len: at }))
}

/// Encode one frame (masked with `mask` when given) into `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {what}"))
}

/// A websocket carrying a byte stream (the `binary` subprotocol).
pub struct WebSocketStream<S> {
    inner: S,
    /// Raw bytes read from `inner` not yet parsed.
    raw: Vec<u8>,
    /// Payload bytes of the current data frame still to come.
    remaining: u64,
    /// Unmasking of the current frame (servers must not mask, but tolerate).
    mask: Option<([u8; 4], u64)>,
    /// Encoded frames waiting to be written (our data, pongs, close).
    out: Vec<u8>,
    out_at: usize,
    /// The peer sent a close frame (or the socket ended): reads return EOF.
    closed: bool,
    close_sent: bool,
}

impl<S> WebSocketStream<S> {
    /// A websocket on a stream whose upgrade already happened (for in-test
    /// peers and fuzzing; [`connect`] is the way in otherwise).
    pub fn after_upgrade(inner: S) -> WebSocketStream<S> {
        WebSocketStream::new(inner, Vec::new())
    }

    fn new(inner: S, leftover: Vec<u8>) -> WebSocketStream<S> {
        WebSocketStream {
            inner,
            raw: leftover,
            remaining: 0,
            mask: None,
            out: Vec::new(),
            out_at: 0,
            closed: false,
            close_sent: false,
        }
    }

    fn queue(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = random_bytes::<4>().map_err(|e| io::Error::other(e.to_string()))?;
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        encode_frame(&mut self.out, opcode, payload, Some(mask));
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// Write queued frame bytes; `Ready(Ok)` once all are written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Read more raw bytes from the socket; `Ok(false)` on end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; 16 * 1024];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.raw.extend_from_slice(buf.filled());
        Poll::Ready(Ok(n > 0))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Answer pings and closes as soon as possible; a write that would
        // block stays queued for the next write or flush.
        if this.out_at < this.out.len() {
            let _ = this.poll_drain(cx)?;
        }
        loop {
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.remaining > 0 && !this.raw.is_empty() {
                let n = (this.remaining.min(this.raw.len() as u64) as usize).min(buf.remaining());
                let mut data: Vec<u8> = this.raw.drain(..n).collect();
                if let Some((m, at)) = this.mask.as_mut() {
                    for b in data.iter_mut() {
                        *b ^= m[(*at % 4) as usize];
                        *at += 1;
                    }
                }
                this.remaining -= n as u64;
                buf.put_slice(&data);
                return Poll::Ready(Ok(()));
            }
            if this.remaining == 0
                && let Some(header) = parse_header(&this.raw)?
            {
                let total = header.header_len as u64 + header.len;
                match header.opcode {
                    OP_BINARY | OP_CONTINUATION => {
                        this.raw.drain(..header.header_len);
                        this.remaining = header.len;
                        this.mask = header.mask.map(|m| (m, 0));
                        continue;
                    }
                    OP_TEXT => {
                        return Poll::Ready(Err(protocol_error(
                            "the server sent a text frame; RFB needs the binary subprotocol",
                        )));
                    }
                    OP_PING | OP_PONG | OP_CLOSE => {
                        if (this.raw.len() as u64) < total {
                            // a control frame is at most 125 bytes: wait for all of it
                        } else {
                            let mut payload: Vec<u8> =
                                this.raw.drain(..total as usize).skip(header.header_len).collect();
                            if let Some(m) = header.mask {
                                for (i, b) in payload.iter_mut().enumerate() {
                                    *b ^= m[i % 4];
                                }
                            }
                            match header.opcode {
                                OP_PING => this.queue(OP_PONG, &payload)?,
                                OP_CLOSE => {
                                    if !this.close_sent {
                                        this.close_sent = true;
                                        this.queue(OP_CLOSE, payload.get(..2).unwrap_or_default())?;
                                    }
                                    this.closed = true;
                                }
                                _ => {}
                            }
                            let _ = this.poll_drain(cx)?;
                            continue;
                        }
                    }
                    other => {
                        return Poll::Ready(Err(protocol_error(&format!("unknown opcode {other:#x}"))));
                    }
                }
            }
            if !ready!(this.poll_fill(cx))? {
                if this.remaining > 0 || !this.raw.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "websocket: the connection ended inside a frame",
                    )));
                }
                this.closed = true;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "websocket: the connection is closing")));
        }
        // Bounded buffering: one frame in flight at most.
        ready!(this.poll_drain(cx))?;
        let n = data.len().min(MAX_SEND_PAYLOAD);
        this.queue(OP_BINARY, &data[..n])?;
        // Try to send it now; if the socket is full it stays queued.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(this.poll_drain(cx))?;
            this.close_sent = true;
            // 1000: normal closure
            this.queue(OP_CLOSE, &1000u16.to_be_bytes())?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn url_parsing() {
        let u = WebSocketUrl::parse(
            "wss://pve.example:8006/api2/json/nodes/n1/qemu/100/vncwebsocket?port=5900&vncticket=PVEVNC%3Aabc",
        )
        .unwrap();
        assert!(u.secure);
        assert_eq!((u.host.as_str(), u.port), ("pve.example", 8006));
        assert!(u.resource.starts_with("/api2/json/nodes/n1/qemu/100/vncwebsocket?port=5900"));
        assert_eq!(u.to_string(), "wss://pve.example:8006/api2/json/nodes/n1/qemu/100/vncwebsocket?...");
        let u = WebSocketUrl::parse("ws://127.0.0.1:6080").unwrap();
        assert_eq!((u.secure, u.port, u.resource.as_str()), (false, 6080, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:6080");
        let u = WebSocketUrl::parse("ws://[::1]/websockify").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(u.host_header(), "[::1]");
        assert_eq!(WebSocketUrl::parse("wss://h?x=1").unwrap().resource, "/?x=1");
        for bad in ["http://h/", "ws://", "ws://h:port/", "ws://u:p@h/", "ws://[::1/"] {
            assert!(WebSocketUrl::parse(bad).is_err(), "{bad}");
        }
        // a ticket in the query never appears in the error
        let err = WebSocketUrl::parse("ftp://h/?vncticket=SECRET").unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn frame_round_trip_and_limits() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, OP_BINARY, &payload, Some([1, 2, 3, 4]));
            let h = parse_header(&out).unwrap().unwrap();
            assert_eq!((h.fin, h.opcode, h.len), (true, OP_BINARY, len as u64));
            let m = h.mask.unwrap();
            let back: Vec<u8> = out[h.header_len..].iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect();
            assert_eq!(back, payload);
            // every prefix of the header asks for more bytes
            for cut in 0..h.header_len {
                assert!(parse_header(&out[..cut]).unwrap().is_none());
            }
        }
        // 2^63 bytes, reserved bits, long control frames
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert!(parse_header(&huge).is_err());
        assert!(parse_header(&[0xC2, 0]).is_err());
        assert!(parse_header(&[0x89, 126, 0, 200]).is_err());
        assert!(parse_header(&[0x09, 0]).is_err(), "fragmented ping");
    }

    /// Server-side of a tiny in-memory peer: frames split at odd places,
    /// a ping in the middle, then close.
    #[tokio::test]
    async fn stream_reassembles_frames_answers_ping_and_close() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let url = WebSocketUrl::parse("ws://127.0.0.1:1/x").unwrap();
        let server_task = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                server.read_exact(&mut b).await.unwrap();
                req.push(b[0]);
            }
            let text = String::from_utf8(req).unwrap();
            assert!(text.contains("Sec-WebSocket-Protocol: binary"), "{text}");
            assert!(text.contains("Authorization: PVEAPIToken=x"), "{text}");
            let key = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap().trim().to_string();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
                accept_key(&key)
            )
            .into_bytes();
            // "RFB 003.008\n" split into three frames, a ping between.
            encode_frame(&mut out, OP_BINARY, b"RFB 0", None);
            encode_frame(&mut out, OP_PING, b"hi", None);
            encode_frame(&mut out, OP_BINARY, b"03.0", None);
            encode_frame(&mut out, OP_BINARY, b"08\n", None);
            server.write_all(&out).await.unwrap();
            // expect the pong, then the client's data frame, both masked
            let mut got = vec![0u8; 2 + 4 + 2];
            server.read_exact(&mut got).await.unwrap();
            let h = parse_header(&got).unwrap().unwrap();
            assert_eq!((h.opcode, h.len), (OP_PONG, 2));
            assert!(h.mask.is_some(), "client frames must be masked");
            let mut frame = vec![0u8; 2 + 4 + 12];
            server.read_exact(&mut frame).await.unwrap();
            let h = parse_header(&frame).unwrap().unwrap();
            let m = h.mask.unwrap();
            let data: Vec<u8> = frame[h.header_len..].iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect();
            assert_eq!(data, b"RFB 003.008\n");
            let mut close = Vec::new();
            encode_frame(&mut close, OP_CLOSE, &1000u16.to_be_bytes(), None);
            server.write_all(&close).await.unwrap();
            let mut reply = [0u8; 2 + 4 + 2];
            server.read_exact(&mut reply).await.unwrap();
            assert_eq!(parse_header(&reply).unwrap().unwrap().opcode, OP_CLOSE);
        });
        let mut ws = connect(client, &url, &[("Authorization".into(), "PVEAPIToken=x".into())]).await.unwrap();
        let mut version = [0u8; 12];
        ws.read_exact(&mut version).await.unwrap();
        assert_eq!(&version, b"RFB 003.008\n");
        ws.write_all(b"RFB 003.008\n").await.unwrap();
        ws.flush().await.unwrap();
        let mut rest = Vec::new();
        ws.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        ws.flush().await.unwrap();
        server_task.await.unwrap();
    }

    #[tokio::test]
    async fn refused_upgrade_and_wrong_accept_are_errors() {
        for (answer, want) in [
            ("HTTP/1.1 401 permission denied - invalid PVE ticket\r\nContent-Length: 0\r\n\r\n", "401"),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n", "does not match"),
        ] {
            let (client, mut server) = tokio::io::duplex(1 << 16);
            let answer = answer.to_string();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = server.read(&mut buf).await;
                let _ = server.write_all(answer.as_bytes()).await;
            });
            let url = WebSocketUrl::parse("ws://127.0.0.1:1/").unwrap();
            let err = connect(client, &url, &[]).await.err().unwrap().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}

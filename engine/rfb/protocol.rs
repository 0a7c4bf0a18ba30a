//! The RFB wire format (RFC 6143): protocol versions, security types, the
//! 16-byte pixel format, ServerInit, client messages and server message
//! headers, encoded and decoded as plain bytes.
//!
//! Nothing here does I/O. All multi-byte integers on the wire are big-endian.
//! Decoders take exactly-sized byte arrays or report how many bytes they need,
//! so the connection code decides when to read.

use crate::geometry::Rect;
use crate::rfb::error::RfbError;

/// Longest desktop name accepted in ServerInit.
pub const MAX_NAME_LEN: u32 = 64 * 1024;
/// Longest failure reason string accepted during the handshake.
pub const MAX_REASON_LEN: u32 = 64 * 1024;
/// Longest ServerCutText accepted (it is skipped, never buffered whole).
pub const MAX_CUT_TEXT_LEN: u32 = 16 * 1024 * 1024;
/// Largest framebuffer accepted, in pixels (8K UHD is 33.2 M).
pub const MAX_FRAMEBUFFER_PIXELS: u64 = 1 << 25;

/// Length of a ProtocolVersion message.
pub const VERSION_LEN: usize = 12;
/// Length of the fixed part of ServerInit (size, pixel format, name length).
pub const SERVER_INIT_LEN: usize = 24;
/// Length of a rectangle header inside a FramebufferUpdate.
pub const RECT_HEADER_LEN: usize = 12;

/// The protocol versions this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V3_3,
    V3_7,
    V3_8,
}

impl ProtocolVersion {
    /// The 12-byte ProtocolVersion message for this version.
    pub fn encode(self) -> [u8; VERSION_LEN] {
        let text: &[u8; VERSION_LEN] = match self {
            ProtocolVersion::V3_3 => b"RFB 003.003\n",
            ProtocolVersion::V3_7 => b"RFB 003.007\n",
            ProtocolVersion::V3_8 => b"RFB 003.008\n",
        };
        *text
    }

    /// Parse a ProtocolVersion message into (major, minor).
    pub fn parse(bytes: &[u8; VERSION_LEN]) -> Result<(u32, u32), RfbError> {
        let bad = || {
            RfbError::protocol("ProtocolVersion", format!("not an RFB greeting: {:?}", String::from_utf8_lossy(bytes)))
        };
        if &bytes[..4] != b"RFB " || bytes[7] != b'.' || bytes[11] != b'\n' {
            return Err(bad());
        }
        let number = |digits: &[u8]| -> Option<u32> {
            digits.iter().try_fold(0u32, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
        };
        let major = number(&bytes[4..7]).ok_or_else(bad)?;
        let minor = number(&bytes[8..11]).ok_or_else(bad)?;
        Ok((major, minor))
    }

    /// The version to answer a server that offered `major.minor` with: the
    /// highest we support that is not above the server's. RFC 6143: 3.5 (and
    /// other unpublished 3.x below 3.7) means 3.3; anything above 3.8 (Apple's
    /// 3.889, 4.x) is answered with 3.8.
    pub fn negotiate(major: u32, minor: u32) -> Result<ProtocolVersion, RfbError> {
        match (major, minor) {
            (3, 3..=6) => Ok(ProtocolVersion::V3_3),
            (3, 7) => Ok(ProtocolVersion::V3_7),
            (3, _) if minor >= 8 => Ok(ProtocolVersion::V3_8),
            (m, _) if m > 3 => Ok(ProtocolVersion::V3_8),
            _ => Err(RfbError::unsupported(format!(
                "RFB protocol version {major}.{minor} (this client speaks 3.3, 3.7 and 3.8)"
            ))),
        }
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V3_3 => "3.3",
            ProtocolVersion::V3_7 => "3.7",
            ProtocolVersion::V3_8 => "3.8",
        })
    }
}

/// A security type number (RFC 6143 section 7.1.2 and the IANA registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityType {
    Invalid,
    None,
    VncAuth,
    VeNCrypt,
    Other(u8),
}

impl SecurityType {
    pub fn from_u8(value: u8) -> SecurityType {
        match value {
            0 => SecurityType::Invalid,
            1 => SecurityType::None,
            2 => SecurityType::VncAuth,
            19 => SecurityType::VeNCrypt,
            other => SecurityType::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            SecurityType::Invalid => 0,
            SecurityType::None => 1,
            SecurityType::VncAuth => 2,
            SecurityType::VeNCrypt => 19,
            SecurityType::Other(v) => v,
        }
    }

    /// A human name for error messages.
    pub fn name(self) -> String {
        match self.to_u8() {
            0 => "Invalid".into(),
            1 => "None".into(),
            2 => "VNC authentication".into(),
            5 => "RA2 (5)".into(),
            6 => "RA2ne (6)".into(),
            16 => "Tight (16)".into(),
            17 => "Ultra (17)".into(),
            18 => "TLS (18)".into(),
            19 => "VeNCrypt (19)".into(),
            20 => "SASL (20)".into(),
            30 => "Apple Remote Desktop (30)".into(),
            n => format!("type {n}"),
        }
    }
}

/// How pixel values are laid out on the wire (RFC 6143 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The format this client always asks for: 32 bpp, depth 24, true colour,
    /// little-endian, red at bit 0, green at 8, blue at 16. A pixel then lands
    /// in memory as R, G, B, X, and a ZRLE CPIXEL is the 3 bytes R, G, B.
    pub const RGBX: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 0,
        green_shift: 8,
        blue_shift: 16,
    };

    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    pub fn decode(b: &[u8; 16]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }
}

/// The fixed part of ServerInit; the desktop name (`name_len` bytes) follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInitHeader {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    pub name_len: u32,
}

impl ServerInitHeader {
    pub fn encode(&self) -> [u8; SERVER_INIT_LEN] {
        let mut b = [0u8; SERVER_INIT_LEN];
        b[0..2].copy_from_slice(&self.width.to_be_bytes());
        b[2..4].copy_from_slice(&self.height.to_be_bytes());
        b[4..20].copy_from_slice(&self.pixel_format.encode());
        b[20..24].copy_from_slice(&self.name_len.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; SERVER_INIT_LEN]) -> ServerInitHeader {
        let mut pf = [0u8; 16];
        pf.copy_from_slice(&b[4..20]);
        ServerInitHeader {
            width: u16::from_be_bytes([b[0], b[1]]),
            height: u16::from_be_bytes([b[2], b[3]]),
            pixel_format: PixelFormat::decode(&pf),
            name_len: u32::from_be_bytes([b[20], b[21], b[22], b[23]]),
        }
    }
}

/// Decode a desktop name or reason string: UTF-8 when valid, else Latin-1
/// (RFC 6143 leaves the charset open; old servers send Latin-1).
pub fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Rectangle encodings and pseudo-encodings (RFC 6143 section 7.7, 7.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    Raw,
    CopyRect,
    Hextile,
    Tight,
    Trle,
    Zrle,
    /// Pseudo-encoding: the framebuffer changed size.
    DesktopSize,
    /// Pseudo-encoding: the framebuffer changed size, with its screen layout.
    ExtendedDesktopSize,
    /// Pseudo-encoding: no more rectangles in this update (whatever the count said).
    LastRect,
    /// Pseudo-encoding: the pointer's shape (the server then leaves it out of the framebuffer).
    Cursor,
    /// Any number this client has no name for.
    Other(i32),
}

impl Encoding {
    pub const fn code(self) -> i32 {
        match self {
            Encoding::Raw => 0,
            Encoding::CopyRect => 1,
            Encoding::Hextile => 5,
            Encoding::Tight => 7,
            Encoding::Trle => 15,
            Encoding::Zrle => 16,
            Encoding::DesktopSize => -223,
            Encoding::ExtendedDesktopSize => -308,
            Encoding::LastRect => -224,
            Encoding::Cursor => -239,
            Encoding::Other(code) => code,
        }
    }

    pub const fn from_code(code: i32) -> Encoding {
        match code {
            0 => Encoding::Raw,
            1 => Encoding::CopyRect,
            5 => Encoding::Hextile,
            7 => Encoding::Tight,
            15 => Encoding::Trle,
            16 => Encoding::Zrle,
            -223 => Encoding::DesktopSize,
            -308 => Encoding::ExtendedDesktopSize,
            -224 => Encoding::LastRect,
            -239 => Encoding::Cursor,
            other => Encoding::Other(other),
        }
    }

    /// An encoding by the name the inventory and `smoke vnc --encodings` use
    /// (case-insensitive; see [`ENCODING_NAMES`]).
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(Encoding::Raw),
            "copyrect" => Some(Encoding::CopyRect),
            "hextile" => Some(Encoding::Hextile),
            "tight" => Some(Encoding::Tight),
            "trle" => Some(Encoding::Trle),
            "zrle" => Some(Encoding::Zrle),
            "desktopsize" => Some(Encoding::DesktopSize),
            "extendeddesktopsize" => Some(Encoding::ExtendedDesktopSize),
            "lastrect" => Some(Encoding::LastRect),
            "cursor" => Some(Encoding::Cursor),
            "qemu-key" | "qemu-extended-key-event" => Some(QEMU_EXTENDED_KEY_EVENT),
            "qemu-pointer" | "qemu-pointer-motion-change" => Some(QEMU_POINTER_MOTION_CHANGE),
            _ => None,
        }
    }

    /// True for pseudo-encodings, which carry no pixels for their rectangle.
    pub const fn is_pseudo(self) -> bool {
        matches!(self, Encoding::DesktopSize | Encoding::ExtendedDesktopSize | Encoding::LastRect | Encoding::Cursor)
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoding::Raw => f.write_str("Raw"),
            Encoding::CopyRect => f.write_str("CopyRect"),
            Encoding::Zrle => f.write_str("ZRLE"),
            Encoding::Hextile => f.write_str("Hextile"),
            Encoding::Tight => f.write_str("Tight"),
            Encoding::Trle => f.write_str("TRLE"),
            Encoding::DesktopSize => f.write_str("DesktopSize"),
            Encoding::ExtendedDesktopSize => f.write_str("ExtendedDesktopSize"),
            Encoding::LastRect => f.write_str("LastRect"),
            Encoding::Cursor => f.write_str("Cursor"),
            Encoding::Other(code) => write!(f, "encoding {code}"),
        }
    }
}

/// QEMU Extended Key Event pseudo-encoding: the server takes scancodes
/// (client message 255 subtype 0) once it answered with a rectangle of it.
pub const QEMU_EXTENDED_KEY_EVENT: Encoding = Encoding::Other(-258);
/// QEMU Pointer Motion Change pseudo-encoding: a rectangle of it says whether
/// pointer events are absolute (x = 1) or relative (x = 0).
pub const QEMU_POINTER_MOTION_CHANGE: Encoding = Encoding::Other(-257);

/// The encoding names [`Encoding::from_name`] knows, in a sensible preference order.
pub const ENCODING_NAMES: &[&str] = &[
    "zrle",
    "tight",
    "hextile",
    "trle",
    "copyrect",
    "raw",
    "desktopsize",
    "extendeddesktopsize",
    "lastrect",
    "cursor",
    "qemu-key",
    "qemu-pointer",
];

/// Messages a client sends (RFC 6143 section 7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    SetPixelFormat(PixelFormat),
    SetEncodings(Vec<i32>),
    FramebufferUpdateRequest {
        incremental: bool,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    KeyEvent {
        down: bool,
        keysym: u32,
    },
    PointerEvent {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// Latin-1 bytes.
    ClientCutText(Vec<u8>),
    /// QEMU Extended Key Event (message 255, subtype 0): a key by XT
    /// scancode (qnum numbering) with its keysym.
    QemuKeyEvent {
        down: bool,
        keysym: u32,
        scancode: u32,
    },
}

impl ClientMessage {
    /// The wire bytes. SetEncodings lists longer than 65535 entries and cut
    /// texts longer than 4 GiB are truncated (the wire cannot say more).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientMessage::SetPixelFormat(pf) => {
                let mut b = vec![0u8; 4];
                b.extend_from_slice(&pf.encode());
                b
            }
            ClientMessage::SetEncodings(codes) => {
                let n = codes.len().min(usize::from(u16::MAX));
                let mut b = Vec::with_capacity(4 + 4 * n);
                b.extend_from_slice(&[2, 0]);
                b.extend_from_slice(&(n as u16).to_be_bytes());
                for code in &codes[..n] {
                    b.extend_from_slice(&code.to_be_bytes());
                }
                b
            }
            ClientMessage::FramebufferUpdateRequest { incremental, x, y, width, height } => {
                let mut b = vec![3, u8::from(*incremental)];
                for v in [x, y, width, height] {
                    b.extend_from_slice(&v.to_be_bytes());
                }
                b
            }
            ClientMessage::KeyEvent { down, keysym } => {
                let mut b = vec![4, u8::from(*down), 0, 0];
                b.extend_from_slice(&keysym.to_be_bytes());
                b
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                let mut b = vec![5, *buttons];
                b.extend_from_slice(&x.to_be_bytes());
                b.extend_from_slice(&y.to_be_bytes());
                b
            }
            ClientMessage::QemuKeyEvent { down, keysym, scancode } => {
                let mut b = vec![255, 0];
                b.extend_from_slice(&u16::from(*down).to_be_bytes());
                b.extend_from_slice(&keysym.to_be_bytes());
                b.extend_from_slice(&scancode.to_be_bytes());
                b
            }
            ClientMessage::ClientCutText(text) => {
                let n = text.len().min(u32::MAX as usize);
                let mut b = vec![6, 0, 0, 0];
                b.extend_from_slice(&(n as u32).to_be_bytes());
                b.extend_from_slice(&text[..n]);
                b
            }
        }
    }

    /// Decode one message from the start of `buf`: `Ok(None)` when more bytes
    /// are needed, else the message and how many bytes it took. Used by test
    /// servers; bounded by `max_len` for the variable-length messages.
    pub fn decode(buf: &[u8], max_len: usize) -> Result<Option<(ClientMessage, usize)>, RfbError> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        let need = |n: usize| buf.len() >= n;
        let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let msg = match kind {
            0 => {
                if !need(20) {
                    return Ok(None);
                }
                let mut pf = [0u8; 16];
                pf.copy_from_slice(&buf[4..20]);
                (ClientMessage::SetPixelFormat(PixelFormat::decode(&pf)), 20)
            }
            2 => {
                if !need(4) {
                    return Ok(None);
                }
                let n = usize::from(u16_at(2));
                let len = 4 + 4 * n;
                if len > max_len {
                    return Err(RfbError::limit(format!("SetEncodings of {n} entries")));
                }
                if !need(len) {
                    return Ok(None);
                }
                let codes = (0..n).map(|i| u32_at(4 + 4 * i) as i32).collect();
                (ClientMessage::SetEncodings(codes), len)
            }
            3 => {
                if !need(10) {
                    return Ok(None);
                }
                let msg = ClientMessage::FramebufferUpdateRequest {
                    incremental: buf[1] != 0,
                    x: u16_at(2),
                    y: u16_at(4),
                    width: u16_at(6),
                    height: u16_at(8),
                };
                (msg, 10)
            }
            4 => {
                if !need(8) {
                    return Ok(None);
                }
                (ClientMessage::KeyEvent { down: buf[1] != 0, keysym: u32_at(4) }, 8)
            }
            5 => {
                if !need(6) {
                    return Ok(None);
                }
                (ClientMessage::PointerEvent { buttons: buf[1], x: u16_at(2), y: u16_at(4) }, 6)
            }
            6 => {
                if !need(8) {
                    return Ok(None);
                }
                let n = u32_at(4) as usize;
                if n > max_len {
                    return Err(RfbError::limit(format!("ClientCutText of {n} bytes")));
                }
                if !need(8 + n) {
                    return Ok(None);
                }
                (ClientMessage::ClientCutText(buf[8..8 + n].to_vec()), 8 + n)
            }
            255 if buf.len() >= 2 && buf[1] == 0 => {
                if !need(12) {
                    return Ok(None);
                }
                (ClientMessage::QemuKeyEvent { down: u16_at(2) != 0, keysym: u32_at(4), scancode: u32_at(8) }, 12)
            }
            255 if buf.len() < 2 => return Ok(None),
            other => {
                return Err(RfbError::protocol("client message", format!("unknown message type {other}")));
            }
        };
        Ok(Some(msg))
    }
}

/// Encode text for ClientCutText: Latin-1, characters outside it become `?`.
pub fn latin1(text: &str) -> Vec<u8> {
    text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

/// Server message types (RFC 6143 section 7.6).
pub mod server_message {
    pub const FRAMEBUFFER_UPDATE: u8 = 0;
    pub const SET_COLOUR_MAP_ENTRIES: u8 = 1;
    pub const BELL: u8 = 2;
    pub const SERVER_CUT_TEXT: u8 = 3;
    /// Header length of FramebufferUpdate (type, padding, rectangle count).
    pub const FRAMEBUFFER_UPDATE_LEN: usize = 4;
    /// Header length of SetColourMapEntries; 6 bytes per colour follow.
    pub const SET_COLOUR_MAP_ENTRIES_LEN: usize = 6;
    /// Header length of ServerCutText; the text follows.
    pub const SERVER_CUT_TEXT_LEN: usize = 8;
}

/// The header of one rectangle in a FramebufferUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RectHeader {
    pub rect: Rect,
    pub encoding: Encoding,
}

impl RectHeader {
    pub fn decode(b: &[u8; RECT_HEADER_LEN]) -> RectHeader {
        let u = |i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        RectHeader {
            rect: Rect::new(u(0), u(2), u(4), u(6)),
            encoding: Encoding::from_code(i32::from_be_bytes([b[8], b[9], b[10], b[11]])),
        }
    }

    /// Wire bytes; coordinates beyond 65535 are clamped (they cannot occur in
    /// headers this crate decoded).
    pub fn encode(&self) -> [u8; RECT_HEADER_LEN] {
        let mut b = [0u8; RECT_HEADER_LEN];
        let r = self.rect;
        for (i, v) in [r.x, r.y, r.w, r.h].into_iter().enumerate() {
            let v = u16::try_from(v).unwrap_or(u16::MAX);
            b[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
        }
        b[8..12].copy_from_slice(&self.encoding.code().to_be_bytes());
        b
    }
}

/// Header bytes of a FramebufferUpdate announcing `rects` rectangles.
pub fn framebuffer_update_header(rects: u16) -> [u8; 4] {
    let n = rects.to_be_bytes();
    [server_message::FRAMEBUFFER_UPDATE, 0, n[0], n[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parse_and_negotiate() {
        assert_eq!(ProtocolVersion::parse(b"RFB 003.008\n").unwrap(), (3, 8));
        assert_eq!(ProtocolVersion::parse(b"RFB 003.889\n").unwrap(), (3, 889));
        assert!(ProtocolVersion::parse(b"RFB 003.00x\n").is_err());
        assert!(ProtocolVersion::parse(b"HTTP/1.1 200").is_err());
        assert!(ProtocolVersion::parse(b"RFB 003.008 ").is_err());
        let cases = [
            ((3, 3), Some(ProtocolVersion::V3_3)),
            ((3, 5), Some(ProtocolVersion::V3_3)),
            ((3, 7), Some(ProtocolVersion::V3_7)),
            ((3, 8), Some(ProtocolVersion::V3_8)),
            ((3, 889), Some(ProtocolVersion::V3_8)),
            ((4, 1), Some(ProtocolVersion::V3_8)),
            ((3, 2), None),
            ((2, 9), None),
        ];
        for ((major, minor), want) in cases {
            assert_eq!(ProtocolVersion::negotiate(major, minor).ok(), want, "{major}.{minor}");
        }
        for v in [ProtocolVersion::V3_3, ProtocolVersion::V3_7, ProtocolVersion::V3_8] {
            let (major, minor) = ProtocolVersion::parse(&v.encode()).unwrap();
            assert_eq!(ProtocolVersion::negotiate(major, minor).unwrap(), v);
        }
    }

    #[test]
    fn pixel_format_round_trip() {
        let b = PixelFormat::RGBX.encode();
        assert_eq!(b, [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0]);
        assert_eq!(PixelFormat::decode(&b), PixelFormat::RGBX);
        let odd = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        };
        assert_eq!(PixelFormat::decode(&odd.encode()), odd);
    }

    #[test]
    fn server_init_round_trip() {
        let h = ServerInitHeader { width: 1280, height: 720, pixel_format: PixelFormat::RGBX, name_len: 7 };
        let b = h.encode();
        assert_eq!(&b[..4], &[5, 0, 2, 208]);
        assert_eq!(ServerInitHeader::decode(&b), h);
    }

    #[test]
    fn client_messages_round_trip() {
        let messages = vec![
            ClientMessage::SetPixelFormat(PixelFormat::RGBX),
            ClientMessage::SetEncodings(vec![16, 1, 0, -223]),
            ClientMessage::FramebufferUpdateRequest { incremental: true, x: 1, y: 2, width: 1280, height: 720 },
            ClientMessage::KeyEvent { down: true, keysym: 0xffe1 },
            ClientMessage::QemuKeyEvent { down: true, keysym: 0x40, scancode: 0xb8 },
            ClientMessage::PointerEvent { buttons: 5, x: 640, y: 65535 },
            ClientMessage::ClientCutText(latin1("héllo ✓")),
        ];
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend_from_slice(&m.encode());
        }
        // Exact bytes of two of them, from the RFC tables.
        assert_eq!(messages[2].encode(), [3, 1, 0, 1, 0, 2, 5, 0, 2, 208]);
        assert_eq!(messages[3].encode(), [4, 1, 0, 0, 0, 0, 0xff, 0xe1]);
        let mut pos = 0;
        for m in &messages {
            // Every strict prefix asks for more bytes.
            for cut in pos..pos + m.encode().len() {
                assert!(ClientMessage::decode(&stream[pos..cut], 1 << 20).unwrap().is_none());
            }
            let (decoded, used) = ClientMessage::decode(&stream[pos..], 1 << 20).unwrap().unwrap();
            assert_eq!(&decoded, m);
            pos += used;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(latin1("héllo ✓"), b"h\xe9llo ?");
        assert!(ClientMessage::decode(&[9], 100).is_err());
        assert!(ClientMessage::decode(&[6, 0, 0, 0, 255, 255, 255, 255], 100).is_err());
    }

    #[test]
    fn rect_header_round_trip() {
        let h = RectHeader { rect: Rect::new(10, 20, 300, 400), encoding: Encoding::DesktopSize };
        let b = h.encode();
        assert_eq!(b, [0, 10, 0, 20, 1, 44, 1, 144, 0xff, 0xff, 0xff, 0x21]);
        assert_eq!(RectHeader::decode(&b), h);
        for code in [0, 1, 16, -223, 5, -239] {
            assert_eq!(Encoding::from_code(code).code(), code);
        }
        assert_eq!(framebuffer_update_header(258), [0, 0, 1, 2]);
    }

    #[test]
    fn text_decoding() {
        assert_eq!(decode_text("bühne".as_bytes()), "bühne");
        assert_eq!(decode_text(b"b\xfchne"), "bühne");
    }
}

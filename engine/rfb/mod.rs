//! smoke's own RFB (VNC) client, on tokio: connect over TCP, a Unix socket, TLS
//! or a websocket, authenticate (None, VNC authentication, VeNCrypt), keep a live RGBA copy of the remote
//! screen, capture frames that are guaranteed fresh, and send key and pointer
//! events.
//!
//! Layout, one concept per file:
//! - [`transport`]: endpoints and the type-erased byte stream (TCP, Unix, TLS, websocket).
//! - [`tls`]: OpenSSL sessions: verified (CA or pinned fingerprint) or anonymous DH.
//! - [`websocket`]: RFC 6455 client: upgrade, masked binary frames, byte stream.
//! - [`vencrypt`]: VeNCrypt (type 19) subtypes, TLS and inner authentication.
//! - [`protocol`]: the wire format, encode/decode only, no I/O.
//! - [`auth`]: VNC authentication DES and the `vncpasswd` password file.
//! - [`handshake`]: version, security and initialisation messages.
//! - [`encodings`]: pure rectangle decoders (Raw, CopyRect, ZRLE, Hextile, Tight without JPEG, TRLE).
//! - [`framebuffer`]: the client-side pixel store.
//! - [`coverage`]: which pixels fresh updates have covered (for captures).
//! - [`capture`]: pending captures and the freshness cut-off.
//! - [`session`]: background tasks of a live connection.
//! - [`renewal`]: fresh endpoints and passwords for reconnects (single-use tickets).
//! - [`client`]: [`VncClient`], the public handle.
//!
//! The client always asks for one pixel format (32 bpp, depth 24, true colour,
//! little-endian, red/green/blue at bits 0/8/16), so pixels arrive as R, G, B,
//! X and ZRLE CPIXELs as R, G, B, and sends ClientInit with shared=1.

pub mod auth;
pub mod capture;
pub mod client;
pub mod coverage;
pub mod encodings;
pub mod error;
pub mod framebuffer;
pub mod handshake;
pub mod protocol;
pub mod renewal;
pub mod session;
pub mod tls;
pub mod transport;
pub mod vencrypt;
pub mod websocket;

pub use auth::vnc_password_file;
pub use client::{ConnectOptions, VncClient};
pub use error::RfbError;
pub use framebuffer::Framebuffer;
pub use handshake::ServerInfo;
pub use protocol::{Encoding, PixelFormat, ProtocolVersion, SecurityType};
pub use renewal::{AccessRenewal, FreshAccess};
pub use session::ClientStats;
pub use tls::TlsSettings;
pub use transport::{BoxedStream, ByteStream, Endpoint, WebSocketEndpoint};
pub use websocket::WebSocketUrl;

//! The one error type of the RFB client: every failure of a connection, a
//! handshake or a decoder is an [`RfbError`] saying what went wrong and where.
//!
//! Bytes from the server are untrusted input: anything a hostile or buggy server
//! can send turns into `Protocol`, `Unsupported` or `LimitExceeded`, never into a
//! panic or an unbounded allocation.

use std::time::Duration;

/// What can go wrong talking RFB to a VNC server.
#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    /// The operating system reported an I/O error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The server sent bytes that break RFC 6143.
    #[error("RFB protocol violation in {place}: {what}")]
    Protocol { place: String, what: String },

    /// The server wants something this client does not implement (a protocol
    /// version, a security type, an encoding it was never offered).
    #[error("unsupported {what}")]
    Unsupported { what: String },

    /// The server refused the connection before authentication and said why
    /// (for example TigerVNC's "Too many security failures").
    #[error("the server refused the connection: {reason}")]
    Refused { reason: String },

    /// Authentication failed; `reason` is the server's text when it sent one.
    #[error("VNC authentication failed: {reason}")]
    AuthFailed { reason: String },

    /// The server only offers VNC authentication and no password was given.
    #[error("the server requires VNC authentication but no password was given")]
    AuthRequired,

    /// Something awaited did not happen in time.
    #[error("timed out after {after:?} waiting for {awaited}")]
    Timeout { awaited: String, after: Duration },

    /// The connection is gone; `reason` says why (server closed it, a protocol
    /// error ended the session, the client closed it).
    #[error("disconnected: {reason}")]
    Disconnected { reason: String },

    /// A TLS session could not be set up or the certificate was refused.
    #[error("TLS: {what}")]
    Tls { what: String },

    /// A transport below RFB (a websocket upgrade) failed.
    #[error("transport: {what}")]
    Transport { what: String },

    /// The server sent a value beyond what a sane server sends: a rectangle
    /// outside the framebuffer, an absurd size or length, zlib data inflating
    /// past what the rectangle can hold.
    #[error("limit exceeded: {what}")]
    LimitExceeded { what: String },
}

impl RfbError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> RfbError {
        RfbError::Io { context: context.into(), source }
    }

    pub(crate) fn protocol(place: impl Into<String>, what: impl Into<String>) -> RfbError {
        RfbError::Protocol { place: place.into(), what: what.into() }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> RfbError {
        RfbError::Unsupported { what: what.into() }
    }

    pub(crate) fn limit(what: impl Into<String>) -> RfbError {
        RfbError::LimitExceeded { what: what.into() }
    }

    pub(crate) fn timeout(awaited: impl Into<String>, after: Duration) -> RfbError {
        RfbError::Timeout { awaited: awaited.into(), after }
    }

    pub(crate) fn disconnected(reason: impl Into<String>) -> RfbError {
        RfbError::Disconnected { reason: reason.into() }
    }
}

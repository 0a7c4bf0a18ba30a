//! What can go wrong talking to Proxmox VE, with the API's own words.
//!
//! PVE reports errors two ways: handler errors come as JSON
//! `{"data": null, "message": "...", "errors": {"param": "..."}}`; errors of the
//! authentication layer (no ticket, failed authentication, invalid CSRF token)
//! come only as the HTTP reason phrase with an empty body. Both end up in
//! [`PveError::Api`]. No variant ever holds a token, password, ticket, CSRF
//! token or VNC ticket: request paths are kept without their query.

use std::time::Duration;

use crate::secrets::SecretError;

use super::tls::TlsError;

/// A Proxmox VE API or transport failure.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The API answered with an error status.
    #[error("Proxmox VE {method} {path}: HTTP {status}: {message}{}{}", fmt_errors(errors), fmt_hint(hint))]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
        /// Per-parameter errors (`errors` in the body), sorted by parameter.
        errors: Vec<(String, String)>,
        hint: Option<String>,
    },
    /// No HTTP answer: connection refused, TLS refused, timeout.
    #[error("cannot reach Proxmox VE at {url}: {detail}{}", fmt_hint(hint))]
    Transport { url: String, detail: String, hint: Option<String> },
    /// An answer that does not have the documented shape.
    #[error("Proxmox VE {what}: unexpected answer: {detail}")]
    Decode { what: String, detail: String },
    /// A task (UPID) ended with an exit status other than OK.
    #[error("Proxmox VE task {kind} for {id} on {node} failed: {exitstatus}{}", fmt_log(log))]
    TaskFailed { node: String, kind: String, id: String, exitstatus: String, log: Vec<String> },
    #[error("timed out after {:.0}s waiting for {what}", waited.as_secs_f64())]
    Timeout { what: String, waited: Duration },
    #[error("'{0}' is not a Proxmox VE task id (UPID:node:pid:pstart:starttime:type:id:user:)")]
    Upid(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Settings that cannot work (for example a token in the wrong form).
    #[error("{0}")]
    Config(String),
}

fn fmt_hint(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn fmt_errors(errors: &[(String, String)]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {}", v.trim_end())).collect();
    format!(" [{}]", list.join("; "))
}

fn fmt_log(log: &[String]) -> String {
    if log.is_empty() {
        return String::new();
    }
    format!("\n  task log:\n    {}", log.join("\n    "))
}

impl PveError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's message of an API error.
    pub fn message(&self) -> Option<&str> {
        match self {
            PveError::Api { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// What to do about an API error, from its status and message.
pub fn hint_for(status: u16, message: &str, path: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let hint = match status {
        401 if m.contains("csrf") => {
            "ticket authentication needs the CSRFPreventionToken header on every request but GET".to_string()
        }
        401 if m.contains("vnc") => "the VNC ticket is bound to user, VM and port and lives 40 s: call vncproxy again".into(),
        401 if path.starts_with("/access/ticket") => "wrong user or password (the user needs its realm, e.g. root@pam)".into(),
        401 => "check the credentials: an API token is USER@REALM!TOKENID=SECRET; a ticket expires after 2 h".into(),
        403 => "the user or token lacks a privilege on this path: grant VM.Audit, VM.PowerMgmt, VM.Console, VM.Snapshot (and VM.Clone, VM.Allocate for clones); with privilege separation the token needs its own permissions".into(),
        500 if m.contains("does not exist") => "check the inventory's node and vmid".into(),
        501 => "this PVE version does not know the method or path".into(),
        595 | 596 => "pveproxy could not reach the node: check the node name and that it is online".into(),
        _ => return None,
    };
    Some(hint)
}

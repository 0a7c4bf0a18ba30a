//! The Proxmox VE HTTP API client: `https://HOST:8006/api2/json`, reqwest over
//! rustls (ring), form-encoded request bodies as PVE takes them, `{"data": ...}`
//! envelopes, typed errors.
//!
//! Two ways to authenticate:
//! - an API token: header `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`
//!   on every request; tokens need no CSRF token;
//! - a user and password: `POST /access/ticket` gives a ticket (sent as the
//!   cookie `PVEAuthCookie`) and a `CSRFPreventionToken` (a header on every
//!   request but GET). A ticket lives 2 h; the client renews it well before
//!   (by posting the ticket itself as the password) and falls back to the
//!   password when the node no longer accepts the old ticket.
//!
//! The token secret, password, ticket and CSRF token are held in [`Hidden`]
//! and never reach Debug output, errors or logs.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::error::{PveError, hint_for};
use super::tls::{self, Trust};

/// A secret string: its Debug output is a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden(String);

impl Hidden {
    pub fn new(value: impl Into<String>) -> Hidden {
        Hidden(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// How the client logs in.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An API token: `id` is `USER@REALM!TOKENID`.
    Token { id: String, secret: Hidden },
    /// A user (`root@pam`) and password: ticket authentication.
    Password { user: String, password: Hidden },
}

impl Credentials {
    /// A token from the secret's text: `USER@REALM!TOKENID=SECRET` (an
    /// optional `PVEAPIToken=` in front is ignored), or only the secret when
    /// `token_id` names the token.
    pub fn token(text: &str, token_id: Option<&str>) -> Result<Credentials, PveError> {
        let text = text.trim();
        let text = text.strip_prefix("PVEAPIToken=").unwrap_or(text);
        let (id, secret) = match (text.split_once('='), token_id) {
            (Some((id, secret)), None) => (id.to_string(), secret.to_string()),
            (Some((id, secret)), Some(given)) if id == given => (id.to_string(), secret.to_string()),
            (Some((id, _)), Some(given)) => {
                return Err(PveError::Config(format!(
                    "the token secret names token '{id}' but the inventory's token_id is '{given}'"
                )));
            }
            (None, Some(given)) => (given.to_string(), text.to_string()),
            (None, None) => {
                return Err(PveError::Config(
                    "the API token must be USER@REALM!TOKENID=SECRET (or give token_id: USER@REALM!TOKENID and only the secret)"
                        .into(),
                ));
            }
        };
        let valid_id = id.split_once('!').is_some_and(|(user, name)| user.contains('@') && !name.is_empty());
        if !valid_id || secret.is_empty() {
            return Err(PveError::Config(format!(
                "the API token id '{id}' must be USER@REALM!TOKENID (e.g. smoke@pve!ci) with a secret after '='"
            )));
        }
        Ok(Credentials::Token { id, secret: Hidden(secret) })
    }

    /// Who acts: the token id or the user.
    pub fn principal(&self) -> &str {
        match self {
            Credentials::Token { id, .. } => id,
            Credentials::Password { user, .. } => user,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://HOST[:PORT]` (port 8006 when absent); a trailing `/api2/json` is fine.
    pub url: String,
    pub trust: Trust,
    pub credentials: Credentials,
    /// Limit for one request.
    pub timeout: Duration,
    /// Renew a ticket this long after it was issued (tickets live 2 h).
    pub ticket_renewal: Duration,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>, trust: Trust, credentials: Credentials) -> ClientOptions {
        ClientOptions {
            url: url.into(),
            trust,
            credentials,
            timeout: Duration::from_secs(30),
            ticket_renewal: Duration::from_secs(3600),
        }
    }
}

struct Ticket {
    user: String,
    ticket: Hidden,
    csrf: Hidden,
    issued: Instant,
}

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A connected, authenticated API client.
pub struct PveClient {
    http: reqwest::Client,
    host: String,
    port: u16,
    api: String,
    trust: Trust,
    credentials: Credentials,
    ticket: tokio::sync::Mutex<Option<Ticket>>,
    renewal: Duration,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("api", &self.api)
            .field("trust", &self.trust)
            .field("principal", &self.credentials.principal())
            .finish_non_exhaustive()
    }
}

/// Split `https://host:port/...` into host and port (8006 by default).
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!("'{url}': Proxmox VE's API is HTTPS only (https://HOST:8006)"));
    }
    let host = match parsed.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(format!("'{url}' names no host")),
    };
    let path = parsed.path().trim_end_matches('/');
    if !(path.is_empty() || path == "/api2/json") {
        return Err(format!("'{url}': give the node's address only, e.g. https://pve.example:8006"));
    }
    Ok((host, parsed.port().unwrap_or(8006)))
}

impl PveClient {
    /// Build the client and, for a user and password, log in.
    pub async fn connect(opts: &ClientOptions) -> Result<PveClient, PveError> {
        let (host, port) = parse_url(&opts.url).map_err(PveError::Config)?;
        let tls = tls::client_config(&opts.trust)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(10).min(opts.timeout))
            .build()
            .map_err(|e| PveError::Config(format!("HTTP client: {e}")))?;
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let client = PveClient {
            http,
            api: format!("https://{authority}/api2/json"),
            host,
            port,
            trust: opts.trust.clone(),
            credentials: opts.credentials.clone(),
            ticket: tokio::sync::Mutex::new(None),
            renewal: opts.ticket_renewal,
        };
        if let Credentials::Password { user, password } = &client.credentials {
            let t = client.login(user, password).await?;
            *client.ticket.lock().await = Some(t);
        }
        Ok(client)
    }

    /// `https://HOST:PORT/api2/json`.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::Get, path, query).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::Post, path, form).await
    }

    pub async fn put(&self, path: &str, form: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::Put, path, form).await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, PveError> {
        self.call(Method::Delete, path, query).await
    }

    /// The headers that authenticate a request outside this client (the VNC
    /// websocket): the ticket cookie, or the token header. Values are secret.
    pub async fn auth_headers(&self) -> Result<Vec<(String, String)>, PveError> {
        match &self.credentials {
            Credentials::Token { id, secret } => {
                Ok(vec![("Authorization".into(), format!("PVEAPIToken={id}={}", secret.expose()))])
            }
            Credentials::Password { .. } => {
                self.fresh_ticket().await?;
                let guard = self.ticket.lock().await;
                let t = guard.as_ref().ok_or_else(|| PveError::Config("no ticket after login".into()))?;
                Ok(vec![("Cookie".into(), format!("PVEAuthCookie={}", encode_component(t.ticket.expose())))])
            }
        }
    }

    /// One API call: `params` go into the query for GET and DELETE and into
    /// a form body for POST and PUT. Returns the envelope's `data`.
    pub async fn call(&self, method: Method, path: &str, params: &[(&str, String)]) -> Result<Value, PveError> {
        self.fresh_ticket().await?;
        match self.send(method, path, params).await {
            // The node dropped our ticket (key rotation, restart): log in again once.
            Err(PveError::Api { status: 401, ref message, .. })
                if matches!(self.credentials, Credentials::Password { .. }) && !message.contains("csrf") =>
            {
                tracing::debug!(path, "ticket refused; logging in again");
                if let Credentials::Password { user, password } = &self.credentials {
                    let t = self.login(user, password).await?;
                    *self.ticket.lock().await = Some(t);
                }
                self.send(method, path, params).await
            }
            other => other,
        }
    }

    /// Renew the ticket when it is older than the renewal age.
    async fn fresh_ticket(&self) -> Result<(), PveError> {
        let Credentials::Password { user, password } = &self.credentials else { return Ok(()) };
        let mut guard = self.ticket.lock().await;
        let stale = guard.as_ref().is_none_or(|t| t.issued.elapsed() >= self.renewal);
        if !stale {
            return Ok(());
        }
        let renewed = match guard.as_ref() {
            Some(old) => match self.login(&old.user, &old.ticket).await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::debug!("ticket renewal refused ({e}); logging in with the password");
                    None
                }
            },
            None => None,
        };
        *guard = Some(match renewed {
            Some(t) => t,
            None => self.login(user, password).await?,
        });
        Ok(())
    }

    /// `POST /access/ticket` with a password or a still valid ticket.
    async fn login(&self, user: &str, password: &Hidden) -> Result<Ticket, PveError> {
        let form = [("username", user.to_string()), ("password", password.expose().to_string())];
        let data = self.send_raw(Method::Post, "/access/ticket", &form, None).await?;
        let field = |name: &str| {
            data.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| PveError::Decode {
                what: "POST /access/ticket".into(),
                detail: format!("no '{name}' in the answer"),
            })
        };
        let ticket = Hidden(field("ticket")?);
        let csrf = Hidden(field("CSRFPreventionToken")?);
        let user = data.get("username").and_then(Value::as_str).unwrap_or(user).to_string();
        tracing::debug!(user, "Proxmox VE ticket issued");
        Ok(Ticket { user, ticket, csrf, issued: Instant::now() })
    }

    async fn send(&self, method: Method, path: &str, params: &[(&str, String)]) -> Result<Value, PveError> {
        let auth = match &self.credentials {
            Credentials::Token { id, secret } => Auth::Token(format!("PVEAPIToken={id}={}", secret.expose())),
            Credentials::Password { .. } => {
                let guard = self.ticket.lock().await;
                let t = guard.as_ref().ok_or_else(|| PveError::Config("not logged in".into()))?;
                Auth::Ticket {
                    cookie: format!("PVEAuthCookie={}", encode_component(t.ticket.expose())),
                    csrf: t.csrf.expose().to_string(),
                }
            }
        };
        self.send_raw(method, path, params, Some(auth)).await
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        auth: Option<Auth>,
    ) -> Result<Value, PveError> {
        let encoded = encode_form(params);
        let mut url = format!("{}{path}", self.api);
        let has_body = matches!(method, Method::Post | Method::Put);
        if !has_body && !encoded.is_empty() {
            url = format!("{url}?{encoded}");
        }
        let mut req = match method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url),
            Method::Put => self.http.put(&url),
            Method::Delete => self.http.delete(&url),
        };
        if has_body {
            req = req.header("Content-Type", "application/x-www-form-urlencoded").body(encoded);
        }
        match auth {
            Some(Auth::Token(value)) => req = req.header("Authorization", value),
            Some(Auth::Ticket { cookie, csrf }) => {
                req = req.header("Cookie", cookie);
                if method != Method::Get {
                    req = req.header("CSRFPreventionToken", csrf);
                }
            }
            None => {}
        }
        tracing::debug!(method = method.as_str(), path, "Proxmox VE request");
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            let Some(Value::Object(mut envelope)) = json else {
                return Err(PveError::Decode {
                    what: format!("{} {path}", method.as_str()),
                    detail: "the body is not a JSON object with 'data'".into(),
                });
            };
            return Ok(envelope.remove("data").unwrap_or(Value::Null));
        }
        let body_message =
            json.as_ref().and_then(|j| j.get("message")).and_then(Value::as_str).map(|m| m.trim().to_string());
        let message = body_message.filter(|m| !m.is_empty()).unwrap_or_else(|| reason.trim().to_string());
        let mut errors: Vec<(String, String)> = json
            .as_ref()
            .and_then(|j| j.get("errors"))
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), |s| s.trim().to_string())))
                    .collect()
            })
            .unwrap_or_default();
        errors.sort();
        Err(PveError::Api {
            method: method.as_str().to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            hint: hint_for(status.as_u16(), &message, path),
            message,
            errors,
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> PveError {
        let timeout = e.is_timeout();
        let e = e.without_url();
        let mut detail = e.to_string();
        // reqwest's Display hides the cause: walk the chain for the TLS or socket error.
        let mut cur = std::error::Error::source(&e);
        while let Some(s) = cur {
            let text = s.to_string();
            if !detail.contains(&text) {
                detail = format!("{detail}: {text}");
            }
            cur = s.source();
        }
        let lower = detail.to_ascii_lowercase();
        let hint = if lower.contains("pinmismatch") || lower.contains("fingerprint mismatch") {
            Some("certificate fingerprint mismatch: the node presented another certificate than the pinned one; if the presented one is your node's (PVE GUI: Node > System > Certificates), pin it".to_string())
        } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
            Some("PVE signs node certificates with its own CA: give `ca:` (a copy of /etc/pve/pve-root-ca.pem) or pin `fingerprint:`".to_string())
        } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
            Some("the certificate does not name this host: use a name it lists, or pin `fingerprint:`".to_string())
        } else if lower.contains("connection refused") {
            Some("is pveproxy listening on this host and port (default 8006)?".to_string())
        } else if timeout {
            Some("the node did not answer in time".to_string())
        } else {
            None
        };
        PveError::Transport { url: self.api.clone(), detail, hint }
    }
}

enum Auth {
    Token(String),
    Ticket { cookie: String, csrf: String },
}

/// Characters kept as they are in form values and path segments: RFC 3986 unreserved.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encode one path segment, query or form value.
pub fn encode_component(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

/// `application/x-www-form-urlencoded` as PVE decodes it.
pub fn encode_form(params: &[(&str, String)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_never_show_their_secret() {
        let c = Credentials::token("PVEAPIToken=smoke@pve!ci=1234-abcd", None).unwrap();
        match &c {
            Credentials::Token { id, secret } => {
                assert_eq!(id, "smoke@pve!ci");
                assert_eq!(secret.expose(), "1234-abcd");
            }
            _ => panic!("not a token"),
        }
        assert!(!format!("{c:?}").contains("1234-abcd"), "{c:?}");
        let c = Credentials::token("1234-abcd\n", Some("smoke@pve!ci")).unwrap();
        assert_eq!(c.principal(), "smoke@pve!ci");
        assert!(Credentials::token("1234", None).unwrap_err().to_string().contains("USER@REALM!TOKENID=SECRET"));
        assert!(Credentials::token("smoke!ci=1", None).is_err());
        assert!(Credentials::token("a@pve!x=1", Some("b@pve!y")).unwrap_err().to_string().contains("token_id"));
    }

    #[test]
    fn urls_default_to_port_8006_and_must_be_https() {
        assert_eq!(parse_url("https://pve.example").unwrap(), ("pve.example".into(), 8006));
        assert_eq!(parse_url("https://10.0.0.2:8443/api2/json/").unwrap(), ("10.0.0.2".into(), 8443));
        assert_eq!(parse_url("https://[::1]:8006").unwrap(), ("::1".into(), 8006));
        assert!(parse_url("http://pve.example:8006").unwrap_err().contains("HTTPS only"));
        assert!(parse_url("https://pve.example:8006/nodes").unwrap_err().contains("address only"));
    }

    #[test]
    fn forms_encode_upids_and_tickets() {
        let f = encode_form(&[("password", "PVE:root@pam:65A0::a+b/c=".into()), ("x", "a b".into())]);
        assert_eq!(f, "password=PVE%3Aroot%40pam%3A65A0%3A%3Aa%2Bb%2Fc%3D&x=a%20b");
    }
}

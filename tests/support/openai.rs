//! An in-test OpenAI-compatible server (no real VLM can run here): speaks the
//! chat-completions wire format as documented (`POST /v1/chat/completions`,
//! `GET /v1/models`, bearer auth, `usage`), checks every request's shape,
//! decodes the screenshot from its base64 PNG data URL, and answers from a
//! responder function or a script of misbehaviours (5xx, 429 with
//! Retry-After, delays, garbage, dropped connections).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chat request as the server understood it.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub model: String,
    pub prompt: String,
    /// The decoded screenshot, when one was sent.
    pub image: Option<smoke::frame::Frame>,
    pub authorization: Option<String>,
    pub temperature: Option<f64>,
    pub at: Instant,
}

/// What to do with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer { content: String, reasoning: Option<String> },
    Status { code: u16, retry_after: Option<u64> },
    Delay(Duration, Box<Reply>),
    Garbage,
    Drop,
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply::Answer { content: s.into(), reasoning: None }
    }
}

type Responder = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

struct State {
    models: Vec<String>,
    script: VecDeque<Reply>,
    responder: Responder,
    requests: Vec<Request>,
}

#[derive(Clone)]
pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    /// Start on a free loopback port, serving `models`; answers come from `responder`.
    pub async fn start(models: &[&str], responder: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            models: models.iter().map(|m| m.to_string()).collect(),
            script: VecDeque::new(),
            responder: Box::new(responder),
            requests: Vec::new(),
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        Server { base, state }
    }

    /// Replies for the next requests, before the responder is asked.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn chat_requests(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path.ends_with("/chat/completions")).collect()
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

async fn serve(mut sock: tokio::net::TcpStream, st: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // headers
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut length = 0usize;
        let mut authorization = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let (status, extra, payload) = handle(&method, &path, &body, authorization, &st).await;
        match payload {
            None => return Ok(()), // drop the connection
            Some(p) => {
                let reason = match status {
                    200 => "OK",
                    400 => "Bad Request",
                    404 => "Not Found",
                    429 => "Too Many Requests",
                    _ => "Status",
                };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
                    p.len()
                );
                sock.write_all(resp.as_bytes()).await?;
                sock.write_all(&p).await?;
            }
        }
    }
}

/// Decide the answer: (status, extra headers, body or None to drop the connection).
async fn handle(
    method: &str,
    path: &str,
    body: &[u8],
    authorization: Option<String>,
    st: &Arc<Mutex<State>>,
) -> (u16, String, Option<Vec<u8>>) {
    if method == "GET" && path.ends_with("/models") {
        let models = st.lock().unwrap().models.clone();
        st.lock().unwrap().requests.push(Request {
            path: path.into(),
            model: String::new(),
            prompt: String::new(),
            image: None,
            authorization,
            temperature: None,
            at: Instant::now(),
        });
        let data: Vec<Value> =
            models.iter().map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "test"})).collect();
        return (200, String::new(), Some(json!({"object": "list", "data": data}).to_string().into_bytes()));
    }
    if method != "POST" || !path.ends_with("/chat/completions") {
        return (
            404,
            String::new(),
            Some(br#"{"error":{"message":"not found","type":"invalid_request_error"}}"#.to_vec()),
        );
    }
    // check the request's shape as the API documents it
    let bad = |m: &str| {
        (
            400,
            String::new(),
            Some(json!({"error": {"message": m, "type": "invalid_request_error"}}).to_string().into_bytes()),
        )
    };
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return bad("body is not JSON") };
    let Some(model) = v["model"].as_str() else { return bad("model missing") };
    let Some(msgs) = v["messages"].as_array() else { return bad("messages missing") };
    let Some(msg) = msgs.first() else { return bad("no message") };
    if msg["role"] != "user" {
        return bad("first message must be from the user");
    }
    let mut prompt = String::new();
    let mut image = None;
    match &msg["content"] {
        Value::String(s) => prompt = s.clone(),
        Value::Array(parts) => {
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => prompt.push_str(p["text"].as_str().unwrap_or("")),
                    Some("image_url") => {
                        let Some(url) = p["image_url"]["url"].as_str() else { return bad("image_url.url missing") };
                        let Some(b64) = url.strip_prefix("data:image/png;base64,") else {
                            return bad("expected a PNG data URL");
                        };
                        let Some(bytes) = decode_base64(b64) else { return bad("invalid base64") };
                        match smoke::frame::Frame::decode_png(&bytes) {
                            Ok(f) => image = Some(f),
                            Err(_) => return bad("image is not a PNG"),
                        }
                    }
                    _ => return bad("unknown content part"),
                }
            }
        }
        _ => return bad("content must be a string or parts"),
    }
    if !st.lock().unwrap().models.iter().any(|m| m == model) {
        return (
            404,
            String::new(),
            Some(
                json!({"error": {"message": format!("model {model} not found"), "type": "invalid_request_error"}})
                    .to_string()
                    .into_bytes(),
            ),
        );
    }
    let req = Request {
        path: path.into(),
        model: model.into(),
        prompt,
        image,
        authorization,
        temperature: v["temperature"].as_f64(),
        at: Instant::now(),
    };
    let reply = {
        let mut s = st.lock().unwrap();
        s.requests.push(req.clone());
        match s.script.pop_front() {
            Some(r) => r,
            None => (s.responder)(&req),
        }
    };
    render(reply).await
}

/// (status, extra headers, body; None drops the connection)
type Rendered = (u16, String, Option<Vec<u8>>);

fn render(reply: Reply) -> std::pin::Pin<Box<dyn std::future::Future<Output = Rendered> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Delay(d, r) => {
                tokio::time::sleep(d).await;
                render(*r).await
            }
            Reply::Drop => (0, String::new(), None),
            Reply::Garbage => (200, String::new(), Some(b"<html>upstream says hi</html>".to_vec())),
            Reply::Status { code, retry_after } => {
                let extra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
                (
                    code,
                    extra,
                    Some(
                        json!({"error": {"message": "scripted failure", "type": "server_error"}})
                            .to_string()
                            .into_bytes(),
                    ),
                )
            }
            Reply::Answer { content, reasoning } => {
                let mut message = json!({"role": "assistant", "content": content});
                if let Some(r) = reasoning {
                    message["reasoning_content"] = Value::String(r);
                }
                let body = json!({
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "test",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010},
                });
                (200, String::new(), Some(body.to_string().into_bytes()))
            }
        }
    })
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

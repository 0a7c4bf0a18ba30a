//! An OpenAI-compatible chat-completions client (vLLM, llama.cpp server,
//! Ollama, llama-swap, hosted APIs) with endpoint failover.
//!
//! `POST {base}/chat/completions` with one user message holding the question
//! and the screen as a base64 PNG data URL; `GET {base}/models` lists models.
//! Connection errors, timeouts, 5xx and 429 (honouring Retry-After) are
//! retried with backoff, then the next endpoint is tried; an endpoint that
//! answers becomes the primary one. 401/403 and 400 end the call at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::results::markup::base64;

/// Why a VLM call failed.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("the VLM endpoint refused the API key ({endpoint}: HTTP {status})")]
    Auth { endpoint: String, status: u16 },
    #[error("the VLM endpoint rejected the request ({endpoint}: HTTP {status}: {body})")]
    Rejected { endpoint: String, status: u16, body: String },
    #[error("no VLM endpoint answered: {}", attempts.join("; "))]
    Unavailable { attempts: Vec<String> },
    #[error("the VLM answer is not a chat completion ({endpoint}): {why}")]
    BadResponse { endpoint: String, why: String },
    #[error("model '{model}' is not served by {endpoint} (it serves: {available})")]
    ModelMissing { model: String, endpoint: String, available: String },
    #[error(transparent)]
    Budget(#[from] crate::vlm::budget::BudgetExceeded),
}

/// One answer.
#[derive(Debug, Clone)]
pub struct ChatReply {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub endpoint: String,
    pub latency: Duration,
    pub attempts: u32,
}

pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    primary: AtomicUsize,
    api_key: Option<String>,
    retries: u32,
}

enum Attempt {
    Done(ChatReply),
    /// Try again (same endpoint after a pause, then the next).
    Retry(String, Option<Duration>),
    /// Skip to the next endpoint.
    Next(String),
    Fatal(VlmError),
}

impl Client {
    pub fn new(
        endpoints: Vec<String>,
        api_key: Option<String>,
        timeout: Duration,
        retries: u32,
    ) -> Result<Client, VlmError> {
        let http = crate::http::client(timeout).map_err(VlmError::Setup)?;
        Ok(Client { http, endpoints, primary: AtomicUsize::new(0), api_key, retries })
    }

    /// The endpoint tried first.
    pub fn primary(&self) -> &str {
        &self.endpoints[self.primary.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    fn order(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        let p = self.primary.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(|i| (p + i) % n).collect()
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// Ask `model` about an image (PNG bytes) with `prompt`.
    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        png: Option<&[u8]>,
        max_tokens: u32,
        temperature: f32,
    ) -> Result<ChatReply, VlmError> {
        let mut content = vec![json!({"type": "text", "text": prompt})];
        if let Some(p) = png {
            content.push(
                json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", base64(p))}}),
            );
        }
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": false,
        });
        let mut failures = Vec::new();
        let mut attempts = 0;
        for idx in self.order() {
            let base = &self.endpoints[idx];
            let mut backoff = Duration::from_millis(250);
            for attempt in 0..=self.retries {
                attempts += 1;
                let start = Instant::now();
                match self.once(base, &body, start, attempts).await {
                    Attempt::Done(reply) => {
                        self.primary.store(idx, Ordering::Relaxed);
                        return Ok(reply);
                    }
                    Attempt::Fatal(e) => return Err(e),
                    Attempt::Next(why) => {
                        failures.push(format!("{base}: {why}"));
                        break;
                    }
                    Attempt::Retry(why, after) => {
                        failures.push(format!("{base}: {why}"));
                        if attempt < self.retries {
                            tokio::time::sleep(after.unwrap_or(backoff).min(Duration::from_secs(30))).await;
                            backoff *= 2;
                        }
                    }
                }
            }
        }
        Err(VlmError::Unavailable { attempts: failures })
    }

    async fn once(&self, base: &str, body: &Value, start: Instant, attempts: u32) -> Attempt {
        let url = format!("{base}/chat/completions");
        let resp = match self.auth(self.http.post(&url).json(body)).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Retry("timed out".into(), None),
            Err(e) => return Attempt::Retry(format!("cannot connect ({})", one_line(&e)), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => return Attempt::Retry("timed out reading the answer".into(), None),
            Err(e) => return Attempt::Retry(format!("the answer broke off ({})", one_line(&e)), None),
        };
        match status {
            200..=299 => {}
            429 => {
                return Attempt::Retry(
                    format!(
                        "HTTP 429 (rate limited{})",
                        retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default()
                    ),
                    retry_after,
                );
            }
            500..=599 => return Attempt::Retry(format!("HTTP {status}"), None),
            401 | 403 => return Attempt::Fatal(VlmError::Auth { endpoint: base.into(), status }),
            404 => return Attempt::Next(format!("HTTP 404 ({})", short(&text))),
            _ => return Attempt::Fatal(VlmError::Rejected { endpoint: base.into(), status, body: short(&text) }),
        }
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return Attempt::Next(format!("not JSON: {e}")),
        };
        let Some(msg) = v.pointer("/choices/0/message") else {
            return Attempt::Next(format!("no choices[0].message in {}", short(&text)));
        };
        let s = |k: &str| msg.get(k).and_then(Value::as_str).map(str::to_string);
        Attempt::Done(ChatReply {
            content: s("content"),
            reasoning: s("reasoning_content").or_else(|| s("reasoning")),
            prompt_tokens: v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
            completion_tokens: v.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0),
            endpoint: base.into(),
            latency: start.elapsed(),
            attempts,
        })
    }

    /// The models an endpoint serves (the first endpoint that answers).
    pub async fn models(&self) -> Result<(String, Vec<String>), VlmError> {
        let mut failures = Vec::new();
        for idx in self.order() {
            let base = &self.endpoints[idx];
            match self.auth(self.http.get(format!("{base}/models"))).send().await {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => {
                        let ids = v["data"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|m| m["id"].as_str().map(str::to_string))
                            .collect();
                        self.primary.store(idx, Ordering::Relaxed);
                        return Ok((base.clone(), ids));
                    }
                    Err(e) => failures.push(format!("{base}: {}", one_line(&e))),
                },
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                    return Err(VlmError::Auth { endpoint: base.clone(), status: r.status().as_u16() });
                }
                Ok(r) => failures.push(format!("{base}: HTTP {}", r.status().as_u16())),
                Err(e) => failures.push(format!("{base}: {}", one_line(&e))),
            }
        }
        Err(VlmError::Unavailable { attempts: failures })
    }
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn short(t: &str) -> String {
    let one: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 { format!("{}…", one.chars().take(200).collect::<String>()) } else { one }
}

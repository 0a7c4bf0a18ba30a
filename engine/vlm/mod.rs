//! Vision-language model checks: ask a model yes/no questions about the
//! screen (the judge) and where to click (the locator), through any
//! OpenAI-compatible endpoint. The model is the last, cached and budgeted
//! tier: cheaper checks decide first, an unchanged screen is never asked
//! twice (see [`cache`]), and spending is capped per run ([`budget`]).
//!
//! - [`config`]: the inventory's `vlm:` section.
//! - [`client`]: chat completions with endpoint failover, retries, timeouts.
//! - [`answer`]: strip reasoning, the yes/no rule, coordinates in many formats.
//! - [`cache`]: persistent verdicts keyed by (image, prompt, model).
//! - [`budget`]: per-run limits on calls, tokens and cost.
//! - [`replay`]: the questions of a past run, for `smoke replay`.

pub mod answer;
pub mod budget;
pub mod cache;
pub mod client;
pub mod config;
pub mod replay;

use serde::Serialize;

use crate::frame::Frame;
use crate::secrets::SecretStore;
use answer::{LocateError, Located, Verdict};
use budget::{Meter, Spent};
use cache::Cache;
use client::Client;
pub use client::VlmError;
use config::{ModelConfig, VlmConfig};

/// One question to the model and what came of it (goes into events as is).
#[derive(Debug, Clone, Serialize)]
pub struct Asked {
    pub question: String,
    pub model: String,
    pub answer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    pub cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub latency_ms: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    /// SHA-256 of the image's pixels.
    pub image: String,
}

/// The result of preflight: which endpoint answered and what it serves.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub endpoint: String,
    pub models: Vec<String>,
    pub warmup_ms: Option<u64>,
}

/// The VLM of a run: client, cache and budget.
pub struct Vlm {
    cfg: VlmConfig,
    client: Client,
    cache: Option<Cache>,
    meter: Meter,
}

/// The prompt for a yes/no question.
pub fn judge_prompt(question: &str) -> String {
    format!(
        "You are checking a screenshot of a computer screen.\nQuestion: {question}\nAnswer with one word: yes or no."
    )
}

/// The prompt for locating something to click.
pub fn locate_prompt(description: &str, width: u32, height: u32) -> String {
    format!(
        "This is a screenshot of a computer screen, {width}x{height} pixels.\nFind: {description}\nAnswer with the point to click as (x, y)."
    )
}

impl Vlm {
    /// Set up from the config; the API key is read from its secret source
    /// (and masked in everything smoke writes). `use_cache: false` is `--no-cache`.
    pub fn new(cfg: VlmConfig, secrets: &SecretStore, use_cache: bool) -> Result<Vlm, VlmError> {
        let key = match &cfg.api_key {
            Some(src) => Some(secrets.read("vlm api key", src).map_err(|e| VlmError::Setup(e.to_string()))?),
            None => None,
        };
        let client = Client::new(cfg.endpoints.clone(), key, cfg.timeout, cfg.retries)?;
        let cache = if use_cache { cfg.cache.as_deref().map(Cache::open) } else { None };
        let meter = Meter::new(cfg.budget.clone(), cfg.price.clone());
        Ok(Vlm { cfg, client, cache, meter })
    }

    pub fn config(&self) -> &VlmConfig {
        &self.cfg
    }

    pub fn spent(&self) -> Spent {
        self.meter.spent()
    }

    /// Check the endpoint serves the configured models; warm the judge up.
    pub async fn preflight(&self) -> Result<Preflight, VlmError> {
        let (endpoint, models) = self.client.models().await?;
        let wanted = std::iter::once(&self.cfg.judge).chain(self.cfg.locate.as_ref());
        for m in wanted {
            if !models.iter().any(|x| x == &m.model) {
                return Err(VlmError::ModelMissing { model: m.model.clone(), endpoint, available: models.join(", ") });
            }
        }
        let mut warmup_ms = None;
        if self.cfg.warmup {
            // absorbs a model swap (llama-swap, Ollama) before the first real question
            self.meter.check()?;
            let r = self.client.chat(&self.cfg.judge.model, "Answer with one word: ready", None, 16, 0.0).await?;
            self.meter.charge(r.prompt_tokens, r.completion_tokens);
            warmup_ms = Some(r.latency.as_millis() as u64);
        }
        Ok(Preflight { endpoint, models, warmup_ms })
    }

    async fn ask(
        &self,
        model: &ModelConfig,
        prompt: &str,
        question: &str,
        frame: &Frame,
        sample: u32,
        temperature: f32,
    ) -> Result<Asked, VlmError> {
        let image = cache::image_hash(frame);
        let key_prompt = if sample == 0 { prompt.to_string() } else { format!("{prompt}\n#sample {sample}") };
        let key = cache::key(&image, &key_prompt, &model.model);
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.meter.cache_hit();
            return Ok(Asked {
                question: question.to_string(),
                model: model.model.clone(),
                answer: hit.answer,
                verdict: None,
                cached: true,
                endpoint: None,
                latency_ms: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                cost: 0.0,
                image,
            });
        }
        self.meter.check()?;
        let png = frame.to_png().map_err(|e| VlmError::Setup(e.to_string()))?;
        let reply = self.client.chat(&model.model, prompt, Some(&png), model.max_tokens, temperature).await?;
        let cost = self.meter.charge(reply.prompt_tokens, reply.completion_tokens);
        let text = answer::answer_text(reply.content.as_deref(), reply.reasoning.as_deref());
        if let Some(c) = &self.cache {
            let entry = cache::Entry {
                key,
                model: model.model.clone(),
                prompt: key_prompt,
                image: image.clone(),
                answer: text.clone(),
                time: crate::events::now_rfc3339(),
            };
            if let Err(e) = c.put(entry) {
                tracing::warn!("cannot write the VLM cache {}: {e}", c.path().display());
            }
        }
        Ok(Asked {
            question: question.to_string(),
            model: model.model.clone(),
            answer: text,
            verdict: None,
            cached: false,
            endpoint: Some(reply.endpoint),
            latency_ms: reply.latency.as_millis() as u64,
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            cost,
            image,
        })
    }

    /// Ask the judge a yes/no question about `frame`. `sample` > 0 asks an
    /// independent sample (for majority votes; sampled with temperature).
    pub async fn judge(&self, question: &str, frame: &Frame, sample: u32) -> Result<Asked, VlmError> {
        let judge = self.cfg.judge.clone();
        let temperature = if sample == 0 { 0.0 } else { 0.7 };
        let mut a = self.ask(&judge, &judge_prompt(question), question, frame, sample, temperature).await?;
        a.verdict = Some(answer::yes_no(&a.answer));
        Ok(a)
    }

    /// Ask the locator (the judge when none is configured) where `description` is.
    pub async fn locate(
        &self,
        description: &str,
        frame: &Frame,
    ) -> Result<(Result<Located, LocateError>, Asked), VlmError> {
        self.locate_sample(description, frame, 0).await
    }

    /// [`Vlm::locate`] as an independent sample (`sample` > 0: sampled with
    /// temperature, cached under its own key), for retrying an unusable answer.
    pub async fn locate_sample(
        &self,
        description: &str,
        frame: &Frame,
        sample: u32,
    ) -> Result<(Result<Located, LocateError>, Asked), VlmError> {
        let model = self.cfg.locate.clone().unwrap_or_else(|| self.cfg.judge.clone());
        let prompt = locate_prompt(description, frame.width(), frame.height());
        let temperature = if sample == 0 { 0.0 } else { 0.7 };
        let a = self.ask(&model, &prompt, description, frame, sample, temperature).await?;
        let located = answer::locate(&a.answer, model.grid, frame.width(), frame.height());
        Ok((located, a))
    }
}

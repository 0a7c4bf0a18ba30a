//! The `vlm:` section of the inventory: endpoints, models, limits.
//!
//! ```yaml
//! vlm:
//!   endpoints: [http://127.0.0.1:8000/v1, https://vlm.example.com/v1]   # failover order
//!   api_key: {env: VLM_API_KEY}          # or {file: ~/.config/smoke/vlm-key}; optional
//!   judge: {model: qwen2.5-vl-7b-instruct, max_tokens: 1024}
//!   locate: {model: ui-tars-1.5-7b, grid: thousand}   # thousand | pixels | auto
//!   timeout: 60s                         # per request
//!   retries: 2                           # per endpoint, with backoff
//!   budget: {calls: 200, tokens: 500000, cost: 5.0}   # per run; exceeding is an error
//!   price: {input_per_1k: 0.0005, output_per_1k: 0.0015}
//!   cache: ~/.cache/smoke/vlm-cache.jsonl
//!   warmup: true                         # one call before the first step
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::scenario::decode::{self, MapReader};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics};
use crate::scenario::node::{Node, Value};
use crate::secrets::SecretSource;
use crate::vlm::answer::Grid;

pub const KEYS: &[&str] =
    &["endpoints", "api_key", "judge", "locate", "timeout", "retries", "budget", "price", "cache", "warmup"];

/// Model families that only localise (grounding): they hallucinate on yes/no.
pub const GROUNDING_ONLY: &[&str] = &[
    "ui-tars",
    "uitars",
    "showui",
    "os-atlas",
    "uground",
    "seeclick",
    "aguvis",
    "cogagent",
    "omniparser",
    "gui-actor",
];

#[derive(Debug, Clone)]
pub struct VlmConfig {
    pub endpoints: Vec<String>,
    pub api_key: Option<SecretSource>,
    pub judge: ModelConfig,
    pub locate: Option<ModelConfig>,
    pub timeout: Duration,
    pub retries: u32,
    pub budget: Budget,
    pub price: Price,
    pub cache: Option<PathBuf>,
    pub warmup: bool,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model: String,
    pub max_tokens: u32,
    pub grid: Grid,
}

/// Per-run limits (None: unlimited).
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub calls: Option<u64>,
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
}

/// Price per 1000 tokens.
#[derive(Debug, Clone, Default)]
pub struct Price {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
}

impl Price {
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        input as f64 / 1000.0 * self.input_per_1k + output as f64 / 1000.0 * self.output_per_1k
    }
}

/// The default cache file: `$XDG_CACHE_HOME/smoke/vlm-cache.jsonl` (or `~/.cache/...`).
pub fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("smoke").join("vlm-cache.jsonl"))
}

fn model(node: &Node, what: &str, default_tokens: u32, diags: &mut Diagnostics) -> Option<ModelConfig> {
    let m = MapReader::new(node, what, &["model", "max_tokens", "grid"], diags)?;
    let model = m.required("model", diags).and_then(|n| decode::non_empty(n, "model", diags));
    let max_tokens = m
        .get("max_tokens")
        .map_or(Some(default_tokens as i64), |n| decode::integer(n, "max_tokens", 1, 1_000_000, diags));
    let grid = match m.get("grid") {
        None => Grid::Auto,
        Some(n) => match decode::string(n, "grid", diags).as_deref() {
            Some("thousand") | Some("1000") => Grid::Thousand,
            Some("pixels") => Grid::Pixels,
            Some("auto") | None => Grid::Auto,
            Some(other) => {
                diags.push(
                    Diagnostic::new(&n.span, format!("unknown grid '{other}'"))
                        .with_help("use thousand (0-1000), pixels or auto"),
                );
                Grid::Auto
            }
        },
    };
    Some(ModelConfig { model: model?, max_tokens: max_tokens? as u32, grid })
}

/// Decode the `vlm:` section.
pub fn decode(node: &Node, diags: &mut Diagnostics) -> Option<VlmConfig> {
    let m = MapReader::new(node, "the vlm section", KEYS, diags)?;
    let before = diags.len();
    let endpoints: Vec<String> = match m.required("endpoints", diags) {
        None => Vec::new(),
        Some(n) => decode::list(n, "endpoints", true, diags)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                let s = decode::non_empty(e, "endpoint", diags)?;
                if !(s.starts_with("http://") || s.starts_with("https://")) {
                    diags.push(
                        Diagnostic::new(&e.span, format!("endpoint '{s}' is not an http:// or https:// URL"))
                            .with_help("e.g. http://127.0.0.1:8000/v1 (the part before /chat/completions)"),
                    );
                    return None;
                }
                Some(s.trim_end_matches('/').to_string())
            })
            .collect(),
    };
    let api_key = m.get("api_key").and_then(|n| {
        let k = MapReader::new(n, "api_key", &["env", "file"], diags)?;
        match (k.get("env"), k.get("file")) {
            (Some(e), None) => decode::non_empty(e, "env", diags).map(SecretSource::Env),
            (None, Some(f)) => decode::non_empty(f, "file", diags).map(|p| SecretSource::File(expand_home(&p))),
            _ => {
                diags.push(Diagnostic::new(
                    &n.span,
                    "api_key needs exactly one of 'env' or 'file' (never the key itself)",
                ));
                None
            }
        }
    });
    let judge = m.required("judge", diags).and_then(|n| model(n, "judge", 1024, diags));
    if let (Some(j), Some(n)) = (&judge, m.get("judge")) {
        let lower = j.model.to_ascii_lowercase();
        if let Some(g) = GROUNDING_ONLY.iter().find(|g| lower.contains(*g)) {
            diags.push(
                Diagnostic::new(
                    &n.span,
                    format!("'{}' is a grounding model ({g}): it localises, and answers yes/no unreliably", j.model),
                )
                .with_help("use a general vision-language model as the judge, and this one under `locate:`"),
            );
        }
    }
    let locate = m.get("locate").and_then(|n| model(n, "locate", 256, diags));
    let timeout = m.get("timeout").map_or(Some(Duration::from_secs(60)), |n| decode::duration(n, "timeout", diags));
    let retries = m.get("retries").map_or(Some(2), |n| decode::integer(n, "retries", 0, 20, diags));
    let budget = m
        .get("budget")
        .and_then(|n| {
            let b = MapReader::new(n, "budget", &["calls", "tokens", "cost"], diags)?;
            Some(Budget {
                calls: b.get("calls").and_then(|x| decode::integer(x, "calls", 0, i64::MAX, diags)).map(|v| v as u64),
                tokens: b
                    .get("tokens")
                    .and_then(|x| decode::integer(x, "tokens", 0, i64::MAX, diags))
                    .map(|v| v as u64),
                cost: b.get("cost").and_then(|x| decode::number(x, "cost", 0.0, f64::MAX, diags)),
            })
        })
        .unwrap_or_default();
    let price = m
        .get("price")
        .and_then(|n| {
            let p = MapReader::new(n, "price", &["input_per_1k", "output_per_1k"], diags)?;
            Some(Price {
                input_per_1k: p
                    .get("input_per_1k")
                    .and_then(|x| decode::number(x, "input_per_1k", 0.0, f64::MAX, diags))
                    .unwrap_or(0.0),
                output_per_1k: p
                    .get("output_per_1k")
                    .and_then(|x| decode::number(x, "output_per_1k", 0.0, f64::MAX, diags))
                    .unwrap_or(0.0),
            })
        })
        .unwrap_or_default();
    let cache = match m.get("cache") {
        None => default_cache(),
        Some(n) if matches!(n.value, Value::Bool(false)) => None,
        Some(n) => decode::non_empty(n, "cache", diags).map(|p| expand_home(&p)),
    };
    let warmup = m.get("warmup").and_then(|n| decode::boolean(n, "warmup", diags)).unwrap_or(true);
    if diags.len() > before {
        return None;
    }
    Some(VlmConfig {
        endpoints,
        api_key,
        judge: judge?,
        locate,
        timeout: timeout?,
        retries: retries? as u32,
        budget,
        price,
        cache,
        warmup,
    })
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::source::SourceMap;

    fn parse(text: &str) -> Result<VlmConfig, Diagnostics> {
        let mut sources = SourceMap::new();
        let f = sources.add("inv.yaml", text);
        let root = crate::scenario::yaml::parse(&f, text.as_bytes())?;
        let mut d = Diagnostics::new();
        let c = decode(root.get("vlm").map(|e| &e.value).unwrap(), &mut d);
        match c {
            Some(c) if d.is_empty() => Ok(c),
            _ => Err(d),
        }
    }

    #[test]
    fn a_full_section() {
        let c = parse("vlm:\n  endpoints: [http://127.0.0.1:8000/v1/, https://b/v1]\n  api_key: {env: K}\n  judge: {model: qwen2.5-vl}\n  locate: {model: ui-tars-7b, grid: thousand}\n  budget: {calls: 3, cost: 0.5}\n  price: {input_per_1k: 0.001}\n  cache: false\n").unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:8000/v1", "https://b/v1"]);
        assert_eq!(c.judge.max_tokens, 1024);
        assert_eq!(c.locate.unwrap().grid, Grid::Thousand);
        assert_eq!(c.budget.calls, Some(3));
        assert!(c.cache.is_none());
        assert!((c.price.cost(2000, 0) - 0.002).abs() < 1e-12);
    }

    #[test]
    fn a_grounding_model_as_judge_is_refused() {
        let d = parse("vlm:\n  endpoints: [http://x/v1]\n  judge: {model: UI-TARS-1.5-7B}\n").unwrap_err();
        assert_eq!((d.items[0].span.line, d.items[0].span.col), (3, 10));
        assert!(d.items[0].message.contains("grounding model"), "{d}");
    }

    #[test]
    fn bad_endpoints_and_inline_keys_are_errors() {
        let d = parse("vlm:\n  endpoints: [localhost:8000]\n  api_key: sk-123\n  judge: {model: m}\n").unwrap_err();
        let msgs: Vec<String> = d.items.iter().map(|d| d.message.clone()).collect();
        assert!(msgs.iter().any(|m| m.contains("not an http")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("api_key must be a map")), "{msgs:?}");
    }
}

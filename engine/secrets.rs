//! Secrets: passwords, tokens and keys come from the environment or from files,
//! never from YAML in the repository, and never reach logs, events, reports or
//! GIF captions.
//!
//! A [`SecretStore`] resolves secret names (`{{ secret("rc_password") }}` in a
//! scenario); every value it hands out is remembered so the [`Redactor`] built
//! from it can mask that value wherever it would be written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where one secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file; its content without the trailing newline.
    File(PathBuf),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret '{name}' is not set: export {var}=... (or map it in the inventory's `secrets:`)")]
    MissingEnv { name: String, var: String },
    #[error("secret '{name}': cannot read {path}: {source}")]
    File { name: String, path: String, source: std::io::Error },
    #[error("secret '{name}' is empty")]
    Empty { name: String },
}

/// Resolves secrets by name and remembers every value handed out.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    sources: BTreeMap<String, SecretSource>,
    revealed: Arc<Mutex<Vec<String>>>,
}

impl SecretStore {
    pub fn new(sources: BTreeMap<String, SecretSource>) -> SecretStore {
        SecretStore { sources, revealed: Arc::default() }
    }

    /// The environment variable used for a secret that has no explicit source.
    pub fn default_env_var(name: &str) -> String {
        let upper: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("SMOKE_SECRET_{upper}")
    }

    /// Read a secret. The value is remembered for redaction.
    pub fn get(&self, name: &str) -> Result<String, SecretError> {
        let source = self.sources.get(name).cloned().unwrap_or_else(|| SecretSource::Env(Self::default_env_var(name)));
        self.read(name, &source)
    }

    /// Read a secret from an explicit source (`name` is for messages). The
    /// value is remembered for redaction.
    pub fn read(&self, name: &str, source: &SecretSource) -> Result<String, SecretError> {
        let value = match source {
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| SecretError::MissingEnv { name: name.to_string(), var: var.clone() })?
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::File {
                    name: name.to_string(),
                    path: path.display().to_string(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty { name: name.to_string() });
        }
        self.remember(&value);
        Ok(value)
    }

    /// Remember a value that must never be written (e.g. a generated VNC password).
    pub fn remember(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        if let Ok(mut r) = self.revealed.lock()
            && !r.iter().any(|v| v == value)
        {
            r.push(value.to_string());
        }
    }

    /// A redactor for every value handed out so far and later.
    pub fn redactor(&self) -> Redactor {
        Redactor { values: self.revealed.clone() }
    }
}

/// Masks secret values in text that is about to be written anywhere.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Arc<Mutex<Vec<String>>>,
}

/// What a secret is replaced with.
pub const MASK: &str = "******";

impl Redactor {
    /// Replace every occurrence of a known secret with [`MASK`]. Longer secrets
    /// are replaced first so one that contains another is masked whole.
    pub fn redact(&self, text: &str) -> String {
        let Ok(values) = self.values.lock() else { return text.to_string() };
        if values.is_empty() {
            return text.to_string();
        }
        let mut sorted: Vec<&String> = values.iter().collect();
        sorted.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for v in sorted {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// Redact every string inside a JSON value.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                let r = self.redact(s);
                if r != *s {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }

    pub fn is_secret_in(&self, text: &str) -> bool {
        self.redact(text) != text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_revealed_values_everywhere() {
        let dir = std::env::temp_dir().join(format!("smoke-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "hunter2\n").unwrap();
        let store = SecretStore::new(BTreeMap::from([("pw".to_string(), SecretSource::File(f))]));
        let red = store.redactor();
        assert_eq!(store.get("pw").unwrap(), "hunter2");
        store.remember("hunter22x");
        assert_eq!(red.redact("type hunter2 then hunter22x"), format!("type {MASK} then {MASK}"));
        let mut j = serde_json::json!({"a": ["xx hunter2"], "b": 3});
        red.redact_json(&mut j);
        assert_eq!(j["a"][0], format!("xx {MASK}"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let store = SecretStore::default();
        let e = store.get("no such thing").unwrap_err().to_string();
        assert!(e.contains("SMOKE_SECRET_NO_SUCH_THING"), "{e}");
    }
}

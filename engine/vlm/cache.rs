//! The VLM verdict cache: answers keyed by (image, prompt, model), kept in a
//! JSON-lines file across runs, so an unchanged scenario on an unchanged
//! screen asks the model nothing. Lines are appended whole; concurrent runs
//! may share the file. `smoke cache stats|clear|prune` manage it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::frame::Frame;

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub model: String,
    pub prompt: String,
    /// SHA-256 of the image's pixels.
    pub image: String,
    pub answer: String,
    /// UTC RFC 3339.
    pub time: String,
}

/// SHA-256 (hex) of a frame's size and pixels.
pub fn image_hash(frame: &Frame) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&frame.width().to_le_bytes());
    ctx.update(&frame.height().to_le_bytes());
    ctx.update(frame.pixels());
    hex(ctx.finish().as_ref())
}

/// The cache key of (image, prompt, model).
pub fn key(image: &str, prompt: &str, model: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [image, prompt, model] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    hex(ctx.finish().as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An open cache.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Cache {
    /// Open (or start) the cache file; unreadable lines are skipped.
    pub fn open(path: &Path) -> Cache {
        let mut entries = HashMap::new();
        for e in read(path) {
            entries.insert(e.key.clone(), e);
        }
        Cache { path: path.to_path_buf(), entries: Mutex::new(entries) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// Remember an answer (in memory, and appended to the file).
    pub fn put(&self, e: Entry) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let line = serde_json::to_string(&e).map_err(std::io::Error::other)? + "\n";
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(line.as_bytes())?;
        if let Ok(mut m) = self.entries.lock() {
            m.insert(e.key.clone(), e);
        }
        Ok(())
    }
}

fn read(path: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// What `smoke cache stats` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub path: String,
    pub entries: usize,
    pub bytes: u64,
    pub models: Vec<(String, usize)>,
    pub oldest: Option<String>,
    pub newest: Option<String>,
}

pub fn stats(path: &Path) -> Stats {
    let all = read(path);
    let mut unique: HashMap<&str, &Entry> = HashMap::new();
    for e in &all {
        unique.insert(&e.key, e);
    }
    let mut models: HashMap<&str, usize> = HashMap::new();
    for e in unique.values() {
        *models.entry(&e.model).or_default() += 1;
    }
    let mut models: Vec<(String, usize)> = models.into_iter().map(|(m, n)| (m.to_string(), n)).collect();
    models.sort();
    Stats {
        path: path.display().to_string(),
        entries: unique.len(),
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        models,
        oldest: unique.values().map(|e| e.time.clone()).min(),
        newest: unique.values().map(|e| e.time.clone()).max(),
    }
}

/// Remove the cache file.
pub fn clear(path: &Path) -> std::io::Result<usize> {
    let n = stats(path).entries;
    match std::fs::remove_file(path) {
        Ok(()) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Keep only entries at or after `cutoff` (RFC 3339); returns how many were dropped.
pub fn prune(path: &Path, cutoff: &str) -> std::io::Result<usize> {
    if !path.exists() {
        return Ok(0);
    }
    let all = read(path);
    let mut latest: HashMap<String, Entry> = HashMap::new();
    for e in all {
        latest.insert(e.key.clone(), e);
    }
    let before = latest.len();
    let mut keep: Vec<Entry> = latest.into_values().filter(|e| e.time.as_str() >= cutoff).collect();
    keep.sort_by(|a, b| a.time.cmp(&b.time));
    let tmp = path.with_extension("jsonl.tmp");
    let mut text = String::new();
    for e in &keep {
        text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(before - keep.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_image_prompt_and_model() {
        let a = Frame::new(4, 4);
        let mut b = Frame::new(4, 4);
        b.set_rgb(1, 1, [1, 2, 3]);
        let (ha, hb) = (image_hash(&a), image_hash(&b));
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), 64);
        assert_ne!(key(&ha, "q", "m"), key(&ha, "q", "m2"));
        assert_ne!(key(&ha, "ab", "c"), key(&ha, "a", "bc"));
    }

    #[test]
    fn persists_across_opens_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/cache.jsonl");
        let c = Cache::open(&p);
        let e = |k: &str, t: &str| Entry {
            key: k.into(),
            model: "m".into(),
            prompt: "p".into(),
            image: "i".into(),
            answer: "yes".into(),
            time: t.into(),
        };
        c.put(e("k1", "2026-01-01T00:00:00Z")).unwrap();
        c.put(e("k2", "2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(Cache::open(&p).get("k2").unwrap().answer, "yes");
        assert_eq!(stats(&p).entries, 2);
        assert_eq!(prune(&p, "2026-03-01T00:00:00Z").unwrap(), 1);
        let again = Cache::open(&p);
        assert!(again.get("k1").is_none() && again.get("k2").is_some());
        assert_eq!(clear(&p).unwrap(), 1);
        assert_eq!(stats(&p).entries, 0);
    }
}

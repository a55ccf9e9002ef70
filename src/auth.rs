//! API keys (`serve --api-keys FILE`): which apps may send events, under which name their
//! events are recorded, how fast each may send (a token bucket per key, in events), and
//! which may read the live page (`read = true`).
//!
//! Invariants: keys are kept only as SHA-256 hashes once loaded and never appear in logs,
//! metrics or error messages; a request without a valid key appends nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Shortest key accepted: 16 characters of a random key are beyond guessing.
pub const MIN_KEY_CHARS: usize = 16;
/// Most keys in one file; keeps lookups and the file itself reviewable.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading API keys from {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key in `Authorization: Bearer …` or `X-API-Key`.
    Missing,
    /// A key that is not in the file.
    Unknown,
    /// Over the app's rate: retry after this many seconds.
    RateLimited { retry_after_s: u64 },
    /// A key without `read = true` asked to read (the live page and its data).
    NotReader,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    app: String,
    key: String,
    events_per_second: Option<f64>,
    burst: Option<f64>,
    /// May read the live page and its data (`GET /`, `/v1/live`, `/report.html`).
    #[serde(default)]
    read: bool,
}

/// One app: its name and its bucket.
pub struct App {
    pub name: String,
    /// May read the live page and its data.
    pub read: bool,
    rate: Option<(f64, f64)>,
    bucket: Mutex<(f64, Instant)>,
}

impl App {
    /// Takes `events` tokens, or says how long until there are enough.
    pub fn take(&self, events: u64) -> Result<(), Denied> {
        let Some((rate, burst)) = self.rate else { return Ok(()) };
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let tokens = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(burst);
        let need = events as f64;
        if need > burst {
            // A single request larger than the bucket can never pass: tell when a full
            // bucket would be there, and let the client split it.
            return Err(Denied::RateLimited { retry_after_s: ((burst - tokens) / rate).ceil().max(1.0) as u64 });
        }
        if tokens < need {
            *b = (tokens, now);
            return Err(Denied::RateLimited { retry_after_s: ((need - tokens) / rate).ceil().max(1.0) as u64 });
        }
        *b = (tokens - need, now);
        Ok(())
    }
}

/// The loaded keys.
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], App>,
}

/// Shows how many keys, never the keys or their hashes.
impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.by_hash.len())
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Loads a TOML file of `[[key]]` tables: `app`, `key`, and optionally
    /// `events_per_second` and `burst` (default: two seconds' worth).
    pub fn load(path: &Path) -> Result<ApiKeys, AuthError> {
        let err = |reason: String| AuthError::File { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: KeyFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        if file.key.is_empty() {
            return Err(err("no [[key]] entries".into()));
        }
        if file.key.len() > MAX_KEYS {
            return Err(err(format!("{} keys; at most {MAX_KEYS}", file.key.len())));
        }
        let mut by_hash = HashMap::new();
        for (i, k) in file.key.into_iter().enumerate() {
            let n = i + 1;
            if k.app.trim().is_empty() || k.app.len() > crate::event::MAX_STRING_BYTES {
                return Err(err(format!("key {n}: `app` must be a name of 1 to {} bytes", crate::event::MAX_STRING_BYTES)));
            }
            if k.key.chars().count() < MIN_KEY_CHARS {
                return Err(err(format!("key {n} (app {}): a key needs at least {MIN_KEY_CHARS} characters", k.app)));
            }
            let rate = match k.events_per_second {
                None => None,
                Some(r) if r.is_finite() && r > 0.0 => {
                    let burst = k.burst.unwrap_or(2.0 * r);
                    if !(burst.is_finite() && burst >= 1.0) {
                        return Err(err(format!("key {n} (app {}): `burst` must be at least 1", k.app)));
                    }
                    Some((r, burst))
                }
                Some(_) => return Err(err(format!("key {n} (app {}): `events_per_second` must be positive", k.app))),
            };
            let start = rate.map(|(_, burst)| burst).unwrap_or(0.0);
            let app = App { name: k.app.clone(), read: k.read, rate, bucket: Mutex::new((start, Instant::now())) };
            if by_hash.insert(hash(&k.key), app).is_some() {
                return Err(err(format!("key {n} (app {}): the same key appears twice", k.app)));
            }
        }
        Ok(ApiKeys { by_hash })
    }

    /// The app of the request's key.
    pub fn app(&self, headers: &HeaderMap) -> Result<&App, Denied> {
        self.app_or_query(headers, None)
    }

    /// The app of a reader: its key from the headers or, for a person opening the live
    /// page in a browser, the `key` query parameter; the key must have `read = true`.
    pub fn reader(&self, headers: &HeaderMap, query_key: Option<&str>) -> Result<&App, Denied> {
        let app = self.app_or_query(headers, query_key)?;
        if app.read {
            Ok(app)
        } else {
            Err(Denied::NotReader)
        }
    }

    fn app_or_query(&self, headers: &HeaderMap, query_key: Option<&str>) -> Result<&App, Denied> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .or(query_key)
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(Denied::Missing)?;
        self.by_hash.get(&hash(key)).ok_or(Denied::Unknown)
    }

    /// Checks the key and takes `events` from its app's bucket.
    pub fn admit(&self, headers: &HeaderMap, events: u64) -> Result<String, Denied> {
        let app = self.app(headers)?;
        app.take(events)?;
        Ok(app.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Result<ApiKeys, AuthError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        std::fs::write(&p, text).unwrap();
        ApiKeys::load(&p)
    }

    fn with_key(k: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {k}").parse().unwrap());
        h
    }

    #[test]
    fn keys_name_apps_and_limit_rates() {
        let k = keys(
            "[[key]]\napp = \"game-a\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\nevents_per_second = 10\nburst = 20\n\n[[key]]\napp = \"game-b\"\nkey = \"bbbbbbbbbbbbbbbbbbbb\"\n",
        )
        .unwrap();
        assert_eq!(k.admit(&with_key("bbbbbbbbbbbbbbbbbbbb"), 1_000_000).unwrap(), "game-b");
        assert_eq!(k.admit(&HeaderMap::new(), 1), Err(Denied::Missing));
        assert_eq!(k.admit(&with_key("cccccccccccccccccccc"), 1), Err(Denied::Unknown));
        assert_eq!(k.admit(&with_key("aaaaaaaaaaaaaaaaaaaa"), 15).unwrap(), "game-a");
        match k.admit(&with_key("aaaaaaaaaaaaaaaaaaaa"), 15) {
            Err(Denied::RateLimited { retry_after_s }) => assert!((1..=2).contains(&retry_after_s)),
            other => panic!("{other:?}"),
        }
        let mut x = HeaderMap::new();
        x.insert("x-api-key", "aaaaaaaaaaaaaaaaaaaa".parse().unwrap());
        assert_eq!(k.admit(&x, 1).unwrap(), "game-a");
    }

    #[test]
    fn bad_files_are_explained() {
        assert!(keys("").unwrap_err().to_string().contains("no [[key]]"));
        assert!(keys("[[key]]\napp = \"a\"\nkey = \"short\"\n").unwrap_err().to_string().contains("at least 16"));
        let twice = "[[key]]\napp = \"a\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\n[[key]]\napp = \"b\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\n";
        let e = keys(twice).unwrap_err().to_string();
        assert!(e.contains("twice") && !e.contains("aaaaaaaaaaaaaaaa"), "keys never in messages: {e}");
    }
}

//! API keys (`serve --api-keys FILE`): which apps may send events, under which name their
//! events are recorded, how fast each may send (a token bucket per key, in events), and
//! what each key is granted: `write` (append events), `read` (the log, rejected events,
//! the event types, the live page and the report) and `admin` (register event type
//! schemas), separately.
//!
//! Invariants: keys are kept only as SHA-256 hashes once loaded and never appear in logs,
//! metrics or error messages; a request without a valid key appends nothing; a key reads
//! or writes only with that grant (a write key shipped in a game client reads nothing, a
//! read key pasted into a browser appends nothing).

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

/// What a key may do. A key holds one or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Append events (`POST /v1/events`, `/{event_type}`).
    Write,
    /// Read: `/v1/replay`, `/v1/rejected`, `/v1/schemas`, the live page (`/`, `/v1/live`)
    /// and `/report.html`.
    Read,
    /// Register event type schemas (`POST /v1/schemas`): what every game's events are
    /// checked against, so not a grant for keys shipped in game clients.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
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
    /// A known key without the grant the route needs (403).
    Forbidden(Scope),
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
    /// What the key may do; default `["write"]`.
    scopes: Option<Vec<String>>,
    /// The old form of the read grant, which also let the key write; refused with a
    /// message saying what to write instead.
    read: Option<bool>,
}

/// A token bucket: `rate` tokens a second up to `burst`, starting full.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes `n` tokens, or says in how many seconds there would be enough.
    pub fn take(&self, n: f64) -> Result<(), u64> {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let tokens = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.burst);
        if n > self.burst {
            // More than the bucket holds can never pass: say when a full bucket would be
            // there, and let the client split it.
            return Err(((self.burst - tokens) / self.rate).ceil().max(1.0) as u64);
        }
        if tokens < n {
            *b = (tokens, now);
            return Err(((n - tokens) / self.rate).ceil().max(1.0) as u64);
        }
        *b = (tokens - n, now);
        Ok(())
    }

    /// Takes up to `n` tokens, as many as there are; returns how many.
    pub fn take_up_to(&self, n: f64) -> f64 {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let tokens = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.burst);
        let taken = tokens.min(n).max(0.0);
        *b = (tokens - taken, now);
        taken
    }
}

/// One app: its name, its grants and its bucket.
pub struct App {
    pub name: String,
    /// May append events.
    pub write: bool,
    /// May read the log, rejected events, the live page and the report.
    pub read: bool,
    /// May register event type schemas.
    pub admin: bool,
    rate: Option<TokenBucket>,
}

impl App {
    /// Takes `events` tokens, or says how long until there are enough.
    pub fn take(&self, events: u64) -> Result<(), Denied> {
        let Some(bucket) = &self.rate else { return Ok(()) };
        bucket.take(events as f64).map_err(|retry_after_s| Denied::RateLimited { retry_after_s })
    }

    fn has(&self, scope: Scope) -> bool {
        match scope {
            Scope::Write => self.write,
            Scope::Read => self.read,
            Scope::Admin => self.admin,
        }
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

/// The user name of HTTP Basic credentials (`Authorization: Basic base64(user:password)`):
/// Segment's SDKs send their write key so, with an empty password.
fn basic_user(v: &axum::http::HeaderValue) -> Option<String> {
    use base64::Engine;
    let v = v.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_string())
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Loads a TOML file of `[[key]]` tables: `app`, `key`, and optionally `scopes`
    /// (default `["write"]`), `events_per_second` and `burst` (default: two seconds' worth).
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
            // Requests' keys are trimmed; so are the file's, or a key written with a space
            // around it would never match.
            let key = k.key.trim();
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(format!(
                    "key {n} (app {}): a key may not contain spaces or control characters (headers cannot carry them)",
                    k.app
                )));
            }
            if key.chars().count() < MIN_KEY_CHARS {
                return Err(err(format!("key {n} (app {}): a key needs at least {MIN_KEY_CHARS} characters", k.app)));
            }
            if k.read == Some(true) {
                return Err(err(format!(
                    "key {n} (app {}): `read` is replaced by `scopes`, which grants reading and writing separately: \
                     `scopes = [\"read\"]` for a key that only reads (the one to open the live page with), \
                     `scopes = [\"write\", \"read\"]` for both",
                    k.app
                )));
            }
            let (mut write, mut read, mut admin) = (false, false, false);
            match &k.scopes {
                None => write = true,
                Some(list) if list.is_empty() => {
                    return Err(err(format!(
                        "key {n} (app {}): `scopes` is empty; give it \"write\", \"read\", \"admin\" or several",
                        k.app
                    )))
                }
                Some(list) => {
                    for s in list {
                        match s.as_str() {
                            "write" => write = true,
                            "read" => read = true,
                            "admin" => admin = true,
                            other => {
                                return Err(err(format!(
                                    "key {n} (app {}): unknown scope {:?}; scopes are \"write\", \"read\" and \"admin\"",
                                    k.app,
                                    other.chars().take(32).collect::<String>()
                                )))
                            }
                        }
                    }
                }
            }
            let rate = match k.events_per_second {
                None => None,
                Some(r) if r.is_finite() && r > 0.0 => {
                    let burst = k.burst.unwrap_or(2.0 * r);
                    if !(burst.is_finite() && burst >= 1.0) {
                        return Err(err(format!("key {n} (app {}): `burst` must be at least 1", k.app)));
                    }
                    Some(TokenBucket::new(r, burst))
                }
                Some(_) => return Err(err(format!("key {n} (app {}): `events_per_second` must be positive", k.app))),
            };
            let app = App { name: k.app.clone(), write, read, admin, rate };
            if by_hash.insert(hash(key), app).is_some() {
                return Err(err(format!("key {n} (app {}): the same key appears twice", k.app)));
            }
        }
        Ok(ApiKeys { by_hash })
    }

    /// The app of the request's key, which must hold `write`.
    pub fn writer(&self, headers: &HeaderMap) -> Result<&App, Denied> {
        self.with_scope(headers, None, Scope::Write)
    }

    /// As [`ApiKeys::writer`], with `body_key` (an SDK's write key in its body) when the
    /// headers carry no key.
    pub fn writer_with(&self, headers: &HeaderMap, body_key: Option<&str>) -> Result<&App, Denied> {
        self.with_scope(headers, body_key, Scope::Write)
    }

    /// The app of a reader: its key from the headers or, where a person opens a page in a
    /// browser, `query_key` (the `key` query parameter); the key must hold `read`.
    pub fn reader(&self, headers: &HeaderMap, query_key: Option<&str>) -> Result<&App, Denied> {
        self.with_scope(headers, query_key, Scope::Read)
    }

    /// The app of the request's key, which must hold `admin` (registering schemas).
    pub fn admin(&self, headers: &HeaderMap) -> Result<&App, Denied> {
        self.with_scope(headers, None, Scope::Admin)
    }

    /// Whether the request carries a known key with `read` (for details only readers see).
    pub fn is_reader(&self, headers: &HeaderMap) -> bool {
        self.reader(headers, None).is_ok()
    }

    fn with_scope(&self, headers: &HeaderMap, query_key: Option<&str>, scope: Scope) -> Result<&App, Denied> {
        let app = self.app_or_query(headers, query_key)?;
        if app.has(scope) {
            Ok(app)
        } else {
            Err(Denied::Forbidden(scope))
        }
    }

    fn app_or_query(&self, headers: &HeaderMap, query_key: Option<&str>) -> Result<&App, Denied> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::to_string)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_string))
            .or_else(|| query_key.map(str::to_string))
            // Last: a proxy's own HTTP Basic login in front of questlog must not shadow a
            // key given another way.
            .or_else(|| headers.get(header::AUTHORIZATION).and_then(basic_user))
            .filter(|k| !k.trim().is_empty())
            .ok_or(Denied::Missing)?;
        self.by_hash.get(&hash(key.trim())).ok_or(Denied::Unknown)
    }

    /// Checks the key's `write` grant and takes `events` from its app's bucket.
    pub fn admit(&self, headers: &HeaderMap, events: u64) -> Result<String, Denied> {
        let app = self.writer(headers)?;
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
        // HTTP Basic with the key as user name (Segment's SDKs: `writeKey:`), any password.
        let mut b = HeaderMap::new();
        b.insert(header::AUTHORIZATION, "Basic YmJiYmJiYmJiYmJiYmJiYmJiYmI6".parse().unwrap()); // bbbb…b:
        assert_eq!(k.admit(&b, 1).unwrap(), "game-b");
        b.insert(header::AUTHORIZATION, "Basic bm90LWEta2V5Og==".parse().unwrap()); // not-a-key:
        assert_eq!(k.admit(&b, 1), Err(Denied::Unknown));
        b.insert(header::AUTHORIZATION, "Basic %%%".parse().unwrap());
        assert_eq!(k.admit(&b, 1), Err(Denied::Missing));
        // A proxy's own Basic login does not shadow a key given another way.
        let mut both = HeaderMap::new();
        both.insert(header::AUTHORIZATION, "Basic bm90LWEta2V5Og==".parse().unwrap());
        both.insert("x-api-key", "aaaaaaaaaaaaaaaaaaaa".parse().unwrap());
        assert_eq!(k.admit(&both, 1).unwrap(), "game-a");
        // A key in the body (Segment's `writeKey`) when the headers carry none.
        assert_eq!(k.writer_with(&HeaderMap::new(), Some("bbbbbbbbbbbbbbbbbbbb")).map(|a| a.name.as_str()), Ok("game-b"));
    }

    #[test]
    fn scopes_separate_reading_from_writing() {
        let k = keys(
            "[[key]]\napp = \"game\"\nkey = \"wwwwwwwwwwwwwwwwwwww\"\n\n\
             [[key]]\napp = \"dash\"\nkey = \"  rrrrrrrrrrrrrrrrrrrr  \"\nscopes = [\"read\"]\n\n\
             [[key]]\napp = \"ops\"\nkey = \"bbbbbbbbbbbbbbbbbbbb\"\nscopes = [\"write\", \"read\"]\n",
        )
        .unwrap();
        let w = with_key("wwwwwwwwwwwwwwwwwwww");
        let r = with_key("rrrrrrrrrrrrrrrrrrrr");
        let b = with_key("bbbbbbbbbbbbbbbbbbbb");
        assert_eq!(k.writer(&w).unwrap().name, "game");
        assert_eq!(k.reader(&w, None).err(), Some(Denied::Forbidden(Scope::Read)), "a write key reads nothing");
        assert_eq!(k.writer(&r).err(), Some(Denied::Forbidden(Scope::Write)), "a read key appends nothing");
        assert_eq!(k.reader(&r, None).unwrap().name, "dash", "a key written with spaces around it matches");
        assert_eq!(k.reader(&HeaderMap::new(), Some("rrrrrrrrrrrrrrrrrrrr")).unwrap().name, "dash");
        assert!(k.writer(&b).is_ok() && k.reader(&b, None).is_ok());
        assert!(k.is_reader(&b) && !k.is_reader(&w));
    }

    #[test]
    fn bad_files_are_explained() {
        let old = keys("[[key]]\napp = \"a\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\nread = true\n").unwrap_err().to_string();
        assert!(old.contains("replaced by `scopes`"), "{old}");
        let bad = keys("[[key]]\napp = \"a\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\nscopes = [\"root\"]\n").unwrap_err().to_string();
        assert!(bad.contains("unknown scope") && bad.contains("\"admin\""), "{bad}");
        // `admin` registers schemas only: it neither writes nor reads.
        let k = keys("[[key]]\napp = \"ops\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\nscopes = [\"admin\"]\n").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "aaaaaaaaaaaaaaaaaaaa".parse().unwrap());
        assert!(k.admin(&h).is_ok());
        assert_eq!(k.writer(&h).err(), Some(Denied::Forbidden(Scope::Write)));
        assert_eq!(k.reader(&h, None).err(), Some(Denied::Forbidden(Scope::Read)));
        let spaced = keys("[[key]]\napp = \"a\"\nkey = \"aaaaaaaa aaaaaaaaaaaa\"\n").unwrap_err().to_string();
        assert!(spaced.contains("spaces"), "{spaced}");
        assert!(keys("").unwrap_err().to_string().contains("no [[key]]"));
        assert!(keys("[[key]]\napp = \"a\"\nkey = \"short\"\n").unwrap_err().to_string().contains("at least 16"));
        let twice = "[[key]]\napp = \"a\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\n[[key]]\napp = \"b\"\nkey = \"aaaaaaaaaaaaaaaaaaaa\"\n";
        let e = keys(twice).unwrap_err().to_string();
        assert!(e.contains("twice") && !e.contains("aaaaaaaaaaaaaaaa"), "keys never in messages: {e}");
    }
}

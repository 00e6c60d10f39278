//! Who may use the server: bearer API keys, browser origins, per-key rate and
//! concurrency limits, and per-key tool allowlists.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ApiKeyConfig, ServerSettings};
use crate::error::{CallError, ErrorKind};
use crate::invoke::Allowlist;

/// Environment variable with comma-separated API keys, added to the config's.
pub const API_KEYS_ENV: &str = "AUTOGLM_API_KEYS";

/// The resolved access rules.
pub struct Access {
    keys: Vec<Arc<Client>>,
    anonymous: Option<Arc<Client>>,
    allowed_origins: Vec<String>,
    loopback: bool,
}

/// A caller: one API key, or everyone when the server runs without keys.
pub struct Client {
    /// The key's name, for logs.
    pub name: String,
    token: Option<String>,
    /// The tools this key may call.
    pub allowlist: Allowlist,
    bucket: Mutex<Bucket>,
    rate_per_minute: u32,
    slots: Arc<Semaphore>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A request admitted for one client; holds its concurrency slot.
pub struct Admitted {
    /// The caller.
    pub client: Arc<Client>,
    _slot: OwnedSemaphorePermit,
}

/// A refusal with the seconds after which a retry may succeed.
pub struct Refusal {
    /// The error to answer with.
    pub error: CallError,
    /// For `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Access {
    /// Build the rules; refuses to serve a non-loopback address without keys.
    pub fn new(settings: &ServerSettings, loopback: bool) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for key in &settings.keys {
            let token = match (&key.token, &key.token_env) {
                (Some(token), None) => token.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "[[server.keys]] `{}`: environment variable {var} is not set",
                        key.name
                    )
                })?,
                _ => anyhow::bail!(
                    "[[server.keys]] `{}`: set exactly one of token or token_env",
                    key.name
                ),
            };
            keys.push(Arc::new(Client::new(key, Some(token), settings)));
        }
        if let Ok(tokens) = std::env::var(API_KEYS_ENV) {
            for (i, token) in tokens.split(',').map(str::trim).filter(|t| !t.is_empty()).enumerate()
            {
                let key = ApiKeyConfig { name: format!("env-{i}"), ..Default::default() };
                keys.push(Arc::new(Client::new(&key, Some(token.to_string()), settings)));
            }
        }
        if keys.is_empty() && !loopback {
            anyhow::bail!(
                "refusing to serve {} without API keys: anyone who can reach it could run tools. \
                 Add [[server.keys]] to the config or set {API_KEYS_ENV}, or listen on 127.0.0.1",
                settings.addr
            );
        }
        let anonymous = keys.is_empty().then(|| {
            let everyone = ApiKeyConfig { name: "anonymous".into(), ..Default::default() };
            Arc::new(Client::new(&everyone, None, settings))
        });
        Ok(Self { keys, anonymous, allowed_origins: settings.allowed_origins.clone(), loopback })
    }

    /// Whether a browser `origin` may call the server: loopback origins and the
    /// configured ones. Requests without an Origin header (non-browser clients) pass.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let host = strip_port(origin.split_once("://").map_or("", |(_, rest)| rest));
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
            || self.allowed_origins.iter().any(|o| o.trim_end_matches('/') == origin)
    }

    /// Whether a request's `Host` header is acceptable. A server on loopback answers
    /// only to loopback names (and the allowed origins' hosts): a web page whose DNS
    /// name was rebound to 127.0.0.1 sends its own name, and no Origin on a GET.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if !self.loopback {
            return true;
        }
        let Some(host) = host else { return false };
        let name = strip_port(host);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || (self.allowed_origins.iter()).any(|o| {
                o.split_once("://")
                    .is_some_and(|(_, h)| strip_port(h.trim_end_matches('/')) == name)
            })
    }

    /// The client behind `authorization` (a `Bearer` header), admitted under its
    /// rate and concurrency limits.
    pub fn admit(&self, authorization: Option<&str>) -> Result<Admitted, Refusal> {
        let client = match &self.anonymous {
            Some(everyone) => everyone.clone(),
            None => {
                let token = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
                let found = token.and_then(|t| {
                    self.keys
                        .iter()
                        .find(|k| k.token.as_deref().is_some_and(|own| constant_time_eq(own, t)))
                });
                found.cloned().ok_or_else(|| Refusal {
                    error: CallError::new(
                        ErrorKind::Unauthorized,
                        "a valid API key is required: send `Authorization: Bearer <key>`",
                    ),
                    retry_after: None,
                })?
            }
        };
        client.take_token()?;
        let slot = client.slots.clone().try_acquire_owned().map_err(|_| Refusal {
            error: CallError::new(
                ErrorKind::RateLimited,
                format!("API key `{}` has too many requests in flight; retry shortly", client.name),
            ),
            retry_after: Some(1),
        })?;
        Ok(Admitted { client, _slot: slot })
    }
}

impl Client {
    fn new(key: &ApiKeyConfig, token: Option<String>, settings: &ServerSettings) -> Self {
        let rate = key.rate_per_minute.unwrap_or(settings.rate_per_minute).max(1);
        Self {
            name: key.name.clone(),
            token,
            allowlist: Allowlist::new(&key.name, key.tools.clone()),
            // A full minute's allowance may be spent at once, then it refills steadily.
            bucket: Mutex::new(Bucket { tokens: f64::from(rate), updated: Instant::now() }),
            rate_per_minute: rate,
            slots: Arc::new(Semaphore::new(key.concurrency.unwrap_or(settings.concurrency).max(1))),
        }
    }

    fn take_token(&self) -> Result<(), Refusal> {
        let per_second = f64::from(self.rate_per_minute) / 60.0;
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.updated).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(self.rate_per_minute));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
        Err(Refusal {
            error: CallError::new(
                ErrorKind::RateLimited,
                format!(
                    "API key `{}` is over its {} requests per minute; retry after the Retry-After seconds",
                    self.name, self.rate_per_minute
                ),
            ),
            retry_after: Some(wait.as_secs() + 1),
        })
    }
}

/// `host` without a trailing `:port`.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Compare secrets without leaking where they differ through timing.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServerSettings {
        ServerSettings { rate_per_minute: 2, concurrency: 1, ..Default::default() }
    }

    #[test]
    fn a_public_address_without_keys_is_refused() {
        assert!(Access::new(&settings(), false).is_err());
        assert!(Access::new(&settings(), true).is_ok());
    }

    #[test]
    fn the_rate_limit_refuses_with_a_retry_time_and_slots_are_per_request() {
        let access = Access::new(&settings(), true).unwrap();
        let first = access.admit(None).ok().unwrap();
        let busy = access.admit(None).err().unwrap();
        assert_eq!(busy.error.kind, ErrorKind::RateLimited, "one slot, held by `first`");
        drop(first);
        let over = access.admit(None).err().unwrap();
        assert_eq!(over.error.kind, ErrorKind::RateLimited);
        assert!(over.retry_after.is_some_and(|s| (1..=31).contains(&s)));
    }

    #[test]
    fn origins_allow_loopback_and_the_configured_ones() {
        let settings = ServerSettings {
            allowed_origins: vec!["https://app.example.com".into()],
            ..Default::default()
        };
        let access = Access::new(&settings, true).unwrap();
        assert!(access.origin_allowed(None));
        assert!(access.origin_allowed(Some("http://localhost:3000")));
        assert!(access.origin_allowed(Some("https://app.example.com")));
        assert!(!access.origin_allowed(Some("https://evil.example")));
        assert!(!access.origin_allowed(Some("http://localhost.evil.example")));
    }

    #[test]
    fn a_loopback_server_answers_only_to_loopback_host_names() {
        let settings = ServerSettings {
            allowed_origins: vec!["https://app.example.com".into()],
            ..Default::default()
        };
        let local = Access::new(&settings, true).unwrap();
        assert!(local.host_allowed(Some("127.0.0.1:8080")));
        assert!(local.host_allowed(Some("localhost")));
        assert!(local.host_allowed(Some("[::1]:8080")));
        assert!(local.host_allowed(Some("app.example.com")));
        assert!(!local.host_allowed(Some("rebound.evil.example:8080")));
        assert!(!local.host_allowed(None));
        let public = Access { loopback: false, ..local };
        assert!(
            public.host_allowed(Some("api.example.com")),
            "keys, not names, guard a public server"
        );
    }
}

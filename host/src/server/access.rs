//! Who may use the server: bearer API keys, browser origins, per-key rate and
//! concurrency limits, per-key tool allowlists, and a cap on failed logins per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ApiKeyConfig, ServerSettings};
use crate::error::{CallError, ErrorKind};
use crate::invoke::{Allowlist, OPERATOR};
use crate::tasks::CallerCheck;

/// Environment variable with comma-separated API keys, added to the config's.
pub const API_KEYS_ENV: &str = "AUTOGLM_API_KEYS";

/// The resolved access rules.
pub struct Access {
    keys: Vec<Arc<Client>>,
    anonymous: Option<Arc<Client>>,
    allowed_origins: Vec<Origin>,
    loopback: bool,
    failures: Failures,
}

/// A caller: one API key, or everyone when the server runs without keys.
pub struct Client {
    /// The key's name, for logs.
    pub name: String,
    /// SHA-256 of the token: every comparison is over 32 bytes, whatever the tokens' lengths.
    digest: Option<[u8; 32]>,
    /// The tools this key may call.
    pub allowlist: Allowlist,
    bucket: Mutex<Bucket>,
    rate_per_minute: u32,
    slots: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    streams_per_key: usize,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: u32) -> Self {
        Self { tokens: f64::from(capacity), updated: Instant::now() }
    }

    /// Take one token from a bucket of `capacity` refilled over a minute, or say how long
    /// until one is there.
    fn take(&mut self, capacity: u32) -> Result<(), Duration> {
        let per_second = f64::from(capacity) / 60.0;
        let now = Instant::now();
        let refill = now.duration_since(self.updated).as_secs_f64() * per_second;
        self.tokens = (self.tokens + refill).min(f64::from(capacity));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
    }
}

/// Failed logins per client address, each address with a bucket of
/// `server.login_failures_per_minute`.
struct Failures {
    per_minute: u32,
    by_peer: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Addresses tracked at most: beyond this the fullest buckets (the least suspicious
/// addresses) are forgotten, so a flood of addresses cannot grow the map without bound.
const MAX_TRACKED_PEERS: usize = 10_000;

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.by_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `peer` must wait, when it has used up its failures.
    fn throttled(&self, peer: IpAddr) -> Option<Duration> {
        let mut by_peer = self.lock();
        let bucket = by_peer.get_mut(&peer)?;
        // Peek: refill, and put back the token `take` removes when one is there.
        match bucket.take(self.per_minute) {
            Ok(()) => {
                bucket.tokens += 1.0;
                None
            }
            Err(wait) => Some(wait),
        }
    }

    fn record(&self, peer: IpAddr) {
        let mut by_peer = self.lock();
        if by_peer.len() >= MAX_TRACKED_PEERS && !by_peer.contains_key(&peer) {
            by_peer.retain(|_, b| b.tokens < f64::from(self.per_minute) - 1.0);
            if by_peer.len() >= MAX_TRACKED_PEERS {
                by_peer.clear();
            }
        }
        let bucket = by_peer.entry(peer).or_insert_with(|| Bucket::full(self.per_minute));
        let _ = bucket.take(self.per_minute);
    }
}

/// A browser origin as compared: scheme and host lower-cased, the port explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `scheme://host[:port]` as browsers send it; None for anything else (`null`, paths,
    /// schemes other than http and https).
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.trim_end_matches('/').split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (host, port) = split_port(rest)?;
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return None;
        }
        Some(Self { scheme, host: host.to_ascii_lowercase(), port: port.unwrap_or(default) })
    }
}

/// A request admitted for one client; holds its concurrency slot.
pub struct Admitted {
    /// The caller.
    pub client: Arc<Client>,
    _slot: OwnedSemaphorePermit,
}

/// An event stream a client holds open: its request's concurrency slot and one of its key's
/// stream places, both held by the task that feeds the stream until it ends.
pub struct Streaming {
    _request: Admitted,
    _place: OwnedSemaphorePermit,
}

impl Admitted {
    /// Turn this request into a stream, if its key has a stream place left.
    pub fn into_stream(self) -> Result<Streaming, Refusal> {
        let client = &self.client;
        let place = client.streams.clone().try_acquire_owned().map_err(|_| Refusal {
            error: CallError::new(
                ErrorKind::RateLimited,
                format!(
                    "API key `{}` has {} streams open (server.streams_per_key); close one first",
                    client.name, client.streams_per_key
                ),
            ),
            retry_after: Some(1),
        })?;
        Ok(Streaming { _request: self, _place: place })
    }
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
        // Sessions, logs and metrics tell keys apart by name.
        for (i, key) in keys.iter().enumerate() {
            anyhow::ensure!(
                !keys[..i].iter().any(|k| k.name == key.name),
                "[[server.keys]]: two keys are named `{}`; give each key its own name",
                key.name
            );
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
        let mut allowed_origins = Vec::new();
        for origin in &settings.allowed_origins {
            allowed_origins.push(Origin::parse(origin).ok_or_else(|| {
                anyhow::anyhow!(
                    "server.allowed_origins: `{origin}` is not an origin; write scheme://host[:port], \
                     e.g. https://app.example.com"
                )
            })?);
        }
        let failures = Failures {
            per_minute: settings.login_failures_per_minute.max(1),
            by_peer: Mutex::default(),
        };
        Ok(Self { keys, anonymous, allowed_origins, loopback, failures })
    }

    /// Whether a browser's `origins` (every Origin header of the request) may call the
    /// server: each must be a configured origin exactly (scheme, host, port), or the
    /// server's own, the one a page it served would send: `Host` under http or https.
    /// Requests without an Origin header (non-browser clients) pass.
    pub fn origin_allowed<'a>(
        &self,
        mut origins: impl Iterator<Item = &'a str>,
        host: Option<&str>,
    ) -> bool {
        let own =
            host.and_then(|h| split_port(h)).map(|(name, port)| (name.to_ascii_lowercase(), port));
        origins.all(|text| {
            let Some(origin) = Origin::parse(text) else { return false };
            let same_site = own.as_ref().is_some_and(|(name, port)| {
                let default = if origin.scheme == "https" { 443 } else { 80 };
                *name == origin.host && port.unwrap_or(default) == origin.port
            });
            same_site || self.allowed_origins.contains(&origin)
        })
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
            || (self.allowed_origins.iter()).any(|o| o.host.eq_ignore_ascii_case(name))
    }

    /// The client behind `authorization` (a `Bearer` header), admitted under its rate and
    /// concurrency limits; for callers with no address (stdio).
    pub fn admit(&self, authorization: Option<&str>) -> Result<Admitted, Refusal> {
        self.authenticate(authorization, None)?.enter()
    }

    /// What a task's submitter may call now, by these rules: an API key's current list (a key
    /// removed since the task was submitted may call nothing), everything for a server
    /// without keys, and the stored list for tasks the operator started from the CLI.
    pub fn caller_check(&self) -> CallerCheck {
        let keys: Vec<Allowlist> = self.keys.iter().map(|k| k.allowlist.clone()).collect();
        let anonymous = self.anonymous.as_ref().map(|a| a.allowlist.clone());
        Arc::new(move |caller: &Allowlist| {
            if let Some(key) = keys.iter().find(|k| k.caller() == caller.caller()) {
                return Ok(key.clone());
            }
            match (&anonymous, caller.caller()) {
                (Some(everyone), "anonymous") => Ok(everyone.clone()),
                (_, name) if name == OPERATOR => Ok(caller.clone()),
                _ => Err(CallError::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "API key `{}`, which submitted this task, is not configured on this server; \
                         add it back to [[server.keys]] or abort the task",
                        caller.caller()
                    ),
                )),
            }
        })
    }

    /// The client behind `authorization`, its rate limit charged, but no concurrency slot
    /// taken yet (see [`Client::enter`]): a request reads its body in between. An address
    /// (`peer`) that has failed too many logins is refused before its token is looked at.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Client>, Refusal> {
        let client = match &self.anonymous {
            Some(everyone) => everyone.clone(),
            None => {
                if let Some(wait) = peer.and_then(|p| self.failures.throttled(p)) {
                    return Err(Refusal {
                        error: CallError::new(
                            ErrorKind::RateLimited,
                            format!(
                                "too many failed logins from this address (server.login_failures_per_minute \
                                 = {}); retry after the Retry-After seconds",
                                self.failures.per_minute
                            ),
                        ),
                        retry_after: Some(wait.as_secs() + 1),
                    });
                }
                let token = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
                match token.and_then(|t| self.key_for(t)) {
                    Some(client) => client,
                    None => {
                        if let Some(peer) = peer {
                            self.failures.record(peer);
                        }
                        return Err(Refusal {
                            error: CallError::new(
                                ErrorKind::Unauthorized,
                                "a valid API key is required: send `Authorization: Bearer <key>`",
                            ),
                            retry_after: None,
                        });
                    }
                }
            }
        };
        client.take_token()?;
        Ok(client)
    }

    /// The key whose token is `token`. Every key is compared, each over the same 32 bytes, so
    /// the time taken says neither which key matched nor how long the tokens are.
    fn key_for(&self, token: &str) -> Option<Arc<Client>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            let same = key.digest.is_some_and(|own| constant_time_eq(&own, &digest));
            if same && found.is_none() {
                found = Some(key.clone());
            }
        }
        found
    }
}

impl Client {
    fn new(key: &ApiKeyConfig, token: Option<String>, settings: &ServerSettings) -> Self {
        let rate = key.rate_per_minute.unwrap_or(settings.rate_per_minute).max(1);
        Self {
            name: key.name.clone(),
            digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            allowlist: Allowlist::new(&key.name, key.tools.clone()),
            // A full minute's allowance may be spent at once, then it refills steadily.
            bucket: Mutex::new(Bucket::full(rate)),
            rate_per_minute: rate,
            slots: Arc::new(Semaphore::new(key.concurrency.unwrap_or(settings.concurrency).max(1))),
            streams: Arc::new(Semaphore::new(settings.streams_per_key.max(1))),
            streams_per_key: settings.streams_per_key.max(1),
        }
    }

    /// Take one of this client's concurrency slots for the rest of the request.
    pub fn enter(self: Arc<Self>) -> Result<Admitted, Refusal> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| Refusal {
            error: CallError::new(
                ErrorKind::RateLimited,
                format!("API key `{}` has too many requests in flight; retry shortly", self.name),
            ),
            retry_after: Some(1),
        })?;
        Ok(Admitted { client: self, _slot: slot })
    }

    fn take_token(&self) -> Result<(), Refusal> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let Err(wait) = bucket.take(self.rate_per_minute) else { return Ok(()) };
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
    split_port(host).map_or(host, |(name, _)| name)
}

/// `host[:port]` split; None when the port is not a number (a bare IPv6 address must be
/// bracketed, as in URLs).
fn split_port(host: &str) -> Option<(&str, Option<u16>)> {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(':') && (name.starts_with('[') || !name.contains(':')) =>
        {
            Some((name, Some(port.parse().ok()?)))
        }
        _ if host.starts_with('[') && !host.ends_with(']') => None,
        _ => Some((host, None)),
    }
}

/// Compare two digests without leaking where they differ through timing.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let allowed = |origins: &[&str]| {
            access.origin_allowed(origins.iter().copied(), Some("localhost:8080"))
        };
        assert!(allowed(&[]), "no Origin: not a browser");
        assert!(allowed(&["http://localhost:8080"]), "the server's own origin");
        assert!(allowed(&["HTTP://LOCALHOST:8080/"]));
        assert!(allowed(&["https://app.example.com"]) && allowed(&["https://app.example.com:443"]));
        assert!(!allowed(&["http://localhost:3000"]), "another local port is another site");
        assert!(!allowed(&["evil://localhost:8080"]), "only http and https");
        assert!(!allowed(&["http://app.example.com"]), "the scheme counts");
        assert!(!allowed(&["https://app.example.com:8443"]), "the port counts");
        assert!(!allowed(&["https://evil.example"]) && !allowed(&["null"]));
        assert!(!allowed(&["http://localhost.evil.example:8080"]));
        assert!(
            !allowed(&["http://localhost:8080", "https://evil.example"]),
            "every header counts"
        );
        let bad = ServerSettings {
            allowed_origins: vec!["app.example.com".into()],
            ..Default::default()
        };
        assert!(Access::new(&bad, true).is_err(), "an origin needs its scheme");
    }

    #[test]
    fn failed_logins_are_throttled_per_address_whatever_the_token() {
        let settings = ServerSettings {
            keys: vec![ApiKeyConfig {
                name: "k".into(),
                token: Some("right".into()),
                ..Default::default()
            }],
            login_failures_per_minute: 3,
            ..Default::default()
        };
        let access = Access::new(&settings, true).unwrap();
        let (attacker, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let kind = |token: &str, peer| {
            let header = format!("Bearer {token}");
            access.authenticate(Some(&header), Some(peer)).err().map(|r| r.error.kind)
        };
        for _ in 0..3 {
            assert_eq!(kind("wrong", attacker), Some(ErrorKind::Unauthorized));
        }
        assert_eq!(kind("wrong", attacker), Some(ErrorKind::RateLimited));
        assert_eq!(
            kind("right", attacker),
            Some(ErrorKind::RateLimited),
            "a right guess is not revealed"
        );
        assert_eq!(kind("right", other), None, "other addresses are not affected");
        assert_eq!(kind("righ", other), Some(ErrorKind::Unauthorized));
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

//! A remote engine: any OpenAI-compatible chat completions server (vLLM, SGLang, Zhipu's GLM
//! API, another autoglm). The model runs there; tools still run here, in the sandboxes.

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::chat::{ChatModel, Turn, TurnReply};
use crate::template::python_json;
use crate::{ChatMessage, EngineError, Role, ToolCall, TurnRequest};

/// Where the upstream is and how to authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// Base URL of the API, e.g. `http://vllm:8000/v1` (`/chat/completions` is appended).
    pub url: String,
    /// The model name to ask for.
    #[serde(default = "default_model")]
    pub model: String,
    /// Environment variable holding the API key (sent as a bearer token), if any.
    pub api_key_env: Option<String>,
    /// Seconds to wait for an answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_model() -> String {
    "default".into()
}
fn default_timeout() -> u64 {
    120
}

/// The largest answer read from an upstream: far above any chat completion, and a bound on
/// what a misbehaving server can make this process hold.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// An OpenAI-compatible upstream.
pub struct RemoteModel {
    settings: RemoteSettings,
    endpoint: http::Uri,
    key: Option<String>,
    // Pooled connections: an agent request makes several turns to the same server.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl RemoteModel {
    /// A client for `settings`; the key is read from its environment variable now.
    pub fn new(settings: RemoteSettings) -> Result<Self, EngineError> {
        let url = format!("{}/chat/completions", settings.url.trim_end_matches('/'));
        let endpoint: http::Uri = url
            .parse()
            .map_err(|e| EngineError::RemoteSettings(format!("upstream URL {url:?}: {e}")))?;
        if !matches!(endpoint.scheme_str(), Some("http" | "https"))
            || endpoint.authority().is_none()
        {
            return Err(EngineError::RemoteSettings(format!(
                "upstream URL {url:?} must be an absolute http:// or https:// URL"
            )));
        }
        if endpoint.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(EngineError::RemoteSettings(format!(
                "upstream URL {url:?} carries credentials; put the key in an environment \
                 variable and name it in api_key_env"
            )));
        }
        let key = match &settings.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                EngineError::RemoteSettings(format!(
                    "the upstream API key variable {var} is not set in the environment"
                ))
            })?),
            None => None,
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            // Below the 5 s keep-alive of common upstreams (uvicorn, so vLLM and SGLang): a
            // connection the server is about to close is not reused for a POST.
            .pool_idle_timeout(std::time::Duration::from_secs(4))
            .build(connector);
        Ok(Self { settings, endpoint, key, client })
    }

    async fn post(&self, body: &Value, traceparent: Option<&str>) -> Result<Value, EngineError> {
        let upstream = EngineError::Upstream;
        let mut request = http::Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::HOST,
                self.endpoint.authority().map(|a| a.as_str()).unwrap_or_default(),
            );
        if let Some(key) = &self.key {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| upstream(format!("cannot build the request: {e}")))?;
        let send = async {
            let response = self.client.request(request).await.map_err(|e| {
                upstream(format!("cannot reach the upstream model at {}: {e}", self.settings.url))
            })?;
            let status = response.status();
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    upstream(format!(
                        "the upstream model's answer broke off or passed {MAX_ANSWER_BYTES} bytes: {e}"
                    ))
                })?
                .to_bytes();
            Ok::<_, EngineError>((status, bytes))
        };
        let secs = self.settings.timeout_secs;
        let (status, bytes) = tokio::time::timeout(std::time::Duration::from_secs(secs), send)
            .await
            .map_err(|_| EngineError::UpstreamTimeout { secs })??;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            upstream(format!("the upstream answered {status} with a body that is not JSON"))
        })?;
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            let message = format!("the upstream model answered {status}: {message}");
            return Err(match status.as_u16() {
                429 => EngineError::UpstreamBusy(message),
                _ => EngineError::Upstream(message),
            });
        }
        Ok(value)
    }
}

/// Messages in OpenAI's shape: tool calls get ids, and each result names its call.
pub fn openai_messages(messages: &[ChatMessage]) -> Vec<Value> {
    let mut pending: std::collections::VecDeque<String> = Default::default();
    let mut next = 0;
    messages
        .iter()
        .map(|m| match (&m.role, &m.tool_call) {
            (Role::Assistant, Some(call)) => {
                next += 1;
                let id = format!("call_{next}");
                pending.push_back(id.clone());
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": id, "type": "function",
                    "function": {"name": call.name, "arguments": python_json(&Value::Object(call.arguments.clone()), None)},
                }]})
            }
            (Role::Observation, _) => {
                let id = pending.pop_front().unwrap_or_else(|| "call_0".into());
                json!({"role": "tool", "tool_call_id": id, "content": m.content})
            }
            (role, _) => json!({"role": role_name(*role), "content": m.content}),
        })
        .collect()
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Observation => "tool",
    }
}

#[async_trait]
impl ChatModel for RemoteModel {
    fn name(&self) -> &str {
        &self.settings.model
    }

    async fn turn(
        &self,
        request: TurnRequest,
        text: Option<UnboundedSender<String>>,
    ) -> Result<Turn, EngineError> {
        let p = &request.params;
        let mut body = json!({
            "model": self.settings.model,
            "messages": openai_messages(&request.messages),
            "max_tokens": p.max_new_tokens,
            "temperature": if p.do_sample { p.temperature } else { 0.0 },
            "top_p": p.top_p,
            "stream": false,
        });
        if let Some(seed) = p.seed {
            body["seed"] = json!(seed);
        }
        if !request.tools.is_empty() {
            body["tools"] =
                request.tools.iter().map(|t| json!({"type": "function", "function": t})).collect();
            if p.require_tool_call {
                body["tool_choice"] = json!("required");
            }
        }
        let answer = self.post(&body, request.traceparent.as_deref()).await?;
        let choice = &answer["choices"][0];
        let message = &choice["message"];
        let usage = |key: &str| answer["usage"][key].as_u64().unwrap_or(0) as usize;
        let reply = match message["tool_calls"].as_array().filter(|calls| !calls.is_empty()) {
            Some(calls) => parse_calls(calls),
            None => {
                let content = message["content"].as_str().unwrap_or_default().to_string();
                if let (Some(text), false) = (&text, content.is_empty()) {
                    let _ = text.send(content.clone());
                }
                TurnReply::Text(content)
            }
        };
        Ok(Turn {
            reply,
            prompt_tokens: usage("prompt_tokens"),
            completion_tokens: usage("completion_tokens"),
            truncated: choice["finish_reason"] == "length",
        })
    }
}

/// OpenAI tool calls (arguments as a JSON string) as calls, or why they cannot run.
fn parse_calls(calls: &[Value]) -> TurnReply {
    let mut parsed = Vec::with_capacity(calls.len());
    for call in calls {
        let name = call["function"]["name"].as_str().unwrap_or_default().to_string();
        let raw = call["function"]["arguments"].as_str().unwrap_or("{}");
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(arguments)) => parsed.push(ToolCall { name, arguments }),
            _ => {
                return TurnReply::Invalid {
                    raw: format!("{name}\n{raw}"),
                    error: format!("the arguments of {name} are not a JSON object: {raw}"),
                };
            }
        }
    }
    TurnReply::Calls(parsed)
}

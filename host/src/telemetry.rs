//! Logs and traces: the `tracing` subscriber (text or JSON lines on stderr, `RUST_LOG` to
//! tune, quiet by default) and, with the `otlp` cargo feature, the `autoglm` spans exported
//! to an OpenTelemetry collector over OTLP/HTTP once the config's `[telemetry]` names one.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetrySettings;
use crate::trace::TraceContext;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the fields of every enclosing span (the trace id).
    Json,
}

/// Install the process's subscriber: log lines on stderr (`RUST_LOG`, default `warn`) and,
/// when `settings` name a collector, the host's spans exported to it (needs the `otlp`
/// feature). Keep the guard until the process ends: dropping it flushes the spans.
pub fn init(format: LogFormat, settings: &TelemetrySettings) -> anyhow::Result<ExportGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().with_current_span(false).with_span_list(true).boxed(),
    };
    let (exporter, guard) = match settings.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let service = settings.service_name.as_deref().unwrap_or("autoglm");
            let (layer, guard) = otlp::start(endpoint, service)?;
            (Some(layer), guard)
        }
        None => (None, ExportGuard::default()),
    };
    tracing_subscriber::registry().with(exporter).with(lines.with_filter(filter)).try_init()?;
    Ok(guard)
}

/// Flushes exported spans when dropped (at shutdown).
#[derive(Default)]
#[must_use = "dropping the guard stops exporting"]
pub struct ExportGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: flushing spans to the OTLP collector failed: {error}");
        }
    }
}

/// Tie the request's span to its trace context: with an exporter, the exported span
/// continues the caller's trace (or starts one) and the returned context names that span,
/// so the `traceparent` answered is the span a collector shows. Without one, `trace` as is.
pub fn adopt(span: &tracing::Span, trace: TraceContext) -> TraceContext {
    otlp::adopt(span, trace)
}

#[cfg(not(feature = "otlp"))]
mod otlp {
    use super::*;

    pub fn start(
        endpoint: &str,
        _service: &str,
    ) -> anyhow::Result<(tracing_subscriber::layer::Identity, ExportGuard)> {
        anyhow::bail!(
            "telemetry.otlp_endpoint is set ({endpoint}) but this autoglm was built without \
             OpenTelemetry export: rebuild with `cargo build --release -p autoglm-host \
             --features otlp`, or remove the setting"
        )
    }

    pub fn adopt(_: &tracing::Span, trace: TraceContext) -> TraceContext {
        trace
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    };
    use opentelemetry_otlp::WithExportConfig;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::Registry;
    use tracing_subscriber::filter::Targets;

    /// The exporter layer: the host's own spans at info level, whatever RUST_LOG says
    /// about log lines.
    pub fn start(
        endpoint: &str,
        service: &str,
    ) -> anyhow::Result<(impl Layer<Registry> + Send + Sync, ExportGuard)> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&url)
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot export spans to {url}: {e}"))?;
        let resource =
            opentelemetry_sdk::Resource::builder().with_service_name(service.to_string()).build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("autoglm"))
            .with_filter(Targets::new().with_target("autoglm", tracing::Level::INFO));
        Ok((layer, ExportGuard { provider: Some(provider) }))
    }

    pub fn adopt(span: &tracing::Span, trace: TraceContext) -> TraceContext {
        let caller = trace.parent_id.as_deref();
        if let (Some(parent), Ok(trace_id)) = (caller, TraceId::from_hex(&trace.trace_id)) {
            let flags = if trace.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            if let Ok(span_id) = SpanId::from_hex(parent) {
                let remote =
                    SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
                let _ =
                    span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
            }
        }
        let context = span.context();
        let exported = context.span().span_context().clone();
        if !exported.is_valid() {
            return trace;
        }
        TraceContext {
            trace_id: exported.trace_id().to_string(),
            span_id: exported.span_id().to_string(),
            sampled: exported.is_sampled(),
            parent_id: trace.parent_id,
        }
    }
}

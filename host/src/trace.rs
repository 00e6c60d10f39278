//! Request tracing: one W3C trace context per request, accepted from a `traceparent`
//! header or started here, recorded on the request's `tracing` span (so every log line
//! under it, plugin calls included, carries the trace id), answered in the response's
//! `traceparent`, and passed on to a remote engine.

use std::fmt::Write;

/// A W3C trace context: the trace's id and this hop's span id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, the same on every hop of the request.
    pub trace_id: String,
    /// 16 lowercase hex digits naming this hop.
    pub span_id: String,
    /// Whether the caller asked for the trace to be recorded.
    pub sampled: bool,
    /// The caller's span id, when the trace came from a `traceparent` header.
    pub parent_id: Option<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let _ = write!(out, "{:016x}", rand::random::<u64>() | 1);
    }
    out.truncate(bytes * 2);
    out
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn start() -> Self {
        Self { trace_id: random_hex(16), span_id: random_hex(8), sampled: true, parent_id: None }
    }

    /// Continue the trace in a `traceparent` header (`00-<trace>-<parent>-<flags>`) with a
    /// new span id, or start one when the header is absent or malformed (as the W3C
    /// specification asks).
    pub fn from_header(header: Option<&str>) -> Self {
        let parsed = header.and_then(|value| {
            let mut parts = value.trim().split('-');
            let (version, trace, parent, flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let version_ok = is_hex_id(version, 2) || version == "00";
            let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
            (version_ok && version != "ff" && is_hex_id(trace, 32) && is_hex_id(parent, 16)).then(
                || Self {
                    trace_id: trace.to_string(),
                    span_id: random_hex(8),
                    sampled: flags & 1 == 1,
                    parent_id: Some(parent.to_string()),
                },
            )
        });
        parsed.unwrap_or_else(Self::start)
    }

    /// The next hop of the same trace.
    pub fn child(&self) -> Self {
        Self { span_id: random_hex(8), parent_id: Some(self.span_id.clone()), ..self.clone() }
    }

    /// The `traceparent` header naming this hop.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_a_bad_one_replaced() {
        let t = TraceContext::from_header(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ));
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(t.span_id, "b7ad6b7169203331", "this hop has its own span id");
        assert!(t.sampled);
        assert!(
            t.header().starts_with("00-0af7651916cd43dd8448eb211c80319c-")
                && t.header().ends_with("-01")
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            let fresh = TraceContext::from_header(Some(bad));
            assert_ne!(fresh.trace_id, "0af7651916cd43dd8448eb211c80319c", "{bad:?}");
            assert!(is_hex_id(&fresh.trace_id, 32) && is_hex_id(&fresh.span_id, 16));
        }
        assert!(
            !TraceContext::from_header(Some(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
            ))
            .sampled
        );
    }
}

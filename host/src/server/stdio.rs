//! MCP over stdio for desktop clients: one JSON-RPC message per line on stdin,
//! answers and notifications one per line on stdout. Requests run concurrently,
//! so `notifications/cancelled` can stop one that is still running.
//!
//! Lines are held to `server.body_limit_bytes`, the limit HTTP bodies have, and at
//! most [`MAX_IN_FLIGHT`] requests run at once: a client cannot grow the server's
//! memory or task count without bound by what it writes.

use std::io;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

use super::mcp::{
    Context, acknowledge, code, error_response, is_stateless, not_one_message, notification,
    respond_cancellable,
};
use super::state::AppState;

/// Requests answered at once; beyond this stdin is not read until one finishes, so a
/// client pipelining faster than tools run waits instead of piling up tasks. As many
/// as an HTTP client gets by default (`server.concurrency`). A `notifications/cancelled`
/// queued behind a full window waits too, at worst until a running call ends.
pub const MAX_IN_FLIGHT: usize = 64;

/// Serve MCP on this process's stdin and stdout until stdin closes.
pub async fn serve(state: Arc<AppState>) -> anyhow::Result<()> {
    let admitted =
        Arc::new(state.access.admit(None).map_err(|r| anyhow::anyhow!("{}", r.error.message))?);
    let session = state.mcp.create(&admitted.client.name);
    let (out, mut outgoing) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = outgoing.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
            {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    // Tell the client when the tool set changes (session revisions expect it unasked).
    let mut changes = state.invoker.plugins().changes();
    let notify = out.clone();
    let watcher = tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let line = notification("notifications/tools/list_changed").to_string();
            if notify.send(line).await.is_err() {
                break;
            }
        }
    });

    let limit = state.settings.body_limit_bytes;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut input = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        match read_line(&mut input, limit, &mut line).await? {
            Line::End => break,
            Line::TooLong => {
                let message = format!(
                    "the message is over server.body_limit_bytes = {limit} bytes; \
                     send a smaller one or raise the setting"
                );
                // Not a parse error: the line was never parsed, and may well be valid JSON.
                let error = error_response(Value::Null, code::INVALID_REQUEST, &message);
                let _ = out.send(error.to_string()).await;
                continue;
            }
            Line::Fits if line.trim_ascii().is_empty() => continue,
            Line::Fits => {}
        }
        let message: Value = match serde_json::from_slice(&line) {
            Ok(message) => message,
            Err(e) => {
                let _ = out
                    .send(
                        error_response(
                            Value::Null,
                            code::PARSE_ERROR,
                            &format!("parse error: {e}"),
                        )
                        .to_string(),
                    )
                    .await;
                continue;
            }
        };
        if !message.is_object() {
            let _ = out.send(not_one_message().to_string()).await;
            continue;
        }
        let Some(id) = message.get("id").cloned() else {
            if message["method"] == "notifications/cancelled"
                && let Some(request) = message.pointer("/params/requestId")
            {
                state.mcp.cancel(Some(&session), request);
            }
            continue;
        };
        if message["method"] == "subscriptions/listen" {
            let (ack, _) = acknowledge(&id, true);
            let _ = out.send(ack.to_string()).await;
            continue;
        }
        let slot = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (state, admitted, out, session) =
            (state.clone(), admitted.clone(), out.clone(), session.clone());
        tokio::spawn(async move {
            // A desktop client lists tools right after starting us: answer once the
            // plugins found at start-up are compiled rather than with an empty list.
            if message["method"].as_str().is_some_and(|m| m.starts_with("tools/")) {
                state.invoker.plugins().wait_ready().await;
            }
            let stateless = is_stateless(&message);
            let notify = Some(out.clone());
            let context = Context { session: Some(&session), stateless, notify, trace_id: None };
            let answer = respond_cancellable(&state, &admitted, &context, id, &message).await;
            let _ = out.send(answer.to_string()).await;
            drop(slot);
        });
    }
    watcher.abort();
    drop(out);
    let _ = writer.await;
    Ok(())
}

/// How reading one line ended.
#[derive(Debug, PartialEq)]
enum Line {
    /// The line, without its newline, is in the buffer.
    Fits,
    /// The line was longer than the limit; it has been read past and dropped.
    TooLong,
    /// The input has ended.
    End,
}

/// Read the next line into `line` (cleared first), holding at most `limit` bytes of it:
/// the rest of a longer line is dropped as it arrives, so its size costs no memory.
async fn read_line(
    input: &mut (impl AsyncBufRead + Unpin),
    limit: usize,
    line: &mut Vec<u8>,
) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            // A last line without a newline still counts.
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Fits,
            });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        if !too_long && line.len() + part.len() > limit {
            too_long = true;
            // Give the memory back too: one over-long line should not pin `limit` bytes.
            *line = Vec::new();
        }
        if !too_long {
            line.extend_from_slice(part);
        }
        let used = newline.map_or(available.len(), |at| at + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Fits });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `input` as read with `limit`, through a small buffer so lines
    /// arrive in several pieces.
    async fn lines(input: &[u8], limit: usize) -> Vec<(Line, String)> {
        let mut reader = BufReader::with_capacity(3, input);
        let mut line = Vec::new();
        let mut read = Vec::new();
        loop {
            match read_line(&mut reader, limit, &mut line).await.unwrap() {
                Line::End => return read,
                ended => read.push((ended, String::from_utf8(line.clone()).unwrap())),
            }
        }
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_dropped_and_the_next_one_read() {
        let read = lines(b"12345\n123456\n\nabc", 5).await;
        let fits = |s: &str| (Line::Fits, s.to_string());
        assert_eq!(read, [fits("12345"), (Line::TooLong, String::new()), fits(""), fits("abc")]);
    }

    #[tokio::test]
    async fn a_last_line_over_the_limit_without_a_newline_is_too_long() {
        assert_eq!(lines(b"ok\n1234567", 5).await[1].0, Line::TooLong);
    }
}

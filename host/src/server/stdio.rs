//! MCP over stdio for desktop clients: one JSON-RPC message per line on stdin,
//! answers and notifications one per line on stdout. Requests run concurrently,
//! so `notifications/cancelled` can stop one that is still running.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::mcp::{
    Context, acknowledge, code, error_response, is_stateless, notification, respond_cancellable,
};
use super::state::AppState;

/// Serve MCP on this process's stdin and stdout until stdin closes.
pub async fn serve(state: Arc<AppState>) -> anyhow::Result<()> {
    let admitted =
        Arc::new(state.access.admit(None).map_err(|r| anyhow::anyhow!("{}", r.error.message))?);
    let session = state.mcp.create();
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

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
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
        let (state, admitted, out, session) =
            (state.clone(), admitted.clone(), out.clone(), session.clone());
        tokio::spawn(async move {
            // A desktop client lists tools right after starting us: answer once the
            // plugins found at start-up are compiled rather than with an empty list.
            if message["method"].as_str().is_some_and(|m| m.starts_with("tools/")) {
                state.invoker.plugins().wait_ready().await;
            }
            let context = Context { session: Some(&session), stateless: is_stateless(&message) };
            let answer = respond_cancellable(&state, &admitted, &context, id, &message).await;
            let _ = out.send(answer.to_string()).await;
        });
    }
    watcher.abort();
    drop(out);
    let _ = writer.await;
    Ok(())
}

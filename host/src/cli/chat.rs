//! `autoglm chat`: talk to the agent from a terminal, one question or interactively; each
//! tool call and its result are shown as they happen, then the answer streams.

use std::io::{BufRead, Write};
use std::sync::Arc;

use autoglm_engine::Priority;
use autoglm_engine::{ChatMessage, Role};
use autoglm_host::agent::{Agent, AgentEvent, AgentRequest, TraceStep};
use autoglm_host::invoke::Allowlist;

/// Answer `question`, or read questions from stdin until it ends when there is none.
pub async fn run(agent: Arc<Agent>, question: Option<String>) -> anyhow::Result<()> {
    let mut history: Vec<ChatMessage> = Vec::new();
    let questions: Box<dyn Iterator<Item = std::io::Result<String>>> = match question {
        Some(q) => Box::new(std::iter::once(Ok(q))),
        None => {
            eprintln!("autoglm chat with {} (an empty line or Ctrl-D ends)", agent.model().name());
            Box::new(std::iter::from_fn(|| {
                eprint!("> ");
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                match std::io::stdin().lock().read_line(&mut line) {
                    Ok(0) => None,
                    Ok(_) => Some(Ok(line.trim_end().to_string())),
                    Err(e) => Some(Err(e)),
                }
            }))
        }
    };
    for question in questions {
        let question = question?;
        if question.trim().is_empty() {
            break;
        }
        history.push(ChatMessage::new(Role::User, question));
        let request = AgentRequest {
            messages: history.clone(),
            params: agent.model().defaults(),
            priority: Priority::Interactive,
            allowlist: Allowlist::everything("cli"),
            trace: None,
            durable: None,
            show_prompt: false,
        };
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let running = {
            let agent = agent.clone();
            tokio::spawn(async move { agent.run(request, Some(events)).await })
        };
        let mut out = std::io::stdout().lock();
        while let Some(event) = received.recv().await {
            match event {
                AgentEvent::Text(text) => {
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                }
                AgentEvent::Step(TraceStep::Tool {
                    tool,
                    arguments,
                    result,
                    error,
                    fuel,
                    latency_ms,
                }) => {
                    let _ = writeln!(out, "→ {tool} {arguments}");
                    let _ = match (result, error) {
                        (Some(result), _) => {
                            writeln!(out, "← {result}  ({latency_ms:.2} ms, {fuel} fuel)")
                        }
                        (_, Some(e)) => {
                            writeln!(out, "← error {}: {}  ({latency_ms:.2} ms)", e.kind, e.message)
                        }
                        _ => Ok(()),
                    };
                }
                AgentEvent::Step(TraceStep::Model { .. }) => {}
            }
        }
        let outcome = running.await??;
        let _ = writeln!(out);
        history.push(ChatMessage::new(Role::Assistant, outcome.answer));
    }
    Ok(())
}

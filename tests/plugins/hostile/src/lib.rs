//! A plugin that misbehaves on purpose, one tool per kind of misbehaviour, plus a
//! benign `echo` so tests can mix good and bad calls on the same component.

use std::hint::black_box;

use autoglm_sdk::LogLevel;
use autoglm_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Nothing {}

#[derive(Deserialize, JsonSchema)]
struct Text {
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct Size {
    /// Megabytes.
    mb: usize,
}

#[derive(Deserialize, JsonSchema)]
struct Path {
    path: String,
}

#[derive(Deserialize, JsonSchema)]
struct WriteFile {
    path: String,
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct Disk {
    /// `set_len`, `append`, `write_at`, `empty_files` or `unlink_open`.
    op: String,
    path: String,
    /// The length, the offset or the number of files.
    n: u64,
}

#[derive(Deserialize, JsonSchema)]
struct Key {
    key: String,
}

#[derive(Deserialize, JsonSchema)]
struct Millis {
    ms: u64,
}

fn echo(args: Text) -> Result<String, ToolError> {
    Ok(args.text)
}

/// Log at three levels, report three steps of progress and answer with the call's context.
fn report(_: Nothing) -> Result<autoglm_sdk::serde_json::Value, ToolError> {
    log(LogLevel::Debug, "debug detail");
    log(LogLevel::Info, "starting");
    for step in 1..=3 {
        progress(f64::from(step), Some(3.0), Some(&format!("step {step}")));
    }
    log(LogLevel::Warn, "almost done");
    let context = context();
    Ok(autoglm_sdk::serde_json::json!({
        "idempotency_key": context.idempotency_key,
        "trace_id": context.trace_id,
        "deadline_ms": context.deadline_ms,
    }))
}

fn spin(_: Nothing) -> Result<(), ToolError> {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn chatty(_: Nothing) -> Result<(), ToolError> {
    loop {
        black_box(config("anything"));
    }
}

fn memory_bomb(_: Nothing) -> Result<usize, ToolError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        black_box(&hoard);
    }
}

#[allow(unconditional_recursion, reason = "exhausting the stack is this tool's job")]
fn depth(n: u64) -> u64 {
    black_box(depth(black_box(n + 1)) + 1)
}

fn recurse(_: Nothing) -> Result<u64, ToolError> {
    Ok(depth(0))
}

fn trap(_: Nothing) -> Result<(), ToolError> {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    unreachable!("this plugin only runs as wasm");
}

fn panic(_: Nothing) -> Result<(), ToolError> {
    panic!("the hostile plugin panics on purpose");
}

fn huge_result(args: Size) -> Result<String, ToolError> {
    Ok("x".repeat(args.mb << 20))
}

fn flood_stdout(args: Size) -> Result<&'static str, ToolError> {
    let line = "y".repeat(1023);
    for _ in 0..(args.mb << 10) {
        println!("{line}");
    }
    Ok("flooded")
}

fn read_file(args: Path) -> Result<String, ToolError> {
    Ok(std::fs::read_to_string(&args.path)?)
}

fn hoard(args: Path) -> Result<usize, ToolError> {
    // Open the same file again and again, keeping every handle.
    let mut files = Vec::new();
    loop {
        files.push(std::fs::File::open(&args.path)?);
        black_box(&files);
    }
}

fn write_file(args: WriteFile) -> Result<(), ToolError> {
    Ok(std::fs::write(&args.path, args.text)?)
}

/// Grow a directory each way WASI can: a sparse file (`set-size`), appends through a
/// stream, a byte far out (a write at an offset), or empty files until refused.
fn disk(args: Disk) -> Result<u64, ToolError> {
    use std::io::{Seek, SeekFrom, Write};
    let path = &args.path;
    let open = || std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path);
    match args.op.as_str() {
        "set_len" => open()?.set_len(args.n)?,
        "append" => {
            let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
            let chunk = vec![7u8; 64 << 10];
            let mut left = args.n;
            while left > 0 {
                let n = left.min(chunk.len() as u64);
                file.write_all(&chunk[..n as usize])?;
                left -= n;
            }
        }
        "write_at" => {
            let mut file = open()?;
            file.seek(SeekFrom::Start(args.n))?;
            file.write_all(b"x")?;
        }
        "empty_files" => {
            std::fs::create_dir_all(path)?;
            for i in 0..args.n {
                std::fs::File::create(format!("{path}/{i}"))
                    .map_err(|e| ToolError::failed(format!("file {i}: {e}")))?;
            }
        }
        // Delete a file of `n` bytes while holding it open, try to fill its room, then
        // close it and fill the room again.
        "unlink_open" => {
            let held = open()?;
            (&held).write_all(&vec![1; args.n as usize])?;
            std::fs::remove_file(path)?;
            let early = std::fs::write(format!("{path}.early"), vec![2; args.n as usize]);
            let _ = std::fs::remove_file(format!("{path}.early"));
            drop(held);
            std::fs::write(format!("{path}.late"), vec![3; args.n as usize])?;
            early?;
        }
        other => return Err(ToolError::invalid(format!("no op `{other}`"))),
    }
    Ok(args.n)
}

fn env(args: Key) -> Result<Option<String>, ToolError> {
    Ok(std::env::var(&args.key).ok())
}

fn sleep(args: Millis) -> Result<&'static str, ToolError> {
    std::thread::sleep(std::time::Duration::from_millis(args.ms));
    Ok("awake")
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new("echo", "Return the text unchanged.", echo),
        // Promises a number and returns text.
        Tool::new("lie", "Return the text, promising a number.", echo).output::<u64>(),
        Tool::new("report", "Log, report progress and answer with the call's context.", report),
        Tool::new("spin", "Loop forever without calling the host.", spin),
        Tool::new("chatty", "Loop forever calling a host import.", chatty),
        Tool::new("memory_bomb", "Allocate until something stops it.", memory_bomb),
        Tool::new("recurse", "Recurse without a base case.", recurse),
        Tool::new("trap", "Execute `unreachable`.", trap),
        Tool::new("panic", "Panic.", panic),
        Tool::new("huge_result", "Return a result of `mb` megabytes.", huge_result),
        Tool::new("flood_stdout", "Print `mb` megabytes to stdout, then succeed.", flood_stdout),
        // Declares read access to /data and tries any path.
        Tool::new("read_file", "Read any path.", read_file).directory("/data", Access::ReadOnly),
        Tool::new("hoard", "Open a file of /data forever, keeping every handle.", hoard)
            .directory("/data", Access::ReadOnly),
        // Declares nothing and writes anyway.
        Tool::new("write_file", "Write any path.", write_file),
        // Declares only read access to /data, then writes.
        Tool::new("write_as_reader", "Write any path, declaring only reads.", write_file)
            .directory("/data", Access::ReadOnly),
        Tool::new("disk", "Grow /data by `op`.", disk).directory("/data", Access::ReadWrite),
        Tool::new("write_data", "Write a file of /data.", write_file)
            .directory("/data", Access::ReadWrite),
        // Declares no variable and reads any.
        Tool::new("env", "Read an environment variable.", env),
        // Declares PATH and reads any variable.
        Tool::new("path_env", "Read an environment variable, declaring PATH.", env).env("PATH"),
        Tool::new("sleep", "Block in a host call for `ms` milliseconds.", sleep),
    ]
}

export_plugin!(tools);

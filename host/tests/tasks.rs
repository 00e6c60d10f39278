//! Multi-stage tasks against a real `autoglm serve` with the SQLite journal: the seed's
//! four-stage order through success, compensation, pause and resume, skip, a parallel
//! group that must really run at once, a `kill -9` mid-stage, bad specs, keys, a damaged
//! journal, and the CLI. Every side effect is a file the `orders` test plugin writes into
//! its granted directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use autoglm_test_support::host::{
    ScriptedUpstream, ServeProcess, autoglm_bin, http, target_dir, test_plugins_dir,
};
use autoglm_test_support::postgres::Postgres;
use serde_json::{Value, json};

/// A server's files: its config, its plugins, the directory the plugin writes, the journal.
struct Shop {
    root: tempfile::TempDir,
    plugins: tempfile::TempDir,
}

impl Shop {
    fn new(extra: &str) -> Shop {
        Shop::with_tasks("", extra)
    }

    /// A shop whose `[tasks]` section adds `tasks` (a `database`), with `extra` after it.
    fn with_tasks(tasks: &str, extra: &str) -> Shop {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("effects")).unwrap();
        let config = format!(
            r#"
cache_dir = "{cache}"
data_dir = "{root}/data"

[tasks]
lease_ms = 1500
poll_ms = 50
dir = "{root}/templates"
{tasks}

[[plugins.orders.dirs]]
host = "{root}/effects"
guest = "/data"
mode = "rw"

[plugins.orders.limits]
deadline_ms = 30000
{extra}
"#,
            cache = target_dir().join("test-component-cache").display(),
            root = root.path().display(),
        );
        std::fs::write(root.path().join("autoglm.toml"), config).unwrap();
        Shop { root, plugins: test_plugins_dir(&["orders"]) }
    }

    fn config(&self) -> PathBuf {
        self.root.path().join("autoglm.toml")
    }

    fn effects(&self) -> PathBuf {
        self.root.path().join("effects")
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.effects().join(name), "").unwrap();
    }

    fn log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.effects().join("log")).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    /// The log's lines that begin with `prefix` (`"done check"`).
    fn lines(&self, prefix: &str) -> Vec<String> {
        self.log().into_iter().filter(|l| l.starts_with(&format!("{prefix} "))).collect()
    }

    async fn serve(&self) -> ServeProcess {
        self.serve_with(&[]).await
    }

    /// A server with `args` added to its command line.
    async fn serve_with(&self, args: &[&str]) -> ServeProcess {
        let config = self.config();
        let mut command: Vec<&std::ffi::OsStr> = vec![
            "--config".as_ref(),
            config.as_os_str(),
            "--plugins".as_ref(),
            self.plugins.path().as_os_str(),
        ];
        command.extend(args.iter().map(std::ffi::OsStr::new));
        let server = ServeProcess::start(command);
        server.ready().await;
        server
    }
}

/// The seed's order: pre-check, lock stock, pay (using the lock's reservation), coupon
/// (not critical). The first three can be undone.
fn order(policy: &str) -> Value {
    let undo = |stage: &str| json!({"tool": "orders.undo", "args": {"stage": stage, "id": {"$ref": format!("{stage}.result.id")}}});
    json!({
        "name": "order",
        "policy": policy,
        "stages": [
            {"name": "check", "tool": "orders.act", "args": {"stage": "check"}, "compensate": undo("check")},
            {"name": "lock", "tool": "orders__act", "args": {"stage": "lock"}, "compensate": undo("lock")},
            {"name": "pay", "tool": "act", "args": {"stage": "pay", "given": {"$ref": "lock.result.id"}},
             "compensate": undo("pay"), "retries": 2, "backoff_ms": 10},
            {"name": "coupon", "tool": "orders.act", "args": {"stage": "coupon"}, "critical": false},
        ],
    })
}

async fn submit(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let reply = http(addr, "POST", "/v1/tasks", headers, &body.to_string()).await;
    (reply.status, reply.json())
}

async fn start(addr: std::net::SocketAddr, spec: Value) -> String {
    let (status, task) = submit(addr, &[], &json!({"spec": spec})).await;
    assert_eq!(status, 202, "{task}");
    task["id"].as_str().unwrap().to_string()
}

/// Poll the task until it is in `state` (60 s at most).
async fn wait_for(addr: std::net::SocketAddr, id: &str, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let task = http(addr, "GET", &format!("/v1/tasks/{id}"), &[], "").await.json();
        if task["state"] == state {
            return task;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "task never reached {state}: {task:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stage<'a>(task: &'a Value, name: &str) -> &'a Value {
    let stages = task["stages"].as_array().unwrap();
    stages.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no stage {name}: {task:#}"))
}

#[tokio::test]
async fn the_order_runs_every_stage_in_order_and_streams_its_events() {
    let shop = Shop::new("");
    let server = shop.serve().await;
    let id = start(server.addr, order("compensate")).await;
    let task = wait_for(server.addr, &id, "succeeded").await;
    let done: Vec<String> =
        shop.lines("done").iter().map(|l| l.split(' ').nth(1).unwrap().to_string()).collect();
    assert_eq!(done, ["check", "lock", "pay", "coupon"]);
    let lock = stage(&task, "lock");
    assert_eq!(lock["state"], "succeeded");
    assert_eq!(lock["attempts"], 1);
    assert!(lock["elapsed_ms"].is_u64());
    // `pay` was given the lock's reservation through its `$ref`.
    assert_eq!(stage(&task, "pay")["result"]["given"], lock["result"]["id"]);
    // The stage's idempotency key is the task and the stage, as the plugin saw it.
    assert_eq!(lock["result"]["key"], format!("{id}/lock"));

    let events = http(server.addr, "GET", &format!("/v1/tasks/{id}/events"), &[], "").await;
    assert_eq!(events.status, 200);
    let events: Vec<Value> = (events.body.lines())
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // A stage's success shares the next stage's commit: every event is still journaled,
    // numbered without a gap, in the order it happened.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    let steps: Vec<String> = (events.iter())
        .map(|e| format!("{} {}", e["kind"].as_str().unwrap(), e["stage"].as_str().unwrap_or("")))
        .collect();
    let mut expected = vec!["submitted ".to_string(), "started ".to_string()];
    for name in ["check", "lock", "pay", "coupon"] {
        expected.push(format!("stage_started {name}"));
        expected.push(format!("stage_succeeded {name}"));
    }
    expected.push("succeeded ".to_string());
    assert_eq!(steps, expected);

    let listed = http(server.addr, "GET", "/v1/tasks?state=succeeded", &[], "").await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let none = http(server.addr, "GET", "/v1/tasks?state=paused", &[], "").await.json();
    assert_eq!(none["data"], json!([]));
}

#[tokio::test]
async fn a_failed_payment_undoes_the_lock_then_the_check() {
    let shop = Shop::new("");
    shop.touch("fail-pay");
    let server = shop.serve().await;
    let id = start(server.addr, order("compensate")).await;
    let task = wait_for(server.addr, &id, "compensated").await;
    // Tried three times (two retries), then the completed stages undone, last one first.
    assert_eq!(stage(&task, "pay")["attempts"], 3);
    assert_eq!(stage(&task, "pay")["state"], "failed");
    // Each retry after an observed failure has a key of its own.
    let keys: Vec<String> =
        shop.lines("start pay").iter().map(|l| l.split(' ').nth(2).unwrap().to_string()).collect();
    assert_eq!(
        keys,
        [format!("{id}/pay"), format!("{id}/pay/retry-1"), format!("{id}/pay/retry-2")]
    );
    let undone: Vec<String> =
        shop.lines("undo").iter().map(|l| l.split(' ').nth(1).unwrap().to_string()).collect();
    assert_eq!(undone, ["lock", "check"]);
    assert!(
        !shop.effects().join("done-lock").exists() && !shop.effects().join("done-check").exists()
    );
    assert_eq!(stage(&task, "lock")["state"], "compensated");
    assert_eq!(stage(&task, "coupon")["state"], "pending");
    assert!(task["error"]["message"].as_str().unwrap().contains("fail-pay"), "{task:#}");
    // The undo was given the lock's own reservation.
    assert!(
        shop.lines("undo")[0].ends_with(stage(&task, "lock")["result"]["id"].as_str().unwrap())
    );
    let metrics = http(server.addr, "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("autoglm_task_compensations_total 2"), "{metrics}");
    assert!(metrics.contains("autoglm_task_stage_retries_total 2"), "{metrics}");
    assert!(metrics.contains("autoglm_tasks{state=\"compensated\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_paused_order_resumes_once_the_cause_is_fixed() {
    let shop = Shop::new("");
    shop.touch("fail-pay");
    let server = shop.serve().await;
    let id = start(server.addr, order("pause")).await;
    let task = wait_for(server.addr, &id, "paused").await;
    assert_eq!(task["paused_at"], "pay");
    assert!(shop.lines("undo").is_empty(), "a pause undoes nothing");
    std::fs::remove_file(shop.effects().join("fail-pay")).unwrap();
    let sloppy =
        http(server.addr, "POST", &format!("/v1/tasks/{id}/resume"), &[], r#"{"skip": "yes"}"#)
            .await;
    assert_eq!(sloppy.status, 400, "{}", sloppy.body);
    assert!(sloppy.body.contains("`skip`"));
    let resumed = http(server.addr, "POST", &format!("/v1/tasks/{id}/resume"), &[], "").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let task = wait_for(server.addr, &id, "succeeded").await;
    assert_eq!(stage(&task, "pay")["attempts"], 4);
    assert_eq!(shop.lines("done check").len(), 1, "the journaled stages did not run again");
    // A finished task cannot be resumed again.
    let again = http(server.addr, "POST", &format!("/v1/tasks/{id}/resume"), &[], "").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["kind"], "conflict");
}

#[tokio::test]
async fn an_aborted_pause_undoes_what_completed() {
    let shop = Shop::new("");
    shop.touch("fail-pay");
    let server = shop.serve().await;
    let id = start(server.addr, order("pause")).await;
    wait_for(server.addr, &id, "paused").await;
    let aborted = http(server.addr, "POST", &format!("/v1/tasks/{id}/abort"), &[], "").await;
    assert_eq!(aborted.status, 200, "{}", aborted.body);
    wait_for(server.addr, &id, "aborted").await;
    assert_eq!(shop.lines("undo").len(), 2);
}

#[tokio::test]
async fn a_non_critical_failure_is_skipped_and_a_critical_one_fails_under_skip() {
    let shop = Shop::new("");
    shop.touch("fail-coupon");
    let server = shop.serve().await;
    let id = start(server.addr, order("skip")).await;
    let task = wait_for(server.addr, &id, "succeeded").await;
    assert_eq!(stage(&task, "coupon")["state"], "skipped");

    shop.touch("fail-pay");
    let id = start(server.addr, order("skip")).await;
    let task = wait_for(server.addr, &id, "failed").await;
    assert_eq!(stage(&task, "pay")["state"], "failed");
    assert!(shop.lines("undo").is_empty(), "skip undoes nothing");
}

#[tokio::test]
async fn a_failed_compensation_stops_for_an_operator_and_can_be_retried() {
    let shop = Shop::new("");
    shop.touch("fail-pay");
    shop.touch("fail-undo-check");
    let server = shop.serve().await;
    let id = start(server.addr, order("compensate")).await;
    let task = wait_for(server.addr, &id, "compensation_failed").await;
    assert_eq!(stage(&task, "check")["state"], "compensation_failed");
    assert!(task["error"]["message"].as_str().unwrap().contains("compensation of stage `check`"));
    std::fs::remove_file(shop.effects().join("fail-undo-check")).unwrap();
    let retried = http(server.addr, "POST", &format!("/v1/tasks/{id}/retry"), &[], "").await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let task = wait_for(server.addr, &id, "compensated").await;
    assert_eq!(stage(&task, "check")["state"], "compensated");
    assert_eq!(shop.lines("undo lock").len(), 1, "the lock was undone once");
}

#[tokio::test]
async fn a_stage_that_timed_out_is_undone_too_for_it_may_have_done_its_work() {
    let shop = Shop::new("");
    let server = shop.serve().await;
    let undo = |stage: &str| json!({"tool": "orders.undo", "args": {"stage": stage}});
    let spec = json!({"stages": [
        {"name": "check", "tool": "orders.act", "args": {"stage": "check"}, "compensate": undo("check")},
        {"name": "pay", "tool": "orders.act", "args": {"stage": "pay", "wait_for": "never"},
         "deadline_ms": 300, "compensate": undo("pay")},
    ]});
    let id = start(server.addr, spec).await;
    let task = wait_for(server.addr, &id, "compensated").await;
    assert_eq!(stage(&task, "pay")["error"]["kind"], "timeout");
    let undone: Vec<String> =
        shop.lines("undo").iter().map(|l| l.split(' ').nth(1).unwrap().to_string()).collect();
    assert_eq!(undone, ["pay", "check"], "the timed-out stage first");
}

#[tokio::test]
async fn a_group_runs_its_stages_at_the_same_time() {
    let shop = Shop::new("");
    let server = shop.serve().await;
    // Each waits for the other's start marker: run one after the other, both time out.
    let spec = json!({"stages": [
        {"name": "check", "tool": "orders.act", "args": {"stage": "check"}},
        {"group": [
            {"name": "pay", "tool": "orders.act", "args": {"stage": "pay", "wait_for": "at-coupon"}, "deadline_ms": 5000},
            {"name": "coupon", "tool": "orders.act", "args": {"stage": "coupon", "wait_for": "at-pay"}, "deadline_ms": 5000},
        ]},
    ]});
    let id = start(server.addr, spec).await;
    let task = wait_for(server.addr, &id, "succeeded").await;
    assert_eq!(stage(&task, "pay")["state"], "succeeded");
    assert_eq!(stage(&task, "coupon")["state"], "succeeded");
}

#[tokio::test]
async fn bad_specs_are_refused_naming_the_field_and_journal_nothing() {
    let shop = Shop::new("");
    let server = shop.serve().await;
    let cases = [
        (json!({"stages": [{"name": "a", "tool": "orders.nope"}]}), "stages[0].tool"),
        (
            json!({"stages": [{"name": "a", "tool": "orders.act", "args": {"x": {"$ref": "b.result"}}}, {"name": "b", "tool": "orders.act"}]}),
            "stages[0].args.x",
        ),
        (
            json!({"stages": [{"name": "a", "tool": "orders.act", "args": {"x": {"$ref": "gone.result"}}}]}),
            "stages[0].args.x",
        ),
        (
            json!({"stages": [{"name": "a", "tool": "orders.act", "args": {"x": {"$ref": "a.result"}}}]}),
            "cycle",
        ),
        (
            json!({"stages": [{"name": "a", "tool": "orders.act", "args": {"x": "y".repeat(300 * 1024)}}]}),
            "bytes",
        ),
        (
            json!({"stages": [{"name": "a", "tool": "orders.act", "args": {"stage": {"$ref": "input.sku"}}}]}),
            "input `sku`",
        ),
    ];
    for (spec, expected) in cases {
        let (status, body) = submit(server.addr, &[], &json!({"spec": spec})).await;
        let error = &body["error"];
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["kind"], "bad_request");
        assert!(error["message"].as_str().unwrap().contains(expected), "{expected}: {body}");
    }
    let (status, body) = submit(server.addr, &[], &json!({"template": "nothing"})).await;
    assert_eq!(status, 400, "{body}");
    let listed = http(server.addr, "GET", "/v1/tasks", &[], "").await.json();
    assert_eq!(listed["data"], json!([]), "nothing was journaled");
}

#[tokio::test]
async fn a_key_runs_only_tasks_whose_every_call_it_may_make_and_sees_only_its_own() {
    let shop = Shop::new(
        r#"
[[server.keys]]
name = "acts"
token = "act-token"
tools = ["orders.act"]

[[server.keys]]
name = "all"
token = "all-token"
"#,
    );
    let server = shop.serve().await;
    let acts = [("authorization", "Bearer act-token")];
    let all = [("authorization", "Bearer all-token")];
    let (status, body) = submit(server.addr, &acts, &json!({"spec": order("compensate")})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("stages[0].compensate.tool"),
        "{body}"
    );

    let simple = json!({"spec": {"stages": [{"name": "check", "tool": "orders.act", "args": {"stage": "check"}}]}});
    let (status, body) = submit(server.addr, &acts, &simple).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let own = http(server.addr, "GET", &format!("/v1/tasks/{id}"), &acts, "").await;
    assert_eq!(own.status, 200);
    assert_eq!(own.json()["caller"], "acts");
    let (status, other) = submit(server.addr, &all, &simple).await;
    assert_eq!(status, 202);
    let theirs = format!("/v1/tasks/{}", other["id"].as_str().unwrap());
    assert_eq!(http(server.addr, "GET", &theirs, &acts, "").await.status, 404);
    let listed = http(server.addr, "GET", "/v1/tasks", &acts, "").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(http(server.addr, "GET", "/v1/tasks", &[], "").await.status, 401);
}

#[tokio::test]
async fn a_server_killed_mid_stage_resumes_the_task_after_a_restart() {
    let shop = Shop::new("");
    let spec = json!({"stages": [
        {"name": "check", "tool": "orders.act", "args": {"stage": "check"}},
        {"name": "lock", "tool": "orders.act", "args": {"stage": "lock", "wait_for": "release"}},
        {"name": "pay", "tool": "orders.act", "args": {"stage": "pay"}},
    ]});
    let mut server = shop.serve().await;
    let id = start(server.addr, spec).await;
    wait_until("the lock to start", || shop.lines("start lock").len() == 1).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let server = shop.serve().await;
    wait_until("the lock to start again", || shop.lines("start lock").len() == 2).await;
    shop.touch("release");
    let task = wait_for(server.addr, &id, "succeeded").await;
    assert_eq!(shop.lines("done check").len(), 1, "check ran exactly once: {:?}", shop.log());
    let starts = shop.lines("start lock");
    let key = |line: &str| line.split(' ').nth(2).unwrap().to_string();
    assert_eq!(key(&starts[0]), key(&starts[1]), "the re-run kept its idempotency key");
    assert_eq!(key(&starts[0]), format!("{id}/lock"));
    assert_eq!(stage(&task, "lock")["attempts"], 2);
    assert_eq!(task["resumes"], 1);
    let metrics = http(server.addr, "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("autoglm_task_lease_takeovers_total 1"), "{metrics}");
}

#[tokio::test]
async fn a_damaged_journal_is_reported_while_tool_calls_keep_working() {
    let shop = Shop::new("");
    let data = shop.root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tasks.db"), vec![0x5a; 8192]).unwrap();
    let server = shop.serve().await;
    let (status, body) = submit(server.addr, &[], &json!({"spec": order("compensate")})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "journal_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tasks.db") && message.contains("backup"), "{message}");
    let call =
        http(server.addr, "POST", "/v1/tools/orders.act/call", &[], r#"{"stage": "plain"}"#).await;
    assert_eq!(call.status, 200, "{}", call.body);
}

fn autoglm(shop: &Shop, args: &[&str]) -> std::process::Output {
    std::process::Command::new(autoglm_bin())
        .args(["task"])
        .args(args)
        .arg("--config")
        .arg(shop.config())
        .arg("--plugins")
        .arg(shop.plugins.path())
        .output()
        .unwrap()
}

#[test]
fn the_cli_runs_a_template_and_lists_it() {
    let shop = Shop::new("");
    let templates = shop.root.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("restock.toml"),
        r#"
description = "Lock stock for a SKU, then pay"
[inputs.sku]
type = "string"

[[stages]]
name = "lock"
tool = "orders.act"
args = { stage = { "$ref" = "input.sku" } }

[[stages]]
name = "pay"
tool = "orders.act"
args = { stage = "pay", given = { "$ref" = "lock.result.id" } }
"#,
    )
    .unwrap();
    let ran = autoglm(&shop, &["run", "restock", "--input", r#"{"sku": "sku-42"}"#]);
    let printed = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{printed}\n{}", String::from_utf8_lossy(&ran.stderr));
    let task: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(task["state"], "succeeded");
    assert_eq!(shop.lines("done sku-42").len(), 1);

    let bad = autoglm(&shop, &["run", "restock", "--input", r#"{"sku": 7}"#]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("inputs.sku"));

    let listed = autoglm(&shop, &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(task["id"].as_str().unwrap()) && listed.contains("restock"),
        "{listed}"
    );
    let shown = autoglm(&shop, &["show", task["id"].as_str().unwrap()]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"pay\""));
}

#[tokio::test]
async fn two_replicas_share_postgres_and_one_finishes_what_a_killed_one_began() {
    let postgres = Postgres::start();
    let shop = Shop::with_tasks(&format!("database = \"{}\"", postgres.url()), "");
    let mut first = shop.serve().await;
    let second = shop.serve().await;
    let spec = json!({"stages": [
        {"name": "check", "tool": "orders.act", "args": {"stage": "check"}},
        {"name": "lock", "tool": "orders.act", "args": {"stage": "lock", "wait_for": "release"}},
        {"name": "pay", "tool": "orders.act", "args": {"stage": "pay"}},
    ]});
    let id = start(first.addr, spec).await;
    wait_until("the lock to start", || shop.lines("start lock").len() == 1).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The second replica takes the task over once the first one's lease expires.
    wait_until("the lock to start on the other replica", || shop.lines("start lock").len() == 2)
        .await;
    shop.touch("release");
    let task = wait_for(second.addr, &id, "succeeded").await;
    for stage in ["check", "lock", "pay"] {
        assert_eq!(
            shop.lines(&format!("done {stage}")).len(),
            1,
            "{stage} completed once: {:?}",
            shop.log()
        );
    }
    assert_eq!(task["resumes"], 1);

    // Tasks submitted to one replica are seen, and run, by either.
    let ids: Vec<String> = submit_many(&second, 8).await;
    for id in &ids {
        wait_for(second.addr, id, "succeeded").await;
    }
    let listed = http(second.addr, "GET", "/v1/tasks?limit=5", &[], "").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 5);
    let next = listed["next_cursor"].as_str().unwrap();
    let rest = http(second.addr, "GET", &format!("/v1/tasks?limit=50&cursor={next}"), &[], "")
        .await
        .json();
    assert_eq!(rest["data"].as_array().unwrap().len(), 4, "9 tasks in all, paged 5 + 4");
}

/// Submit `n` one-stage tasks to `server`, one after another.
async fn submit_many(server: &ServeProcess, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let spec = json!({"stages": [{"name": "one", "tool": "orders.act", "args": {"stage": format!("bulk{i}")}}]});
        ids.push(start(server.addr, spec).await);
    }
    ids
}

#[tokio::test]
async fn a_durable_chat_killed_mid_call_resumes_without_repeating_its_steps() {
    let upstream = ScriptedUpstream::start(&[
        ("orders.act", json!({"stage": "check"})),
        ("orders.act", json!({"stage": "lock", "wait_for": "release"})),
    ]);
    let shop = Shop::new("");
    let url = format!("http://{}/v1", upstream.url);
    let args = ["--upstream", url.as_str(), "--upstream-model", "scripted"];
    let body = json!({"messages": [{"role": "user", "content": "order one"}], "autoglm": {"durable": true}}).to_string();
    let post = |addr, body: String| async move {
        http(addr, "POST", "/v1/chat/completions", &[("idempotency-key", "order-1")], &body).await
    };
    let mut server = shop.serve_with(&args).await;
    // The first attempt: the model asked for the check, then the lock, which waits; the
    // server dies while the lock is in flight.
    let first = tokio::spawn(post(server.addr, body.clone()));
    wait_until("the lock to start", || shop.lines("start lock").len() == 1).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = first.await;

    let server = shop.serve_with(&args).await;
    let retry = tokio::spawn(post(server.addr, body.clone()));
    wait_until("the lock to start again", || shop.lines("start lock").len() == 2).await;
    shop.touch("release");
    let reply = retry.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(answer.starts_with("the tool said"), "{answer}");
    assert_eq!(shop.lines("done check").len(), 1, "the check was not repeated: {:?}", shop.log());
    let starts = shop.lines("start lock");
    let key = |line: &str| line.split(' ').nth(2).unwrap().to_string();
    assert_eq!(key(&starts[0]), key(&starts[1]), "the lock kept its idempotency key");
    // Two turns before the crash, one after: the journaled turns were not asked again.
    let turns =
        || async { http(upstream.url.parse().unwrap(), "GET", "/requests", &[], "").await.json() };
    assert_eq!(turns().await.as_array().unwrap().len(), 3);

    // Once answered, the same request is answered from the journal alone.
    let again = post(server.addr, body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["choices"][0]["message"]["content"], answer.as_str());
    assert_eq!(turns().await.as_array().unwrap().len(), 3);
    assert_eq!(shop.lines("done lock").len(), 1);

    let other = json!({"messages": [{"role": "user", "content": "something else"}], "autoglm": {"durable": true}});
    let reused = post(server.addr, other.to_string()).await;
    assert_eq!(reused.status, 409, "{}", reused.body);
    let unkeyed = http(server.addr, "POST", "/v1/chat/completions", &[], &other.to_string()).await;
    assert_eq!(unkeyed.status, 400);
    assert!(unkeyed.body.contains("Idempotency-Key"));
}

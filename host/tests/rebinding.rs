//! DNS rebinding, end to end: the host runs in a network namespace this test makes
//! (`unshare`, as root, only `lo` up, its own resolv.conf), behind a name server that
//! answers a public address first and 127.0.0.1 after, with a listener on 127.0.0.1 that
//! must never be reached. The check passes the first answer; the connection must go to
//! that checked address, not to whatever a second lookup returns.
//!
//! Two controls make the verdict mean something: the same listener answers a plugin that
//! is allowed private addresses (so "never reached" is not a broken listener or
//! resolver), and a name that resolves to 127.0.0.1 at once is refused by the check.

use std::process::Command;

use autoglm_test_support::host::{autoglm_bin, dir_with, sample, workspace_dir};

const PORT: u16 = 8080;

struct Run {
    /// The call's JSON result, or its error output.
    output: String,
    succeeded: bool,
    /// The A answers the name server gave, in order.
    answers: Vec<String>,
    /// Whether anything connected to the listener on 127.0.0.1.
    reached: bool,
}

/// `http.get SCHEME://rebind.test:PORT/` inside a fresh namespace whose name server runs
/// in `mode` (see the fixture), with `extra` added to the http plugin's grants.
fn run(scheme: &str, mode: &str, extra: &str) -> Run {
    assert!(
        is_root(),
        "this test makes a network namespace and needs root (CI runs as root); run it as root"
    );
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let etc = |name: &str, text: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let resolv = etc("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
    let hosts = etc("hosts", "127.0.0.1 localhost\n");
    let nsswitch = etc("nsswitch.conf", "hosts: files dns\n");
    let config =
        etc("autoglm.toml", &format!("[plugins.http]\nallow_hosts = [\"rebind.test\"]\n{extra}"));
    let plugins = dir_with([sample("http")]);
    let dns = workspace_dir().join("host/tests/fixtures/rebinding_dns.py");
    let script = r#"
        set -e
        ip link set lo up
        mount --bind "$RESOLV" /etc/resolv.conf
        mount --bind "$HOSTS" /etc/hosts
        mount --bind "$NSSWITCH" /etc/nsswitch.conf
        python3 "$DNS" "$MODE" "$PORT" "$STATE" &
        server=$!
        for _ in $(seq 100); do [ -e "$STATE/ready" ] && break; sleep 0.05; done
        status=0
        "$AUTOGLM" call --plugins "$PLUGINS" --config "$CONFIG" http.get \
            "{\"url\": \"$SCHEME://rebind.test:$PORT/\"}" >"$STATE/out" 2>"$STATE/err" || status=$?
        kill $server
        echo $status >"$STATE/status"
    "#;
    let ran = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "sh", "-c", script])
        .env("RESOLV", &resolv)
        .env("HOSTS", &hosts)
        .env("NSSWITCH", &nsswitch)
        .env("DNS", &dns)
        .env("MODE", mode)
        .env("SCHEME", scheme)
        .env("PORT", PORT.to_string())
        .env("STATE", &state)
        .env("AUTOGLM", autoglm_bin())
        .env("PLUGINS", plugins.path())
        .env("CONFIG", &config)
        .output()
        .expect("unshare (util-linux) runs");
    let read = |name: &str| std::fs::read_to_string(state.join(name)).unwrap_or_default();
    assert!(
        ran.status.success(),
        "the namespace script failed: {}{}",
        String::from_utf8_lossy(&ran.stderr),
        read("err")
    );
    let succeeded = read("status").trim() == "0";
    Run {
        output: if succeeded { read("out") } else { read("err") },
        succeeded,
        answers: read("queries").lines().map(str::to_string).collect(),
        reached: state.join("reached").exists(),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[test]
fn a_rebound_name_connects_only_to_the_address_that_was_checked() {
    // Control: with private addresses allowed, the listener answers through the resolver.
    let open = run("http", "loopback", "allow_private_addresses = true\n");
    assert!(open.succeeded && open.reached, "the listener must be reachable: {}", open.output);
    assert!(open.output.contains("reached"), "{}", open.output);

    // Control: a name that resolves to loopback at once is refused by the check.
    let direct = run("http", "loopback", "");
    assert!(!direct.succeeded && !direct.reached, "{}", direct.output);
    assert!(direct.output.contains("127.0.0.1"), "{}", direct.output);

    // The attack: checked against the public answer, the connection goes there (and
    // fails, nothing is routable here); a second lookup would have found 127.0.0.1.
    // Over TLS too: the certificate is checked against the name, but the connection
    // itself must not reach the rebound address either.
    for scheme in ["http", "https"] {
        let rebound = run(scheme, "rebind", "");
        assert!(
            !rebound.reached,
            "{scheme}: the rebound name reached 127.0.0.1: {}",
            rebound.output
        );
        assert!(!rebound.succeeded, "{}", rebound.output);
        assert_eq!(rebound.answers.first().map(String::as_str), Some("93.184.215.14"));
        assert_eq!(rebound.answers.len(), 1, "{scheme}: one lookup: {:?}", rebound.answers);
    }
}

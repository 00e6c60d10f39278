//! A Postgres server of its own for a test or a bench: Debian's `postgresql` (installed by
//! `just postgres`), a cluster initialised in a temporary directory, on a free port.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A Postgres server of its own in a temporary directory, on a free port of 127.0.0.1, run
/// as the `postgres` user when the test runs as root (Postgres refuses root).
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
    child: std::process::Child,
    port: u16,
}

impl Postgres {
    /// Initialise a cluster (trust authentication, user `autoglm`) and start it.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions.filter_map(|v| v.ok()).map(|v| v.path().join("bin")).max()
            })
            .filter(|bin| bin.join("initdb").exists())
            .expect("Postgres is not installed: run `just postgres` (or `just test`)");
        let dir = tempfile::tempdir().unwrap();
        let id = std::process::Command::new("id").arg("-u").output().unwrap();
        let root = id.stdout.trim_ascii() == b"0";
        if root {
            let chown =
                std::process::Command::new("chown").arg("postgres").arg(dir.path()).status();
            assert!(chown.unwrap().success());
        }
        let data = dir.path().join("data");
        let initdb = (run_as(root, &bin, "initdb"))
            .args(["-A", "trust", "-U", "autoglm", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = (run_as(root, &bin, "postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "Postgres never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Postgres { dir, bin, root, child, port }
    }

    /// Its URL, database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://autoglm@127.0.0.1:{}/postgres", self.port)
    }
}

/// `program` of the Postgres installation at `bin`, as the user that may run it.
fn run_as(root: bool, bin: &std::path::Path, program: &str) -> std::process::Command {
    let mut command = match root {
        true => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        }
        false => std::process::Command::new(bin.join(program)),
    };
    command.stdin(std::process::Stdio::null());
    command
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = run_as(self.root, &self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(data)
            .output();
        let _ = self.child.wait();
    }
}

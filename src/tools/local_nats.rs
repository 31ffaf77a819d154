//! A local three-node NATS cluster (JetStream, file storage,
//! `sync_interval: always`) on 127.0.0.1, for `caravan bench --jetstream`
//! and the cluster tests: nodes started, killed, paused and restarted on
//! their own ports and stores.
//!
//! Depends on the nats-server binary it is given and async-nats; nothing of
//! caravan's.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three nats-server processes in one cluster.
pub struct LocalNats {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
}

/// A free port on 127.0.0.1 (free when asked: nats-server needs fixed ones
/// for its routes).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalNats {
    /// Starts three nodes and waits until JetStream answers.
    pub async fn start(binary: &Path) -> Result<LocalNats, String> {
        let ports = || -> std::io::Result<Vec<u16>> { (0..3).map(|_| free_port()).collect() };
        let mut nats = LocalNats {
            binary: binary.to_path_buf(),
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            client_ports: ports().map_err(|e| e.to_string())?,
            cluster_ports: ports().map_err(|e| e.to_string())?,
            nodes: vec![None, None, None],
        };
        for i in 0..3 {
            nats.restart(i)?;
        }
        nats.wait_ready().await?;
        Ok(nats)
    }

    /// `nats://…` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    /// Every node, comma-separated (`--jetstream`).
    pub fn urls(&self) -> String {
        self.addrs().join(",")
    }

    /// Starts node `i` (again) on its ports and store.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
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
             cluster {{ name: caravan-local, listen: 127.0.0.1:{}, routes: [{routes}] }}\n",
            self.client_ports[i],
            store.to_string_lossy(),
            self.cluster_ports[i],
        );
        let file = self.dir.path().join(format!("n{i}.conf"));
        std::fs::write(&file, config).map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        self.nodes[i] = Some(child);
        Ok(())
    }

    async fn client(&self) -> Option<async_nats::Client> {
        async_nats::connect(self.addrs().as_slice()).await.ok()
    }

    /// Waits until JetStream answers (the cluster has a meta leader).
    async fn wait_ready(&self) -> Result<(), String> {
        let began = Instant::now();
        loop {
            if let Some(client) = self.client().await {
                if async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if began.elapsed() > Duration::from_secs(30) {
                return Err("the NATS cluster did not start JetStream within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the node that leads `stream`.
    pub async fn leader(&self, stream: &str) -> Result<usize, String> {
        let client = self.client().await.ok_or("no NATS connection")?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
        let info = s.info().await.map_err(|e| e.to_string())?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.as_deref())
            .and_then(|name| name.trim_start_matches('n').parse().ok())
            .ok_or_else(|| "the stream has no leader".into())
    }

    /// The stream's last sequence.
    pub async fn head(&self, stream: &str) -> Result<u64, String> {
        let client = self.client().await.ok_or("no NATS connection")?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
        Ok(s.info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence)
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.nodes[i] {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Kills node `i` (SIGKILL) and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.signal(i, "-CONT");
            self.kill(i);
        }
    }
}

//! Debian's etcd-server as a side-by-side baseline: three members on
//! loopback (fsync on, etcd's defaults), driven by the same write harness as
//! Open-AutoGLM (`throughput::drive`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub mod proto {
    tonic::include_proto!("etcdserverpb");
}

pub use proto::kv_client::KvClient;

pub struct EtcdCluster {
    // Killed first: the members stop before their directory goes.
    members: Vec<Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl EtcdCluster {
    /// Starts `n` members of a new cluster from the `etcd` binary at `bin`.
    pub fn start(n: usize, bin: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        let mut clients = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new(bin)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "autoglm-bench"])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {bin} (apt-get install etcd-server)"))?;
            members.push(child);
            clients.push(client_url);
        }
        Ok(Self {
            members,
            clients,
            _dir: dir,
        })
    }

    /// The client URL of the member that leads, once one does.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            for url in &self.clients {
                if metrics(url)
                    .await
                    .is_ok_and(|m| m.lines().any(|l| l == "etcd_server_is_leader 1"))
                {
                    return Ok(url.clone());
                }
            }
            anyhow::ensure!(started.elapsed() < timeout, "etcd elected no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A KV client connected to `url`.
    pub async fn kv(url: &str) -> anyhow::Result<KvClient<Channel>> {
        Ok(KvClient::new(
            Channel::from_shared(url.to_string())?.connect().await?,
        ))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// The member's Prometheus page (`GET /metrics` on its client URL).
async fn metrics(url: &str) -> anyhow::Result<String> {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

//! Replicas as child processes of this binary, on loopback ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use autoglm_client::proto::{Member, Role, StatusResponse};
use autoglm_client::{Client, ClientOptions};

pub struct Replica {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    pub child: Option<Child>,
}

pub struct BenchCluster {
    pub dir: tempfile::TempDir,
    pub replicas: Vec<Replica>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl BenchCluster {
    /// Starts `n` replicas (ids 1..=n) with `extra_yaml` in their config, forms
    /// the cluster and waits for a leader.
    pub async fn start(n: u64, extra_yaml: &str, data_root: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let dir = match data_root {
            Some(root) => tempfile::tempdir_in(root)?,
            None => tempfile::tempdir()?,
        };
        let mut replicas = Vec::new();
        for id in 1..=n {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let data_dir = dir.path().join(format!("n{id}"));
            let config = dir.path().join(format!("n{id}.yaml"));
            let yaml = format!(
                "node_id: {id}\nlisten: {addr}\nhttp_listen: 127.0.0.1:{}\ndata_dir: {}\n{extra_yaml}",
                free_port()?,
                data_dir.display()
            );
            std::fs::write(&config, yaml)?;
            replicas.push(Replica { id, addr, data_dir, config, child: None });
        }
        let mut cluster = Self { dir, replicas };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        for id in 1..=n {
            cluster.wait_answering(id, Duration::from_secs(30)).await?;
        }
        let members = cluster.replicas.iter().map(|r| Member { id: r.id, addr: r.addr.clone() }).collect();
        Client::new([cluster.addr(1)], ClientOptions::default())?.init(members).await?;
        cluster.wait_leader(None, Duration::from_secs(10)).await?;
        Ok(cluster)
    }

    fn replica(&mut self, id: u64) -> &mut Replica {
        &mut self.replicas[(id - 1) as usize]
    }

    pub fn addr(&self, id: u64) -> String {
        self.replicas[(id - 1) as usize].addr.clone()
    }

    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(self.dir.path().join(format!("n{id}.log")))?;
        let r = self.replica(id);
        let child = Command::new(exe)
            .args(["replica", "--config"])
            .arg(&r.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn replica")?;
        r.child = Some(child);
        Ok(())
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.replica(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&mut self, id: u64) -> Option<u32> {
        self.replica(id).child.as_ref().map(Child::id)
    }

    pub fn client(&self, ids: &[u64], options: ClientOptions) -> anyhow::Result<Client> {
        Ok(Client::new(ids.iter().map(|&id| self.addr(id)), options)?)
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let options = ClientOptions { attempt_timeout: Duration::from_millis(500), ..Default::default() };
        let client = Client::new([self.addr(id)], options).ok()?;
        client.status_of(&self.addr(id)).await.ok()
    }

    pub async fn wait_answering(&self, id: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while self.status(id).await.is_none() {
            if started.elapsed() > timeout {
                bail!("replica {id} did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(started.elapsed())
    }

    /// The replica that reports itself leader (other than `not`).
    pub async fn wait_leader(&self, not: Option<u64>, timeout: Duration) -> anyhow::Result<u64> {
        let started = Instant::now();
        loop {
            for r in &self.replicas {
                if Some(r.id) == not || r.child.is_none() {
                    continue;
                }
                if let Some(s) = self.status(r.id).await {
                    if s.role == Role::Leader as i32 {
                        return Ok(r.id);
                    }
                }
            }
            if started.elapsed() > timeout {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until replica `id` has applied everything the leader has.
    pub async fn wait_caught_up(&self, id: u64, leader: u64, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let (Some(l), Some(s)) = (self.status(leader).await, self.status(id).await) {
                if s.applied_index >= l.committed_index {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                bail!("replica {id} did not catch up within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for id in 1..=self.replicas.len() as u64 {
            self.kill(id);
        }
    }
}

//! Real Redis servers for the tests of the Redis online backend: a single node or a 3-node
//! Redis Cluster, each node a `redis-server` child on a free loopback port, in a temporary
//! directory, without persistence (or with, for [`Redis::single_persistent`]). `scripts/setup-redis.sh` installs the binaries.
//!
//! Dropping a [`Redis`] kills its nodes. A node also dies within a second of the test
//! process (a watchdog shell per node), so a server kept in a `static` for a whole test
//! binary never outlives it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a node, or the cluster, may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

struct Node {
    port: u16,
    /// The TLS port, when the node speaks TLS too.
    tls_port: Option<u16>,
    server: Option<Child>,
    watchdog: Option<Child>,
}

/// Redis servers started by a test.
pub struct Redis {
    nodes: Vec<Node>,
    dir: PathBuf,
    cluster: bool,
    /// Every write in the append-only file, fsynced before it is answered: a node killed
    /// and started again has all its data.
    persistent: bool,
    /// Certificate and key (PEM files) of the TLS port, if any.
    tls: Option<(PathBuf, PathBuf)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn redis_cli(port: u16, args: &[&str]) -> Option<Output> {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "{what} not ready within {READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Redis {
    /// One node.
    pub fn single() -> Self {
        Self::start(1, false, false)
    }

    /// One node that keeps its data through [`stop_node`](Self::stop_node) and
    /// [`start_node`](Self::start_node).
    pub fn single_persistent() -> Self {
        Self::start(1, false, true)
    }

    /// One node that also speaks TLS ([`tls_url`](Self::tls_url)) with this certificate
    /// and key (PEM files); it asks clients for no certificate.
    pub fn single_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(
            1,
            false,
            false,
            Some((cert.to_path_buf(), key.to_path_buf())),
        )
    }

    /// Three primaries, no replicas, every slot assigned.
    pub fn cluster() -> Self {
        let redis = Self::start(3, true, false);
        let nodes: Vec<String> = redis
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (scripts/setup-redis.sh installs it)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for node in &redis.nodes {
            wait_until("the cluster", || {
                redis_cli(node.port, &["cluster", "info"]).is_some_and(|o| {
                    String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")
                })
            });
        }
        redis
    }

    fn start(nodes: usize, cluster: bool, persistent: bool) -> Self {
        Self::start_with(nodes, cluster, persistent, None)
    }

    fn start_with(
        nodes: usize,
        cluster: bool,
        persistent: bool,
        tls: Option<(PathBuf, PathBuf)>,
    ) -> Self {
        static DIRS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "featherstore-redis-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut redis = Redis {
            nodes: (0..nodes)
                .map(|_| Node {
                    port: free_port(),
                    tls_port: tls.is_some().then(free_port),
                    server: None,
                    watchdog: None,
                })
                .collect(),
            dir,
            cluster,
            persistent,
            tls,
        };
        for i in 0..nodes {
            redis.start_node(i);
        }
        redis
    }

    /// `redis://127.0.0.1:PORT` of the first node (a seed node of a cluster).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// `rediss://127.0.0.1:PORT` of the first node's TLS port (a [`single_tls`](Self::single_tls)).
    pub fn tls_url(&self) -> String {
        let port = self.nodes[0].tls_port.expect("a node started with TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Kills node `i` (SIGKILL): its port closed, its data gone unless persistent.
    pub fn stop_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        for child in [node.server.take(), node.watchdog.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again, on its port, and waits until it answers.
    pub fn start_node(&mut self, i: usize) {
        let port = self.nodes[i].port;
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(&dir);
        if let (Some((cert, key)), Some(tls_port)) = (&self.tls, self.nodes[i].tls_port) {
            command
                .args([
                    "--tls-port",
                    &tls_port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
        }
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let server = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup-redis.sh installs it)");
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; kill -9 {} 2>/dev/null",
                std::process::id(),
                server.id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        self.nodes[i].server = Some(server);
        self.nodes[i].watchdog = Some(watchdog);
        wait_until("redis-server", || {
            redis_cli(port, &["ping"]).is_some_and(|o| o.stdout.starts_with(b"PONG"))
        });
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

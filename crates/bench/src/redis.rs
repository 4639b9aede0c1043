//! A `redis-server` on a free loopback port for the Redis cases (scripts/setup-redis.sh
//! installs it), without persistence, in a directory of the run; killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// How long redis-server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    pub fn start(dir: &Path) -> Result<Self, BenchError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                BenchError::Setup(format!(
                    "starting redis-server (scripts/setup-redis.sh installs it): {e}"
                ))
            })?;
        let server = RedisServer { child, port };
        let started = Instant::now();
        while !server.answers_ping() {
            if started.elapsed() > READY_TIMEOUT {
                return Err(BenchError::Setup(format!(
                    "redis-server on port {port} did not answer within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers `PING` (an inline command) with `+PONG`.
    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = [0u8; 5];
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .is_ok()
            && stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A real S3-compatible server for the Delta Lake backend's tests: moto's standalone server
//! (`moto[server]` from PyPI, installed by `scripts/setup-s3.sh`) on a free loopback port,
//! stopped when dropped; and [`Proxy`], a TCP relay in front of it that a test can cut and
//! restore, to make the object store unreachable without losing what it holds.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the server may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The moto server: `FEATHERSTORE_MOTO_SERVER`, else where `scripts/setup-s3.sh` installs it.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("FEATHERSTORE_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/featherstore/s3-venv/bin/moto_server")
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

pub struct S3Server {
    child: Child,
    pub address: SocketAddr,
}

impl S3Server {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> S3Server {
        let binary = moto_server();
        assert!(
            binary.exists(),
            "{} is missing: run scripts/setup-s3.sh (or set FEATHERSTORE_MOTO_SERVER)",
            binary.display()
        );
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let server = S3Server {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let started = Instant::now();
        while request(server.address, "GET", "/").is_err() {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "moto did not answer on {} within {START_TIMEOUT:?}",
                server.address
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Creates a bucket (moto does not check request signatures).
    pub fn create_bucket(&self, bucket: &str) {
        let status = request(self.address, "PUT", &format!("/{bucket}"))
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    /// Storage options for the Delta backend reaching the server at `address` (this server,
    /// or a [`Proxy`] in front of it).
    pub fn storage_options(address: SocketAddr) -> HashMap<String, String> {
        [
            ("endpoint", format!("http://{address}")),
            ("region", "us-east-1".to_string()),
            ("allow_http", "true".to_string()),
            ("aws_access_key_id", "testing".to_string()),
            ("aws_secret_access_key", "testing".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Stops the server (also on drop).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request without a body; its status code.
fn request(address: SocketAddr, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// A TCP relay from a loopback port to `target`. While cut, every connection is closed and
/// new ones are closed at once: the client sees the server as unreachable.
pub struct Proxy {
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the proxy's address");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (cut, stop, connections) = (cut.clone(), stop.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    if cut.load(Ordering::Acquire) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    relay(client, server, &connections);
                }
            })
        };
        Proxy {
            address,
            cut,
            stop,
            connections,
            thread: Some(thread),
        }
    }

    /// Cuts (`true`) or restores (`false`) the relay.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Release);
        if cut {
            for stream in self
                .connections
                .lock()
                .expect("proxy connections")
                .drain(..)
            {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.set_cut(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies both ways between `client` and `server` on two threads; both streams are kept to be
/// shut down by a cut.
fn relay(client: TcpStream, server: TcpStream, connections: &Mutex<Vec<TcpStream>>) {
    let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
        connections
            .lock()
            .expect("proxy connections")
            .extend([a, b]);
    }
    pipe(client, server_copy);
    pipe(server, client_copy);
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

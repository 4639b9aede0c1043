//! `featherstore serve` as a child process on port 0, and client commands of the binary.
//!
//! The binary's path comes from the caller (`env!("CARGO_BIN_EXE_featherstore")` in the CLI
//! crate's tests and benches): Cargo builds it only for them.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow_flight::FlightClient;
use serde_json::Value;

use crate::flight;
use crate::server::STARTUP_TIMEOUT;

/// How long a stopped child may take to exit (the server's grace period plus its flush).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A `featherstore serve` command line: loopback, every port 0, data in a temporary
/// directory unless [`data_dir`](Self::data_dir) names one.
pub struct Serve {
    bin: OsString,
    dir: tempfile::TempDir,
    data_dir: Option<PathBuf>,
    host: String,
    backend: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stderr: StderrTo,
    startup_timeout: Duration,
}

/// Where the child's stderr goes.
enum StderrTo {
    Null,
    Piped,
    File(PathBuf),
}

impl Serve {
    pub fn new(bin: impl Into<OsString>) -> Self {
        Serve {
            bin: bin.into(),
            dir: crate::tempdir(),
            data_dir: None,
            host: "127.0.0.1".into(),
            backend: None,
            args: Vec::new(),
            env: Vec::new(),
            stderr: StderrTo::Null,
            startup_timeout: STARTUP_TIMEOUT,
        }
    }

    /// `--backend duckdb|parquet`.
    pub fn backend(mut self, backend: &str) -> Self {
        self.backend = Some(backend.into());
        self
    }

    /// Serve from `dir` instead of a temporary directory (to restart on the same data).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    /// More `serve` arguments (`--config FILE`).
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Keeps stderr for [`ChildServer::take_stderr`] (the default discards it).
    pub fn stderr_piped(mut self) -> Self {
        self.stderr = StderrTo::Piped;
        self
    }

    /// Writes stderr (the logs) into `file`.
    pub fn stderr_to(mut self, file: &Path) -> Self {
        self.stderr = StderrTo::File(file.to_path_buf());
        self
    }

    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// A file in the server's temporary directory (configuration, inputs, outputs).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the server; panics with what it said unless it prints its ready line in time.
    pub fn start(self) -> ChildServer {
        self.spawn().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server and waits for its ready line.
    pub fn spawn(self) -> Result<ChildServer, NotReady> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"));
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--host", &self.host])
            .args([
                "--http-port",
                "0",
                "--flight-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(backend) = &self.backend {
            command.args(["--backend", backend]);
        }
        command.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match &self.stderr {
                StderrTo::Null => Stdio::null(),
                StderrTo::Piped => Stdio::piped(),
                StderrTo::File(path) => std::fs::File::create(path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                    .into(),
            });
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.bin));
        let stdout = child.stdout.take().expect("piped stdout");
        let (line, stdout) = match ready_line(stdout, self.startup_timeout) {
            Some(read) => read,
            None => {
                let _ = child.kill();
                (String::new(), None)
            }
        };
        let ready: Option<Value> = serde_json::from_str(&line)
            .ok()
            .filter(|ready: &Value| ready["event"] == "ready");
        let (Some(ready), Some(stdout)) = (ready, stdout) else {
            let status = wait_within(&mut child, EXIT_TIMEOUT);
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            if let StderrTo::File(path) = &self.stderr {
                stderr = std::fs::read_to_string(path).unwrap_or_default();
            }
            return Err(NotReady {
                line,
                status,
                stderr,
                timeout: self.startup_timeout,
            });
        };
        let address = |key: &str| ready[key].as_str().unwrap_or_default().to_string();
        Ok(ChildServer {
            flight: format!("http://{}", address("flight")),
            http: format!("http://{}", address("http")),
            metrics: format!("http://{}/metrics", address("metrics")),
            ready,
            child,
            stdout,
            data_dir,
            dir: self.dir,
        })
    }
}

/// The first line of `stdout`, and the reader for the rest; `None` after `timeout`.
fn ready_line(
    stdout: ChildStdout,
    timeout: Duration,
) -> Option<(String, Option<BufReader<ChildStdout>>)> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let _ = sender.send((line, read.ok().map(|_| reader)));
    });
    receiver.recv_timeout(timeout).ok()
}

/// The exit status, or `None` if the child is still running after `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `serve` that did not print its ready line.
#[derive(Debug)]
pub struct NotReady {
    /// What it printed instead (empty: nothing before it exited or the timeout).
    pub line: String,
    /// Its exit status, if it exited.
    pub status: Option<ExitStatus>,
    /// Its stderr, when piped or written to a file.
    pub stderr: String,
    pub timeout: Duration,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "featherstore serve printed no ready line within {:?} ({:?}; exit {:?}): {}",
            self.timeout, self.line, self.status, self.stderr
        )
    }
}

/// A running `featherstore serve`; killed (SIGKILL) and reaped when dropped, also on a panic.
pub struct ChildServer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The ready line.
    pub ready: Value,
    /// `http://host:port` of the Flight API.
    pub flight: String,
    /// `http://host:port` of the HTTP API.
    pub http: String,
    /// The metrics URL.
    pub metrics: String,
    pub data_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl ChildServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` of the Flight API, as the ready line gives it.
    pub fn flight_host_port(&self) -> &str {
        self.ready["flight"].as_str().unwrap_or_default()
    }

    /// A file in the server's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` into [`path`](Self::path)`(name)`; its path as a string.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.to_str().expect("a UTF-8 path").to_string()
    }

    pub async fn flight(&self) -> FlightClient {
        flight::connect(&self.flight).await
    }

    /// Runs the client command `bin ARGS` against this server (`FEATHERSTORE_FLIGHT`).
    pub fn cli(&self, bin: &str, args: &[&str]) -> Run {
        Run::new(
            bin,
            args,
            &[("FEATHERSTORE_FLIGHT", Some(self.flight.as_str()))],
            None,
        )
    }

    /// Sends SIGTERM (a planned shutdown); does not wait for the exit.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL: no shutdown hook, no flush; waits for the exit.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the child");
    }

    /// Waits for the exit, at most [`EXIT_TIMEOUT`].
    pub fn wait(&mut self) -> ExitStatus {
        wait_within(&mut self.child, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("the server did not exit within {EXIT_TIMEOUT:?}"))
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait()
    }

    /// What the server printed on stdout after its ready line (read to the end: call it after
    /// the exit).
    pub fn rest_of_stdout(&mut self) -> String {
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("reading stdout");
        rest
    }

    /// Stderr, if [`Serve::stderr_piped`] kept it.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// A field of `/proc/PID/status` in kB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
    pub fn proc_status_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    }

    /// Resets the kernel's peak-RSS watermark (VmHWM) of the server.
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `featherstore ARGS` run to its end: the output, and the arguments for messages.
pub struct Run {
    pub output: Output,
    args: String,
}

impl Run {
    /// Runs `bin` with `args`, `env` (set, or removed when `None`) and `stdin`.
    pub fn new(
        bin: impl Into<OsString>,
        args: &[&str],
        env: &[(&str, Option<&str>)],
        stdin: Option<&[u8]>,
    ) -> Run {
        let mut command = Command::new(bin.into());
        command.args(args);
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(input)
                .expect("writing stdin");
        }
        Run {
            output: child.wait_with_output().expect("the command ends"),
            args: args.join(" "),
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts success; answers stdout.
    pub fn ok(&self) -> String {
        assert!(
            self.output.status.success(),
            "`featherstore {}` failed: {}{}",
            self.args,
            self.stderr(),
            self.stdout()
        );
        self.stdout()
    }

    /// Asserts failure; answers stderr.
    pub fn failed(&self) -> String {
        assert!(
            !self.output.status.success(),
            "`featherstore {}` succeeded: {}",
            self.args,
            self.stdout()
        );
        self.stderr()
    }

    /// Asserts failure with one `featherstore: ...` line on stderr; answers that line.
    pub fn fails(&self) -> String {
        let stderr = self.failed();
        assert!(
            stderr.starts_with("featherstore: ") && stderr.trim_end().lines().count() == 1,
            "{stderr}"
        );
        stderr.trim_end().to_string()
    }
}

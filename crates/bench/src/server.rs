//! `featherstore serve` as a child process on loopback, every port 0, for runs that do not
//! target a running server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::load::Target;
use crate::BenchError;

pub struct ChildServer {
    child: Child,
    pub target: Target,
}

/// How to start the server again on the same data.
pub struct ServeCommand {
    pub bin: PathBuf,
    pub backend: String,
    pub data_dir: PathBuf,
    pub startup_timeout: Duration,
    /// `--online`: the Redis holding the online values (memory when `None`).
    pub online: Option<String>,
}

impl ServeCommand {
    pub fn spawn(&self) -> Result<ChildServer, BenchError> {
        let mut child = Command::new(&self.bin)
            .args(["serve", "--host", "127.0.0.1", "--backend", &self.backend])
            .args([
                "--http-port",
                "0",
                "--flight-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(self.online.iter().flat_map(|url| ["--online", url]))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("starting {}: {e}", self.bin.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Setup("no stdout of the server".into()))?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Keep reading so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = receiver
            .recv_timeout(self.startup_timeout)
            .unwrap_or_default();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if ready["event"] != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Setup(format!(
                "the server did not print its ready line within {:?}: {line:?}",
                self.startup_timeout
            )));
        }
        let address = |key: &str| format!("http://{}", ready[key].as_str().unwrap_or_default());
        Ok(ChildServer {
            target: Target {
                flight: address("flight"),
                http: address("http"),
                token: None,
            },
            child,
        })
    }
}

impl ChildServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a normal shutdown: the server flushes), then waits for the exit.
    pub fn stop(mut self) -> Result<(), BenchError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A field of `/proc/PID/status` in kB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time the process has used (user + system, every thread), in clock ticks (`USER_HZ`,
/// 100 per second on Linux).
pub fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    featherstore_testkit::process::stat_cpu_ticks(&stat)
}

/// The `featherstore` binary beside this one (both land in the same target directory).
pub fn sibling_server_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir: &Path = exe.parent()?;
    let candidate = dir.join("featherstore");
    candidate.exists().then_some(candidate)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::proc_cpu_ticks;

    #[test]
    fn cpu_ticks_count_the_time_a_process_runs() {
        let pid = std::process::id();
        let before = proc_cpu_ticks(pid).expect("this process's /proc/PID/stat");
        // Spin for 300 ms of wall time: at least 30 ticks of CPU unless the machine takes
        // the core away for most of it; 5 leaves room for that.
        let started = Instant::now();
        let mut spins = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let after = proc_cpu_ticks(pid).expect("this process's /proc/PID/stat");
        assert!(
            after >= before + 5,
            "{before} -> {after} ticks after 300 ms of spinning"
        );
    }

    #[test]
    fn a_process_that_is_gone_has_no_ticks() {
        assert_eq!(proc_cpu_ticks(u32::MAX), None);
    }
}

//! `featherstore serve` with auth and TLS from a YAML file, and the client commands against
//! it: `--token` / `FEATHERSTORE_TOKEN`, `--ca-file` / `FEATHERSTORE_CA_FILE`, the messages
//! users meet, the logs (no token in them), and the refusal to serve a non-loopback address
//! without auth.

#[path = "../../server/tests/common/certs.rs"]
mod certs;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use certs::TestCerts;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_featherstore");
const READER: &str = "cli-reader-0123456789abcdef";
const ADMIN: &str = "cli-admin-fedcba9876543210";
const UNKNOWN: &str = "cli-unknown-000000000000";
const ADMIN_VAR: &str = "FEATHERSTORE_TEST_CLI_ADMIN_TOKEN";

/// `featherstore serve` on free ports with its data in `dir`.
fn serve(dir: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--http-port", "0", "--flight-port", "0"])
        .args(["--metrics-port", "0", "--data-dir"])
        .arg(dir.join("data"))
        .stdin(Stdio::null());
    command
}

/// `featherstore serve` with tokens and TLS, logging at trace level into a file.
struct SecureServer {
    child: Child,
    flight: String,
    certs: TestCerts,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecureServer {
    fn start() -> SecureServer {
        let certs = TestCerts::generate();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("featherstore.yaml");
        std::fs::write(
            &config,
            format!(
                "auth:\n  tokens:\n    - {{name: reader, token: \"{READER}\", scopes: [read]}}\n    \
                 - {{name: admin, token_env: {ADMIN_VAR}, scopes: [read, write, admin]}}\n\
                 server:\n  tls:\n    cert_file: {}\n    key_file: {}\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let mut child = serve(dir.path())
            .arg("--config")
            .arg(&config)
            .env(ADMIN_VAR, ADMIN)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!(
                "no ready line ({e}): {line:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let port = ready["flight"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        SecureServer {
            child,
            flight: format!("grpc+tls://localhost:{port}"),
            certs,
            log,
            _dir: dir,
        }
    }

    /// `featherstore ARGS` with the given extra environment (and none of ours inherited).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(BIN);
        command.args(args);
        for var in [
            "FEATHERSTORE_FLIGHT",
            "FEATHERSTORE_TOKEN",
            "FEATHERSTORE_CA_FILE",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        command.stdin(Stdio::null()).output().unwrap()
    }

    fn ca(&self) -> &str {
        self.certs.ca.to_str().unwrap()
    }
}

impl Drop for SecureServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const SETS: &str = "feature_sets:\n  - name: accounts\n    entity: {name: account_id, type: string}\n    features:\n      - {name: balance, type: int64}\n";

#[test]
fn client_commands_with_tokens_over_tls() {
    let server = SecureServer::start();
    let sets = server._dir.path().join("sets.yaml");
    std::fs::write(&sets, SETS).unwrap();
    let sets = sets.to_str().unwrap();
    let flight = server.flight.as_str();
    let ca = server.ca();

    // Admin through --token, creating; the reader lists through FEATHERSTORE_TOKEN.
    ok(&server.run(
        &[
            "apply",
            "--file",
            sets,
            "--server",
            flight,
            "--ca-file",
            ca,
            "--token",
            ADMIN,
        ],
        &[],
    ));
    let listed = ok(&server.run(
        &["list", "--server", flight, "--ca-file", ca],
        &[("FEATHERSTORE_TOKEN", READER)],
    ));
    assert!(listed.contains("accounts"), "{listed}");
    // The CA from FEATHERSTORE_CA_FILE; the token before the command name.
    let described = ok(&server.run(
        &[
            "--token", READER, "describe", "accounts", "--server", flight,
        ],
        &[("FEATHERSTORE_CA_FILE", ca)],
    ));
    assert!(described.contains("balance"), "{described}");

    // No token, a wrong one, a missing scope: one clear line each.
    let missing = fails(&server.run(&["list", "--server", flight, "--ca-file", ca], &[]));
    assert!(
        missing.contains("--token") && missing.contains("FEATHERSTORE_TOKEN"),
        "{missing}"
    );
    let wrong = fails(&server.run(
        &[
            "list",
            "--server",
            flight,
            "--ca-file",
            ca,
            "--token",
            UNKNOWN,
        ],
        &[],
    ));
    assert!(wrong.contains("not valid"), "{wrong}");
    let denied = fails(&server.run(
        &[
            "delete",
            "accounts",
            "--server",
            flight,
            "--ca-file",
            ca,
            "--token",
            READER,
        ],
        &[],
    ));
    assert!(denied.contains("admin scope"), "{denied}");
    // Without the CA, the server's certificate is not trusted.
    let untrusted = fails(&server.run(&["list", "--server", flight, "--token", READER], &[]));
    assert!(untrusted.contains("cannot reach"), "{untrusted}");

    // Trace-level server logs of all this name the tokens nowhere.
    let logs = std::fs::read_to_string(&server.log).unwrap();
    assert!(logs.contains("request rejected"), "{logs}");
    for token in [READER, ADMIN, UNKNOWN] {
        assert!(!logs.contains(token), "{token} in the server's logs");
    }
}

#[test]
fn serve_refuses_a_public_address_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra_env: &[(&str, &str)]| {
        serve(dir.path())
            .args(["--host", "0.0.0.0"])
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = serve(&[]).wait_with_output().unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("auth.tokens") && message.contains("allow_unauthenticated"),
        "{message}"
    );
    // The explicit override starts it.
    let mut allowed = serve(&[("FEATHERSTORE_AUTH__ALLOW_UNAUTHENTICATED", "true")]);
    let mut line = String::new();
    BufReader::new(allowed.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = allowed.kill();
    let _ = allowed.wait();
    assert!(line.contains("\"ready\""), "{line}");
}

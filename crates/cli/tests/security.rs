//! `featherstore serve` with auth and TLS from a YAML file, and the client commands against
//! it: `--token` / `FEATHERSTORE_TOKEN`, `--ca-file` / `FEATHERSTORE_CA_FILE`, the messages
//! users meet, the logs (no token in them), and the refusal to serve a non-loopback address
//! without auth.

use std::path::PathBuf;

use featherstore_testkit::certs::TestCerts;
use featherstore_testkit::child::{ChildServer, Run, Serve};

const BIN: &str = env!("CARGO_BIN_EXE_featherstore");
const READER: &str = "cli-reader-0123456789abcdef";
const ADMIN: &str = "cli-admin-fedcba9876543210";
const UNKNOWN: &str = "cli-unknown-000000000000";
const ADMIN_VAR: &str = "FEATHERSTORE_TEST_CLI_ADMIN_TOKEN";

/// `featherstore serve` with tokens and TLS, logging at trace level into a file.
struct SecureServer {
    server: ChildServer,
    flight: String,
    certs: TestCerts,
    log: PathBuf,
}

impl SecureServer {
    fn start() -> SecureServer {
        let certs = TestCerts::generate();
        let serve = Serve::new(BIN);
        let config = serve.path("featherstore.yaml");
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
        let log = serve.path("server.log");
        let server = serve
            .args(["--config".as_ref(), config.as_os_str()])
            .env(ADMIN_VAR, ADMIN)
            .env("RUST_LOG", "trace")
            .stderr_to(&log)
            .start();
        let port = server
            .flight_host_port()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        SecureServer {
            server,
            flight: format!("grpc+tls://localhost:{port}"),
            certs,
            log,
        }
    }

    /// `featherstore ARGS` with the given extra environment (and none of ours inherited).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut vars: Vec<(&str, Option<&str>)> = [
            "FEATHERSTORE_FLIGHT",
            "FEATHERSTORE_TOKEN",
            "FEATHERSTORE_CA_FILE",
        ]
        .map(|var| (var, None))
        .to_vec();
        vars.extend(env.iter().map(|(k, v)| (*k, Some(*v))));
        Run::new(BIN, args, &vars, None)
    }

    fn ca(&self) -> &str {
        self.certs.ca.to_str().unwrap()
    }
}

fn ok(run: &Run) -> String {
    run.ok()
}

fn fails(run: &Run) -> String {
    run.failed()
}

const SETS: &str = "feature_sets:\n  - name: accounts\n    entity: {name: account_id, type: string}\n    features:\n      - {name: balance, type: int64}\n";

#[test]
fn client_commands_with_tokens_over_tls() {
    let server = SecureServer::start();
    let sets = server.server.path("sets.yaml");
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
    let refused = match Serve::new(BIN).host("0.0.0.0").stderr_piped().spawn() {
        Ok(_) => panic!("served 0.0.0.0 without auth"),
        Err(refused) => refused,
    };
    assert!(refused.status.is_some_and(|s| !s.success()), "{refused}");
    let message = refused.stderr;
    assert!(
        message.contains("auth.tokens") && message.contains("allow_unauthenticated"),
        "{message}"
    );
    // The explicit override starts it.
    let allowed = Serve::new(BIN)
        .host("0.0.0.0")
        .env("FEATHERSTORE_AUTH__ALLOW_UNAUTHENTICATED", "true")
        .start();
    assert_eq!(allowed.ready["event"], "ready");
}

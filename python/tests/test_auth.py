"""Auth and TLS against the real server binary (docs/security.md), with pyarrow.flight and the
featherstore client: every scope, feature-set globs, the Handshake, tokens from the environment,
TLS with and without client certificates, plaintext refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import featherstore
from conftest import TS, ServerProcess, server_binary, unique, user_rows, user_spec, utc

trustme = pytest.importorskip("trustme", reason="trustme is not installed (see pyproject's test extra)")

READER = "py-reader-0123456789abcdef"
WRITER = "py-writer-0123456789abcdef"
ADMIN = "py-admin-0123456789abcdef0"
SCOPED = "py-scoped-0123456789abcdef"
UNKNOWN = "py-unknown-00000000000000"

TOKENS = f"""
auth:
  tokens:
    - {{name: reader, token: "{READER}", scopes: [read]}}
    - {{name: writer, token: "{WRITER}", scopes: [read, write]}}
    - {{name: admin, token: "{ADMIN}", scopes: [read, write, admin]}}
    - {{name: scoped, token: "{SCOPED}", scopes: [read, write, admin], feature_sets: ["pyscoped_*"]}}
"""


def _serve(tmp: Path, config: str) -> ServerProcess:
    binary = server_binary()
    if not binary.exists():
        pytest.fail(f"featherstore server binary not found at {binary}", pytrace=False)
    path = tmp / f"featherstore-{unique('config')}.yaml"
    path.write_text(config)
    return ServerProcess(binary, "duckdb", extra_args=["--config", str(path)])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    tmp = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client")
    paths = {
        "dir": tmp,
        "ca": tmp / "ca.pem",
        "server_cert": tmp / "server.pem",
        "server_key": tmp / "server.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    for i, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(str(paths["server_cert"]), append=i > 0)
    paths["client_chain"] = b"".join(p.bytes() for p in client.cert_chain_pems)
    paths["client_key"] = client.private_key_pem.bytes()
    rogue = trustme.CA().issue_cert("rogue")
    paths["rogue_chain"] = b"".join(p.bytes() for p in rogue.cert_chain_pems)
    paths["rogue_key"] = rogue.private_key_pem.bytes()
    return paths


def _tls_section(certs: Dict[str, Any], client_certs: bool) -> str:
    text = f"server:\n  tls:\n    cert_file: {certs['server_cert']}\n    key_file: {certs['server_key']}\n"
    if client_certs:
        text += f"    client_ca_file: {certs['ca']}\n"
    return text


def _running(tmp_path_factory: pytest.TempPathFactory, name: str, config: str) -> Iterator[ServerProcess]:
    server = _serve(tmp_path_factory.mktemp(name), config)
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _running(tmp_path_factory, "auth", TOKENS)


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Dict[str, Any]
) -> Iterator[ServerProcess]:
    """Tokens and TLS."""
    yield from _running(tmp_path_factory, "tls", TOKENS + _tls_section(certs, False))


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Dict[str, Any]
) -> Iterator[ServerProcess]:
    """TLS that requires client certificates (no tokens)."""
    yield from _running(tmp_path_factory, "mtls", _tls_section(certs, True))


def _client(server: ServerProcess, token: Any = None) -> featherstore.Client:
    return featherstore.Client(server.flight, token=token, timeout=60)


def _entity_rows() -> pa.Table:
    return pa.table({"user_id": ["u1"], "event_timestamp": pa.array([utc(2026, 2, 1)], TS)})


ROWS = [{"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 31}]

# Each call, the scope it needs.
CALLS = {
    "create": "admin",
    "get": "read",
    "list": "read",
    "schema": "read",
    "ingest": "write",
    "online": "read",
    "history": "read",
    "training": "read",
    "delete": "admin",
}
SCOPES = {READER: {"read"}, WRITER: {"read", "write"}, ADMIN: {"read", "write", "admin"}}


def _call(client: featherstore.Client, call: str, name: str) -> None:
    if call == "create":
        client.create_feature_set(user_spec(name + "_spare"))
    elif call == "delete":
        client.delete_feature_set(name + "_spare")
    elif call == "get":
        client.get_feature_set(name)
    elif call == "list":
        client.list_feature_sets()
    elif call == "schema":
        client.get_schema(name)
    elif call == "ingest":
        client.ingest(name, user_rows(ROWS))
    elif call == "online":
        client.get_online_features(name, ["u1"])
    elif call == "history":
        client.get_history(name, ["u1"])
    elif call == "training":
        client.get_training_data(_entity_rows(), [f"{name}:age"])
    else:
        raise AssertionError(call)


def _prepare(server: ServerProcess, name: str) -> None:
    """The set, with a row, and its spare for create/delete."""
    with _client(server, ADMIN) as admin:
        admin.create_feature_set(user_spec(name))
        admin.ingest(name, user_rows(ROWS))


def test_missing_and_unknown_tokens_are_unauthenticated(auth_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEATHERSTORE_TOKEN", raising=False)
    name = unique("pyauth")
    _prepare(auth_server, name)
    for token in [None, UNKNOWN]:
        with _client(auth_server, token) as client:
            for call in CALLS:
                with pytest.raises(featherstore.UnauthenticatedError):
                    _call(client, call, name)


@pytest.mark.parametrize("token", [READER, WRITER, ADMIN])
def test_each_scope_is_allowed_and_refused(auth_server: ServerProcess, token: str) -> None:
    name = unique("pyauth")
    _prepare(auth_server, name)
    with _client(auth_server, token) as client:
        for call, scope in CALLS.items():
            if call == "delete":
                with _client(auth_server, ADMIN) as admin:
                    admin.create_feature_set(user_spec(name + "_spare"))
            if scope in SCOPES[token]:
                _call(client, call, name)
            else:
                with pytest.raises(featherstore.PermissionDeniedError):
                    _call(client, call, name)


def test_feature_set_globs(auth_server: ServerProcess) -> None:
    allowed, other = unique("pyscoped"), unique("pyother")
    _prepare(auth_server, allowed)
    _prepare(auth_server, other)
    with _client(auth_server, SCOPED) as client:
        for call in CALLS:
            if call == "delete":
                with _client(auth_server, ADMIN) as admin:
                    admin.create_feature_set(user_spec(allowed + "_spare"))
                    admin.create_feature_set(user_spec(other + "_spare"))
            _call(client, call, allowed)
            if call == "list":
                continue
            with pytest.raises(featherstore.PermissionDeniedError):
                _call(client, call, other)
        names = [s["name"] for s in client.list_feature_sets()]
        assert allowed in names and all(n.startswith("pyscoped_") for n in names), names
        flights = list(client._flight.list_flights(options=client._options()))
        assert all(f.descriptor.path[0].decode().startswith("pyscoped_") for f in flights)


def test_token_from_the_environment(auth_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATHERSTORE_TOKEN", READER)
    with featherstore.Client(auth_server.flight) as client:
        client.list_feature_sets()
        with pytest.raises(featherstore.PermissionDeniedError):
            client.create_feature_set(user_spec(unique("pyenv")))


def test_pyarrow_basic_token_handshake(auth_server: ServerProcess) -> None:
    client = flight.FlightClient(auth_server.flight)
    header = client.authenticate_basic_token("writer", WRITER)
    assert header == (b"authorization", f"Bearer {WRITER}".encode())
    options = flight.FlightCallOptions(headers=[header])
    result = list(client.do_action(flight.Action("list_feature_sets", b"{}"), options))
    assert isinstance(json.loads(result[0].body.to_pybytes()), list)
    # The bearer token works for a DoPut as well.
    name = unique("pyhandshake")
    with _client(auth_server, ADMIN) as admin:
        admin.create_feature_set(user_spec(name))
    table = user_rows(ROWS)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), table.schema, options)
    writer.write_table(table)
    writer.done_writing()
    ack = reader.read()
    writer.close()
    assert json.loads(ack.to_pybytes()) == {"batch": 0, "rows": 1}
    for user, password in [("writer", READER), ("writer", UNKNOWN), ("nobody", WRITER)]:
        with pytest.raises(flight.FlightUnauthenticatedError):
            flight.FlightClient(auth_server.flight).authenticate_basic_token(user, password)
    client.close()


def test_tls_with_tokens(tls_server: ServerProcess, certs: Dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    port = tls_server.ready["flight"].rsplit(":", 1)[1]
    location = f"grpc+tls://localhost:{port}"
    name = unique("pytls")
    with featherstore.Client(location, token=ADMIN, tls_root_certs=str(certs["ca"]), timeout=60) as admin:
        admin.create_feature_set(user_spec(name))
        admin.ingest(name, user_rows(ROWS))
    # The CA from FEATHERSTORE_CA_FILE, as bytes read by the client.
    monkeypatch.setenv("FEATHERSTORE_CA_FILE", str(certs["ca"]))
    with featherstore.Client(location, token=READER, timeout=60) as reader:
        online = reader.get_online_features(name, ["u1"])
        assert online.column("age").to_pylist() == [31]
    with featherstore.Client(location, timeout=60) as anonymous:
        with pytest.raises(featherstore.UnauthenticatedError):
            anonymous.list_feature_sets()
    monkeypatch.delenv("FEATHERSTORE_CA_FILE")
    # Plaintext to the TLS port, and TLS without trusting the CA: no answer.
    for bad in [f"grpc://localhost:{port}", location]:
        with featherstore.Client(bad, token=READER, timeout=10) as client:
            with pytest.raises(featherstore.FeatherStoreError) as refused:
                client.list_feature_sets()
            assert not isinstance(
                refused.value, (featherstore.UnauthenticatedError, featherstore.PermissionDeniedError)
            )


def test_tls_with_client_certificates(mtls_server: ServerProcess, certs: Dict[str, Any]) -> None:
    port = mtls_server.ready["flight"].rsplit(":", 1)[1]
    location = f"grpc+tls://localhost:{port}"
    with featherstore.Client(
        location,
        tls_root_certs=str(certs["ca"]),
        cert_chain=certs["client_chain"],
        private_key=certs["client_key"],
        timeout=60,
    ) as client:
        client.list_feature_sets()
    identities: List[Dict[str, bytes]] = [
        {},
        {"cert_chain": certs["rogue_chain"], "private_key": certs["rogue_key"]},
    ]
    for identity in identities:
        with featherstore.Client(location, tls_root_certs=str(certs["ca"]), timeout=10, **identity) as client:
            with pytest.raises(featherstore.UnavailableError):
                client.list_feature_sets()

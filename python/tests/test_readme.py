"""The README's "Using it" steps run as written (only the server's address changed) against a
fresh server: the first step shows the values it ingested, the second shows the TTL at work, and
the Python example reads its row back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, ServerProcess, server_binary


def _blocks(language: str) -> list:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using it") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's steps use curl")
def test_readme_steps_run_as_written(tmp_path: Path) -> None:
    server = ServerProcess(server_binary(), "duckdb")
    try:
        http = server.http.removeprefix("http://")

        def run_sh(script: str) -> str:
            script = script.replace("localhost:8080", http)
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script.replace("curl ", "curl -sS --fail ")],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        first, ttl = _blocks("sh")
        out = run_sh(first)
        assert '"user_id":"u1","age":31,"ctr_7d":0.12,' in out, out
        out = run_sh(ttl)
        assert '{"user_id":"u2","age":null,"ctr_7d":null,"event_timestamp":null}' in out, out
        assert '"user_id":"u2","age":45,"ctr_7d":0.05,"event_timestamp":"2025-01-01T00:00:00Z"' in out

        (example,) = _blocks("python")
        example = example.replace("grpc://localhost:8081", server.flight)
        example = example.replace(
            'client.get_online_features("user_features", ["u1", "u3"]).to_pandas()',
            'print(client.get_online_features("user_features", ["u1", "u3"]).to_pandas())',
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", example], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert any("u1" in line and "31" in line and "0.12" in line for line in lines), done.stdout
        assert any("u3" in line and "27" in line and "0.3" in line for line in lines), done.stdout
    finally:
        server.cleanup()

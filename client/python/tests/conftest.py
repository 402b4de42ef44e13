"""A real local cluster for the tests: `autoglm-local serve` (three replicas,
four simulated GPU agents, TLS and tokens on) started from the built binary,
one per test module so each module may kill a leader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import autoglm

REPO = Path(__file__).resolve().parents[3]
LOCAL_BIN = Path(os.environ.get("AUTOGLM_LOCAL_BIN") or REPO / "target" / "debug" / "autoglm-local")


@dataclass
class Cluster:
    dir: Path
    info: dict[str, Any]
    process: subprocess.Popen[bytes]

    @property
    def endpoints(self) -> list[str]:
        return list(self.info["endpoints"])

    @property
    def ca_file(self) -> str:
        return str(self.info["ca_file"])

    @property
    def token(self) -> str:
        return Path(self.info["token_file"]).read_text().strip()

    def env(self) -> dict[str, str]:
        """The environment a user of this cluster would set."""
        return {
            "AUTOGLM_ENDPOINTS": ",".join(self.endpoints),
            "AUTOGLM_CA_FILE": self.ca_file,
            "AUTOGLM_TOKEN": self.token,
        }

    def client(self, endpoints: list[str] | None = None, **kwargs: Any) -> autoglm.Client:
        kwargs.setdefault("token", self.token)
        return autoglm.Client(endpoints or self.endpoints, ca_file=self.ca_file, **kwargs)

    def async_client(
        self, endpoints: list[str] | None = None, **kwargs: Any
    ) -> autoglm.AsyncClient:
        kwargs.setdefault("token", self.token)
        return autoglm.AsyncClient(endpoints or self.endpoints, ca_file=self.ca_file, **kwargs)

    def leader_first(self) -> list[str]:
        """The endpoints with the leader's first: a client's streams open
        there, so killing the leader breaks them."""
        with self.client() as c:
            leader = c.cluster.status().leader_addr
        return [leader] + [e for e in self.endpoints if e != leader]

    def kill_leader(self) -> int:
        """SIGKILLs the leader's process; returns its replica id."""
        with self.client() as c:
            leader = c.cluster.status().leader_id
        assert leader is not None, "no leader to kill"
        pid = next(r["pid"] for r in self.info["replicas"] if r["id"] == leader)
        os.kill(pid, signal.SIGKILL)
        return int(leader)

    def log(self) -> str:
        return (self.dir / "serve.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not LOCAL_BIN.exists():
        pytest.fail(f"{LOCAL_BIN} is missing: build it first (cargo build -p autoglm-local)")
    root = tmp_path_factory.mktemp("cluster")
    info_path = root / "info.json"
    log = open(root / "serve.log", "wb")
    process = subprocess.Popen(
        [
            str(LOCAL_BIN),
            "serve",
            "--dir",
            str(root / "data"),
            "--info",
            str(info_path),
            "--exec-allow",
            "sh",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    while not info_path.exists():
        if process.poll() is not None or time.monotonic() - started > 120:
            process.kill()
            pytest.fail("the local cluster did not start:\n" + (root / "serve.log").read_text())
        time.sleep(0.2)
    cluster = Cluster(root, json.loads(info_path.read_text()), process)
    try:
        yield cluster
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()

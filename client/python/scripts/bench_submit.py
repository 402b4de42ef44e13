"""Submissions per second from one Python process, single-task jobs, with the
blocking client (one thread, then many threads) and the asyncio client (many
submissions in flight), against a running cluster:

    cargo build --release -p autoglm-local
    target/release/autoglm-local serve --info /tmp/autoglm.json &
    python client/python/scripts/bench_submit.py --info /tmp/autoglm.json

The admission limits are raised first (admin token) so they do not cap the
rate; every submission carries a request id and an idempotency key, as any
client's does. Results go to docs/benchmarks.md ("Python client")."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import autoglm
from autoglm import Task


def report(mode: str, latencies: list[float], seconds: float) -> None:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(
        f"| {mode} | {len(latencies)} | {len(latencies) / seconds:,.0f} /s "
        f"| {statistics.median(latencies) * 1000:.1f} ms | {p99:.1f} ms |"
    )


def sync_run(client: autoglm.Client, threads: int, seconds: float) -> None:
    latencies: list[float] = []
    lock = threading.Lock()
    ends = time.monotonic() + seconds

    def worker(w: int) -> None:
        i = 0
        while time.monotonic() < ends:
            t0 = time.monotonic()
            client.submit(Task(f"s{w}-{i}", sim_ms=1))
            with lock:
                latencies.append(time.monotonic() - t0)
            i += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    report(f"Client, {threads} thread(s)", latencies, time.monotonic() - started)


async def async_run(info: dict[str, Any], token: str, in_flight: int, seconds: float) -> None:
    latencies: list[float] = []
    ends = time.monotonic() + seconds
    async with autoglm.AsyncClient(
        info["endpoints"], ca_file=info["ca_file"], token=token, deadline=30
    ) as client:

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < ends:
                t0 = time.monotonic()
                await client.submit(Task(f"a{w}-{i}", sim_ms=1))
                latencies.append(time.monotonic() - t0)
                i += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(in_flight)))
        report(f"AsyncClient, {in_flight} in flight", latencies, time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--info", type=Path, required=True, help="the file `autoglm-local serve --info` wrote"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    info = json.loads(args.info.read_text())
    token = Path(info["token_file"]).read_text().strip()
    with autoglm.Client(
        info["endpoints"], ca_file=info["ca_file"], token=token, deadline=30
    ) as client:
        client.config.set("admission/rate_per_second", "1000000")
        client.config.set("admission/burst", "1000000")
        print("| mode | submissions | rate | median | p99 |\n|---|---|---|---|---|")
        sync_run(client, 1, args.seconds)
        sync_run(client, args.concurrency, args.seconds)
    asyncio.run(async_run(info, token, args.concurrency, args.seconds))


if __name__ == "__main__":
    main()

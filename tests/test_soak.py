"""Bounded soak: 60 s at concurrency 32 through the real gateway and Triton (``make soak``; not in
``make test``). Reports errors (must be 0) and the gateway's memory before and after."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from ara_reranker_client import AsyncRerankerClient, RerankerError
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from tools.arabic_text import QUERIES, mixed_passages

DURATION_S = float(os.environ.get("SOAK_SECONDS", "60"))
CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "32"))


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.soak
async def test_soak_has_no_errors_and_bounded_memory(triton, tiny_model_dir, tmp_path, rng):
    requests = [(QUERIES[i % len(QUERIES)], mixed_passages(rng, 1 + i % 16, max_sentences=6)) for i in range(64)]
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir)}
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway:
        pid = gateway.process.pid
        async with AsyncRerankerClient(gateway.target, timeout=60) as warm:
            for query, documents in requests[:8]:
                await warm.rerank(query, documents)
        before = rss_mib(pid)
        errors: list[str] = []
        done = 0
        deadline = time.monotonic() + DURATION_S

        async def worker(w: int) -> None:
            nonlocal done
            async with AsyncRerankerClient(gateway.target, timeout=60) as client:
                i = w
                while time.monotonic() < deadline:
                    query, documents = requests[i % len(requests)]
                    try:
                        results = await client.rerank(query, documents)
                        assert len(results) == len(documents)
                        done += 1
                    except (RerankerError, AssertionError) as exc:
                        errors.append(str(exc))
                    i += CONCURRENCY

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        after = rss_mib(pid)
    print(f"\nsoak: {DURATION_S:.0f}s at concurrency {CONCURRENCY}: {done} requests, {len(errors)} errors, "
          f"gateway RSS {before:.1f} MiB -> {after:.1f} MiB ({after - before:+.1f} MiB)")
    assert not errors, errors[:5]
    assert done > 0
    assert after - before < 100, f"gateway RSS grew by {after - before:.1f} MiB"

"""runtime/memory.py: freed heap goes back to the OS, and the trimmer runs only after requests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime import memory

pytestmark = pytest.mark.skipif(not memory.supported(), reason="needs glibc")

PROBE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from runtime import memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    base = rss_mb()
    blocks = [bytes(2048) for _ in range(100_000)]  # ~200 MB through malloc (pymalloc stops at 512 bytes)
    keep = blocks[-1]  # the heap's top stays in use: plain free() cannot shrink the heap past it
    del blocks
    freed = rss_mb()
    released = memory.trim() if sys.argv[2] == "trim" else False
    print(json.dumps({"base": base, "freed": freed, "after": rss_mb(), "released": released}))
    """
)


def _probe(mode: str) -> dict:
    import json
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", PROBE, root, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_trim_returns_freed_heap_to_the_os() -> None:
    untrimmed, trimmed = _probe("none"), _probe("trim")
    # without the trim the freed 200 MB stay resident; with it they go
    assert untrimmed["after"] - untrimmed["base"] > 150, untrimmed
    assert trimmed["released"] is True
    assert trimmed["after"] - trimmed["base"] < 50, trimmed


def test_trimmer_trims_after_activity_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)
    answered = [0]

    async def scenario() -> list[int]:
        with ThreadPoolExecutor(1) as pool:
            trimmer = memory.HeapTrimmer(pool, lambda: answered[0], interval=0.05)
            trimmer.start()
            await asyncio.sleep(0.03)
            after_load = len(calls)  # one trim for what loading left behind
            await asyncio.sleep(0.2)  # idle: no more trims
            idle = len(calls)
            answered[0] = 5  # requests answered
            await asyncio.sleep(0.12)
            busy = len(calls)
            await trimmer.stop()
            return [after_load, idle, busy]

    after_load, idle, busy = asyncio.run(scenario())
    assert after_load == 1
    assert idle == 1
    assert busy == 2


CHURN = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from runtime import memory

    tuned = memory.tune_malloc() if sys.argv[2] == "tuned" else None

    def request():
        chunks = [bytes(256 << 10) for _ in range(3)]  # a 768 KB body as the socket hands it over
        body = b"".join(chunks)  # joined once (runtime/handlers/common.py, read_body)
        del chunks, body

    for _ in range(20):
        request()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        request()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200
    print(json.dumps({"tuned": tuned, "faults": faults}))
    """
)


def _churn(mode: str) -> dict:
    import json
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", CHURN, root, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_tuned_malloc_keeps_a_request_bodys_pages_mapped() -> None:
    """glibc's defaults give a freed request body's pages back and fault them in again on the next request
    (hundreds of page faults per request); with ``tune_malloc`` the next request reuses them."""
    plain, tuned = _churn("plain"), _churn("tuned")
    assert plain["faults"] > 100, plain  # the churn is real here, so the next assertion means something
    assert tuned["tuned"] is True
    assert tuned["faults"] < 5, tuned


def test_the_server_tunes_malloc_before_it_serves(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import runtime.__main__ as entry

    order: list[str] = []
    monkeypatch.setattr(memory, "tune_malloc", lambda: order.append("tune_malloc") or True)

    async def serve(settings) -> int:
        order.append("serve")
        return 0

    monkeypatch.setattr(entry, "serve", serve)
    assert entry.main(["--repository", str(tmp_path)]) == 0
    assert order == ["tune_malloc", "serve"]


def test_the_bench_references_run_with_the_servers_allocator_settings() -> None:
    """``make bench``'s raw loop, bare servers and no-op floor differ from modelport only in what they leave out:
    the no-op without ``tune_malloc`` measured several times its real transport cost (bench/notes.md, "Session 12")."""
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    for script in ("raw_ort.py", "servers/bare_aiohttp.py", "servers/bare_binary.py", "servers/noop_http.py"):
        text = (bench / script).read_text()
        assert "from runtime import memory" in text and "memory.tune_malloc()" in text, script

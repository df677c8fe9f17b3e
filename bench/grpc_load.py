"""The gRPC load generator of ``make bench``: one asyncio process, the same for every server.

``python bench/grpc_load.py HOST:PORT METHOD BODY_FILE CONCURRENCY SECONDS`` sends the pre-serialized request
in BODY_FILE (a ``ModelInferRequest``) to the unary METHOD through one bare ``grpc.aio`` channel, from
CONCURRENCY coroutines that each wait for their answer before sending again (wrk's closed loop), for SECONDS.
Nothing is serialized or parsed per call, so the generator's CPU stays out of the servers' way (tritonclient's
aio client costs noticeably more per call). Prints ``RESULT {"requests", "errors", "duration_us", "p50_us",
"p99_us"}`` like bench/wrk_post.lua.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc


async def main(target: str, method: str, body: bytes, concurrency: int, seconds: float) -> dict:
    options = [("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(method)  # no serializers: bytes in, bytes out
        await call(body, timeout=60)  # connected and answering before the clock starts
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                try:
                    await call(body, timeout=20)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6 if latencies else 0.0

    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_us": elapsed * 1e6,
        "p50_us": pct(0.5),
        "p99_us": pct(0.99),
    }


if __name__ == "__main__":
    target, method, body_file, concurrency, seconds = sys.argv[1:6]
    result = asyncio.run(main(target, method, Path(body_file).read_bytes(), int(concurrency), float(seconds)))
    print("RESULT " + json.dumps(result), flush=True)

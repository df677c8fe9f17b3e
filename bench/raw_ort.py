"""Raw onnxruntime in-process, the limit: ``python bench/raw_ort.py MODEL.onnx SECONDS THREADS`` prints JSON.

``latency``: batch-1 calls back to back (what c=1 over HTTP could at best reach); ``rows_per_s``: rows/s with
batch sizes 1, 8 and 32 (what adaptive batching could at best reach); ``threaded``: batch-1 calls from 8 threads
sharing one session (onnxruntime releases the GIL), what concurrent requests without batching could reach.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import onnxruntime as ort


def loop(session: ort.InferenceSession, feeds: dict, seconds: float) -> list[float]:
    times = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        session.run(None, feeds)
        times.append(time.perf_counter() - now)
    return times


def threaded(session: ort.InferenceSession, feeds: dict, seconds: float, threads: int) -> float:
    counts = [0] * threads

    def work(index: int) -> None:
        counts[index] = len(loop(session, feeds, seconds))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


def main() -> None:
    path, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as runtime/engines/onnx.py
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    row = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape[1:]]

    def feeds(batch: int) -> dict:
        return {spec.name: np.random.default_rng(0).random((batch, *row), dtype=np.float32)}

    loop(session, feeds(1), 0.3)  # warm-up
    times = np.array(loop(session, feeds(1), seconds))
    best = {}
    for batch in (1, 8, 32):
        runs = loop(session, feeds(batch), seconds / 3)
        best[batch] = batch * len(runs) / sum(runs)
    concurrent = threaded(session, feeds(1), seconds / 3, 8)
    print(
        json.dumps(
            {
                "rps": len(times) / times.sum(),
                "p50_ms": float(np.percentile(times, 50) * 1e3),
                "p99_ms": float(np.percentile(times, 99) * 1e3),
                "rows_per_s": best,
                "threaded_c8_rps": concurrent,
            }
        )
    )


if __name__ == "__main__":
    main()

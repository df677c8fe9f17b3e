# ruff: noqa: RUF001  (the report uses the multiplication sign)
"""``make bench``: every server side by side in one run, the same wrk load for all, ratios from the same run.

Run with .venv/dev's python after ``bench/build_models.py build/bench``:
``python bench/run.py --models build/bench --seconds 5 --out docs``. For each model it measures raw onnxruntime
in-process (a separate process), then starts each server (modelport; a bare aiohttp + onnxruntime server;
MLServer with a small onnxruntime runtime; Flask + gunicorn + TensorFlow on the original Keras model), records
the cold start (process start to the first successful inference answer), drives every endpoint with wrk at
concurrency 1, 8 and 32, records the resident memory of the server's process tree after the load, and stops
it. Writes docs/benchmarks.md (table, targets, machine) and docs/benchmarks.png, and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SERVE_PY = str(ROOT / ".venv/serve/bin/python")
DEV_PY = str(ROOT / ".venv/dev/bin/python")
MLSERVER = str(ROOT / ".venv/mlserver/bin/mlserver")
GUNICORN = str(ROOT / ".venv/dev/bin/gunicorn")
CONCURRENCY = (1, 8, 32)
GRPC_CONCURRENCY = (1, 8)
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODELS = ("mlp", "mobilenetv2")
THREADS = os.cpu_count() or 2


@dataclass
class Endpoint:
    """One way to ask a server for a prediction: a fixed body POSTed by wrk."""

    api: str
    path: str
    body: bytes
    content_type: str = "application/json"
    extra_header: str = ""  # "Name: value"
    grpc_port: int = 0  # set: a gRPC endpoint (path is the method, body a serialized ModelInferRequest)


@dataclass
class Server:
    name: str
    port: int
    command: list[str]
    endpoints: list[Endpoint]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT


@dataclass
class Cell:
    model: str
    server: str
    api: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every descendant (gunicorn and MLServer fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def post(url: str, endpoint: Endpoint, timeout: float = 5.0) -> bool:
    if endpoint.grpc_port:
        return grpc_call(endpoint, timeout)
    headers = {"Content-Type": endpoint.content_type}
    if endpoint.extra_header:
        name, value = endpoint.extra_header.split(":", 1)
        headers[name] = value.strip()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, endpoint.body, headers), timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def run_wrk(url: str, endpoint: Endpoint, concurrency: int, seconds: float, workdir: Path) -> dict:
    body_file = workdir / f"body-{uuid.uuid4().hex}"
    body_file.write_bytes(endpoint.body)
    env = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "CONTENT_TYPE": endpoint.content_type,
        "EXTRA_HEADER": endpoint.extra_header,
    }
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "20s", "-s"]
    command += [str(ROOT / "bench/wrk_post.lua"), url]
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        body_file.unlink(missing_ok=True)
    # wrk drops its connections at the deadline, but a server may still be working through what they sent (a
    # gunicorn sync worker reads every queued request): one answered request afterwards means the backlog is gone,
    # so the next cell starts on an idle server.
    post(url, endpoint, timeout=120)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result for {url}:\n{out}")
    return json.loads(line[len("RESULT ") :])


def grpc_call(endpoint: Endpoint, timeout: float) -> bool:
    """One gRPC call with the endpoint's bytes (readiness, and the idle check after each cell)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{endpoint.grpc_port}") as channel:
        try:
            channel.unary_unary(endpoint.path)(endpoint.body, timeout=timeout)
        except grpc.RpcError:
            return False
    return True


def run_grpc_load(endpoint: Endpoint, concurrency: int, seconds: float, workdir: Path) -> dict:
    """bench/grpc_load.py in its own process: pre-serialized bytes over a bare grpc.aio channel."""
    body_file = workdir / f"body-{uuid.uuid4().hex}"
    body_file.write_bytes(endpoint.body)
    command = [SERVE_PY, str(ROOT / "bench/grpc_load.py"), f"127.0.0.1:{endpoint.grpc_port}", endpoint.path]
    command += [str(body_file), str(concurrency), str(max(1.0, seconds))]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120).stdout
    finally:
        body_file.unlink(missing_ok=True)
    grpc_call(endpoint, 120)  # the backlog is gone before the next cell
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the gRPC load generator printed no result for port {endpoint.grpc_port}:\n{out}")
    return json.loads(line[len("RESULT ") :])


def drive(url: str, endpoint: Endpoint, concurrency: int, seconds: float, workdir: Path) -> dict:
    """One cell: wrk for HTTP endpoints, bench/grpc_load.py for gRPC ones."""
    if endpoint.grpc_port:
        return run_grpc_load(endpoint, concurrency, seconds, workdir)
    return run_wrk(url, endpoint, concurrency, seconds, workdir)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (gunicorn/MLServer workers too), SIGKILL after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def start_server(model: str, server: Server, workdir: Path) -> tuple[subprocess.Popen, float]:
    """Start ``server`` and wait for its first successful answer; (process, cold start in seconds)."""
    log = open(workdir / f"{model}-{server.name.replace(' ', '_')}.log", "wb")  # noqa: SIM115
    start = time.perf_counter()
    process = subprocess.Popen(
        server.command, cwd=server.cwd, env={**os.environ, **server.env}, stdout=log, stderr=log, start_new_session=True
    )
    log.close()  # the child has its own descriptor
    first = server.endpoints[0]
    url = f"http://127.0.0.1:{server.port}{first.path}"
    while not post(url, first):
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited {process.returncode}; see {log.name}")
        if time.perf_counter() - start > 180:
            stop(process)
            raise RuntimeError(f"{server.name} gave no answer in 180 s; see {log.name}")
        time.sleep(0.02)
    return process, time.perf_counter() - start


def measure_server(model: str, server: Server, seconds: float, workdir: Path) -> tuple[list[Cell], dict]:
    info: dict = {"model": model, "server": server.name, "load": os.getloadavg()[0]}
    process, info["cold_start_s"] = start_server(model, server, workdir)
    cells: list[Cell] = []
    try:
        for endpoint in server.endpoints:
            url = f"http://127.0.0.1:{server.port}{endpoint.path}"
            if not post(url, endpoint, timeout=30):
                raise RuntimeError(f"{server.name} {endpoint.api}: the request fails; see the log in {workdir}")
            drive(url, endpoint, 8, min(1.0, seconds), workdir)  # warm-up
            for concurrency in GRPC_CONCURRENCY if endpoint.grpc_port else CONCURRENCY:
                r = drive(url, endpoint, concurrency, seconds, workdir)
                cell = Cell(
                    model,
                    server.name,
                    endpoint.api,
                    concurrency,
                    rps=r["requests"] / (r["duration_us"] / 1e6),
                    p50_ms=r["p50_us"] / 1e3,
                    p99_ms=r["p99_us"] / 1e3,
                    errors=r["errors"],
                )
                cells.append(cell)
                print(
                    f"  {model:12} {server.name:22} {endpoint.api:10} c={concurrency:<3} {cell.rps:9.1f} req/s"
                    f"  p50 {cell.p50_ms:8.2f} ms  p99 {cell.p99_ms:8.2f} ms  errors {cell.errors}",
                    flush=True,
                )
        info["rss_mb"] = process_tree_rss_mb(process.pid)
    finally:
        stop(process)
    return cells, info


# ---- paired rounds: each target's two sides measured alternately, in the same minutes ----------------------
PAIR_ROUNDS = 3
# what bench/raw_ort.py --quick reports, and the concurrency each stands for (batch-1 back to back, or the best)
RAW_SIDES = {"p50_ms": 1, "image_p50_ms": 1, "best_rows_per_s": 8, "image_threaded_c8": 8}


@dataclass(frozen=True)
class PairTarget:
    """A target read from the paired rounds: the ratio ``a / b`` of two measurements, per round."""

    text: str
    goal: float
    higher: bool  # True: the ratio must be at least ``goal``; False: at most
    model: str
    a: tuple[str, str, int, str]  # (server, api, concurrency, "rps" | "p50_ms"); server "raw": raw onnxruntime
    b: tuple[str, str, int, str]
    # A target's floor: a no-op server answering the same request (no model, no parsing). Any server's latency
    # includes at least the no-op's transport, so ``(b + floor - busy) / b`` is the least a latency ratio could be,
    # where the paced no-op (NOOP_PACED) keeps the CPU busy for ``busy``, raw's p50, before it answers: a round
    # trip after the client has waited that long costs more than one back to back (bench/notes.md, "Session 12").
    # A throughput target's floor: the no-op's CPU per request adds to the model's on the same cores (the load
    # generator's included), so ``floor / (floor + b)`` is the most a throughput ratio could be.
    floor: tuple[str, str, int, str] | None = None
    # What a featureless server reaches on the same request in the same rounds (bench/servers/bare_binary.py): not
    # a bound, as the floor is, but how far a target sits from the least a real aiohttp server does.
    bare: tuple[str, str, int, str] | None = None


def pair_text(model: str, server: str, api: str, concurrency: int, reference: str) -> str:
    """The text of the paired target on ``model`` that compares ``server``'s ``api`` at ``concurrency`` with
    ``reference`` (looked up, so a target added to the table cannot shift what the README summary quotes)."""
    return next(
        t.text
        for t in PAIR_TARGETS
        if t.model == model and t.a[:3] == (server, api, concurrency) and t.b[0] == reference
    )


BARE_BINARY = "bare aiohttp+ORT, binary"
NOOP_PACED = "no-op aiohttp, at raw's pace"  # the no-op that takes raw onnxruntime's batch-1 p50 per request
ONE_THREAD = "modelport, 1 thread per run"  # docs/runtime.md, "Throughput over latency"

PAIR_TARGETS = (
    PairTarget(
        "MLP V2 JSON c=8 vs bare aiohttp+ORT (≥ 0.8×)",
        0.8,
        True,
        "mlp",
        ("modelport", "V2 JSON", 8, "rps"),
        ("bare aiohttp+ORT", "V2 JSON", 8, "rps"),
    ),
    PairTarget(
        "MLP gRPC c=8 vs the no-op grpc.aio ceiling (≥ 0.75×)",
        0.75,
        True,
        "mlp",
        ("modelport", "gRPC", 8, "rps"),
        ("no-op grpc.aio", "gRPC", 8, "rps"),
    ),
    PairTarget(
        "MLP gRPC c=8 vs MLServer gRPC (≥ 1.5×)",
        1.5,
        True,
        "mlp",
        ("modelport", "gRPC", 8, "rps"),
        ("MLServer (workers=0)", "gRPC", 8, "rps"),
    ),
    PairTarget(
        "MLP V2 JSON c=8 vs MLServer best (≥ 2×)",
        2.0,
        True,
        "mlp",
        ("modelport", "V2 JSON", 8, "rps"),
        ("MLServer (workers=0)", "V2 JSON", 8, "rps"),
    ),
    PairTarget(
        "mlp int8 vs float, modelport V2 JSON c=8 (speed-up, > 1×)",
        1.0,
        True,
        "mlp",
        ("modelport int8 (dynamic)", "V2 JSON", 8, "rps"),
        ("modelport", "V2 JSON", 8, "rps"),
    ),
    PairTarget(
        "MobileNetV2 V2 binary c=1 p50 vs raw ORT batch-1 (≤ 1.15×)",
        1.15,
        False,
        "mobilenetv2",
        ("modelport", "V2 binary", 1, "p50_ms"),
        ("raw", "", 1, "p50_ms"),
        floor=(NOOP_PACED, "V2 binary", 1, "p50_ms"),
        bare=(BARE_BINARY, "V2 binary", 1, "p50_ms"),
    ),
    PairTarget(
        "MobileNetV2 V2 binary c=8 vs raw ORT best in-process throughput (≥ 0.9×)",
        0.9,
        True,
        "mobilenetv2",
        ("modelport", "V2 binary", 8, "rps"),
        ("raw", "", 8, "best_rows_per_s"),
        floor=("no-op aiohttp", "V2 binary", 8, "rps"),
        bare=(BARE_BINARY, "V2 binary", 8, "rps"),
    ),
    PairTarget(
        f"MobileNetV2 V2 binary c=8, one thread per run (--intra-op-threads 1 --instances {THREADS}), vs raw ORT best "
        "in-process throughput (≥ 0.9×)",
        0.9,
        True,
        "mobilenetv2",
        (ONE_THREAD, "V2 binary", 8, "rps"),
        ("raw", "", 8, "best_rows_per_s"),
        floor=("no-op aiohttp", "V2 binary", 8, "rps"),
    ),
    PairTarget(
        "MobileNetV2 gRPC c=1 p50 vs raw ORT (≤ 1.2×)",
        1.2,
        False,
        "mobilenetv2",
        ("modelport", "gRPC", 1, "p50_ms"),
        ("raw", "", 1, "p50_ms"),
        floor=("no-op grpc.aio", "gRPC", 1, "p50_ms"),
    ),
    PairTarget(
        "MobileNetV2 640×480 JPEG c=1 p50 vs in-process decode + ORT (≤ 1.25×)",
        1.25,
        False,
        "mobilenetv2",
        ("modelport", "image", 1, "p50_ms"),
        ("raw", "", 1, "image_p50_ms"),
    ),
    PairTarget(
        "MobileNetV2 640×480 JPEG c=8 vs in-process decode + ORT, 8 threads (≥ 0.85×)",
        0.85,
        True,
        "mobilenetv2",
        ("modelport", "image", 8, "rps"),
        ("raw", "", 8, "image_threaded_c8"),
    ),
    PairTarget(
        "mobilenetv2 int8 vs float, modelport V2 binary c=8 (speed-up, > 1×)",
        1.0,
        True,
        "mobilenetv2",
        ("modelport int8 (static)", "V2 binary", 8, "rps"),
        ("modelport", "V2 binary", 8, "rps"),
    ),
)


def paired_rounds(model: str, models_dir: Path, workdir: Path, seconds: float) -> dict:
    """Every measurement ``PAIR_TARGETS`` needs for ``model``, ``PAIR_ROUNDS`` times, alternating.

    The servers involved run side by side (idle while another is measured); each round measures every side
    once, in reverse order on odd rounds, so a drift of the shared machine's load during the phase hits both
    sides of a ratio alike. Returns ``{"server|api|c|field": [one value per round]}``."""
    sides: list[tuple[str, str, int]] = []  # in target order, so that the two sides of a ratio run back to back
    for target in PAIR_TARGETS:
        for side in (target.a, target.b, target.floor, target.bare):
            if side is not None and target.model == model and side[:3] not in sides:
                sides.append(side[:3])
    ports = {key: free_port() for key in ("modelport", "modelport_grpc", "modelport_unbatched", "bare", "mlserver")}
    names = ("mlserver_grpc", "noop", "flask", "workers", "int8", "noop_http", "noop_paced", "bare_binary")
    names += ("one_thread",)
    ports |= {key: free_port() for key in names}
    values: dict[str, list[float]] = {}
    busy_ms = 0.0
    if any(side[0] == NOOP_PACED for side in sides):  # its pace: raw onnxruntime's batch-1 p50, measured first
        busy_ms = raw_ort(model, models_dir, seconds, quick=True)["p50_ms"]
        values[f"{NOOP_PACED}|busy_ms"] = [busy_ms]
    servers = {s.name: s for s in servers_for(model, models_dir, workdir, ports, floors=True, busy_ms=busy_ms)}
    running: list[subprocess.Popen] = []
    try:
        steps: list = []
        for name, api, concurrency in sides:
            if name == "raw":
                continue
            server = servers.get(name)
            endpoint = next((e for e in server.endpoints if e.api == api), None) if server else None
            if endpoint is None:
                continue
            if server.name not in {step[0] for step in steps}:
                running.append(start_server(model, server, workdir)[0])
                for warm in server.endpoints:
                    drive(f"http://127.0.0.1:{server.port}{warm.path}", warm, 8, 1.0, workdir)
            steps.append((server.name, endpoint, concurrency))
        if any(side[0] == "raw" for side in sides):  # one raw run gives every raw side: put it mid-round
            steps.insert(len(steps) // 2, "raw")
        for round_index in range(PAIR_ROUNDS):
            order = steps
            for step in order if round_index % 2 == 0 else order[::-1]:
                if step == "raw":
                    result = raw_ort(model, models_dir, seconds, quick=True)
                    for key, concurrency in RAW_SIDES.items():
                        if key in result:
                            values.setdefault(f"raw||{concurrency}|{key}", []).append(result[key])
                    continue
                name, endpoint, concurrency = step
                server = servers[name]
                r = drive(f"http://127.0.0.1:{server.port}{endpoint.path}", endpoint, concurrency, seconds, workdir)
                rps, p50 = r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1e3
                values.setdefault(f"{name}|{endpoint.api}|{concurrency}|rps", []).append(rps)
                values.setdefault(f"{name}|{endpoint.api}|{concurrency}|p50_ms", []).append(p50)
                print(
                    f"  {model:12} round {round_index + 1}  {name:22} {endpoint.api:10} c={concurrency:<3}"
                    f" {rps:9.1f} req/s  p50 {p50:8.2f} ms",
                    flush=True,
                )
    finally:
        for process in running:
            stop(process)
    return values


def paired_targets(paired: dict) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met) for every ``PAIR_TARGETS`` entry: the mean of the per-round ratios, and each round's."""
    out: list[tuple[str, str, bool | None]] = []
    for target in PAIR_TARGETS:
        values = paired.get(target.model, {})
        a = values.get("|".join(map(str, target.a)))
        b = values.get("|".join(map(str, target.b)))
        if not a or not b or len(a) != len(b) or not all(b):
            out.append((target.text, "not measured", None))
            continue
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        mean = sum(ratios) / len(ratios)
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        met = mean >= target.goal if target.higher else mean <= target.goal
        text = f"{mean:.2f}× (rounds: {rounds})"
        floor = values.get("|".join(map(str, target.floor))) if target.floor else None
        if floor and len(floor) == len(b):
            if target.higher:  # throughput: the no-op's CPU per request and the model's add up
                floors = [f / (f + y) for y, f in zip(b, floor, strict=True)]
            else:  # latency: the no-op's transport (its time less its busy wait) and the model's add up
                busy = values.get(f"{target.floor[0]}|busy_ms", [0.0])[0]
                floors = [(y + f - busy) / y for y, f in zip(b, floor, strict=True)]
            bound = "the ceiling" if target.higher else "the floor"
            text += (
                f"; {bound}, {target.floor[0]} on the same request: {sum(floors) / len(floors):.2f}× "
                f"(rounds: {', '.join(f'{r:.2f}' for r in floors)})"
            )
        bare = values.get("|".join(map(str, target.bare))) if target.bare else None
        if bare and len(bare) == len(b):
            bares = [x / y for x, y in zip(bare, b, strict=True)]
            text += (
                f"; {target.bare[0]} on the same request: {sum(bares) / len(bares):.2f}× "
                f"(rounds: {', '.join(f'{r:.2f}' for r in bares)})"
            )
        out.append((target.text, text, met))
    return out


# ---- request bodies --------------------------------------------------------------------------
def v2_json(name: str, x: np.ndarray) -> bytes:
    tensor = {"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary(name: str, x: np.ndarray, output: str) -> tuple[bytes, str]:
    raw = x.astype("<f4").tobytes()
    header = {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return head + raw, f"Inference-Header-Content-Length: {len(head)}"


def v2_binary_response(model: str, output: str, out_shape: list[int]) -> tuple[bytes, int]:
    """For the no-op HTTP server: a canned V2 binary response of the output's size, and its JSON header's length."""
    raw = np.zeros(out_shape, "<f4").tobytes()
    header = {
        "model_name": model,
        "model_version": "1",
        "outputs": [
            {"name": output, "datatype": "FP32", "shape": out_shape, "parameters": {"binary_data_size": len(raw)}}
        ],
    }
    head = json.dumps(header).encode()
    return head + raw, len(head)


def grpc_messages(model: str, name: str, x: np.ndarray, output: str, out_shape: list[int]) -> tuple[bytes, bytes]:
    """A serialized ModelInferRequest (raw contents, as tritonclient.grpc sends) and, for the no-op server, a
    canned ModelInferResponse of the output's size."""
    sys.path.insert(0, str(ROOT))
    from runtime.proto import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[x.astype("<f4").tobytes()])
    request.inputs.add(name=name, datatype="FP32", shape=x.shape)
    request.outputs.add(name=output)
    response = pb.ModelInferResponse(model_name=model, model_version="1")
    response.outputs.add(name=output, datatype="FP32", shape=out_shape)
    response.raw_output_contents.append(np.zeros(out_shape, "<f4").tobytes())
    return request.SerializeToString(), response.SerializeToString()


def multipart(field_name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "modelportbench" + uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def image_file(models_dir: Path) -> Path:
    """The 640x480 photo the image endpoint uploads (older builds have only the 224x224 sample)."""
    photo = models_dir / "photo.jpg"
    return photo if photo.is_file() else models_dir / "sample.jpg"


def servers_for(
    model: str, models_dir: Path, workdir: Path, ports: dict[str, int], floors: bool = False, busy_ms: float = 0.0
) -> list[Server]:
    """Every server the run measures for ``model``; ``floors``: also the no-op HTTP server (and with ``busy_ms``
    its twin at raw onnxruntime's pace) and the bare binary server (paired rounds only)."""
    bundle = models_dir / "repo" / model / "1"
    manifest = json.loads((bundle / "modelport.json").read_text())
    spec = manifest["inputs"][0]
    output = manifest["outputs"][0]["name"]
    shape = [1] + [d for d in spec["shape"][1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    json_body = v2_json(spec["name"], x)
    binary_body, binary_header = v2_binary(spec["name"], x, output)
    infer = f"/v2/models/{model}/infer"
    out_shape = [1, *manifest["outputs"][0]["shape"][1:]]
    grpc_request, canned_response = grpc_messages(model, spec["name"], x, output, out_shape)

    modelport_endpoints = [
        Endpoint("V2 JSON", infer, json_body),
        Endpoint("V2 binary", infer, binary_body, "application/octet-stream", binary_header),
    ]
    if manifest.get("image"):
        body, content_type = multipart("image", image_file(models_dir).name, image_file(models_dir).read_bytes())
        modelport_endpoints.append(Endpoint("image", f"/api/models/{model}/image", body, content_type))
    else:
        simple = json.dumps({"inputs": {spec["name"]: x.tolist()}}).encode()
        modelport_endpoints.append(Endpoint("simple", f"/api/models/{model}/predict", simple))
    modelport_endpoints.append(Endpoint("gRPC", GRPC_INFER, grpc_request, grpc_port=ports["modelport_grpc"]))

    modelport = Server(
        "modelport",
        ports["modelport"],
        [
            SERVE_PY,
            "-m",
            "runtime",
            "--repository",
            str(models_dir / "repo"),
            "--model",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["modelport"]),
            "--grpc-port",
            str(ports["modelport_grpc"]),
            "--intra-op-threads",
            str(THREADS),
            "--log-level",
            "warning",
            "--max-batch-size",
            "4",  # why 4: bench/notes.md, "Batch cap 4"
        ],
        modelport_endpoints,
    )
    bare = Server(
        "bare aiohttp+ORT",
        ports["bare"],
        [
            SERVE_PY,
            str(ROOT / "bench/servers/bare_aiohttp.py"),
            str(bundle / "model.onnx"),
            model,
            str(ports["bare"]),
            str(THREADS),
        ],
        [Endpoint("V2 JSON", infer, json_body)],
    )
    mlserver_dir = workdir / f"mlserver-{model}"
    mlserver_dir.mkdir(exist_ok=True)
    settings = {
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": ports["mlserver"],
        "grpc_port": ports["mlserver_grpc"],
        "metrics_port": free_port(),
    }
    (mlserver_dir / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": model,
        "implementation": "mlserver_ort.OrtRuntime",
        "parameters": {"uri": str(bundle / "model.onnx")},
    }
    (mlserver_dir / "model-settings.json").write_text(json.dumps(model_settings))
    mlserver = Server(
        "MLServer (workers=0)",
        ports["mlserver"],
        [MLSERVER, "start", str(mlserver_dir)],
        [
            Endpoint("V2 JSON", infer, json_body),
            Endpoint("gRPC", GRPC_INFER, grpc_request, grpc_port=ports["mlserver_grpc"]),
        ],
        env={"PYTHONPATH": str(ROOT / "bench/servers"), "ORT_THREADS": str(THREADS)},
    )
    canned = workdir / f"noop-{model}.bin"
    canned.write_bytes(canned_response)
    noop = Server(
        "no-op grpc.aio",
        ports["noop"],
        [SERVE_PY, str(ROOT / "bench/servers/noop_grpc.py"), str(ports["noop"]), str(canned)],
        [Endpoint("gRPC", GRPC_INFER, grpc_request, grpc_port=ports["noop"])],
    )
    flask = Server(
        "Flask+TF (gunicorn)",
        ports["flask"],
        [
            GUNICORN,
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{ports['flask']}",
            "--chdir",
            str(ROOT / "bench/servers"),
            "--timeout",
            "120",
            "flask_tf:app",
        ],
        [Endpoint("JSON", "/predict", json.dumps({"instances": x.tolist()}).encode())],
        env={"KERAS_MODEL": str(models_dir / f"{model}.keras"), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    # The same server with adaptive batching off: on 2 cores a batch of 8 MobileNetV2 rows is barely faster per row
    # than 8 single rows, so which configuration wins is measured, not assumed.
    unbatched = Server(
        "modelport, no batching",
        ports["modelport_unbatched"],
        [
            *modelport.command[: modelport.command.index("--port")],
            *("--port", str(ports["modelport_unbatched"]), "--grpc-port", "0", "--intra-op-threads", str(THREADS)),
            *("--log-level", "warning", "--max-batch-size", "1"),
        ],
        [
            e
            for e in modelport_endpoints
            if e.api in (("V2 binary", "image") if manifest.get("image") else ("V2 JSON",))
        ],
    )
    # The throughput layout for a compute-bound model: each run on one thread, as many runs at once as cores
    one_thread = Server(
        ONE_THREAD,
        ports["one_thread"],
        [
            *modelport.command[: modelport.command.index("--port")],
            *("--port", str(ports["one_thread"]), "--grpc-port", "0", "--log-level", "warning"),
            *("--intra-op-threads", "1", "--instances", str(THREADS), "--max-batch-size", "4"),
        ],
        [e for e in modelport_endpoints if e.api == "V2 binary"],
    )
    # N processes on one port, each with cores / N onnxruntime threads (runtime/workers.py)
    workers = Server(
        f"modelport --workers {THREADS}",
        ports["workers"],
        [
            *modelport.command[: modelport.command.index("--port")],
            *("--port", str(ports["workers"]), "--workers", str(THREADS), "--log-level", "warning"),
            *("--max-batch-size", "4"),
        ],
        [e for e in modelport_endpoints if e.api in ("V2 JSON", "V2 binary")],
    )
    servers = [modelport, unbatched, *([one_thread] if manifest.get("image") else [])]
    int8 = models_dir / "repo" / f"{model}_int8"
    if int8.is_dir():  # the same server on the --quantize copy of the model (bench/build_models.py)
        quantized = json.loads((int8 / "1" / "modelport.json").read_text())["parity"]["quantization"]["mode"]
        command = [f"{model}_int8" if a == model else a for a in modelport.command]
        servers.append(
            Server(
                f"modelport int8 ({quantized})",
                ports["int8"],
                command,
                [
                    dataclasses.replace(e, path=e.path.replace(f"/{model}/", f"/{model}_int8/"))
                    for e in modelport_endpoints
                    if e.api in ("V2 JSON", "V2 binary")
                ],
            )
        )
        servers[-1].command[servers[-1].command.index("--port") + 1] = str(ports["int8"])
        servers[-1].command[servers[-1].command.index("--grpc-port") + 1] = "0"  # REST rows only
    servers.append(workers)
    if floors:  # the floor of the V2 binary latency targets: the same request to a server with no model
        response, head_length = v2_binary_response(model, output, out_shape)
        canned_http = workdir / f"noop-http-{model}.bin"
        canned_http.write_bytes(response)
        servers.append(
            Server(
                "no-op aiohttp",
                ports["noop_http"],
                [
                    SERVE_PY,
                    str(ROOT / "bench/servers/noop_http.py"),
                    str(ports["noop_http"]),
                    str(canned_http),
                    str(head_length),
                ],
                [e for e in modelport_endpoints if e.api == "V2 binary"],
            )
        )
        if busy_ms:
            noop_http = servers[-1]
            paced = [*noop_http.command, f"{busy_ms * 1000:.0f}"]
            paced[paced.index(str(ports["noop_http"]))] = str(ports["noop_paced"])
            servers.append(dataclasses.replace(noop_http, name=NOOP_PACED, port=ports["noop_paced"], command=paced))
        servers.append(
            Server(
                BARE_BINARY,
                ports["bare_binary"],
                [
                    SERVE_PY,
                    str(ROOT / "bench/servers/bare_binary.py"),
                    str(bundle / "model.onnx"),
                    model,
                    str(ports["bare_binary"]),
                    str(THREADS),
                ],
                [e for e in modelport_endpoints if e.api == "V2 binary"],
            )
        )
    if model == "mlp":
        return [*servers, bare, mlserver, noop, flask]
    return [*servers, mlserver, noop, flask]


def raw_ort(model: str, models_dir: Path, seconds: float, quick: bool = False) -> dict:
    path = models_dir / "repo" / model / "1" / "model.onnx"
    command = [SERVE_PY, str(ROOT / "bench/raw_ort.py"), *(["--quick"] if quick else []), str(path)]
    command += [str(seconds), str(THREADS)]
    if json.loads((path.parent / "modelport.json").read_text()).get("image"):
        command.append(str(image_file(models_dir)))  # also the image endpoint's in-process limit
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    if quick:
        print(f"  {model:12} raw onnxruntime (paired round): {json.dumps(result)}", flush=True)
        return result
    result["best_rows_per_s"] = max(
        *result["rows_per_s"].values(), result["threaded_c8_rps"], result.get("one_thread_rows_per_s", 0)
    )
    result["load"] = os.getloadavg()[0]
    print(
        f"  {model:12} {'raw onnxruntime':22} {'in-process':10} c=1   {result['rps']:9.1f} req/s"
        f"  p50 {result['p50_ms']:8.3f} ms  8 threads {result['threaded_c8_rps']:.1f} req/s"
        f"  best in-process {result['best_rows_per_s']:.1f} rows/s",
        flush=True,
    )
    if "image_p50_ms" in result:
        print(
            f"  {model:12} {'raw decode + ORT':22} {'image':10} c=1   {result['image_rps_c1']:9.1f} req/s"
            f"  p50 {result['image_p50_ms']:8.3f} ms  8 threads {result['image_threaded_c8']:.1f} images/s",
            flush=True,
        )
    return result


# ---- report ------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": os.getloadavg(),
        "python": platform.python_version(),
    }


def find(cells: list[Cell], model: str, server: str, api: str, c: int) -> Cell | None:
    return next(
        (x for x in cells if (x.model, x.server, x.api, x.concurrency) == (model, server, api, c)),
        None,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def single_pass(target: PairTarget, cells: list[Cell], raw: dict) -> float | None:
    """``target``'s ratio from the single pass: each side's cell (or raw onnxruntime's figure) measured once."""

    def side(spec: tuple[str, str, int, str]) -> float | None:
        server, api, concurrency, what = spec
        if server == "raw":
            return raw.get(target.model, {}).get(what)
        cell = find(cells, target.model, server, api, concurrency)
        return getattr(cell, what) if cell else None

    return ratio(side(target.a), side(target.b))


def targets(cells: list[Cell], raw: dict, infos: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 6's and issue 15's targets, each as (what, measured, met)."""
    out: list[tuple[str, str, bool | None]] = []

    def add(text: str, value: float | None, goal: float, higher: bool = True, unit: str = "×") -> None:
        if value is None:
            out.append((text, "not measured", None))
            return
        out.append((text, f"{value:.2f}{unit}", value >= goal if higher else value <= goal))

    for target in PAIR_TARGETS:  # judged on the paired rounds when the run has them (write_report)
        add(target.text, single_pass(target, cells, raw), target.goal, target.higher)
    net = "mobilenetv2"
    unbatched = find(cells, net, "modelport, no batching", "V2 binary", 8)
    add(
        "MobileNetV2 V2 binary c=8 vs raw ORT best in-process throughput (≥ 0.9×), batching off",
        ratio(unbatched and unbatched.rps, raw.get(net, {}).get("best_rows_per_s")),
        0.9,
    )
    one = find(cells, "mlp", "modelport", "V2 JSON", 8)
    many = find(cells, "mlp", f"modelport --workers {THREADS}", "V2 JSON", 8)
    add(f"MLP V2 JSON c=8, --workers {THREADS} vs one process (> 1×)", ratio(many and many.rps, one and one.rps), 1.0)
    best_mp = max(
        (x.rps for x in cells if x.model == net and x.server.startswith("modelport") and x.api != "V2 JSON"), default=0
    )
    best_flask = max((x.rps for x in cells if x.model == net and x.server.startswith("Flask")), default=0)
    add("MobileNetV2 best throughput vs Flask+TF (≥ 10×)", ratio(best_mp, best_flask), 10.0)
    mp_info = infos.get((net, "modelport"), {})
    flask_info = infos.get((net, "Flask+TF (gunicorn)"), {})
    add("modelport cold start, MobileNetV2 (≤ 1 s)", mp_info.get("cold_start_s"), 1.0, False, " s")
    add(
        "modelport RSS vs Flask+TF, MobileNetV2 (≤ 0.25×)",
        ratio(mp_info.get("rss_mb"), flask_info.get("rss_mb")),
        0.25,
        False,
    )
    return out


def image_label(record: dict) -> str:
    return "640×480 JPEG, draft mode"


def fmt(value: float | None) -> str:
    return f"{value:.3g}" if value else ""


def fmt_load(record: dict) -> str:
    """The 1-minute load average when the row started (runs saved before it was recorded have none)."""
    return f"{record['load']:.1f}" if "load" in record else ""


def one_thread_text(record: dict) -> str:
    """The raw row's one-thread-per-run figure (runs saved before it was measured have none)."""
    if "one_thread_rows_per_s" not in record:
        return ""
    return f"; {THREADS} threads, one intra-op thread each: {record['one_thread_rows_per_s']:.0f}"


def table(cells: list[Cell], raw: dict, infos: dict) -> str:
    lines = []
    for model in dict.fromkeys(x.model for x in cells):
        r = raw[model]
        lines += [
            f"### {model}",
            "",
            "| server · API | c=1 req/s (p50 / p99 ms) | c=8 req/s (p50 / p99 ms) | c=32 req/s (p50 / p99 ms) "
            "| errors | × raw ORT best | × bare (c=8) | × MLServer (c=8) | × Flask (c=8) | cold start | RSS | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| raw onnxruntime, in-process, {THREADS} threads | {r['rps']:.0f} ({r['p50_ms']:.3f} / {r['p99_ms']:.3f})"
            f" | 8 threads, batch 1: {r['threaded_c8_rps']:.0f}{one_thread_text(r)} | best in-process (batched, "
            f"threaded or one thread per run): {r['best_rows_per_s']:.0f} rows/s | 0 | 1 | | | | | | {fmt_load(r)} |",
        ]
        if "image_p50_ms" in r:
            lines.append(
                f"| in-process decode ({image_label(r)}) + ORT, batch 1 | {r['image_rps_c1']:.0f} "
                f"({r['image_p50_ms']:.3f} / ) | 8 threads: {r['image_threaded_c8']:.0f} images/s | | 0 | | | | | | | |"
            )
        if f"{model}_int8" in raw:
            q = raw[f"{model}_int8"]
            lines.append(
                f"| raw onnxruntime, **int8** model | {q['rps']:.0f} ({q['p50_ms']:.3f} / {q['p99_ms']:.3f})"
                f" | 8 threads, batch 1: {q['threaded_c8_rps']:.0f}"
                f" | best in-process: {q['best_rows_per_s']:.0f} rows/s"
                f" | 0 | {fmt(ratio(q['best_rows_per_s'], r['best_rows_per_s']))} | | | | | | {fmt_load(q)} |"
            )
        if "after" in r:
            a = r["after"]
            lines.append(
                f"| raw onnxruntime again, after the servers | {a['rps']:.0f} ({a['p50_ms']:.3f} / {a['p99_ms']:.3f})"
                f" | 8 threads, batch 1: {a['threaded_c8_rps']:.0f} | best in-process: {a['best_rows_per_s']:.0f} "
                f"rows/s | 0 | {fmt(ratio(a['best_rows_per_s'], r['best_rows_per_s']))} | | | | | | {a['load']:.1f} |"
            )
        ml8 = find(cells, model, "MLServer (workers=0)", "V2 JSON", 8)
        ml_grpc8 = find(cells, model, "MLServer (workers=0)", "gRPC", 8)
        fl8 = find(cells, model, "Flask+TF (gunicorn)", "JSON", 8)
        bare8 = find(cells, model, "bare aiohttp+ORT", "V2 JSON", 8)
        for server, api in dict.fromkeys((x.server, x.api) for x in cells if x.model == model):
            row = [find(cells, model, server, api, c) for c in CONCURRENCY]
            parts = [f"{x.rps:.0f} ({x.p50_ms:.2f} / {x.p99_ms:.2f})" if x else "" for x in row]
            c8 = row[1]
            info = infos.get((model, server), {})
            ml_same = ml_grpc8 if api == "gRPC" else ml8  # gRPC rows compare with MLServer's gRPC

            lines.append(
                f"| {server} · {api} | {' | '.join(parts)} | {sum(x.errors for x in row if x)}"
                f" | {fmt(ratio(max(x.rps for x in row if x), r['best_rows_per_s']))}"
                f" | {fmt(ratio(c8 and c8.rps, bare8 and bare8.rps))}"
                f" | {fmt(ratio(c8 and c8.rps, ml_same and ml_same.rps))}"
                f" | {fmt(ratio(c8 and c8.rps, fl8 and fl8.rps))}"
                f" | {info.get('cold_start_s', 0):.2f} s | {info.get('rss_mb', 0):.0f} MB | {fmt_load(info)} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(cells: list[Cell], raw: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(x.model for x in cells))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5))
    for ax, model in zip(np.atleast_1d(axes), models, strict=True):
        labels = list(dict.fromkeys(f"{x.server}\n{x.api}" for x in cells if x.model == model))
        width = 0.8 / len(CONCURRENCY)
        for i, c in enumerate(CONCURRENCY):
            values = [
                next(
                    (
                        x.rps
                        for x in cells
                        if x.model == model and f"{x.server}\n{x.api}" == label and x.concurrency == c
                    ),
                    0,
                )
                for label in labels
            ]
            ax.bar(np.arange(len(labels)) + i * width, values, width, label=f"c={c}")
        ax.axhline(raw[model]["best_rows_per_s"], color="k", linestyle="--", label="raw ORT best (rows/s)")
        ax.axhline(raw[model]["rps"], color="grey", linestyle=":", label="raw ORT batch-1 loop (req/s)")
        ax.set_xticks(np.arange(len(labels)) + width, labels, rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("requests/s (log)")
        ax.set_title(model)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(cells: list[Cell], raw: dict, infos: dict, host: dict, paired: dict | None = None) -> str:
    """A few lines the lead can paste into the README: the headline ratios of this run and where they came from.
    Ratios that a target judges come from the paired rounds when the run has them."""
    judged = {what: value.split(" ")[0] for what, value, met in paired_targets(paired or {}) if met is not None}

    def rps(model: str, server: str, api: str, c: int) -> float | None:
        cell = find(cells, model, server, api, c)
        return cell.rps if cell else None

    def int8_rps(model: str, api: str) -> float | None:
        cell = next(
            (
                c
                for c in cells
                if c.model == model and c.server.startswith("modelport int8") and c.api == api and c.concurrency == 8
            ),
            None,
        )
        return cell.rps if cell else None

    def x(value: float | None) -> str:
        return f"{value:.1f}×" if value else "n/a"

    net, mlp = "mobilenetv2", "mlp"
    best_net = max(
        (c.rps for c in cells if c.model == net and c.server.startswith("modelport") and c.api != "V2 JSON"),
        default=None,
    )
    best_flask = max((c.rps for c in cells if c.model == net and c.server.startswith("Flask")), default=None)
    mp_info = infos.get((net, "modelport"), {})
    flask_info = infos.get((net, "Flask+TF (gunicorn)"), {})
    mp8 = rps(mlp, "modelport", "V2 JSON", 8)
    bare = "bare aiohttp+ORT"
    int8_mlp = judged.get(pair_text(mlp, "modelport int8 (dynamic)", "V2 JSON", 8, "modelport")) or x(
        ratio(int8_rps(mlp, "V2 JSON"), mp8)
    )
    int8_net = judged.get(pair_text(net, "modelport int8 (static)", "V2 binary", 8, "modelport")) or x(
        ratio(int8_rps(net, "V2 binary"), rps(net, "modelport", "V2 binary", 8))
    )
    lines = [
        f"Measured by `make bench` on {host['cores']} shared cores ({host['cpu']}), {host['date']}:",
        "",
        f"- Tiny MLP, V2 JSON, 8 connections: modelport {mp8 or 0:.0f} req/s = "
        f"{x(ratio(mp8, rps(mlp, 'MLServer (workers=0)', 'V2 JSON', 8)))} MLServer 1.7.1, "
        f"{judged.get(pair_text(mlp, 'modelport', 'V2 JSON', 8, bare)) or x(ratio(mp8, rps(mlp, bare, 'V2 JSON', 8)))} "
        "a featureless aiohttp + onnxruntime server, "
        f"{x(ratio(mp8, rps(mlp, 'Flask+TF (gunicorn)', 'JSON', 8)))} Flask + gunicorn + TensorFlow.",
        f"- MobileNetV2 224²: modelport {best_net or 0:.0f} req/s (best of binary tensors / image upload, "
        f"`--workers` included) = {x(ratio(best_net, best_flask))} Flask + TensorFlow; one process, binary tensors, "
        f"c=8: {judged.get(pair_text(net, 'modelport', 'V2 binary', 8, 'raw'), 'n/a')} raw onnxruntime's best "
        "in-process.",
        f"- int8 (`--quantize`) against the float model: through modelport at c=8, MLP {int8_mlp} (dynamic), "
        f"MobileNetV2 {int8_net} (static) the req/s; raw onnxruntime in-process, {int8_raw(raw, mlp)} (MLP), "
        f"{int8_raw(raw, net)} (MobileNetV2).",
        f"- `--workers {THREADS}` on the MLP: "
        f"{x(ratio(rps(mlp, f'modelport --workers {THREADS}', 'V2 JSON', 8), mp8))} one process.",
        f"- Cold start {mp_info.get('cold_start_s', 0):.1f} s vs {flask_info.get('cold_start_s', 0):.1f} s; "
        f"resident memory {mp_info.get('rss_mb', 0):.0f} MB vs {flask_info.get('rss_mb', 0):.0f} MB (Flask + TF).",
        "",
        "Full table, method and targets: docs/benchmarks.md.",
    ]
    return "\n".join(lines)


def int8_raw(raw: dict, model: str) -> str:
    """The int8 model's speed against the float one's in raw onnxruntime (this run's in-process rows): batch-1
    latency and best throughput, each as the int8 model's speed-up (above 1: int8 is faster)."""
    flt, q = raw.get(model, {}), raw.get(f"{model}_int8", {})
    if not all(side.get(key) for side in (flt, q) for key in ("p50_ms", "best_rows_per_s")):
        return "not measured"
    return (
        f"batch-1 latency {flt['p50_ms'] / q['p50_ms']:.2f}×, best throughput "
        f"{q['best_rows_per_s'] / flt['best_rows_per_s']:.2f}×"
    )


def write_report(
    out: Path,
    cells: list[Cell],
    raw: dict,
    infos: dict,
    host: dict,
    seconds: float,
    failures: list[str],
    paired: dict | None = None,
) -> str:
    goals = targets(cells, raw, infos)
    rounds = {what: (value, met) for what, value, met in paired_targets(paired or {}) if met is not None}
    goals = [
        (what, f"{rounds[what][0]}; single pass {value}", rounds[what][1]) if what in rounds else (what, value, met)
        for what, value, met in goals
    ]
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    notes = ROOT / "bench/notes.md"
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Generated by `make bench` (bench/run.py); do not edit by hand — notes come from bench/notes.md.",
            "",
            f"**Machine:** {host['cpu']}, {host['cores']} cores, {host['memory_gb']} GiB; Python {host['python']}; "
            f"{host['date']}; load average at start {host['load_start'][0]:.2f}, "
            f"at end {host.get('load_end', os.getloadavg())[0]:.2f} "
            "(the machine is shared: figures from a loaded machine are lower and noisier).",
            "",
            *([f"**Merged from a second run:** {host['merged']}", ""] if host.get("merged") else []),
            f"**Method:** wrk 4.1 (`-t1`, Lua POST script bench/wrk_post.lua) in its own process, the same for every "
            "HTTP server; gRPC rows (c=1 and c=8) by bench/grpc_load.py, an asyncio client in its own process "
            "sending one pre-serialized ModelInferRequest (raw contents) through a bare grpc.aio channel, the same "
            "for every gRPC server (× MLServer compares gRPC with MLServer's gRPC); "
            f"{seconds:g} s per cell after a 1 s warm-up; concurrency = open connections. Every server uses "
            f"{THREADS} onnxruntime intra-op threads. Cold start: process start to the first successful inference "
            "answer. RSS: the server's whole process tree after the load. Random-weight models (bench/build_models.py) "
            "converted by `python -m convert`; the Flask service loads the original Keras model.",
            "",
            "![throughput](benchmarks.png)",
            "",
            table(cells, raw, infos),
            "## Targets (issues 6, 12 and 15), ratios from this run",
            "",
            f"A target with paired rounds is judged on them: its two sides (modelport and the reference) run side "
            f"by side and are measured alternately, {PAIR_ROUNDS} rounds in ABBA order, {seconds:g} s per cell, so "
            "both see the same minutes of the shared machine; the figure is the mean of the per-round ratios. "
            "The single-pass ratio from the tables above (each server measured once, minutes apart) is shown too.",
            "",
            "| target | measured | |",
            "|---|---|---|",
            *[f"| {what} | {value} | {verdict[met]} |" for what, value, met in goals],
            "",
            *([f"**Failed in this run:** {'; '.join(failures)}", ""] if failures else []),
            "## Summary (for the README)",
            "",
            summary(cells, raw, infos, host, paired),
            "",
            notes.read_text() if notes.is_file() else "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.md").write_text(text)
    plot(cells, raw, out / "benchmarks.png")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=ROOT / "build/bench")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--only", nargs="*", default=None, help="model names to run (default: all)")
    parser.add_argument("--servers", nargs="*", default=None, help="server names to run (default: all)")
    parser.add_argument("--from-results", type=Path, help="only rewrite the report from a saved results.json")
    parser.add_argument("--paired-only", action="store_true", help="only the paired rounds; print their targets")
    args = parser.parse_args()
    if args.paired_only:
        args.models = args.models.resolve()
        (args.models / "run").mkdir(parents=True, exist_ok=True)
        paired = {m: paired_rounds(m, args.models, args.models / "run", args.seconds) for m in args.only or MODELS}
        for what, value, met in paired_targets(paired):
            print(f"{what}: {value} {'met' if met else 'not met' if met is not None else ''}")
        return 0
    if args.from_results:
        saved = json.loads(args.from_results.read_text())
        cells = [Cell(**c) for c in saved["cells"]]
        infos = {(i["model"], i["server"]): i for i in saved["servers"]}
        seconds = saved.get("seconds", args.seconds)
        print(write_report(args.out, cells, saved["raw"], infos, saved["host"], seconds, [], saved.get("paired")))
        text = summary(cells, saved["raw"], infos, saved["host"], saved.get("paired"))
        print("\n---- summary for the README ----\n" + text)
        return 0
    args.models = args.models.resolve()  # servers run with other working directories (gunicorn --chdir)
    host = machine()
    workdir = args.models / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    raw: dict = {}
    infos: dict = {}
    paired: dict = {}
    failures: list[str] = []
    for model in args.only or MODELS:
        raw[model] = raw_ort(model, args.models, args.seconds)
        if (args.models / "repo" / f"{model}_int8").is_dir():
            raw[f"{model}_int8"] = raw_ort(f"{model}_int8", args.models, args.seconds)
        names = (
            "modelport",
            "modelport_grpc",
            "modelport_unbatched",
            "bare",
            "mlserver",
            "mlserver_grpc",
            "noop",
            "flask",
            "workers",
            "int8",
            "one_thread",
        )
        ports = {key: free_port() for key in names}
        for server in servers_for(model, args.models, workdir, ports):
            if args.servers and not any(server.name.startswith(s) for s in args.servers):
                continue
            try:
                server_cells, info = measure_server(model, server, args.seconds, workdir)
            except (
                RuntimeError,
                OSError,
                subprocess.SubprocessError,
            ) as error:  # one broken server must not end the run
                failures.append(f"{model} · {server.name}: {error}")
                print(f"  {model:12} {server.name:22} FAILED: {error}", flush=True)
                continue
            cells += server_cells
            infos[(model, server.name)] = info
            print(f"  {model:12} {server.name:22} cold start {info['cold_start_s']:.2f} s, RSS {info['rss_mb']:.0f} MB")
        # The machine is shared: the limit measured again after the servers shows how much the load drifted.
        raw[model]["after"] = raw_ort(model, args.models, args.seconds)
        if not args.servers and any(t.model == model for t in PAIR_TARGETS):
            try:
                paired[model] = paired_rounds(model, args.models, workdir, args.seconds)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                failures.append(f"{model} · paired rounds: {error}")
                print(f"  {model:12} paired rounds FAILED: {error}", flush=True)

    host["load_end"] = os.getloadavg()
    (args.models / "results.json").write_text(
        json.dumps(
            {
                "seconds": args.seconds,
                "cells": [c.__dict__ for c in cells],
                "raw": raw,
                "servers": list(infos.values()),
                "host": host,
                "paired": paired,
            }
        )
    )
    print(write_report(args.out, cells, raw, infos, host, args.seconds, failures, paired))
    print("\n---- summary for the README ----\n" + summary(cells, raw, infos, host, paired))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

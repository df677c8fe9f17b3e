"""Run a serve image exactly as a ClusterServingRuntime declares it, once per storage shape (CI's container stage).

    python .ci/kserve_check.py onnx BUNDLE_VERSION_DIR    # deploy/kserve/clusterservingruntime-onnx.yaml,
                                                          # -onnx-grpc.yaml, deploy/k8s/deployment.yaml
    python .ci/kserve_check.py pmml PMML_FILE             # deploy/kserve/clusterservingruntime-pmml.yaml

Everything the container gets comes from the YAML: the image, command, args with ``{{.Name}}``
substituted by an InferenceService name, env, the HTTP port (8080, published on 127.0.0.1), the UID
and GID from its securityContext, dropped capabilities, no privilege escalation, a read-only root
filesystem with only the declared ``emptyDir`` volumes writable (podman's default tmpfs mounts are
switched off), the CPU and memory limits. The model is mounted read-only at /mnt/models in each shape
KServe's storage initializer can leave there. Each run must answer V2 metadata under the given name
and an inference equal to onnxruntime (ONNX) or pypmml (PMML) run here on the same file.
Prints one line per check; exits non-zero on any failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import tritonclient.http as http

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy.manifests import cluster_serving_runtime, documents  # noqa: E402

ENGINE = os.environ.get("ENGINE", "podman")
NAMES = {
    "onnx": "kserve-churn",
    "onnx-grpc": "kserve-churn",
    "pmml": "kserve-claims",
}  # an InferenceService name, unlike any stored directory
failures = 0


def check(name: str, ok: bool, detail: str = "") -> bool:
    global failures
    failures += not ok
    print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def lay_out(shape: str, model: Path, manifest: Path | None, root: Path) -> tuple[Path, str]:
    """``model`` stored as ``shape``; returns (what is mounted at /mnt/models, the version it serves as)."""
    filename = "model" + model.suffix
    extras = [manifest] if manifest else []
    if shape == "file":  # the storage root is the file itself (a PVC subPath mount), no suffix
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, root)
        return root, "1"
    if shape == "repository":
        target, version = root / "stored-under-another-name" / "4", "4"
    elif shape == "model":
        target, version = root / "2", "2"
    else:
        target, version = root, "1"
    target.mkdir(parents=True)
    if shape == "file-in-dir":
        shutil.copy(model, target / f"exported{model.suffix}")
        return root, version
    shutil.copy(model, target / filename)
    for extra in extras:
        shutil.copy(extra, target / extra.name)
    return root, version


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pod_command(pod: dict, container: dict, port: int, container_name: str) -> list[str]:
    """``podman run -d`` options for one Kubernetes container: the pod's and the container's
    securityContext (the container's wins), emptyDir volumes as tmpfs, limits, env, the first port."""
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cmd = [ENGINE, "run", "-d", "--name", container_name]
    cmd += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"]
    if context.get("readOnlyRootFilesystem"):
        cmd += ["--read-only"] + (["--read-only-tmpfs=false"] if ENGINE == "podman" else [])
    for cap in context.get("capabilities", {}).get("drop", []):
        cmd += ["--cap-drop", cap]
    if context.get("allowPrivilegeEscalation") is False:
        cmd += ["--security-opt", "no-new-privileges"]
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume, f"volume {mount['name']}: only emptyDir volumes are run here"
        size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m").replace("Gi", "g")
        cmd += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        cmd += ["--cpus", str(limits["cpu"])]
    if "memory" in limits:
        cmd += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g")]
    for env in container.get("env", []):
        cmd += ["-e", f"{env['name']}={env['value']}"]
    ports = [p["containerPort"] for p in container.get("ports", [])]  # one: Knative allows no more
    return [*cmd, "-p", f"127.0.0.1:{port}:{ports[0]}"]


def run_command(fmt: str, mounted: Path, port: int, container_name: str) -> list[str]:
    """``podman run`` for the runtime's one container, every setting taken from the YAML."""
    spec = cluster_serving_runtime(fmt)["spec"]
    (container,) = spec["containers"]
    cmd = pod_command(spec, container, port, container_name)
    cmd += ["-v", f"{mounted}:/mnt/models:ro"]
    cmd += ["--entrypoint", container["command"][0], container["image"], *container["command"][1:]]
    return cmd + [a.replace("{{.Name}}", NAMES[fmt]) for a in container["args"]]


def logs(container_name: str) -> str:
    done = subprocess.run([ENGINE, "logs", container_name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.stdout


def wait_ready(url: str, container_name: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        state = subprocess.run(
            [ENGINE, "inspect", "--format", "{{.State.Running}}", container_name], capture_output=True, text=True
        ).stdout.strip()
        if state == "false":
            return False
        time.sleep(0.5)
    return False


def onnx_reference(model: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [2 if not isinstance(d, int) else d for d in spec.shape]
    x = np.random.default_rng(11).random(shape, dtype=np.float32)
    out = session.get_outputs()[0].name
    return {spec.name: x}, {out: session.run([out], {spec.name: x})[0]}


def pmml_reference(model: Path):
    import pandas as pd
    import pypmml

    feed = {
        "age": np.array([25.0, 40.0, 61.5]),
        "salary": np.array([20000.0, 55000.0, 31000.0]),
        "car_location": np.array([b"carpark", b"street", b"street"], dtype=object),
    }
    frame = pd.DataFrame({k: [v.decode() if isinstance(v, bytes) else v for v in vs] for k, vs in feed.items()})
    predicted = pypmml.Model.fromFile(str(model)).predict(frame)
    return feed, {c.removeprefix("predicted_"): predicted[c].to_numpy(dtype=float) for c in predicted.columns}


def serve_once(fmt: str, shape: str, model: Path, manifest: Path | None, work: Path, reference) -> None:
    mounted, version = lay_out(shape, model, manifest, work / shape / "models")
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)  # readable by the runtime's UID
    name, port = NAMES[fmt], free_port()
    container_name = f"mp-ci-kserve-{fmt}-{shape}-{os.getpid()}"
    url = f"http://127.0.0.1:{port}"
    cmd = run_command(fmt, mounted, port, container_name)
    started = subprocess.run(cmd, capture_output=True, text=True)
    try:
        detail = started.stderr[-300:] if started.returncode else ""
        if not check(f"{fmt} {shape}: container started as declared", started.returncode == 0, detail):
            return
        if not check(
            f"{fmt} {shape}: ready on 127.0.0.1:{port} (container port 8080)", wait_ready(url, container_name)
        ):
            print(logs(container_name)[-2000:])
            return
        uid = subprocess.run([ENGINE, "exec", container_name, "id", "-u"], capture_output=True, text=True).stdout
        check(
            f"{fmt} {shape}: runs as the securityContext's UID",
            uid.strip() == cmd[cmd.index("--user") + 1].split(":")[0],
        )
        client = http.InferenceServerClient(url.removeprefix("http://"))
        meta = client.get_model_metadata(name)
        feed, expected = reference(model)
        check(
            f"{fmt} {shape}: V2 metadata under {name!r}, version {version}",
            meta["name"] == name and meta["versions"] == [version] and {i["name"] for i in meta["inputs"]} == set(feed),
            f"{meta['name']} {meta['versions']} {[i['name'] for i in meta['inputs']]}",
        )
        inputs = []
        for input_name, values in feed.items():
            datatype = {"float32": "FP32", "float64": "FP64", "object": "BYTES"}[values.dtype.name]
            tensor = http.InferInput(input_name, list(values.shape), datatype)
            tensor.set_data_from_numpy(values, binary_data=True)
            inputs.append(tensor)
        result = client.infer(name, inputs, model_version=version)
        errors = []
        for output_name, want in expected.items():
            got = result.as_numpy(output_name)
            errors.append(np.inf if got is None else float(np.max(np.abs(got.reshape(want.shape) - want))))
        check(
            f"{fmt} {shape}: V2 inference equals {'onnxruntime' if fmt == 'onnx' else 'pypmml'}",
            max(errors) <= 1e-5,
            f"max abs {max(errors):.2g}",
        )
        metrics = requests.get(f"{url}/metrics", timeout=10)
        check(
            f"{fmt} {shape}: Prometheus metrics on the annotated port", "nv_inference_request_success" in metrics.text
        )
        if shape == "repository":  # once per image: SIGTERM drains and exits 0, within the grace period
            stopped = subprocess.run([ENGINE, "stop", "-t", "30", container_name], capture_output=True, text=True)
            code = subprocess.run(
                [ENGINE, "inspect", "--format", "{{.State.ExitCode}}", container_name], capture_output=True, text=True
            ).stdout.strip()
            check(f"{fmt}: SIGTERM stops the server with exit 0", stopped.returncode == 0 and code == "0", code)
    finally:
        subprocess.run([ENGINE, "rm", "-f", "-t", "5", container_name], capture_output=True)


def ambiguous(fmt: str, model: Path, work: Path) -> None:
    """Two models stored side by side: the container exits 1 with one line saying what it found."""
    root = work / "ambiguous" / "models"
    for stored in ("a", "b"):
        (root / stored / "1").mkdir(parents=True)
        shutil.copy(model, root / stored / "1" / ("model" + model.suffix))
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    container_name = f"mp-ci-kserve-{fmt}-ambiguous-{os.getpid()}"
    cmd = run_command(fmt, root, free_port(), container_name)
    try:
        subprocess.run(cmd, capture_output=True, check=True)
        code = subprocess.run([ENGINE, "wait", container_name], capture_output=True, text=True).stdout.strip()
        text = logs(container_name)
        line = "cannot start: /mnt/models: ambiguous, found model directories a/, b/; expected exactly one model"
        check(f"{fmt} ambiguous storage: exit 1 with one line", code == "1" and line in text, f"exit {code}")
        check(f"{fmt} ambiguous storage: no traceback", "Traceback" not in text)
    finally:
        subprocess.run([ENGINE, "rm", "-f", container_name], capture_output=True)


def without_tmp(fmt: str, model: Path, work: Path) -> None:
    """The same container without the declared /tmp emptyDir: the read-only root is real, and the
    failure is one line saying what to mount."""
    mounted, _ = lay_out("file", model, None, work / "no-tmp" / "models")
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    container_name = f"mp-ci-kserve-{fmt}-no-tmp-{os.getpid()}"
    cmd = run_command(fmt, mounted, free_port(), container_name)
    while "--tmpfs" in cmd:
        i = cmd.index("--tmpfs")
        del cmd[i : i + 2]
    try:
        subprocess.run(cmd, capture_output=True, check=True)
        code = subprocess.run([ENGINE, "wait", container_name], capture_output=True, text=True).stdout.strip()
        text = logs(container_name)
        check(
            f"{fmt} read-only root without the /tmp emptyDir: exit 1 naming what to mount",
            code == "1" and "mount a writable directory (an emptyDir) at /tmp" in text and "Traceback" not in text,
            f"exit {code}",
        )
    finally:
        subprocess.run([ENGINE, "rm", "-f", container_name], capture_output=True)


def deployment(source: Path) -> None:
    """deploy/k8s/deployment.yaml's container as declared (the image's own entrypoint, its env, UID,
    read-only root with only /tmp writable), with the model baked into the image."""
    pod = documents(ROOT / "deploy" / "k8s" / "deployment.yaml")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port, container_name = free_port(), f"mp-ci-k8s-{os.getpid()}"
    cmd = [*pod_command(pod, container, port, container_name), container["image"], *container.get("args", [])]
    url = f"http://127.0.0.1:{port}"
    started = subprocess.run(cmd, capture_output=True, text=True)
    try:
        detail = started.stderr[-300:] if started.returncode else ""
        if not check("k8s Deployment: started as declared", started.returncode == 0, detail):
            return
        if not check("k8s Deployment: ready with a read-only root filesystem", wait_ready(url, container_name)):
            print(logs(container_name)[-2000:])
            return
        client = http.InferenceServerClient(url.removeprefix("http://"))
        feed, expected = onnx_reference(source / "model.onnx")
        (input_name,) = feed
        tensor = http.InferInput(input_name, list(feed[input_name].shape), "FP32")
        tensor.set_data_from_numpy(feed[input_name], binary_data=True)
        ((output_name, want),) = expected.items()
        got = client.infer("colour-classifier", [tensor]).as_numpy(output_name)
        err = float(np.max(np.abs(got - want)))
        check("k8s Deployment: V2 inference equals onnxruntime", err <= 1e-5, f"max abs {err:.2g}")
        grace = pod["terminationGracePeriodSeconds"]
        began = time.monotonic()
        subprocess.run([ENGINE, "stop", "-t", str(grace), container_name], capture_output=True)
        code = subprocess.run(
            [ENGINE, "inspect", "--format", "{{.State.ExitCode}}", container_name], capture_output=True, text=True
        ).stdout.strip()
        took = time.monotonic() - began
        check("k8s Deployment: SIGTERM exits 0 within terminationGracePeriodSeconds", code == "0", f"{took:.1f}s")
    finally:
        subprocess.run([ENGINE, "rm", "-f", container_name], capture_output=True)


def serve_grpc(model: Path, manifest: Path, work: Path) -> None:
    """The gRPC runtime (clusterservingruntime-onnx-grpc.yaml): only its h2c port published, answered
    by tritonclient.grpc like onnxruntime once the standard health service reports ready."""
    import tritonclient.grpc as grpcclient

    mounted, version = lay_out("version", model, manifest, work / "grpc" / "models")
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    name, port = NAMES["onnx-grpc"], free_port()
    container_name = f"mp-ci-kserve-grpc-{os.getpid()}"
    started = subprocess.run(run_command("onnx-grpc", mounted, port, container_name), capture_output=True, text=True)
    try:
        detail = started.stderr[-300:] if started.returncode else ""
        if not check("onnx-grpc: container started as declared", started.returncode == 0, detail):
            return
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline, ready = time.monotonic() + 120, False
        while not ready and time.monotonic() < deadline:
            try:
                ready = client.is_server_ready()
            except Exception:  # not listening yet
                time.sleep(0.5)
        if not check(f"onnx-grpc: ready over gRPC on 127.0.0.1:{port} (the h2c port)", ready):
            print(logs(container_name)[-2000:])
            return
        meta = client.get_model_metadata(name, as_json=True)
        check(
            "onnx-grpc: V2 gRPC metadata under the given name", meta["name"] == name and meta["versions"] == [version]
        )
        feed, expected = onnx_reference(model)
        ((input_name, x),) = feed.items()
        tensor = grpcclient.InferInput(input_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        ((output_name, want),) = expected.items()
        got = client.infer(name, [tensor]).as_numpy(output_name)
        err = float(np.max(np.abs(got - want)))
        check("onnx-grpc: V2 gRPC inference equals onnxruntime", err <= 1e-5, f"max abs {err:.2g}")
        client.close()
    finally:
        subprocess.run([ENGINE, "rm", "-f", "-t", "5", container_name], capture_output=True)


def main() -> None:
    fmt, source = sys.argv[1], Path(sys.argv[2])
    if fmt == "onnx":  # a bundle version directory: model.onnx + modelport.json
        model, manifest, reference = source / "model.onnx", source / "modelport.json", onnx_reference
    else:
        model, manifest, reference = source, None, pmml_reference
    work = Path(tempfile.mkdtemp(prefix=f"mp-ci-kserve-{fmt}-"))
    try:
        for shape in ("repository", "model", "version", "file", "file-in-dir"):
            serve_once(fmt, shape, model, manifest, work, reference)
        if fmt == "onnx":
            serve_grpc(model, manifest, work)
            ambiguous(fmt, model, work)
            without_tmp(fmt, model, work)
            deployment(source)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

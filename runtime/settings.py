"""Every server setting in one typed dataclass, read from the command line and the environment.

Precedence: command-line flag, then environment (``MODEL_REPOSITORY``, ``HOST``, ``PORT``,
``LOG_LEVEL`` and ``MODELPORT_<FLAG>`` for the rest, e.g. ``MODELPORT_MAX_QUEUE``), then the default.
The defaults are the documented limits (docs/runtime.md); a value of 0 switches a limit off where noted.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GRAPH_OPTIMIZATIONS = ("all", "extended", "basic", "disable")
LOG_LEVELS = ("debug", "info", "warning", "error")
CONTROL_MODES = ("none", "explicit", "poll")  # Triton's --model-control-mode values


@dataclass(frozen=True)
class Settings:
    repository: Path
    host: str = "0.0.0.0"
    port: int = 5000
    grpc_port: int = 8081  # V2 gRPC on the same host; 0: off
    models: tuple[str, ...] = ()  # empty: every model in the repository
    model_name: str | None = None  # serve the one model stored at --repository, in any shape, under this name
    intra_op_threads: int = 0  # 0: onnxruntime's default (one per core)
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    max_batch_size: int = 0  # adaptive batching cap in rows; 0: the model's own max_batch_size (off if none)
    batch_delay_ms: float = 0.0  # how long the batcher waits for more requests before running a batch
    max_queue: int = 256  # queued requests per model before 503 + Retry-After
    instances: int = 0  # concurrent executions per model; 0: the engine's choice (ONNX: 2 with 2+ intra-op threads)
    workers: int = 1  # server processes on the one port (runtime/workers.py)
    request_timeout: float = 60.0  # seconds from arrival to answer before 504; 0: no deadline
    max_body_mb: int = 64  # request body limit in MiB (413), Triton's default
    max_elements: int = 16 * 1024 * 1024  # elements per tensor (413)
    max_image_pixels: int = 40_000_000  # decoded image pixels (decompression bombs, 413)
    max_json_depth: int = 32  # nesting of a JSON body (400)
    shutdown_grace: float = 20.0  # seconds in-flight requests get to finish after SIGTERM
    allow_partial: bool = False  # serve the loadable models when one fails to load
    all_versions: bool = False  # load every version directory, whatever config.pbtxt's version policy says
    log_level: str = "info"
    # model control (docs/runtime.md "Model control"): none = load everything at start, nothing changes;
    # explicit = the repository API loads and unloads; poll = the repository is rescanned every poll_secs
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ()  # explicit mode: the models loaded at start
    repository_poll_secs: float = 15.0  # poll mode: seconds between scans (Triton's default)
    # access control (SECURITY.md): tokens, CORS, TLS
    auth_tokens_file: Path | None = None
    auth_metrics: bool = False  # /metrics needs a token too
    allow_unauthenticated_admin: bool = False  # the repository API without an admin token
    cors_origins: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_pixels: int = 100_000_000  # decoded pixels over all images of one V2 request (413)

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 1024 * 1024


# flag name -> (env var, type, help); order is the --help order.
_OPTIONS: dict[str, tuple[str, type, str]] = {
    "model_name": (
        "MODELPORT_MODEL_NAME",
        str,
        "serve the one model stored at --repository (a repository of one model, a model or version directory, "
        "or a bare .onnx/.pmml file) under this name, as KServe's {{.Name}}",
    ),
    "host": ("HOST", str, "address to listen on (default 0.0.0.0)"),
    "port": ("PORT", int, "port to listen on (default 5000)"),
    "grpc_port": ("MODELPORT_GRPC_PORT", int, "V2 gRPC port (default 8081; 0: no gRPC)"),
    "intra_op_threads": ("MODELPORT_INTRA_OP_THREADS", int, "onnxruntime intra-op threads (0: one per core)"),
    "inter_op_threads": ("MODELPORT_INTER_OP_THREADS", int, "onnxruntime inter-op threads (0: default)"),
    "graph_optimization": ("MODELPORT_GRAPH_OPTIMIZATION", str, "onnxruntime graph optimisation level"),
    "max_batch_size": ("MODELPORT_MAX_BATCH_SIZE", int, "adaptive batching: most rows per merged batch"),
    "batch_delay_ms": ("MODELPORT_BATCH_DELAY_MS", float, "adaptive batching: wait this long for more requests"),
    "max_queue": ("MODELPORT_MAX_QUEUE", int, "queued requests per model before 503 (default 256)"),
    "instances": ("MODELPORT_INSTANCES", int, "runs at once per model (default 0: 2 for ONNX with 2+ threads, else 1)"),
    "workers": ("MODELPORT_WORKERS", int, "server processes sharing the port (default 1; see docs/runtime.md)"),
    "request_timeout": ("MODELPORT_REQUEST_TIMEOUT", float, "per-request deadline in seconds, 504 after (0: none)"),
    "max_body_mb": ("MODELPORT_MAX_BODY_MB", int, "request body limit in MiB (default 64)"),
    "max_elements": ("MODELPORT_MAX_ELEMENTS", int, "elements per tensor (default 16777216)"),
    "max_image_pixels": ("MODELPORT_MAX_IMAGE_PIXELS", int, "pixels per decoded image (default 40000000)"),
    "max_json_depth": ("MODELPORT_MAX_JSON_DEPTH", int, "JSON nesting limit (default 32)"),
    "max_request_pixels": (
        "MODELPORT_MAX_REQUEST_PIXELS",
        int,
        "pixels of all images in one V2 request together (default 100000000)",
    ),
    "model_control_mode": ("MODELPORT_MODEL_CONTROL_MODE", str, "none | explicit | poll (default none)"),
    "repository_poll_secs": ("MODELPORT_REPOSITORY_POLL_SECS", float, "poll mode: seconds between scans (15)"),
    "auth_tokens_file": ("MODELPORT_AUTH_TOKENS_FILE", Path, "bearer tokens, one 'TOKEN SCOPE' per line"),
    "tls_cert": ("MODELPORT_TLS_CERT", Path, "TLS certificate chain (PEM); with --tls-key serves https"),
    "tls_key": ("MODELPORT_TLS_KEY", Path, "TLS private key (PEM)"),
    "shutdown_grace": ("MODELPORT_SHUTDOWN_GRACE", float, "seconds in-flight requests get after SIGTERM"),
    "log_level": ("LOG_LEVEL", str, "debug | info | warning | error (default info)"),
}


# on/off flags: name -> (env var, help)
_FLAGS: dict[str, tuple[str, str]] = {
    "all_versions": ("MODELPORT_ALL_VERSIONS", "load every numeric version, whatever config.pbtxt's policy says"),
    "auth_metrics": ("MODELPORT_AUTH_METRICS", "with --auth-tokens-file, /metrics needs a token too"),
    "allow_unauthenticated_admin": (
        "MODELPORT_ALLOW_UNAUTHENTICATED_ADMIN",
        "serve the repository API (load/unload) with no admin token: anyone who reaches the port may use it",
    ),
}
# repeatable flags: name -> (flag, env var, help)
_LISTS: dict[str, tuple[str, str, str]] = {
    "load_models": ("load-model", "MODELPORT_LOAD_MODEL", "explicit mode: load this model at start (repeatable)"),
    "cors_origins": ("cors-origin", "MODELPORT_CORS_ORIGIN", "let pages from this origin call (repeatable; *: any)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Serve a modelport model repository over HTTP (KServe V2 + simple API) and gRPC (KServe V2).",
    )
    parser.add_argument("--repository", metavar="DIR", help="model repository directory (env MODEL_REPOSITORY)")
    parser.add_argument(
        "--model", action="append", dest="models", metavar="NAME", help="serve only this model (repeatable)"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        default=None,
        help="start even if a model fails to load; that model answers 503 (env MODELPORT_ALLOW_PARTIAL=1)",
    )
    for name, (env, text) in _FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), action="store_true", default=None, help=f"{text} (env {env}=1)"
        )
    for name, (flag, env, text) in _LISTS.items():
        parser.add_argument(f"--{flag}", action="append", dest=name, metavar="X", help=f"{text} (env {env}=a,b)")
    for name, (env, kind, text) in _OPTIONS.items():
        extra: dict = {}
        if name == "graph_optimization":
            extra["choices"] = GRAPH_OPTIMIZATIONS
        if name == "log_level":
            extra["type"] = str.lower
            extra["choices"] = LOG_LEVELS
        elif name == "model_control_mode":
            extra["type"] = str.lower
            extra["choices"] = CONTROL_MODES
        else:
            extra["type"] = kind
            if "choices" not in extra:
                extra["metavar"] = {int: "N", float: "X", Path: "FILE"}.get(kind, name.split("_")[-1].upper())
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=f"{text} (env {env})", **extra)
    return parser


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` and ``env``; exits with a usage message on a bad value (argparse's way)."""
    env = os.environ if env is None else env
    parser = _parser()
    args = parser.parse_args(argv)
    repository = args.repository or env.get("MODEL_REPOSITORY")
    if not repository:
        parser.error("--repository (or MODEL_REPOSITORY) is required")
    values: dict = {"repository": Path(repository)}
    for name, (env_name, kind, _text) in _OPTIONS.items():
        value = getattr(args, name)
        if value is None and env.get(env_name):
            try:
                lower = name in ("log_level", "model_control_mode")
                value = kind(env[env_name].lower() if lower else env[env_name])
            except ValueError:
                parser.error(f"{env_name}={env[env_name]!r} is not a valid {kind.__name__}")
        if value is not None:
            values[name] = value
    models = args.models or [m for m in env.get("MODELPORT_MODEL", "").split(",") if m]
    values["models"] = tuple(models)
    allow = args.allow_partial
    if allow is None:
        allow = env.get("MODELPORT_ALLOW_PARTIAL", "").lower() in ("1", "true", "yes")
    values["allow_partial"] = bool(allow)
    for name, (env_name, _text) in _FLAGS.items():
        flag = getattr(args, name)
        if flag is None:
            flag = env.get(env_name, "").lower() in ("1", "true", "yes")
        values[name] = bool(flag)
    for name, (_flag, env_name, _text) in _LISTS.items():
        values[name] = tuple(getattr(args, name) or [x for x in env.get(env_name, "").split(",") if x])
    if values.get("model_name") and values["models"]:
        parser.error("--model-name serves the one model stored at --repository; drop --model")
    settings = Settings(**values)
    problems = _check(settings)
    if problems:
        parser.error("; ".join(problems))
    return settings


def _check(settings: Settings) -> list[str]:
    problems = []
    if settings.graph_optimization not in GRAPH_OPTIMIZATIONS:
        problems.append(f"graph optimisation must be one of {', '.join(GRAPH_OPTIMIZATIONS)}")
    if settings.log_level not in LOG_LEVELS:
        problems.append(f"log level must be one of {', '.join(LOG_LEVELS)}")
    if settings.model_control_mode not in CONTROL_MODES:
        problems.append(f"model control mode must be one of {', '.join(CONTROL_MODES)}")
    if settings.load_models and settings.model_control_mode != "explicit":
        problems.append("--load-model needs --model-control-mode explicit")
    if settings.model_control_mode == "explicit" and settings.workers > 1:
        problems.append(
            "--model-control-mode explicit needs --workers 1: a load or unload call reaches one worker only "
            "(poll mode reloads every worker)"
        )
    if settings.model_control_mode == "poll" and settings.repository_poll_secs <= 0:
        problems.append("--repository-poll-secs must be positive")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        problems.append("--tls-cert and --tls-key go together")
    positive = (
        "max_queue",
        "workers",
        "max_body_mb",
        "max_elements",
        "max_image_pixels",
        "max_json_depth",
        "max_request_pixels",
    )
    for name in positive:
        if getattr(settings, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    non_negative = ("max_batch_size", "batch_delay_ms", "request_timeout", "intra_op_threads", "inter_op_threads")
    for name in (*non_negative, "instances"):
        if getattr(settings, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must not be negative")
    if not 0 < settings.port < 65536:
        problems.append("--port must be 1..65535")
    if not 0 <= settings.grpc_port < 65536:
        problems.append("--grpc-port must be 0..65535 (0: no gRPC)")
    if settings.grpc_port == settings.port:
        problems.append("--grpc-port must differ from --port")
    return problems

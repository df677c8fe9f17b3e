"""Container start-up, kept compatible with the old platform's deployment scripts, then the server.

``python -m runtime.bootstrap [server args...]``:

1. ``HOSTS=ip<->name,ip<->name`` is appended to /etc/hosts where the process may write it (the
   serve image runs as a non-root user, so usually it may not: the log then names the equivalent
   ``--add-host`` flags, which are the portable way to do this).
2. When the model repository holds no model and ``XQUERY_ADDR`` + ``MODEL_ID`` (or ``MODEL_URL``)
   are set, the model is fetched once, with the same retries and archive checks as the converter,
   and laid out as ``REPO/NAME/1/model.onnx`` (or ``model.pmml``). Only ONNX and PMML are served
   as they are; anything else must go through ``convert`` first. With no model and nothing to
   fetch, the start fails with a message saying so (exit status 2).
3. The server replaces this process (``exec``), so signals reach it directly.

Standard library only, plus ``bundle.fetch``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from bundle import fetch

log = logging.getLogger("modelport.bootstrap")
HOSTS_FILE = Path("/etc/hosts")
SERVABLE_SUFFIXES = {".onnx": "model.onnx", ".pmml": "model.pmml"}


class BootstrapError(Exception):
    pass


def parse_hosts(value: str) -> list[tuple[str, str]]:
    """``"10.0.0.5<->repo.internal,10.0.0.6<->db"`` -> [(ip, name), ...]; malformed entries raise."""
    pairs = []
    for entry in filter(None, (e.strip() for e in value.split(","))):
        ip, sep, name = entry.partition("<->")
        if not sep or not ip.strip() or not name.strip():
            raise BootstrapError(f"HOSTS entry {entry!r} is not of the form ip<->name")
        pairs.append((ip.strip(), name.strip()))
    return pairs


def apply_hosts(value: str, hosts_file: Path = HOSTS_FILE) -> int:
    """Append the entries not already present; return how many were written (0 if not permitted)."""
    pairs = parse_hosts(value)
    if not pairs:
        return 0
    try:
        existing = hosts_file.read_text()
    except OSError:
        existing = ""
    missing = [(ip, name) for ip, name in pairs if f"{ip}\t{name}" not in existing]
    if not missing:
        return 0
    try:
        with open(hosts_file, "a") as f:
            f.write("".join(f"{ip}\t{name}\n" for ip, name in missing))
    except OSError as exc:
        flags = " ".join(f"--add-host {name}:{ip}" for ip, name in missing)
        log.warning("HOSTS: cannot write %s (%s); pass %s to docker/podman run instead", hosts_file, exc, flags)
        return 0
    log.info("HOSTS: appended %d entries to %s", len(missing), hosts_file)
    return len(missing)


def has_models(repository: Path) -> bool:
    return repository.is_dir() and any(
        version.is_dir() and version.name.isdigit()
        for model in repository.iterdir()
        if model.is_dir()
        for version in model.iterdir()
    )


def _servable_file(root: Path) -> Path:
    candidates = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in SERVABLE_SUFFIXES]
    if len(candidates) != 1:
        found = ", ".join(p.name for p in sorted(root.rglob("*")) if p.is_file())[:300] or "nothing"
        raise BootstrapError(
            f"the fetched model must hold exactly one .onnx or .pmml file (found: {found}); "
            "convert other formats with `python -m convert` and bake the bundle into the image"
        )
    return candidates[0]


def fetch_into(repository: Path, env: Mapping[str, str]) -> Path:
    """Fetch the configured model into ``repository/NAME/1/``; return that version directory."""
    name = env.get("MODEL_NAME") or env.get("MODEL_ID") or "model"
    version_dir = repository / name / "1"
    repository.mkdir(parents=True, exist_ok=True)
    with fetch.temporary_directory(repository, prefix=".fetch-") as work:
        try:
            root = fetch.fetch_model(env.get("MODEL_URL", ""), work / "model")
        except fetch.ArtifactError as exc:
            raise BootstrapError(str(exc)) from None
        model_file = _servable_file(root)
        staging = work / "version"
        staging.mkdir()
        shutil.move(model_file, staging / SERVABLE_SUFFIXES[model_file.suffix.lower()])
        version_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, version_dir)
    log.info("fetched %s into %s", model_file.name, version_dir)
    return version_dir


def prepare(env: Mapping[str, str]) -> None:
    if env.get("HOSTS"):
        apply_hosts(env["HOSTS"])
    repository = Path(env.get("MODEL_REPOSITORY", "/models"))
    if env.get("MODELPORT_MODEL_NAME"):  # one stored model in any shape: the server checks it (runtime/storage.py)
        return
    if has_models(repository):
        return
    if env.get("MODEL_URL") or (fetch.repository_configured(env) and env.get("MODEL_ID")):
        fetch_into(repository, env)
        return
    # The server cannot load models later, so an empty start would only ever answer 404s.
    raise BootstrapError(
        f"no model in {repository}: bake one in (make image MODEL=... NAME=...) or set XQUERY_ADDR + MODEL_ID "
        "(+ MODEL_VERSION, GUID) or MODEL_URL to fetch an ONNX or PMML model at start"
    )


def flag_from_args(argv: list[str], flag: str) -> str | None:
    """A server flag's value (``--flag V`` or ``--flag=V``); flags win over the environment, as in the server."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.partition("=")[2]
    return None


def repository_from_args(argv: list[str]) -> str | None:
    return flag_from_args(argv, "--repository")


def main(argv: list[str]) -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(name)s %(message)s")
    env = dict(os.environ)
    if repository := repository_from_args(argv):
        env["MODEL_REPOSITORY"] = repository
    if model_name := flag_from_args(argv, "--model-name"):
        env["MODELPORT_MODEL_NAME"] = model_name
    try:
        prepare(env)
    except BootstrapError as exc:
        log.error("start-up failed: %s", exc)
        sys.exit(2)
    os.execv(sys.executable, [sys.executable, "-m", "runtime", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])

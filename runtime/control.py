"""Model control: load, reload and unload models while the server runs, without a moment of downtime.

Triton's model repository extension (index, load, unload) and its control modes, minus their known
pains (a POLL reload that unloads the old version before the new one is up; POLL stuck after a failed
load; an explicit load that fails answering with a timeout). Here a load of a model:

1. holds that model's lock, so two loads (or a load and an unload) of one model never interleave;
2. builds and warms every version the policy selects in the thread pool, **beside** the serving ones;
3. if any version fails, closes what it built, leaves the old versions serving, records the reason
   (index, the load call's answer, one log line) and raises ``ModelLoadError``;
4. otherwise starts the new batchers and swaps the model's version map in one assignment;
5. then drains the old entries (waits until no request holds them), stops their batchers and closes
   their engines.

Poll mode rescans the repository every ``--repository-poll-secs``. A model whose files changed (size or
mtime of anything under its directory) is loaded as above; a failed attempt is not retried until the
files change again, so a broken upload neither loops nor blocks the next fixed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

from runtime.engines import Engine
from runtime.errors import ModelLoadError
from runtime.repository import ModelVersion, Repository, find_models

log = logging.getLogger("runtime.control")

DRAIN_POLL_S = 0.005

# the model states of Triton's repository index
READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


def fingerprint(model_dir: Path) -> tuple:
    """What poll mode compares: (relative path, size, mtime) of every file under the model directory."""
    found = []
    try:
        for path in sorted(model_dir.rglob("*")):
            try:
                st = path.stat()
            except OSError:
                continue
            if path.is_file():
                found.append((str(path.relative_to(model_dir)), st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(found)


class ModelControl:
    """Load / unload / index over a ``Repository``; the app supplies how batchers start and stop.

    ``attach(entry, engine)`` starts serving a freshly built entry (installs its ``LoadedModel`` with a
    started batcher); ``detach(entry)`` stops that batcher once the entry has drained. ``drain_timeout``
    bounds the wait for requests still holding a retired entry (then its batcher answers the stragglers
    503)."""

    def __init__(
        self,
        repository: Repository,
        executor: Callable[[], Executor],
        attach: Callable[[ModelVersion, Engine], None],
        detach: Callable[[ModelVersion], Awaitable[None]],
        drain_timeout: float = 60.0,
    ) -> None:
        self.repository = repository
        self._executor = executor
        self._attach = attach
        self._detach = detach
        self.drain_timeout = drain_timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._transitions: dict[str, tuple[str, list[str]]] = {}  # name -> (LOADING|UNLOADING, versions)
        self._seen: dict[str, tuple] = {}  # poll mode: fingerprint at the last load attempt

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str) -> list[str]:
        """Load (or reload) ``name``; return the versions now served. Raises ``ModelLoadError``."""
        async with self.lock(name):
            self._seen[name] = fingerprint(self.repository.root / name)
            try:
                planned = self.repository.plan(name)
            except ModelLoadError as exc:
                self._fail(name, {"": str(exc)})
                raise
            self._transitions[name] = (LOADING, list(planned))
            try:
                built = await self._build(planned)
            finally:
                self._transitions.pop(name, None)
            failures = {v: e.error for v, e in planned.items() if e.error is not None}
            if failures:
                await self._close([engine for _, engine in built])
                self._fail(name, failures)
                version, reason = next(iter(failures.items()))
                raise ModelLoadError(f"failed to load model {name!r} version {version}: {reason}")
            for entry, engine in built:
                self._attach(entry, engine)  # the entry serves: its LoadedModel installed, batcher started
            old = self.repository.swap(name, planned)
            await self._drain(old)
            versions = sorted(planned, key=int)
            log.info(
                "model %s: serving version%s %s%s",
                name,
                "s" if len(versions) > 1 else "",
                ", ".join(versions),
                f" (replaced {len(old)} entr{'ies' if len(old) != 1 else 'y'})" if old else "",
            )
            return versions

    async def unload(self, name: str, reason: str = "unloaded") -> None:
        """Stop serving ``name``; requests already holding it finish first."""
        async with self.lock(name):
            if name not in self.repository.models:
                if name not in self.repository.reasons and name not in find_models(self.repository.root):
                    raise ModelLoadError(f"unknown model {name!r}")
                self.repository.reasons[name] = {"": reason}
                return
            self._transitions[name] = (UNLOADING, list(self.repository.models[name]))
            try:
                old = self.repository.remove(name, reason)
                await self._drain(old)
            finally:
                self._transitions.pop(name, None)
            log.info("model %s: %s", name, reason)

    async def _build(self, planned: dict[str, ModelVersion]) -> list[tuple[ModelVersion, Engine]]:
        """Build every planned version in the pool (one after another: the pool also serves requests)."""
        loop = asyncio.get_running_loop()
        built: list[tuple[ModelVersion, Engine]] = []
        for entry in planned.values():
            engine, error = await loop.run_in_executor(self._executor(), self.repository.build, entry)
            entry.error = error
            if engine is not None:
                built.append((entry, engine))
        return built

    async def _close(self, engines: list[Engine]) -> None:
        loop = asyncio.get_running_loop()
        for engine in engines:
            try:
                await loop.run_in_executor(self._executor(), engine.close)
            except Exception:  # one engine failing to close must not keep the others open
                log.exception("closing an engine failed")

    async def _drain(self, old: list[ModelVersion]) -> None:
        """Wait until no request holds the retired entries, then stop their batchers and close them."""
        deadline = time.monotonic() + self.drain_timeout
        while any(e.inflight for e in old) and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        for entry in old:
            if entry.loaded is not None:  # stays installed (closed): its manifest is still read
                await self._detach(entry)
                await self._close([entry.loaded.engine])
            entry.closed = True

    def _fail(self, name: str, failures: dict[str, str]) -> None:
        serving = ", ".join(sorted(self.repository.models.get(name, {}), key=int)) or "nothing"
        for version, reason in failures.items():
            log.error("model %s version %s not loaded (still serving: %s): %s", name, version or "-", serving, reason)
        self.repository.reasons[name] = failures

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: one row per model version known, with state and reason."""
        repo = self.repository
        try:
            on_disk = list(find_models(repo.root))
        except ModelLoadError:
            on_disk = []
        names = sorted(set(on_disk) | set(repo.models) | set(repo.reasons))
        if repo.only:
            names = [n for n in names if n in repo.only]
        rows: list[dict[str, str]] = []
        for name in names:
            served = repo.models.get(name, {})
            reasons = repo.reasons.get(name, {})
            transition = self._transitions.get(name)
            for version in sorted(served, key=int):
                entry = served[version]
                if transition is not None and transition[0] == UNLOADING:
                    state, reason = UNLOADING, ""
                elif entry.ready:
                    state, reason = READY, ""
                    if version in reasons:
                        reason = f"serving the loaded copy; the last load failed: {reasons[version]}"
                elif entry.error is not None:
                    state, reason = UNAVAILABLE, entry.error
                else:
                    state, reason = LOADING, ""
                rows.append({"name": name, "version": version, "state": state, "reason": reason})
            if transition is not None and transition[0] == LOADING:
                for version in transition[1]:
                    if version not in served:
                        rows.append({"name": name, "version": version, "state": LOADING, "reason": ""})
            for version, reason in reasons.items():
                if version not in served and (transition is None or version not in transition[1]):
                    rows.append({"name": name, "version": version, "state": UNAVAILABLE, "reason": reason})
            if not any(row["name"] == name for row in rows):
                rows.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": "not loaded"})
        if ready_only:
            rows = [row for row in rows if row["state"] == READY]
        return rows

    async def poll_once(self) -> None:
        """One poll-mode scan: load new or changed models, unload removed ones."""
        try:
            found = find_models(self.repository.root)
        except ModelLoadError as exc:
            log.error("poll: %s", exc)
            return
        names = [n for n in found if not self.repository.only or n in self.repository.only]
        for name in names:
            if fingerprint(self.repository.root / name) != self._seen.get(name):
                with contextlib.suppress(ModelLoadError):  # logged and recorded; retried when files change
                    await self.load(name)
        for name in list(self.repository.models):
            if name not in found:
                await self.unload(name, "removed from the repository")
                self._seen.pop(name, None)

    def remember(self, name: str) -> None:
        """Poll mode: the start-up load counts as the first attempt for ``name``'s current files."""
        self._seen[name] = fingerprint(self.repository.root / name)

    async def poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll must never end the loop
                log.exception("poll failed")

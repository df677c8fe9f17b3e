"""Bearer tokens with scopes, read from ``--auth-tokens-file``, checked on every request.

The file holds one ``TOKEN SCOPE`` per line (scope ``infer`` or ``admin``; ``#`` starts a comment).
``admin`` includes ``infer``. Each route declares the scope it needs (``Scope.OPEN`` for health, the
static page and, unless ``--auth-metrics``, ``/metrics``); a route that declares nothing needs ``infer``,
so a route added later is protected by default rather than open by accident.

Why it is built this way:

- Only the SHA-256 of each token is kept, and a presented token is hashed and compared with **every**
  stored digest with ``hmac.compare_digest`` (no early exit), so neither the comparison nor the
  number of tokens tried leaks through timing which bytes matched.
- A token is never part of a log line or an error message: errors say "missing", "unknown" or "the
  scope is X", and file problems name the line number, not the line.
- Only the ``Authorization`` header counts. A token in the query string is ignored (URLs end up in
  proxy logs, browser history and ``Referer`` headers). The scheme is case-insensitive (RFC 7235).
- A missing or unknown token is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750); a known token whose
  scope is too small is 403.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from runtime.errors import ModelportError

log = logging.getLogger("runtime.auth")

MIN_TOKEN_LENGTH = 16  # shorter tokens can be guessed; the file is refused
MAX_TOKEN_LENGTH = 4096  # longer presented tokens are refused before hashing
REALM = 'Bearer realm="modelport"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Scope(enum.IntEnum):
    """What a route needs; a token grants its scope and everything below it."""

    OPEN = 0
    INFER = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Unauthorized(ModelportError):
    """No usable credentials: 401 with a ``WWW-Authenticate`` challenge."""

    status = 401
    grpc_code = "UNAUTHENTICATED"

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        challenge = REALM if error is None else f'{REALM}, error="{error}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(ModelportError):
    """Valid credentials whose scope does not cover the route."""

    status = 403
    grpc_code = "PERMISSION_DENIED"


class TokenFileError(ValueError):
    """The tokens file is unreadable or malformed; the message names the file and the line number."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class TokenTable:
    """The configured tokens (as SHA-256 digests) and their scopes."""

    entries: tuple[tuple[bytes, Scope], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @property
    def has_admin(self) -> bool:
        return any(scope is Scope.ADMIN for _, scope in self.entries)

    def scope_of(self, token: str) -> Scope | None:
        """The token's scope, or None when it is unknown; compares against every entry (timing-safe)."""
        presented = _digest(token)
        found: Scope | None = None
        for digest, scope in self.entries:
            if hmac.compare_digest(presented, digest):
                found = scope
        return found


def read_tokens(path: Path) -> TokenTable:
    """Parse ``path``: ``TOKEN SCOPE`` per line, ``#`` comments, blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"{path}: cannot read the tokens file ({type(exc).__name__}: {exc.args[-1]})") from None
    entries: list[tuple[bytes, Scope]] = []
    seen: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenFileError(f"{path}, line {number}: expected 'TOKEN SCOPE' (two fields), found {len(fields)}")
        token, scope_name = fields
        if scope_name.lower() not in ("infer", "admin"):
            raise TokenFileError(f"{path}, line {number}: scope must be 'infer' or 'admin'")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenFileError(f"{path}, line {number}: the token is shorter than {MIN_TOKEN_LENGTH} characters")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenFileError(f"{path}, line {number}: the token is longer than {MAX_TOKEN_LENGTH} characters")
        digest = _digest(token)
        if digest in seen:
            raise TokenFileError(f"{path}, line {number}: this token is listed twice")
        seen.add(digest)
        entries.append((digest, Scope[scope_name.upper()]))
    if not entries:
        raise TokenFileError(f"{path}: no tokens (expected 'TOKEN SCOPE' lines)")
    try:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s is readable by other users; chmod 600 it", path)
    except OSError:
        pass
    return TokenTable(tuple(entries))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def authorize(table: TokenTable, header: str | None, needed: Scope, what: str) -> Scope | None:
    """Check one request; raise ``Unauthorized`` / ``Forbidden`` or return the caller's scope.

    ``what`` names the call for the 403 message (e.g. ``POST /v2/repository/index``)."""
    if needed is Scope.OPEN or not table.enabled:
        return None
    if header is None or not header.strip():
        raise Unauthorized(f"{what} needs a bearer token: send 'Authorization: Bearer TOKEN'")
    token = bearer_token(header)
    if token is None:
        raise Unauthorized(f"{what} needs a bearer token: send 'Authorization: Bearer TOKEN'", "invalid_request")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the bearer token is not valid", "invalid_token")
    scope = table.scope_of(token)
    if scope is None:
        raise Unauthorized("the bearer token is not valid", "invalid_token")
    if scope < needed:
        raise Forbidden(f"{what} needs a token with the {needed.label!r} scope; this token has {scope.label!r}")
    return scope


ADMIN_OFF = (
    "the repository API is off because no admin token is configured "
    "(add a 'TOKEN admin' line to --auth-tokens-file, or pass --allow-unauthenticated-admin)"
)


def auth_middleware(table: TokenTable, scope_of_route: Callable[[web.Request], Scope], admin_enabled: bool):
    """Check every request against the scope its route needs (``scope_of_route``); only with tokens.

    ``admin_enabled`` False closes the admin routes to everyone (403), the state when no admin token
    is configured and ``--allow-unauthenticated-admin`` is not given. Without a token file nothing else is
    checked, so no middleware runs at all: ``admin_closed`` wraps the admin routes' handlers instead."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = scope_of_route(request)
        what = f"{request.method} {request.path}"
        if needed is Scope.ADMIN and not admin_enabled:
            raise Forbidden(f"{what}: {ADMIN_OFF}")
        authorize(table, request.headers.get("Authorization"), needed, what)
        return await handler(request)

    return check


def admin_closed(handler: Handler) -> Handler:
    """An admin route's handler when the repository API is off and no token file is given: always 403."""

    async def closed(request: web.Request) -> web.StreamResponse:
        raise Forbidden(f"{request.method} {request.path}: {ADMIN_OFF}")

    return closed

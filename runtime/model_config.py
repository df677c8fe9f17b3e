"""The parts of Triton's ``config.pbtxt`` the runtime reads: the version policy.

Triton chooses which version directories of a model to serve from ``version_policy``:

    version_policy: { latest { num_versions: 2 } }     # the 2 highest versions
    version_policy: { all { } }                         # every version
    version_policy: { specific { versions: [1, 3] } }   # exactly these

and serves the highest version alone when there is no policy (``latest 1``). The file is protobuf text
format; the runtime does not import protobuf, so a small reader below parses that syntax (fields,
nested messages in ``{}`` or ``<>``, lists in ``[]``, strings, numbers, ``#`` comments) into dicts and
reads ``version_policy`` from it. Other fields are parsed (so a syntax error anywhere is reported)
but not used: the manifest beside the model file is the runtime's source for tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE = "config.pbtxt"

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*                      # whitespace, comments
    |(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)[fF]?)
    |(?P<id>[A-Za-z_][A-Za-z0-9_.]*)
    |(?P<sym>[{}<>\[\]:,;])""",
    re.VERBOSE,
)


class ConfigError(ValueError):
    """config.pbtxt cannot be parsed or its version policy is invalid; the message names the file."""


def _tokens(text: str, where: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConfigError(f"{where}, line {line}: unexpected character {text[pos]!r}")
        kind = match.lastgroup
        if kind is not None:
            out.append((kind, match.group(kind), line))
        line += match.group(0).count("\n")
        pos = match.end()
    return out


def parse_text_proto(text: str, where: str = CONFIG_FILE) -> dict[str, list]:
    """Protobuf text format -> {field: [values]}; nested messages are dicts of the same shape."""
    tokens = _tokens(text, where)
    pos = 0

    def fail(message: str) -> ConfigError:
        line = tokens[pos][2] if pos < len(tokens) else (tokens[-1][2] if tokens else 1)
        return ConfigError(f"{where}, line {line}: {message}")

    def peek() -> tuple[str, str, int] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(symbol: str | None = None) -> tuple[str, str, int]:
        nonlocal pos
        token = peek()
        if token is None:
            raise fail(f"expected {symbol or 'a value'}, found the end of the file")
        if symbol is not None and token[1] != symbol:
            raise fail(f"expected {symbol!r}, found {token[1]!r}")
        pos += 1
        return token

    def scalar() -> object:
        kind, value, _ = take()
        if kind == "num":
            number = value.rstrip("fF")
            return float(number) if any(c in number for c in ".eE") else int(number)
        if kind == "str":
            return value[1:-1]
        if kind == "id":
            return {"true": True, "false": False}.get(value, value)
        raise fail(f"expected a value, found {value!r}")

    def message(close: str | None) -> dict[str, list]:
        fields: dict[str, list] = {}
        while True:
            token = peek()
            if token is None:
                if close is not None:
                    raise fail(f"missing {close!r}")
                return fields
            if close is not None and token[1] == close:
                take(close)
                return fields
            if token[1] in (",", ";"):
                take()
                continue
            kind, name, _ = take()
            if kind != "id":
                raise fail(f"expected a field name, found {name!r}")
            has_colon = peek() is not None and peek()[1] == ":"  # type: ignore[index]
            if has_colon:
                take(":")
            values = fields.setdefault(name, [])
            following = peek()
            if following is not None and following[1] in ("{", "<"):
                take()
                values.append(message("}" if following[1] == "{" else ">"))
            elif following is not None and following[1] == "[":
                take("[")
                while peek() is not None and peek()[1] != "]":  # type: ignore[index]
                    nxt = peek()
                    if nxt[1] in ("{", "<"):  # type: ignore[index]
                        take()
                        values.append(message("}" if nxt[1] == "{" else ">"))  # type: ignore[index]
                    else:
                        values.append(scalar())
                    if peek() is not None and peek()[1] == ",":  # type: ignore[index]
                        take(",")
                take("]")
            elif has_colon:
                values.append(scalar())
            else:
                raise fail(f"field {name!r} needs ':' and a value or a {{ message }}")

    return message(None)


@dataclass(frozen=True)
class VersionPolicy:
    """Which numeric versions to serve: ``latest`` N, ``all``, or ``specific`` versions."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = field(default=())

    def select(self, available: list[int]) -> list[int]:
        """The versions to load from ``available``, highest first."""
        ordered = sorted(set(available), reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: self.num_versions]

    def describe(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "specific":
            return "specific " + ", ".join(map(str, self.versions))
        return f"latest {self.num_versions}"


LATEST_ONE = VersionPolicy()
ALL = VersionPolicy("all")


def _one(values: list, where: str, name: str) -> dict:
    if len(values) != 1 or not isinstance(values[0], dict):
        raise ConfigError(f"{where}: {name} must be given once, as a {{ message }}")
    return values[0]


def version_policy(config: dict[str, list], where: str = CONFIG_FILE) -> VersionPolicy:
    """``version_policy`` of a parsed config; ``latest 1`` when absent."""
    if "version_policy" not in config:
        return LATEST_ONE
    policy = _one(config["version_policy"], where, "version_policy")
    kinds = [k for k in policy if k in ("latest", "all", "specific")]
    unknown = [k for k in policy if k not in ("latest", "all", "specific")]
    if unknown or len(kinds) != 1:
        raise ConfigError(f"{where}: version_policy must hold exactly one of latest {{}}, all {{}} or specific {{}}")
    kind = kinds[0]
    body = _one(policy[kind], where, f"version_policy.{kind}")
    if kind == "all":
        return ALL
    if kind == "latest":
        count = body.get("num_versions", [1])
        if len(count) != 1 or not isinstance(count[0], int) or isinstance(count[0], bool) or count[0] < 1:
            raise ConfigError(f"{where}: version_policy.latest.num_versions must be one integer of at least 1")
        return VersionPolicy("latest", num_versions=count[0])
    versions = body.get("versions", [])
    if not versions or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in versions):
        raise ConfigError(f"{where}: version_policy.specific.versions must list non-negative integer versions")
    return VersionPolicy("specific", versions=tuple(sorted(set(versions), reverse=True)))


def read_version_policy(model_dir: Path) -> VersionPolicy:
    """The policy in ``model_dir/config.pbtxt`` (``latest 1`` when the file or the field is absent)."""
    path = model_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LATEST_ONE
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({type(exc).__name__})") from None
    return version_policy(parse_text_proto(text, str(path)), str(path))

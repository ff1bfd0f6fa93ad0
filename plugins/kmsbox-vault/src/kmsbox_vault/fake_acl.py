"""ACL policies of the Vault fake: parsing them (HCL or JSON) and deciding a request's capability.

Follows Vault's rules for what the fake serves: a policy is a set of ``path`` rules
with ``capabilities``; ``+`` matches one path segment and a trailing ``*`` any
suffix; rules for the same path in a token's policies add up; an exact path beats
any pattern, then Vault's priority order picks among patterns; ``deny`` wins over
everything. A rule needing more than capabilities (``allowed_parameters``,
``required_parameters``, ``min_wrapping_ttl``...) is refused when the policy is
written, rather than enforced wrongly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["CAPABILITIES", "DEFAULT_POLICY", "Acl", "PolicyParseError", "parse_policy"]

CAPABILITIES = frozenset(
    {"create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe", "recover"}
)

#: The parts of Vault's built-in ``default`` policy that concern the paths the fake serves.
DEFAULT_POLICY = """
# Allow tokens to look up, renew and revoke themselves, and to ask what they may do.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}
path "auth/token/renew-self" {
    capabilities = ["update"]
}
path "auth/token/revoke-self" {
    capabilities = ["update"]
}
path "sys/capabilities-self" {
    capabilities = ["update"]
}
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}
"""

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<punct>[{}\[\]=,])
    """,
    re.VERBOSE | re.DOTALL,
)


class PolicyParseError(ValueError):
    """A policy that does not parse, or uses what the fake does not model (Vault answers 400)."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise PolicyParseError(f"unexpected character {text[position]!r} at offset {position}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            value = match.group()
            tokens.append((kind, json.loads(value) if kind == "string" else value))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over the HCL subset of policies: ``path "P" { capabilities = [...] }``."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokens(text)
        self._at = 0

    def _next(self, kind: str, value: str | None = None) -> str:
        if self._at >= len(self._tokens):
            raise PolicyParseError(f"unexpected end of policy, expected {value or kind}")
        got_kind, got = self._tokens[self._at]
        if got_kind != kind or (value is not None and got != value):
            raise PolicyParseError(f"expected {value or kind}, found {got!r}")
        self._at += 1
        return got

    def rules(self) -> dict[str, list[str]]:
        """Every ``path`` block's capabilities, by path (a path given twice adds up)."""
        rules: dict[str, list[str]] = {}
        while self._at < len(self._tokens):
            keyword = self._next("word")
            if keyword != "path":
                raise PolicyParseError(f"unsupported block {keyword!r}: the kmsbox Vault fake models path rules only")
            path = self._next("string")
            self._next("punct", "{")
            rules[path] = rules.get(path, []) + self._body(path)
        return rules

    def _body(self, path: str) -> list[str]:
        capabilities: list[str] | None = None
        while not (self._at < len(self._tokens) and self._tokens[self._at] == ("punct", "}")):
            field = self._next("word")
            self._next("punct", "=")
            if field != "capabilities":
                raise PolicyParseError(f"path {path!r}: {field!r} is not modelled by the kmsbox Vault fake")
            capabilities = self._list()
        self._next("punct", "}")
        if capabilities is None:
            raise PolicyParseError(f"path {path!r}: no capabilities")
        return capabilities

    def _list(self) -> list[str]:
        self._next("punct", "[")
        items: list[str] = []
        while True:
            if self._tokens[self._at : self._at + 1] == [("punct", "]")]:
                self._at += 1
                return items
            items.append(self._next("string"))
            if self._tokens[self._at : self._at + 1] == [("punct", ",")]:
                self._at += 1


def _json_rules(document: object) -> dict[str, list[str]]:
    paths = document.get("path") if isinstance(document, dict) and set(document) == {"path"} else None
    if not isinstance(paths, dict):
        raise PolicyParseError('a JSON policy must be {"path": {"PATH": {"capabilities": [...]}}}')
    rules: dict[str, list[str]] = {}
    for path, rule in paths.items():
        if not isinstance(rule, dict) or set(rule) != {"capabilities"}:
            raise PolicyParseError(f"path {path!r}: only 'capabilities' is modelled by the kmsbox Vault fake")
        capabilities = rule["capabilities"]
        if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
            raise PolicyParseError(f"path {path!r}: capabilities must be a list of strings")
        rules[path] = capabilities
    return rules


def parse_policy(text: str) -> dict[str, frozenset[str]]:
    """The rules of a policy in HCL or JSON, by path; PolicyParseError for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise PolicyParseError("policy is empty")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            raw = _json_rules(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise PolicyParseError(f"invalid JSON: {exc.msg}") from None
    else:
        raw = _Parser(text).rules()
    rules: dict[str, frozenset[str]] = {}
    for path, capabilities in raw.items():
        unknown = sorted(set(capabilities) - CAPABILITIES)
        if unknown:
            raise PolicyParseError(f"path {path!r}: invalid capability {unknown[0]!r}")
        if "*" in path[:-1]:
            raise PolicyParseError(f"path {path!r}: '*' may only end a path")
        rules[path.lstrip("/")] = frozenset(capabilities)
    return rules


@dataclass(frozen=True, slots=True)
class _Pattern:
    path: str
    regex: re.Pattern[str]
    glob: bool

    @classmethod
    def of(cls, path: str) -> _Pattern:
        """The pattern of a policy path: ``+`` is one segment, a trailing ``*`` any suffix."""
        glob = path.endswith("*")
        body = path[:-1] if glob else path
        parts = ["[^/]+" if segment == "+" else re.escape(segment) for segment in body.split("/")]
        return cls(path, re.compile("/".join(parts) + (".*" if glob else ""), re.DOTALL), glob)

    def priority(self) -> tuple[int, int, int, int, str]:
        """Vault's order among matching patterns (the greatest wins): a later first wildcard,
        no trailing glob, fewer ``+`` segments, a longer path, then the greater string."""
        segments = self.path.split("/")
        positions, offset = [], 0
        for segment in segments:
            if segment == "+":
                positions.append(offset)
            offset += len(segment) + 1
        if self.glob:
            positions.append(len(self.path) - 1)
        first = min(positions, default=len(self.path))
        return (first, 0 if self.glob else 1, -segments.count("+"), len(self.path), self.path)


class Acl:
    """The merged rules of a token's policies; answers whether a path allows a capability."""

    def __init__(self, policies: Iterable[Mapping[str, frozenset[str]]]) -> None:
        merged: dict[str, set[str]] = {}
        for rules in policies:
            for path, capabilities in rules.items():
                merged.setdefault(path, set()).update(capabilities)
        self._exact = {p: frozenset(c) for p, c in merged.items() if "+" not in p.split("/") and not p.endswith("*")}
        self._patterns = [(_Pattern.of(p), frozenset(c)) for p, c in merged.items() if p not in self._exact]

    def capabilities(self, path: str) -> frozenset[str]:
        """What the policies grant on ``path`` (``{"deny"}`` when nothing matches)."""
        if path in self._exact:
            found = self._exact[path]
        else:
            matching = [(pattern, caps) for pattern, caps in self._patterns if pattern.regex.fullmatch(path)]
            if not matching:
                return frozenset({"deny"})
            found = max(matching, key=lambda item: item[0].priority())[1]
        return frozenset({"deny"}) if "deny" in found else found

    def allows(self, path: str, capability: str) -> bool:
        """True when ``capability`` is granted on ``path`` and not denied."""
        found = self.capabilities(path)
        return "deny" not in found and capability in found

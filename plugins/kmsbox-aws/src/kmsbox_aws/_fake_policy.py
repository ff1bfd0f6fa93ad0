"""Key policies in the fake AWS KMS: explicit ``Deny`` statements, as AWS evaluates them.

The fake has one caller (``arn:aws:iam::ACCOUNT:user/kmsbox-fake``) and no IAM, so
what it can model is the part of policy evaluation that needs neither: an explicit
``Deny`` in the key policy beats everything. It is applied to the operations a KEK
provider and an operator use a key for (:data:`EVALUATED_ACTIONS`). ``Allow``
statements are stored and returned but not evaluated: every action not explicitly
denied is allowed.

A ``Deny`` statement may use ``Action``/``NotAction``, ``Principal`` (``*``, the
account, or the caller's ARN), ``Resource``/``NotResource`` and conditions with the
String and Null operators (``IfExists`` and ``ForAnyValue:``/``ForAllValues:`` too) on
``kms:EncryptionContext:KEY``, ``kms:EncryptionContextKeys``, ``kms:CallerAccount``,
``aws:PrincipalArn`` and ``aws:PrincipalAccount``. A policy whose ``Deny`` statements
need more (``NotPrincipal``, other condition keys or operators) is refused with
``MalformedPolicyDocumentException`` naming what the fake does not model, rather than
evaluated wrongly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVALUATED_ACTIONS", "PolicyError", "PolicyRequest", "caller_arn", "check_policy", "denied_by"]

#: The actions whose calls the fake checks against the key policy's Deny statements.
EVALUATED_ACTIONS = frozenset(
    {
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:DescribeKey",
    }
)
_STRING_OPERATORS = {
    "stringequals": (False, False, False),  # (negated, ignore case, wildcards)
    "stringnotequals": (True, False, False),
    "stringequalsignorecase": (False, True, False),
    "stringnotequalsignorecase": (True, True, False),
    "stringlike": (False, False, True),
    "stringnotlike": (True, False, True),
}
_SINGLE_KEYS = ("kms:calleraccount", "aws:principalarn", "aws:principalaccount")
_CONTEXT_KEY_PREFIX = "kms:encryptioncontext:"
_CONTEXT_KEYS = "kms:encryptioncontextkeys"


class PolicyError(Exception):
    """A policy document AWS would refuse, or one the fake cannot evaluate (MalformedPolicyDocumentException)."""


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What one call asks of a key: the action, the key, the caller and the encryption context."""

    action: str
    key_arn: str
    account: str
    context: Mapping[str, str]

    @property
    def caller(self) -> str:
        """The ARN of the fake's one caller."""
        return caller_arn(self.account)


def caller_arn(account: str) -> str:
    """The principal every request to the fake is made as."""
    return f"arn:aws:iam::{account}:user/kmsbox-fake"


def _listed(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise PolicyError(f"{where} must be a string or a list of strings")
    return values


def _statements(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise PolicyError("the policy must be a JSON object")
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements or not all(isinstance(s, dict) for s in statements):
        raise PolicyError("the policy must have a Statement: an object or a list of objects")
    return statements


def _parse(text: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(text)
    except (TypeError, ValueError):
        raise PolicyError("the policy is not valid JSON") from None
    return _statements(document)


def check_policy(text: Any) -> None:
    """PolicyError unless ``text`` is a key policy AWS accepts and the fake can evaluate."""
    if not isinstance(text, str) or not text.strip():
        raise PolicyError("the policy must be a non-empty JSON string")
    if len(text.encode("utf-8")) > 32768:
        raise PolicyError("the policy is longer than 32768 bytes")
    for number, statement in enumerate(_parse(text), start=1):
        where = f"statement {number}"
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"{where}: Effect must be Allow or Deny")
        if ("Action" in statement) == ("NotAction" in statement):
            raise PolicyError(f"{where}: give exactly one of Action and NotAction")
        _listed(statement.get("Action", statement.get("NotAction")), f"{where}: Action")
        if "Principal" not in statement and "NotPrincipal" not in statement:
            raise PolicyError(f"{where}: a key policy statement needs a Principal")
        if "Resource" in statement or "NotResource" in statement:
            _listed(statement.get("Resource", statement.get("NotResource")), f"{where}: Resource")
        if effect == "Deny":
            _check_deny(statement, where)


def _check_deny(statement: dict[str, Any], where: str) -> None:
    if "NotPrincipal" in statement:
        raise PolicyError(f"{where}: NotPrincipal in a Deny statement is not modelled by the kmsbox fake")
    _principals(statement["Principal"], where)
    condition = statement.get("Condition", {})
    if not isinstance(condition, dict):
        raise PolicyError(f"{where}: Condition must be an object")
    for operator, entries in condition.items():
        _operator(operator, where)
        if not isinstance(entries, dict) or not entries:
            raise PolicyError(f"{where}: condition {operator} must map condition keys to values")
        for key, values in entries.items():
            _condition_key(key, where)
            _listed(values, f"{where}: condition {operator} {key}")


def _principals(principal: Any, where: str) -> list[str]:
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict) or not principal:
        raise PolicyError(f'{where}: Principal must be "*" or an object such as {{"AWS": "..."}}')
    found: list[str] = []
    for kind, value in principal.items():
        values = _listed(value, f"{where}: Principal {kind}")
        if kind == "AWS":
            found += values
    return found


def _operator(operator: str, where: str) -> tuple[str | None, str, bool]:
    """``(set operator, base operator, if_exists)`` of a condition operator, all lower-case."""
    name = operator.lower()
    set_operator = None
    for prefix in ("foranyvalue:", "forallvalues:"):
        if name.startswith(prefix):
            set_operator, name = prefix[:-1], name[len(prefix) :]
    if_exists = name.endswith("ifexists") and name != "null"
    base = name.removesuffix("ifexists") if if_exists else name
    if base not in _STRING_OPERATORS and base != "null":
        raise PolicyError(f"{where}: condition operator {operator} is not modelled by the kmsbox fake")
    return set_operator, base, if_exists


def _condition_key(key: str, where: str) -> None:
    name = key.lower()
    if name in _SINGLE_KEYS or name == _CONTEXT_KEYS or (name.startswith(_CONTEXT_KEY_PREFIX) and len(name) > 22):
        return
    raise PolicyError(f"{where}: condition key {key} is not modelled by the kmsbox fake")


def _wildcard(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def denied_by(policy_text: str | None, request: PolicyRequest) -> bool:
    """True when a Deny statement of the key policy applies to ``request``."""
    if request.action not in EVALUATED_ACTIONS or not policy_text:
        return False
    try:
        statements = _parse(policy_text)
    except PolicyError:
        return False  # moto's own policies; the fake's checks keep malformed ones out
    return any(statement.get("Effect") == "Deny" and _applies(statement, request) for statement in statements)


def _applies(statement: dict[str, Any], request: PolicyRequest) -> bool:
    if "Action" in statement:
        if not any(_wildcard(a, request.action, ignore_case=True) for a in _listed(statement["Action"], "Action")):
            return False
    elif any(_wildcard(a, request.action, ignore_case=True) for a in _listed(statement["NotAction"], "NotAction")):
        return False
    if "Resource" in statement:
        if not any(_wildcard(r, request.key_arn) for r in _listed(statement["Resource"], "Resource")):
            return False
    elif "NotResource" in statement and any(
        _wildcard(r, request.key_arn) for r in _listed(statement["NotResource"], "NotResource")
    ):
        return False
    principals = _principals(statement.get("Principal"), "Principal")
    account_root = f"arn:aws:iam::{request.account}:root"
    if not any(p in ("*", request.account, account_root, request.caller) for p in principals):
        return False
    return all(
        _entry_holds(operator, key, _listed(values, key), request)
        for operator, entries in statement.get("Condition", {}).items()
        for key, values in entries.items()
    )


def _request_values(key: str, request: PolicyRequest) -> list[str] | None:
    """The request's values of a condition key; None when the request has no such key."""
    name = key.lower()
    if name == "kms:calleraccount" or name == "aws:principalaccount":
        return [request.account]
    if name == "aws:principalarn":
        return [request.caller]
    if name == _CONTEXT_KEYS:
        return list(request.context) or None
    wanted = key[len(_CONTEXT_KEY_PREFIX) :].lower()  # the context key's name is not case-sensitive in AWS
    values = [value for name, value in request.context.items() if name.lower() == wanted]
    return values or None


def _entry_holds(operator: str, key: str, allowed: list[str], request: PolicyRequest) -> bool:
    set_operator, base, if_exists = _operator(operator, "Condition")
    present = _request_values(key, request)
    if base == "null":
        return (present is None) == (allowed[0].lower() == "true")
    negated, ignore_case, wildcards = _STRING_OPERATORS[base]
    if present is None:
        # A missing key: IfExists and negated operators hold, as does ForAllValues over the empty set.
        return if_exists or negated or set_operator == "forallvalues"

    def one(value: str) -> bool:
        if wildcards:
            matched = any(_wildcard(p, value, ignore_case=ignore_case) for p in allowed)
        elif ignore_case:
            matched = any(p.lower() == value.lower() for p in allowed)
        else:
            matched = value in allowed
        return matched != negated

    if set_operator == "forallvalues":
        return all(one(value) for value in present)
    return any(one(value) for value in present)

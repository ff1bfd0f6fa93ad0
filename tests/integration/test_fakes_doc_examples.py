"""The client examples of docs/fakes.md run as written, against the fakes, with the exports of serve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "fakes.md"
_BLOCK_RE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _example(first_line: str) -> str:
    blocks = [b for b in _BLOCK_RE.findall(DOC.read_text(encoding="utf-8")) if b.startswith(first_line)]
    assert len(blocks) == 1, f"docs/fakes.md should have one example starting with {first_line!r}"
    return str(blocks[0])


@pytest.mark.parametrize(
    ("first_line", "fixture"),
    [("# boto3:", "fake_aws_kms"), ("# google-cloud-kms:", "fake_gcp_kms"), ("# hvac:", "fake_vault")],
)
def test_the_official_client_example_runs_against_the_fake(
    first_line: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(fixture)  # exports what `kmsbox fake-kms serve` prints
    namespace: dict[str, Any] = {}
    exec(compile(_example(first_line), f"docs/fakes.md {first_line}", "exec"), namespace)


def test_the_pytest_example_runs(fake_vault: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_example("import os\n\nfrom kmsbox.kek import open_kek"), "docs/fakes.md pytest", "exec"), namespace)
    namespace["test_wraps_with_vault"](fake_vault)


def test_the_key_policy_example_denies_as_it_says(fake_aws_kms: Any) -> None:
    from botocore.exceptions import ClientError

    namespace: dict[str, Any] = {}
    exec(compile(_example("# boto3:"), "docs/fakes.md boto3", "exec"), namespace)
    exec(compile(_example("import json\n\npolicy = {"), "docs/fakes.md key policy", "exec"), namespace)
    kms, blob = namespace["kms"], namespace["blob"]
    with pytest.raises(ClientError) as info:  # the example's ciphertext has no kmsbox:namespace in its context
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "x"})
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "with an explicit deny in a resource-based policy" in info.value.response["Error"]["Message"]
    production = {"kmsbox:namespace": "app:production"}
    made = kms.encrypt(KeyId=namespace["arn"], Plaintext=b"k", EncryptionContext=production)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=made, EncryptionContext=production)["Plaintext"] == b"k"

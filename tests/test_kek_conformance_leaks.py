"""The KEK conformance suite catches a provider that shows its own key: run it on a leaky one."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

_LEAKY_PROVIDER = """
import os

import pytest

from kmsbox.providers.local import LocalKekProvider
from kmsbox.testing.kek_conformance import KekProviderConformance

KEY = os.urandom(32)


class FingerprintingKek(LocalKekProvider):
    '''Puts a "fingerprint" in describe(): the first {prefix} bytes of its key, as {encoding}.'''

    def describe(self):
        return {{**super().describe(), "fingerprint": {shown}}}


class TestLeaky(KekProviderConformance):
    @pytest.fixture
    def kek(self):
        return FingerprintingKek("leaky://key", {{"v1": KEY}}, "v1", "test")

    @pytest.fixture
    def kek_material(self):
        return [KEY]
"""

_LEAK_TEST = "test_describe_and_repr_hold_no_kek_material"


@pytest.mark.parametrize(
    ("shown", "prefix", "encoding"),
    [
        ("KEY.hex()", 32, "hex"),
        ("KEY.hex().upper()", 32, "upper-case hex"),
        ("KEY[:8].hex()", 8, "hex"),
        ("__import__('base64').b64encode(KEY).decode()", 32, "base64"),
        ("__import__('base64').urlsafe_b64encode(KEY).decode().rstrip('=')", 32, "unpadded base64url"),
        ("repr(KEY)", 32, "a bytes repr"),
    ],
)
def test_the_suite_fails_a_provider_that_describes_its_own_key(
    pytester: pytest.Pytester, shown: str, prefix: int, encoding: str
) -> None:
    pytester.makepyfile(
        test_leaky=textwrap.dedent(_LEAKY_PROVIDER).format(shown=shown, prefix=prefix, encoding=encoding)
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-k", _LEAK_TEST)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*shows the provider's own key material: {'key 0': [[]'*'[]]}*", f"FAILED*{_LEAK_TEST}*"]
    )
    assert "kek_material = " not in result.stdout.str()  # the key bytes are not printed as an argument


def test_the_same_provider_without_the_leak_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_leaky=textwrap.dedent(_LEAKY_PROVIDER).format(shown="'sha256:...'", prefix=0, encoding="nothing")
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-k", _LEAK_TEST)
    result.assert_outcomes(passed=1)


def test_without_the_fixture_the_check_is_skipped_with_the_reason(pytester: pytest.Pytester) -> None:
    source = textwrap.dedent(_LEAKY_PROVIDER).format(shown="KEY.hex()", prefix=32, encoding="hex")
    pytester.makepyfile(test_leaky=source.split("    @pytest.fixture\n    def kek_material")[0])
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-rs", "-k", _LEAK_TEST)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no kek_material fixture*"])

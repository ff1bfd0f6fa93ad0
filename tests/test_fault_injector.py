"""The fault injector every fake shares: per-operation targeting, counts, kinds, bad settings."""

from __future__ import annotations

import math
import os
import socket
import threading

import pytest

from kmsbox.errors import ProviderError
from kmsbox.testing.fake_kek import FakeKek
from kmsbox.testing.fakes import FAULT_KINDS, TRANSIENT_FAULT_KINDS, FaultInjector, abort_connection


def _faults_for(injector: FaultInjector, *operations: str) -> list[str | None]:
    return [injector.before_call(op) for op in operations]


def test_faults_aimed_at_one_operation_spare_the_others() -> None:
    faults = FaultInjector(known_operations={"Encrypt", "Decrypt", "DescribeKey"})
    faults.configure(rate=1.0, kind="reset", operations={"Decrypt"})
    assert _faults_for(faults, "Encrypt", "Decrypt", "DescribeKey", "Decrypt") == [None, "reset", None, "reset"]
    assert faults.calls == {"Encrypt": 1, "Decrypt": 2, "DescribeKey": 1}


def test_a_lone_string_names_one_operation() -> None:
    faults = FaultInjector(rate=1.0, kind="throttle", operations="Decrypt")
    assert faults.operations == {"Decrypt"}
    assert _faults_for(faults, "D", "Decrypt") == [None, "throttle"]


def test_count_is_spent_only_by_targeted_calls() -> None:
    faults = FaultInjector()
    faults.configure(rate=1.0, kind="denied", count=1, operations=["Decrypt"])
    assert _faults_for(faults, "Encrypt", "Encrypt", "Decrypt", "Decrypt") == [None, None, "denied", None]


def test_operations_stay_until_replaced_and_clear_targets_everything_again() -> None:
    faults = FaultInjector(operations={"decrypt"})
    faults.configure(rate=1.0, kind="unavailable")  # operations unchanged
    assert _faults_for(faults, "encrypt", "decrypt") == [None, "unavailable"]
    faults.configure(operations=())
    assert _faults_for(faults, "encrypt") == ["unavailable"]
    faults.configure(operations={"decrypt"})
    faults.clear()
    assert faults.operations == frozenset() and faults.rate == 0.0
    faults.configure(rate=1.0)
    assert _faults_for(faults, "encrypt") == ["unavailable"]


def test_a_misspelt_operation_is_refused_naming_what_the_fake_serves() -> None:
    faults = FaultInjector(known_operations={"Encrypt", "Decrypt"})
    with pytest.raises(ValueError, match=r"unknown operation 'Decrpyt'.*serves: Decrypt, Encrypt"):
        faults.configure(operations={"Decrpyt"})
    with pytest.raises(ValueError, match="unknown operation"):
        FaultInjector(operations={"decrypt"}, known_operations={"Decrypt"})
    assert faults.operations == frozenset()  # the refused call changed nothing


@pytest.mark.parametrize(
    "settings",
    [
        {"rate": 1.5},
        {"rate": -0.1},
        {"rate": math.nan},
        {"latency": -1.0},
        {"latency": math.nan},
        {"kind": "explode"},
        {"count": -1},
        {"operations": {""}},
        {"operations": {3}},
    ],
)
def test_bad_settings_are_value_errors_and_change_nothing(settings: dict[str, object]) -> None:
    faults = FaultInjector(rate=0.5, kind="throttle", latency=0.0)
    with pytest.raises(ValueError):
        faults.configure(**settings)  # type: ignore[arg-type]
    assert (faults.rate, faults.kind, faults.latency, faults.operations) == (0.5, "throttle", 0.0, frozenset())


def test_fault_kinds_and_their_transient_subset() -> None:
    assert set(FAULT_KINDS) == {"throttle", "unavailable", "timeout", "denied", "reset", "malformed"}
    assert set(TRANSIENT_FAULT_KINDS) == {"throttle", "unavailable", "timeout", "reset"}


@pytest.mark.parametrize(
    ("kind", "transient", "code"),
    [("reset", True, "ConnectionReset"), ("malformed", False, "BadResponse"), ("denied", False, "AccessDenied")],
)
def test_the_in_process_fake_kek_types_every_fault_kind(
    kind: str, transient: bool, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "0.5")
    kek = FakeKek()
    kek.faults.configure(rate=1.0, kind=kind)
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), {"n": "x"})
    assert (info.value.transient, info.value.code) == (transient, code)


def test_abort_connection_resets_the_peer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        seen: list[BaseException | bytes] = []

        def read() -> None:
            try:
                seen.append(client.recv(10))
            except OSError as exc:
                seen.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        abort_connection(accepted)
        reader.join(timeout=5)
        client.close()
    assert len(seen) == 1 and isinstance(seen[0], ConnectionResetError)

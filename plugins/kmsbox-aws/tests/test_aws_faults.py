"""How the provider meets faults: retries within the policy, transient versus permanent, bad replies."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError
from kmsbox_aws import AwsKmsKekProvider, parse_uri

from kmsbox.errors import IntegrityError, ProviderError
from kmsbox.kek import WrappedKey, open_kek

CONTEXT = {"kmsbox:namespace": "faults"}
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/8f4e5eb4-8d83-46db-882e-97eb8acfacdb"
JSON = "application/x-amz-json-1.1"


@pytest.mark.parametrize("kind", ["throttle", "unavailable", "timeout"])
def test_one_transient_fault_is_retried(aws_fake: Any, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.5")
    kek = open_kek(aws_fake.kek_uri)
    key = os.urandom(32)
    aws_fake.faults.reset_counts()
    aws_fake.faults.configure(rate=1.0, kind=kind, count=1)
    wrapped = kek.wrap(key, CONTEXT)
    assert aws_fake.faults.calls == {"Encrypt": 2}
    assert kek.unwrap(wrapped, CONTEXT) == key


@pytest.mark.parametrize(("kind", "code"), [("throttle", "ThrottlingException"), ("timeout", "ReadTimeoutError")])
def test_persistent_transient_fault_gives_up_within_the_deadline(
    aws_fake: Any, monkeypatch: pytest.MonkeyPatch, kind: str, code: str
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.3")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    kek = open_kek(aws_fake.kek_uri)
    aws_fake.faults.configure(rate=1.0, kind=kind)
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    elapsed = time.monotonic() - start
    assert info.value.transient is True and info.value.code == code
    assert "gave up after" in str(info.value)
    # The deadline bounds the time spent (plus at most one request time-out in flight).
    assert elapsed < 1.0 + 0.3 + 0.5


def test_denied_is_permanent_and_not_retried(kek: AwsKmsKekProvider, aws_fake: Any) -> None:
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    aws_fake.faults.reset_counts()
    aws_fake.faults.configure(rate=1.0, kind="denied")
    for call in (lambda: kek.unwrap(wrapped, CONTEXT), lambda: kek.rewrap(wrapped, CONTEXT)):
        with pytest.raises(ProviderError) as info:
            call()
        assert info.value.transient is False and info.value.code == "AccessDeniedException"
    assert aws_fake.faults.calls == {"Decrypt": 1, "ReEncrypt": 1}
    # version_available cannot tell without kms:DescribeKey.
    assert kek.version_available(kek.arn) is None


def test_latency_is_felt_by_the_provider(kek: AwsKmsKekProvider, aws_fake: Any) -> None:
    kek.wrap(os.urandom(32), CONTEXT)
    aws_fake.faults.configure(latency=0.3)
    start = time.monotonic()
    kek.wrap(os.urandom(32), CONTEXT)
    assert 0.3 <= time.monotonic() - start < 2.0


def test_nobody_listening_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "0.5")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(ProviderError) as info:
        open_kek(f"aws-kms://{KEY_ARN}").wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is True and info.value.code == "EndpointConnectionError"


class _ScriptedKms:
    """A loopback HTTP server that answers every request with the reply set in ``reply``."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, bytes] = (200, JSON, b"{}")
        self.requests = 0
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                script.requests += 1
                status, content_type, body = script.reply
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_ScriptedKms, AwsKmsKekProvider]]:
    server = _ScriptedKms()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "0.5")
    provider = AwsKmsKekProvider(f"aws-kms://{KEY_ARN}")
    yield server, provider
    provider.close()
    server.stop()


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("reply", "transient", "code"),
    [
        ((503, "text/html", b"<html>Service Unavailable</html>"), True, "503"),
        ((502, "text/plain", b""), True, "502"),
        (
            (400, JSON, _json({"__type": "DependencyTimeoutException", "message": "slow"})),
            True,
            "DependencyTimeoutException",
        ),
        ((400, JSON, _json({"__type": "KeyUnavailableException", "message": "busy"})), True, "KeyUnavailableException"),
        ((500, JSON, _json({"__type": "KMSInternalException"})), True, "KMSInternalException"),
        ((400, JSON, _json({"__type": "ValidationException", "message": "bad"})), False, "ValidationException"),
        ((400, JSON, _json({"__type": "NotFoundException", "message": "gone"})), False, "NotFoundException"),
        ((200, JSON, b"not json at all"), False, "BadResponse"),
        ((200, JSON, _json({"KeyId": KEY_ARN})), False, "BadResponse"),
        ((200, JSON, _json({"CiphertextBlob": "AAEC", "KeyId": "not-an-arn"})), False, "BadResponse"),
        (
            (200, JSON, _json({"CiphertextBlob": "AAEC", "KeyId": KEY_ARN.replace("8f4e", "0000")})),
            False,
            "BadResponse",
        ),
    ],
)
def test_wrap_maps_kms_replies(
    scripted: tuple[_ScriptedKms, AwsKmsKekProvider], reply: tuple[int, str, bytes], transient: bool, code: str
) -> None:
    server, provider = scripted
    server.reply = reply
    with pytest.raises(ProviderError) as info:
        provider.wrap(os.urandom(32), CONTEXT)
    assert (info.value.transient, info.value.code) == (transient, code)
    assert server.requests >= 1 if transient else server.requests == 1


def test_decrypt_reply_naming_another_key_is_bad_response(scripted: tuple[_ScriptedKms, AwsKmsKekProvider]) -> None:
    server, provider = scripted
    server.reply = (200, JSON, _json({"Plaintext": "AAEC", "KeyId": KEY_ARN.replace("8f4e", "0000")}))
    with pytest.raises(ProviderError) as info:
        provider.unwrap(WrappedKey(provider.uri, KEY_ARN, b"x" * 64), CONTEXT)
    assert info.value.code == "BadResponse"


def test_decrypt_reply_without_plaintext_is_bad_response(scripted: tuple[_ScriptedKms, AwsKmsKekProvider]) -> None:
    server, provider = scripted
    server.reply = (200, JSON, _json({"KeyId": KEY_ARN}))
    with pytest.raises(ProviderError) as info:
        provider.unwrap(WrappedKey(provider.uri, KEY_ARN, b"x" * 64), CONTEXT)
    assert (info.value.transient, info.value.code) == (False, "BadResponse")


def test_kms_integrity_codes_are_integrity_errors(scripted: tuple[_ScriptedKms, AwsKmsKekProvider]) -> None:
    server, provider = scripted
    for code in ("InvalidCiphertextException", "IncorrectKeyException"):
        server.reply = (400, JSON, _json({"__type": code}))
        with pytest.raises(IntegrityError):
            provider.unwrap(WrappedKey(provider.uri, KEY_ARN, b"x" * 64), CONTEXT)


# -- faults aimed at one operation, and what the provider makes of each kind ----------------------


@pytest.mark.parametrize(
    ("kind", "transient", "code"),
    [
        ("throttle", True, "ThrottlingException"),
        ("unavailable", True, "KMSInternalException"),
        ("timeout", True, "ReadTimeoutError"),
        ("reset", True, "ConnectionClosedError"),
        ("denied", False, "AccessDeniedException"),
        ("malformed", False, "BadResponse"),
    ],
)
def test_each_fault_on_decrypt_only_becomes_the_right_kmsbox_error(
    aws_fake: Any, monkeypatch: pytest.MonkeyPatch, kind: str, transient: bool, code: str
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.3")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    kek = open_kek(aws_fake.kek_uri)
    key = os.urandom(32)
    aws_fake.faults.reset_counts()
    aws_fake.faults.configure(rate=1.0, kind=kind, operations={"Decrypt"})
    wrapped = kek.wrap(key, CONTEXT)  # Encrypt is spared
    with pytest.raises(ProviderError) as info:
        kek.unwrap(wrapped, CONTEXT)
    assert (info.value.transient, info.value.code) == (transient, code)
    assert aws_fake.faults.calls["Encrypt"] == 1
    assert (aws_fake.faults.calls["Decrypt"] > 1) is transient  # only transient faults are retried
    aws_fake.faults.clear()
    assert kek.unwrap(wrapped, CONTEXT) == key


def test_a_reset_fault_resets_the_tcp_connection(aws_fake: Any, kms: Any) -> None:
    arn = parse_uri(aws_fake.kek_uri).arn
    kms.describe_key(KeyId=arn)  # a kept-alive connection, as a real client has
    aws_fake.faults.configure(rate=1.0, kind="reset", operations={"Encrypt"}, count=1)
    with pytest.raises(ConnectionClosedError) as info:
        kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)
    assert "Connection reset by peer" in str(info.value.kwargs.get("error"))
    assert kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)["KeyId"] == arn  # the client reconnects


def test_a_malformed_fault_garbles_the_real_reply(aws_fake: Any, kms: Any) -> None:
    arn = parse_uri(aws_fake.kek_uri).arn
    aws_fake.faults.configure(rate=1.0, kind="malformed", operations="Encrypt", count=1)
    reply = kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)
    assert "CiphertextBlob" not in reply and reply["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_faults_can_only_be_aimed_at_kms_operations(aws_fake: Any) -> None:
    with pytest.raises(ValueError, match="unknown operation 'decrypt'"):
        aws_fake.faults.configure(operations={"decrypt"})
    assert "ReEncrypt" in aws_fake.faults.known_operations

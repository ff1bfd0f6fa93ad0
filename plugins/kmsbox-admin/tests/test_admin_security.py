"""The security rules over a real server on loopback: tokens and roles, bad input,
CSRF of console sessions, security headers, throttling, host checks, bind and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from admin_helpers import Seed, Server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kmsbox_admin.headers import CONTENT_SECURITY_POLICY
from kmsbox_admin.inputs import MAX_BODY
from kmsbox_admin.server import check_bind
from kmsbox_admin.settings import AdminSettings

from kmsbox.errors import ConfigError

WRITES = [
    ("POST", "/v1/admin/encryption/rotate", {"namespace": "tenant-7"}),
    ("POST", "/v1/admin/jobs", {"kind": "reencrypt", "namespace": "tenant-7"}),
    ("POST", "/v1/admin/repair", {"namespace": "tenant-7", "dry_run": False}),
]
READS = [
    ("GET", "/v1/admin/encryption", None),
    ("GET", "/v1/admin/namespaces", None),
    ("GET", "/v1/admin/namespaces/tenant-7", None),
    ("GET", "/v1/admin/jobs", None),
    ("GET", "/v1/admin/audit", None),
    ("POST", "/v1/admin/audit/verify", {}),
    ("POST", "/v1/admin/diagnose", {}),
    *WRITES,
]


def _active(seeded: Seed, namespace: str = "tenant-7") -> list[int]:
    with seeded.open() as store:
        versions: list[int] = store.status(namespace)["namespaces"][namespace]["active_versions"]
    return versions


@pytest.mark.parametrize(("method", "path", "body"), READS)
def test_no_token_is_401_with_a_bearer_challenge(server: Server, method: str, path: str, body: object) -> None:
    response = server.client().request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="kmsbox-admin"'
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer kbx_not-a-real-token", "Basic YWxpY2U6c2VjcmV0", "Bearer", "kbx_token"])
def test_a_wrong_token_or_scheme_is_401(server: Server, seeded: Seed, header: str) -> None:
    response = server.client(headers={"Authorization": header}).post(
        "/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}
    )
    assert response.status_code == 401
    assert _active(seeded) == [1]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_viewer_on_a_write_is_403_and_nothing_changes(
    server: Server, seeded: Seed, method: str, path: str, body: object
) -> None:
    response = server.viewer().request(method, path, json=body)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert server.admin().get("/v1/admin/jobs").json() == {"jobs": []}
    assert _active(seeded) == [1]


def test_a_viewer_cannot_stop_a_job(server: Server) -> None:
    job = server.admin().post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": "tenant-7"}).json()
    assert server.viewer().post(f"/v1/admin/jobs/{job['id']}/stop").status_code == 403


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"namespace": "tenant-7",}', "application/json", 400),
        (b'["tenant-7"]', "application/json", 400),
        (b'{"namespace": NaN}', "application/json", 400),
        (b'{"namespace": "tenant-7"}', "text/plain", 415),
        (b"namespace=tenant-7", "application/x-www-form-urlencoded", 415),
        (b'{"namespace": "' + b"x" * MAX_BODY + b'"}', "application/json", 413),
        (b"\xff\xfe{}", "application/json", 400),
    ],
)
def test_malformed_bodies_get_their_status_and_start_nothing(
    server: Server, seeded: Seed, content: bytes, content_type: str, status: int
) -> None:
    response = server.admin().post(
        "/v1/admin/encryption/rotate", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert server.admin().get("/v1/admin/jobs").json() == {"jobs": []}
    assert _active(seeded) == [1]


def test_an_unknown_namespace_to_rotate_is_404_and_creates_no_key(server: Server, seeded: Seed) -> None:
    response = server.admin().post("/v1/admin/encryption/rotate", json={"namespace": "ghost"})
    assert response.status_code == 404
    with seeded.open() as store:
        assert "ghost" not in store.namespaces()


def test_a_second_rotation_while_one_runs_is_409(start_server: Callable[..., Server]) -> None:
    from admin_helpers import GatedOperations, wait_job

    server = start_server(operations_class=GatedOperations)
    gates = server.operations
    assert isinstance(gates, GatedOperations)
    gates.before_job.clear()
    admin = server.admin()
    first = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"})
    second = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"})
    assert (first.status_code, second.status_code) == (202, 409)
    gates.before_job.set()
    done = wait_job(admin, first.json()["id"])
    assert done["result"]["new_version"] == 2  # one rotation, not two


# --- console sessions and CSRF -------------------------------------------------------------


def _login(server: Server, token: str) -> tuple[httpx.Client, str]:
    client = server.client()
    response = client.post("/v1/admin/session", json={"token": token})
    assert response.status_code == 200
    return client, response.json()["csrf_token"]


def test_login_sets_a_strict_httponly_cookie_and_returns_a_csrf_token(server: Server) -> None:
    client = server.client()
    response = client.post("/v1/admin/session", json={"token": server.tokens.admin})
    assert response.status_code == 200
    body = response.json()
    assert (body["actor"], body["role"]) == ("alice", "admin") and len(body["csrf_token"]) >= 40
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("kmsbox_admin_session=")
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert client.get("/v1/admin/session").json()["csrf_token"] == body["csrf_token"]


def test_a_session_write_without_the_csrf_token_is_refused(server: Server, seeded: Seed) -> None:
    client, _ = _login(server, server.tokens.admin)
    response = client.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf"
    wrong = client.post(
        "/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}, headers={"X-CSRF-Token": "guess"}
    )
    assert wrong.status_code == 403
    assert _active(seeded) == [1]


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}],
)
def test_a_session_write_from_another_site_is_refused_even_with_the_token(
    server: Server, seeded: Seed, headers: dict[str, str]
) -> None:
    client, csrf = _login(server, server.tokens.admin)
    response = client.post(
        "/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}, headers={"X-CSRF-Token": csrf, **headers}
    )
    assert response.status_code == 403
    assert _active(seeded) == [1]


def test_a_session_write_with_its_csrf_token_from_this_origin_works(server: Server) -> None:
    client, csrf = _login(server, server.tokens.admin)
    response = client.post(
        "/v1/admin/encryption/rotate",
        json={"namespace": "tenant-7"},
        headers={"X-CSRF-Token": csrf, "Origin": server.url, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 202
    assert response.json()["actor"] == "alice"


def test_another_sessions_csrf_token_does_not_count(server: Server) -> None:
    client, _ = _login(server, server.tokens.admin)
    _, other_csrf = _login(server, server.tokens.admin)
    response = client.post(
        "/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}, headers={"X-CSRF-Token": other_csrf}
    )
    assert response.status_code == 403


def test_logout_ends_the_session(server: Server) -> None:
    client, csrf = _login(server, server.tokens.viewer)
    assert client.get("/v1/admin/namespaces").status_code == 200
    assert client.delete("/v1/admin/session").status_code == 403  # logging out is a change: CSRF applies
    assert client.delete("/v1/admin/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/v1/admin/namespaces").status_code == 401


def test_a_login_from_another_site_is_refused(server: Server) -> None:
    response = server.client().post(
        "/v1/admin/session", json={"token": server.tokens.admin}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


# --- headers, hosts -------------------------------------------------------------------------


def test_the_page_and_the_api_carry_a_strict_content_security_policy(server: Server) -> None:
    page = server.client().get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for response in (page, server.client().get("/app.js"), server.viewer().get("/v1/admin/encryption")):
        policy = response.headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline for the CSP to block
    assert "http://" not in page.text and "https://" not in page.text  # no asset from elsewhere


def test_a_foreign_host_header_is_refused(server: Server) -> None:
    response = server.viewer().get("/v1/admin/encryption", headers={"Host": "rebind.evil.example"})
    assert response.status_code == 400


# --- throttling -------------------------------------------------------------------------------


def test_failed_authentications_are_throttled_per_client(start_server: Callable[..., Server]) -> None:
    server = start_server(auth_failures=3, auth_lockout=2)
    wrong = server.client("kbx_wrong")
    for _ in range(3):
        assert wrong.get("/v1/admin/encryption").status_code == 401
    refused = server.admin().get("/v1/admin/encryption")  # the right token too, while locked out
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    login = server.client().post("/v1/admin/session", json={"token": server.tokens.admin})
    assert login.status_code == 429
    time.sleep(2.1)
    assert server.admin().get("/v1/admin/encryption").status_code == 200


def test_failed_console_logins_count_toward_the_throttle(start_server: Callable[..., Server]) -> None:
    server = start_server(auth_failures=2, auth_lockout=30)
    client = server.client()
    assert client.post("/v1/admin/session", json={"token": "kbx_guess1"}).status_code == 401
    assert client.post("/v1/admin/session", json={"token": "kbx_guess2"}).status_code == 401
    assert client.post("/v1/admin/session", json={"token": server.tokens.admin}).status_code == 429


# --- bind rules and TLS --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "admin.example.com"])
def test_a_non_loopback_bind_without_tls_is_refused(tokens_entries: AdminSettings, host: str) -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on .* without TLS"):
        check_bind(AdminSettings(tokens=tokens_entries.tokens, host=host))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_a_loopback_bind_needs_no_tls(tokens_entries: AdminSettings, host: str) -> None:
    check_bind(AdminSettings(tokens=tokens_entries.tokens, host=host))


@pytest.fixture
def tokens_entries(tokens: object) -> AdminSettings:
    from admin_helpers import Tokens

    assert isinstance(tokens, Tokens)
    return AdminSettings(tokens=tokens.entries)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made at run time."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmsbox-admin test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "admin.pem", folder / "admin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_a_non_loopback_bind_with_tls_is_allowed(tokens_entries: AdminSettings, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    check_bind(AdminSettings(tokens=tokens_entries.tokens, host="0.0.0.0", tls_cert=str(cert), tls_key=str(key)))
    with pytest.raises(ConfigError, match="tls_key"):
        check_bind(
            AdminSettings(
                tokens=tokens_entries.tokens, host="0.0.0.0", tls_cert=str(cert), tls_key=str(tmp_path / "no")
            )
        )


def test_over_tls_the_session_cookie_is_secure_and_host_bound(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    server = start_server(tls_cert=str(cert), tls_key=str(key), verify=trust)
    assert server.url.startswith("https://")
    client = server.client()
    response = client.post("/v1/admin/session", json={"token": server.tokens.viewer})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("__host-kmsbox_admin_session=") and "secure" in cookie
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert client.get("/v1/admin/session").json()["actor"] == "victor"
    with httpx.Client(verify=True) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get(server.url + "/v1/admin/encryption")

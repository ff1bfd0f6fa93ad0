"""No response of the admin server, the page included, ever holds a secret value,
key material or a token: known values go into the store, every response is scanned."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import httpx
import pytest
from admin_helpers import Seed, Server, wait_job

OTHER_KEK_VAR = "KMSBOX_ADMIN_TEST_OTHER_KEK"


def _forms(secret: str) -> list[str]:
    """The ways a value could leak: as text, hex and base64 (plain and URL-safe)."""
    raw = secret.encode()
    return [secret, raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


@pytest.fixture
def other_kek(monkeypatch: pytest.MonkeyPatch) -> str:
    """A second local KEK (a migration target), made at run time."""
    value = os.urandom(32).hex()
    monkeypatch.setenv(OTHER_KEK_VAR, value)
    return value


def test_no_response_holds_a_value_key_material_or_a_token(
    start_server: Callable[..., Server], seeded: Seed, other_kek: str
) -> None:
    server = start_server(kek_targets=[f"env://{OTHER_KEK_VAR}"])
    admin, viewer = server.admin(), server.viewer()
    bodies: list[str] = []

    def keep(response: httpx.Response) -> httpx.Response:
        bodies.append(response.text)
        bodies.append(str(response.headers))
        return response

    # Every kind of job, each followed by polling and its event stream.
    jobs = [
        {"kind": "rotate", "namespace": "app:production"},
        {"kind": "rewrap-deks", "namespace": "app:production"},
        {"kind": "reencrypt", "namespace": "tenant-7"},
        {"kind": "rewrap-namespace-keys"},
        {"kind": "migrate-kek", "to": f"env://{OTHER_KEK_VAR}"},
        {"kind": "repair", "dry_run": False},
        {"kind": "migrate-kek", "to": "env://KMSBOX_ADMIN_UNSET"},  # refused: not a target
    ]
    for body in jobs:
        started = keep(admin.post("/v1/admin/jobs", json=body))
        if started.status_code == 202:
            job_id = started.json()["id"]
            assert wait_job(admin, job_id)["state"] == "succeeded"
            keep(admin.get(f"/v1/admin/jobs/{job_id}"))
            with admin.stream("GET", f"/v1/admin/jobs/{job_id}/events") as stream:
                stream.read()
                keep(stream)
    keep(admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}))
    keep(admin.get("/v1/admin/jobs"))

    for path in (
        "/v1/admin/encryption",
        "/v1/admin/namespaces",
        "/v1/admin/audit/checkpoint",
        "/v1/admin/openapi.json",
    ):
        keep(viewer.get(path))
    for ns, names in seeded.names.items():
        for path in (
            f"/v1/admin/namespaces/{ns}",
            f"/v1/admin/namespaces/{ns}/keys",
            f"/v1/admin/namespaces/{ns}/secrets",
        ):
            keep(viewer.get(path))
        for name in names:
            keep(viewer.get(f"/v1/admin/namespaces/{ns}/secrets/{name}"))
            keep(viewer.get(f"/v1/admin/namespaces/{ns}/history/{name}"))
    params: dict[str, object] = {"limit": 50}
    while True:
        page = keep(viewer.get("/v1/admin/audit", params=params)).json()
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    checkpoint = viewer.get("/v1/admin/audit/checkpoint").json()
    keep(viewer.post("/v1/admin/audit/verify", json={"checkpoint": checkpoint}))
    keep(viewer.post("/v1/admin/diagnose", json={}))
    keep(viewer.post("/v1/admin/repair", json={}))
    # Errors too, and the console's files.
    keep(viewer.get("/v1/admin/namespaces/ghost"))
    keep(viewer.get("/v1/admin/namespaces/tenant-7/secrets/nope"))
    keep(server.client().get("/v1/admin/encryption"))
    keep(server.client("kbx_wrong").get("/v1/admin/encryption"))
    for path in ("/", "/app.js", "/app.css", "/favicon.svg"):
        keep(server.client().get(path))
    session = server.client()
    keep(session.post("/v1/admin/session", json={"token": server.tokens.admin}))
    keep(session.get("/v1/admin/session"))

    everything = "\n".join(bodies)
    assert len(bodies) > 60
    assert "svc/secret-0000" in everything  # the scan does see the metadata it should
    forbidden = [seeded.kek_hex, other_kek, server.tokens.admin, server.tokens.viewer]
    forbidden += [form for value in seeded.values for form in _forms(value)]
    leaked = [index for index, secret in enumerate(forbidden) if secret in everything]
    assert leaked == [], "a value, key or token appeared in a response"

"""The JSON API over a real server on loopback: what each read returns, mirroring the CLI."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from admin_helpers import KEK_URI, NAMESPACES, Seed, Server, wait_job
from kmsbox_admin.api import api_routes
from openapi_spec_validator import validate
from starlette.routing import Route


def test_status_is_what_kmsbox_status_prints(server: Server, seeded: Seed) -> None:
    response = server.viewer().get("/v1/admin/encryption")
    assert response.status_code == 200
    with seeded.open() as store:
        expected = json.loads(json.dumps(store.status()))
    assert response.json() == expected
    one = server.viewer().get("/v1/admin/encryption", params={"namespace": "tenant-7"}).json()
    assert list(one["namespaces"]) == ["tenant-7"]


def test_namespaces_are_listed_sorted_a_page_at_a_time(server: Server) -> None:
    client = server.viewer()
    assert client.get("/v1/admin/namespaces").json() == {"namespaces": sorted(NAMESPACES), "next_cursor": None}
    first = client.get("/v1/admin/namespaces", params={"limit": 1}).json()
    assert first == {"namespaces": ["app:production"], "next_cursor": "app:production"}
    second = client.get("/v1/admin/namespaces", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert second == {"namespaces": ["tenant-7"], "next_cursor": None}


def test_overview_has_the_cards_of_a_namespace(server: Server) -> None:
    overview = server.viewer().get("/v1/admin/namespaces/app:production").json()
    assert overview["namespace"] == "app:production"
    assert overview["active_version"] == 1
    assert overview["secret_versions"] == 3
    assert overview["legacy_secret_versions"] == 0
    assert overview["pending"] == []
    assert [k["version"] for k in overview["keys"]] == [1]


def test_key_history_after_a_rotation_has_the_times_of_each_version_and_counts_legacy_rows(
    server: Server, seeded: Seed
) -> None:
    admin = server.admin()
    before = time.time()
    job = admin.post("/v1/admin/jobs", json={"kind": "rotate", "namespace": "tenant-7"}).json()
    assert wait_job(admin, job["id"])["state"] == "succeeded"
    keys = server.viewer().get("/v1/admin/namespaces/tenant-7/keys").json()["keys"]
    assert [(k["version"], k["status"], k["secret_versions"]) for k in keys] == [(1, "retired", 0), (2, "active", 3)]
    old, new = keys
    assert old["created_at"] < before  # made by the seeding, before the job
    assert before <= new["created_at"] == new["updated_at"]  # rotated in by the job, status unchanged since
    assert new["created_at"] <= old["updated_at"]  # retired after the new version came in
    assert [w["kek_uri"] for w in new["wraps"]] == [KEK_URI]
    with seeded.open() as store:
        expected = json.loads(json.dumps(store.status("tenant-7")))["namespaces"]["tenant-7"]["keys"]
    assert keys == expected
    # Who rotated it is in the audit log, not read from it for every key listing.
    rotations = server.viewer().get("/v1/admin/audit", params={"action": "rotate", "namespace": "tenant-7"}).json()
    assert [(e["actor"], e["detail"]) for e in rotations["events"]] == [("alice", {"new_version": 2})]
    overview = server.viewer().get("/v1/admin/namespaces/tenant-7").json()
    assert (overview["active_version"], overview["legacy_secret_versions"]) == (2, 0)


def test_secret_listing_filters_and_pages_like_kmsbox_list(server: Server, seeded: Seed) -> None:
    client = server.viewer()
    page = client.get("/v1/admin/namespaces/app:production/secrets").json()
    assert [i["name"] for i in page["items"]] == seeded.names["app:production"]
    assert page["next_cursor"] is None
    assert all("value" not in item for item in page["items"])
    by_category = client.get("/v1/admin/namespaces/app:production/secrets", params={"category": "api"}).json()
    assert [i["name"] for i in by_category["items"]] == ["svc/secret-0001"]
    by_label = client.get("/v1/admin/namespaces/app:production/secrets", params={"label": "team=payments"}).json()
    assert [i["name"] for i in by_label["items"]] == ["svc/secret-0000", "svc/secret-0002"]
    first = client.get("/v1/admin/namespaces/app:production/secrets", params={"limit": 2}).json()
    rest = client.get(
        "/v1/admin/namespaces/app:production/secrets", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [i["name"] for i in first["items"] + rest["items"]] == seeded.names["app:production"]
    assert rest["next_cursor"] is None


def test_secret_info_and_history_of_a_name_with_slashes(server: Server) -> None:
    client = server.viewer()
    info = client.get("/v1/admin/namespaces/app:production/secrets/svc/secret-0000").json()
    assert (info["name"], info["version"], info["labels"]) == ("svc/secret-0000", 1, {"team": "payments"})
    history = client.get("/v1/admin/namespaces/app:production/history/svc/secret-0000").json()
    assert history["versions"] == [
        {"version": 1, "created_at": history["versions"][0]["created_at"], "namespace_key_version": 1, "current": True}
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/namespaces/no-such-ns",
        "/v1/admin/namespaces/no-such-ns/keys",
        "/v1/admin/namespaces/no-such-ns/secrets",
        "/v1/admin/namespaces/no-such-ns/secrets/db",
        "/v1/admin/namespaces/no-such-ns/history/db",
        "/v1/admin/encryption?namespace=no-such-ns",
    ],
)
def test_an_unknown_namespace_is_404(server: Server, path: str) -> None:
    response = server.viewer().get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "namespace_not_found"


def test_an_unknown_secret_is_404_and_a_bad_name_400(server: Server) -> None:
    client = server.viewer()
    missing = client.get("/v1/admin/namespaces/tenant-7/secrets/nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "secret_not_found")
    bad = client.get("/v1/admin/namespaces/tenant-7/secrets/-bad")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")
    bad_ns = client.get("/v1/admin/namespaces/bad ns!")
    assert bad_ns.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "10001"},
        {"limit": "ten"},
        {"cursor": "-1"},
        {"cursor": "0"},
        {"cursor": "12-3"},
        {"cursor": "1-2-3-4"},
        {"action": "launch"},
        {"result": "maybe"},
        {"since": "yesterday"},
        {"until": "2026-13-01"},
    ],
)
def test_bad_audit_filters_are_400(server: Server, params: dict[str, str]) -> None:
    response = server.viewer().get("/v1/admin/audit", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_a_repeated_query_parameter_is_400(server: Server) -> None:
    response = server.viewer().get("/v1/admin/audit?action=read&action=create")
    assert response.status_code == 400


def test_audit_list_filters_and_pages_like_kmsbox_audit_list(server: Server, seeded: Seed) -> None:
    client = server.viewer()
    reads = client.get("/v1/admin/audit", params={"action": "read", "namespace": "tenant-7"}).json()
    assert [(e["action"], e["namespace"], e["name"]) for e in reads["events"]] == [
        ("read", "tenant-7", seeded.names["tenant-7"][0])
    ]
    everything: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get("/v1/admin/audit", params=params).json()
        everything += page["events"]
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == page["events"][-1]["cursor"]  # opaque, but the last event's place
        params["cursor"] = page["next_cursor"]
    with seeded.open() as store:
        expected, _ = store.audit_events(limit=1000)
    # Listed in the store-wide order over every chain (time, chain, seq), as the store lists them.
    assert [(e["chain"], e["seq"], e["cursor"]) for e in everything] == [(e.chain, e.seq, e.cursor) for e in expected]
    # The store's own events are listed too: its schema marker and each namespace's creation.
    assert ("!audit", "!schema", "upgrade") in [(e["namespace"], e["name"], e["action"]) for e in everything]
    created = [e["namespace"] for e in everything if e["action"] == "create" and e["name"] is None]
    assert sorted(created) == sorted(NAMESPACES)
    future = client.get("/v1/admin/audit", params={"since": "2999-01-01T00:00:00"}).json()
    assert future == {"events": [], "next_cursor": None}


def test_audit_verify_with_and_without_a_checkpoint_of_every_chain(server: Server, seeded: Seed) -> None:
    client = server.viewer()
    checkpoint = client.get("/v1/admin/audit/checkpoint").json()
    assert set(checkpoint) == {"kmsbox_checkpoint", "taken_at", "chains"} and checkpoint["kmsbox_checkpoint"] == 2
    with seeded.open() as store:
        heads = {(h.chain, h.seq, h.mac) for h in store.audit_checkpoint().heads}
    assert {(c["chain"], c["seq"], c["mac"]) for c in checkpoint["chains"]} == heads
    report = client.post("/v1/admin/audit/verify", json={}).json()
    assert report["ok"] is True and report["problems"] == []
    assert report["chains"] == len(checkpoint["chains"])
    assert report["events_checked"] == sum(c["seq"] for c in checkpoint["chains"])
    assert (report["secrets_checked"], report["namespaces_checked"]) == (6, 2)
    assert client.post("/v1/admin/audit/verify", json={"checkpoint": checkpoint}).json()["ok"] is True
    first = checkpoint["chains"][0]
    forged = {**checkpoint, "chains": [{**first, "mac": "00" * 32}, *checkpoint["chains"][1:]]}
    broken = client.post("/v1/admin/audit/verify", json={"checkpoint": forged}).json()
    assert broken["ok"] is False
    assert broken["problems"] == [f"chain {first['chain']}: event {first['seq']} differs from the checkpoint"]
    # The single-chain form of earlier releases is read as chain 0, which this store never cut back.
    legacy = client.post("/v1/admin/audit/verify", json={"checkpoint": {"seq": 1, "mac": "00" * 32}}).json()
    assert legacy["ok"] is False and legacy["problems"][0].startswith("chain 0: event 1")
    for bad in ({"seq": "one"}, {"chains": "all"}, {"chains": [{"chain": 0, "seq": 1, "mac": "not hex"}]}, []):
        response = client.post("/v1/admin/audit/verify", json={"checkpoint": bad})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request"), bad


def test_diagnose_and_a_repair_dry_run_report_without_changing_anything(server: Server, seeded: Seed) -> None:
    client = server.viewer()
    report = client.post("/v1/admin/diagnose", json={"namespace": "app:production"}).json()
    assert report["ok"] is True and report["secret_versions_checked"] == 3
    with seeded.open() as store:
        store.rotate_namespace_key("app:production")  # leaves DEKs under a rotating key: pending work
    report = client.post("/v1/admin/diagnose", json={"namespace": "app:production"}).json()
    codes = {i["code"]: i["action"] for i in report["issues"]}
    assert codes == {"pending_rewrap": "kmsbox rewrap-deks app:production"}  # a command to run as is
    plan = client.post("/v1/admin/repair", json={"namespace": "app:production"}).json()
    assert plan["dry_run"] is True
    assert plan["planned"] == ["rewrap DEKs of app:production to its active key"]
    assert server.viewer().get("/v1/admin/namespaces/app:production").json()["legacy_secret_versions"] == 3


def test_the_served_openapi_document_is_valid_and_lists_every_route(server: Server) -> None:
    spec = server.client().get("/v1/admin/openapi.json").json()
    validate(spec)
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    served = {
        (route.path.replace(":path}", "}"), method)
        for route in api_routes()
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert documented == served


def test_a_namespace_made_while_the_server_runs_is_found(server: Server, seeded: Seed) -> None:
    client = server.viewer()
    assert client.get("/v1/admin/namespaces/late-comer/secrets").status_code == 404
    with seeded.open() as store:
        store.put("db", "late-value", namespace="late-comer")
    page = client.get("/v1/admin/namespaces/late-comer/secrets").json()
    assert [i["name"] for i in page["items"]] == ["db"]
    assert client.get("/v1/admin/namespaces/late-comer").json()["active_version"] == 1


def test_an_unknown_route_or_method_under_the_api_answers_json(server: Server) -> None:
    client = server.viewer()
    missing = client.get("/v1/admin/nothing-here")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    wrong = client.put("/v1/admin/jobs", json={})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")
    assert "GET" in wrong.headers["allow"]
    assert client.get("/no-such-page.html").status_code == 404

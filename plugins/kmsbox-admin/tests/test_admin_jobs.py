"""Jobs over a real server: rotate and friends as asyncio tasks on the server's loop,
progress by polling and server-sent events, one job per namespace, stopping (a
cancelled task) and resuming, failures with typed errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from admin_helpers import KEK_URI, GatedOperations, Seed, Server, Tokens, seed_store, serve, wait_job
from kmsbox_admin.operations import StoreOperations
from kmsbox_admin.settings import AdminSettings

import kmsbox
from kmsbox.testing.tamper import read_blob, write_blob


def _events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent event stream, until it ends."""
    event, data = None, None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
        elif line == "" and event is not None and data is not None:
            yield event, data
            event, data = None, None


def test_rotate_endpoint_starts_a_job_that_rotates_and_rewraps_and_is_audited(server: Server, seeded: Seed) -> None:
    admin = server.admin()
    response = admin.post("/v1/admin/encryption/rotate", json={"namespace": "app:production"})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/admin/jobs/{job['id']}"
    assert (job["kind"], job["namespace"], job["actor"]) == ("rotate", "app:production", "alice")
    done = wait_job(admin, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["new_version"] == 2
    assert done["result"]["rewrap"]["processed"] == 3
    assert (done["done"], done["total"]) == (3, 3)
    with seeded.open() as store:
        assert store.status("app:production")["namespaces"]["app:production"]["active_versions"] == [2]
        events, _ = store.audit_events(limit=1000)
    rotations = [e for e in events if e.action == "rotate"]
    assert [(e.actor, e.namespace, e.detail) for e in rotations] == [("alice", "app:production", {"new_version": 2})]
    assert rotations[0].context["via"] == "kmsbox-admin" and rotations[0].context["auth"] == "token"
    rewraps = [e for e in events if e.action == "rewrap"]
    assert sum(e.detail["count"] for e in rewraps) == 3
    retirements = [e for e in events if e.action == "retire"]
    assert [(e.actor, e.detail) for e in retirements] == [("alice", {"retired": [1]})]


def test_the_events_a_job_writes_name_its_actor_and_request(server: Server, seeded: Seed) -> None:
    admin = server.admin()
    for body in ({"kind": "rotate", "namespace": "tenant-7"}, {"kind": "reencrypt", "namespace": "app:production"}):
        assert wait_job(admin, admin.post("/v1/admin/jobs", json=body).json()["id"])["state"] == "succeeded"
    with seeded.open() as store:
        events = [e for e in store.iter_audit_events() if e.action in ("rotate", "retire", "reencrypt")]
    assert sorted((e.action, e.namespace) for e in events) == [
        ("reencrypt", "app:production"),
        ("retire", "tenant-7"),
        ("rotate", "tenant-7"),
    ]
    assert {e.actor for e in events} == {"alice"}
    assert {e.context["via"] for e in events} == {"kmsbox-admin"}
    assert len({e.context["request_id"] for e in events}) == 2  # one per request that started a job


def test_the_rewrap_batch_events_of_a_job_name_its_actor(server: Server, seeded: Seed) -> None:
    admin = server.admin()
    job = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
    assert wait_job(admin, job["id"])["state"] == "succeeded"
    with seeded.open() as store:
        rewraps = [e for e in store.iter_audit_events() if e.action == "rewrap"]
    assert rewraps and {(e.actor, e.context.get("via")) for e in rewraps} == {("alice", "kmsbox-admin")}


def test_a_dry_run_rotation_changes_nothing(server: Server, seeded: Seed) -> None:
    admin = server.admin()
    job = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7", "dry_run": True}).json()
    done = wait_job(admin, job["id"])
    assert done["state"] == "succeeded"
    assert done["result"]["dry_run"] is True and done["result"]["new_version"] == 2
    assert done["result"]["rewrap"]["processed"] == 0
    with seeded.open() as store:
        assert store.status("tenant-7")["namespaces"]["tenant-7"]["active_versions"] == [1]


def test_job_progress_streams_as_server_sent_events_until_the_end(start_server: Callable[..., Server]) -> None:
    server = start_server(operations_class=GatedOperations)
    gates: Any = server.operations
    gates.before_job.clear()
    gates.hold_after_first_batch()
    admin = server.admin()
    job = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
    seen: list[tuple[str, dict[str, Any]]] = []
    with admin.stream("GET", f"/v1/admin/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event, data in _events(response):
            seen.append((event, data))
            if len(seen) == 1:
                gates.before_job.set()  # the stream is open: let the job run
            if (data["state"], data["done"], data["total"]) == ("running", 3, 3):
                gates.release()  # its batch was seen: let it finish
    assert seen[0][0] == "progress" and seen[0][1]["state"] == "queued"
    assert [event for event, _ in seen].count("end") == 1 and seen[-1][0] == "end"
    final = seen[-1][1]
    assert final["state"] == "succeeded" and final["result"]["new_version"] == 2
    revisions = [data["revision"] for _, data in seen]
    assert revisions == sorted(revisions)
    # After the end, the stream of a finished job says so at once.
    with admin.stream("GET", f"/v1/admin/jobs/{job['id']}/events") as response:
        assert [event for event, _ in _events(response)] == ["end"]


def test_one_job_per_namespace_and_a_store_wide_job_excludes_all_others(start_server: Callable[..., Server]) -> None:
    server = start_server(operations_class=GatedOperations, kek_targets=["env://KMSBOX_ADMIN_OTHER_KEK"])
    gates: Any = server.operations
    gates.before_job.clear()
    admin = server.admin()
    first = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"})
    assert first.status_code == 202
    again = admin.post("/v1/admin/jobs", json={"kind": "reencrypt", "namespace": "tenant-7"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_running"
    other = admin.post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": "app:production"})
    assert other.status_code == 202
    store_wide = admin.post("/v1/admin/jobs", json={"kind": "migrate-kek", "to": "env://KMSBOX_ADMIN_OTHER_KEK"})
    assert store_wide.status_code == 409
    gates.before_job.set()
    assert wait_job(admin, first.json()["id"])["state"] == "succeeded"
    assert wait_job(admin, other.json()["id"])["state"] == "succeeded"
    # Once they finished, the same namespace takes a job again.
    assert admin.post("/v1/admin/jobs", json={"kind": "reencrypt", "namespace": "tenant-7"}).status_code == 202


def test_jobs_past_the_running_bound_wait_queued_for_a_slot(start_server: Callable[..., Server]) -> None:
    server = start_server(operations_class=GatedOperations, running_jobs=1)
    gates: Any = server.operations
    gates.hold_after_first_batch()
    admin = server.admin()
    first = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
    assert gates.first_batch_done.wait(30)
    second = admin.post("/v1/admin/encryption/rotate", json={"namespace": "app:production"}).json()
    time.sleep(0.2)  # time enough for it to start, were a slot free
    assert admin.get(f"/v1/admin/jobs/{first['id']}").json()["state"] == "running"
    assert admin.get(f"/v1/admin/jobs/{second['id']}").json()["state"] == "queued"
    gates.release()
    assert wait_job(admin, first["id"])["state"] == "succeeded"
    done = wait_job(admin, second["id"])
    assert (
        done["state"] == "succeeded"
        and done["started_at"] >= admin.get(f"/v1/admin/jobs/{first['id']}").json()["finished_at"]
    )


def test_an_app_given_a_factory_opens_the_store_at_start_up_and_closes_it_at_shutdown(
    seeded: Seed, tokens: Tokens
) -> None:
    server, stop = serve(
        AdminSettings(tokens=tokens.entries, port=0),
        lambda: StoreOperations.open(seeded.url, [KEK_URI]),
        tokens,
        app_opens=True,
    )
    operations: Any = server.operations
    try:
        admin = server.admin()
        job = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
        assert wait_job(admin, job["id"])["result"]["new_version"] == 2
        assert operations._store._closed is False
    finally:
        stop()
    assert operations._store._closed is True


@pytest.fixture
def bulk(seeded: Seed) -> str:
    """1,200 secrets in namespace ``bulk`` (more than two batches of 500), all under a rotating key."""
    with seeded.open() as store:
        store.import_secrets({f"k{index:05d}": f"v{index}" for index in range(1200)}, namespace="bulk")
        store.rotate_namespace_key("bulk")
    return "bulk"


def _under(seeded: Seed, namespace: str) -> list[tuple[int, int]]:
    """(key version, secret versions under it) of a namespace, read behind the server's back."""
    with seeded.open() as store:
        keys = store.status(namespace)["namespaces"][namespace]["keys"]
    return [(k["version"], k["secret_versions"]) for k in keys]


def test_a_stopped_job_keeps_whole_batches_and_resumes(
    start_server: Callable[..., Server], seeded: Seed, bulk: str
) -> None:
    server = start_server(operations_class=GatedOperations)
    gates: Any = server.operations
    gates.hold_after_first_batch()  # its second batch then waits for the SQLite write lock
    admin = server.admin()
    job = admin.post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": bulk}).json()
    assert gates.first_batch_done.wait(30)
    stopping = admin.post(f"/v1/admin/jobs/{job['id']}/stop")
    assert stopping.status_code == 202 and stopping.json()["stop_requested"] is True
    stopped = wait_job(admin, job["id"])  # at once: its task is cancelled while the batch waits
    assert stopped["state"] == "stopped"
    assert stopped["error"]["code"] == "stopped" and "resume" in stopped["error"]["message"]
    assert (stopped["done"], stopped["total"]) == (500, 1200)
    # Through the server (opening another store now would wait for the lock itself).
    keys = admin.get(f"/v1/admin/namespaces/{bulk}/keys").json()["keys"]
    assert [(k["version"], k["secret_versions"]) for k in keys] == [(1, 700), (2, 500)]
    # The batch that was waiting for the lock commits whole once it is free, or never ran (if the
    # task was cancelled before a pool thread took it): either way a re-run finishes the job.
    gates.release()
    again = admin.post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": bulk}).json()
    resumed = wait_job(admin, again["id"])
    assert resumed["state"] == "succeeded" and resumed["result"]["processed"] in (200, 700)
    assert admin.get(f"/v1/admin/namespaces/{bulk}").json()["legacy_secret_versions"] == 0
    assert _under(seeded, bulk) == [(1, 0), (2, 1200)]
    with seeded.open() as store:
        rewraps = [e for e in store.iter_audit_events() if e.action == "rewrap" and e.namespace == bulk]
    assert sum(e.detail["count"] for e in rewraps) == 1200  # every secret rewrapped once, none lost


def test_a_job_stopped_while_queued_changes_nothing(start_server: Callable[..., Server], seeded: Seed) -> None:
    server = start_server(operations_class=GatedOperations)
    gates: Any = server.operations
    gates.before_job.clear()
    admin = server.admin()
    job = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
    stopped = admin.post(f"/v1/admin/jobs/{job['id']}/stop").json()
    assert stopped["stop_requested"] is True
    assert wait_job(admin, job["id"])["state"] == "stopped"
    assert wait_job(admin, job["id"])["started_at"] is None
    gates.before_job.set()
    assert _under(seeded, "tenant-7") == [(1, 3)]
    # The namespace takes a job again.
    again = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
    assert wait_job(admin, again["id"])["result"]["new_version"] == 2


def test_a_server_that_stops_cancels_its_jobs_keeping_whole_batches(seeded: Seed, tokens: Tokens, bulk: str) -> None:
    settings = AdminSettings(tokens=tokens.entries, port=0)

    async def open_gated() -> GatedOperations:
        # One pool thread: the store's close queues behind a batch still running there.
        operations = await GatedOperations.open(seeded.url, [KEK_URI], threads=1)
        assert isinstance(operations, GatedOperations)
        operations.db_path = seeded.url.removeprefix("sqlite:///")
        operations.hold_after_first_batch()
        return operations

    server, stop = serve(settings, open_gated, tokens)
    operations: Any = server.operations
    try:
        job = server.admin().post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": bulk}).json()
        assert job["state"] == "queued"
        assert operations.first_batch_done.wait(30)
        registry = server.app.state.admin.jobs
        stop()  # the shutdown cancels the job while its second batch waits for the lock
        assert registry.closing
        stopped = registry.get(job["id"])
        assert (stopped.state, stopped.done, stopped.error["code"]) == ("stopped", 500, "stopped")
    finally:
        operations.open_all()
    # The waiting batch committed whole, or never ran (cancelled before a pool thread took it).
    under = _under(seeded, bulk)
    assert under in ([(1, 700), (2, 500)], [(1, 200), (2, 1000)])
    with seeded.open() as store:
        assert store.rewrap_deks(bulk).processed == under[0][1]  # what the next run does: resume
    assert _under(seeded, bulk) == [(1, 0), (2, 1200)]


def _poll_until_finished(client: httpx.Client, job_id: str) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    while not seen or seen[-1][0] not in ("succeeded", "failed", "stopped"):
        assert time.monotonic() < deadline
        job = client.get(f"/v1/admin/jobs/{job_id}").json()
        seen.append((job["state"], job["done"]))
    return seen


def _answers_while_a_job_runs(server: Server) -> None:
    admin = server.admin()
    job = admin.post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": "bulk"}).json()
    seen = _poll_until_finished(admin, job["id"])
    assert seen[-1] == ("succeeded", 6000)
    # Requests were answered between the job's batches, not only before and after it.
    assert [done for state, done in seen if state == "running" and 0 < done < 6000] != []


def test_the_server_answers_while_a_job_runs_sqlite(start_server: Callable[..., Server], seeded: Seed) -> None:
    with seeded.open() as store:
        store.import_secrets({f"k{index:05d}": "v" for index in range(6000)}, namespace="bulk")
        store.rotate_namespace_key("bulk")
    _answers_while_a_job_runs(start_server())


@pytest.mark.postgres
def test_the_server_answers_while_a_job_runs_postgres(postgres_url: str, kek_hex: str, tokens: Tokens) -> None:
    with kmsbox.open_store(postgres_url, kek=KEK_URI) as store:
        store.import_secrets({f"k{index:05d}": "v" for index in range(6000)}, namespace="bulk")
        store.rotate_namespace_key("bulk")
    server, stop = serve(
        AdminSettings(tokens=tokens.entries, port=0), lambda: StoreOperations.open(postgres_url, [KEK_URI]), tokens
    )
    try:
        _answers_while_a_job_runs(server)
    finally:
        stop()


@pytest.mark.postgres
def test_a_job_stopped_on_postgresql_keeps_whole_batches_and_resumes(
    postgres_url: str, kek_hex: str, tokens: Tokens
) -> None:
    with kmsbox.open_store(postgres_url, kek=KEK_URI) as store:
        store.import_secrets({f"k{index:05d}": "v" for index in range(6000)}, namespace="bulk")
        store.rotate_namespace_key("bulk")
    server, stop = serve(
        AdminSettings(tokens=tokens.entries, port=0), lambda: StoreOperations.open(postgres_url, [KEK_URI]), tokens
    )
    try:
        admin = server.admin()
        job = admin.post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": "bulk"}).json()
        while admin.get(f"/v1/admin/jobs/{job['id']}").json()["done"] == 0:
            time.sleep(0.005)
        admin.post(f"/v1/admin/jobs/{job['id']}/stop")
        stopped = wait_job(admin, job["id"])
        assert stopped["state"] == "stopped" and 500 <= stopped["done"] < 6000
    finally:
        stop()
    with kmsbox.open_store(postgres_url, kek=KEK_URI) as store:
        keys = store.status("bulk")["namespaces"]["bulk"]["keys"]
        moved = next(k["secret_versions"] for k in keys if k["version"] == 2)
        # Whole batches only: the one in flight when the task was cancelled was rolled back.
        assert moved == stopped["done"] and moved % 500 == 0
        assert store.rewrap_deks("bulk").processed == 6000 - moved


def test_a_failed_job_shows_its_typed_error(start_server: Callable[..., Server]) -> None:
    server = start_server(kek_targets=["env://KMSBOX_ADMIN_UNSET_KEK"])
    admin = server.admin()
    job = admin.post("/v1/admin/jobs", json={"kind": "migrate-kek", "to": "env://KMSBOX_ADMIN_UNSET_KEK"}).json()
    failed = wait_job(admin, job["id"])
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "ConfigError" and failed["error"]["code"] == "config_error"
    assert "KMSBOX_ADMIN_UNSET_KEK" in failed["error"]["message"]


def test_a_migration_goes_only_to_a_kek_listed_in_kek_targets(start_server: Callable[..., Server]) -> None:
    server = start_server(kek_targets=[])
    response = server.admin().post("/v1/admin/jobs", json={"kind": "migrate-kek", "to": "file:///etc/passwd"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_allowed"
    assert server.admin().get("/v1/admin/jobs").json() == {"jobs": []}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"kind": "explode", "namespace": "tenant-7"}, 400),
        ({"kind": "rotate"}, 400),
        ({"kind": "rotate", "namespace": "no-such-ns"}, 404),
        ({"kind": "rotate", "namespace": "bad ns"}, 400),
        ({"kind": "migrate-kek", "namespace": "tenant-7", "to": "env://X"}, 400),
        ({"kind": "migrate-kek"}, 400),
        ({"kind": "rotate", "namespace": "tenant-7", "to": "env://X"}, 400),
        ({"kind": "rotate", "namespace": "tenant-7", "confirm_delete": True}, 400),
        ({"kind": "rotate", "namespace": "tenant-7", "dry_run": "yes"}, 400),
        ({"kind": "repair", "dry_run": True}, 400),
        ({"kind": "rotate", "namespace": "tenant-7", "priority": 1}, 400),
    ],
)
def test_a_job_that_cannot_start_is_refused_and_nothing_runs(
    server: Server, seeded: Seed, body: dict[str, Any], status: int
) -> None:
    response = server.admin().post("/v1/admin/jobs", json=body)
    assert response.status_code == status, response.text
    assert server.admin().get("/v1/admin/jobs").json() == {"jobs": []}
    with seeded.open() as store:
        assert store.status("tenant-7")["namespaces"]["tenant-7"]["active_versions"] == [1]


def test_a_repair_that_changes_the_store_is_an_admin_job(server: Server, seeded: Seed) -> None:
    with seeded.open() as store:
        store.rotate_namespace_key("app:production")
    viewer = server.viewer()
    refused = viewer.post("/v1/admin/repair", json={"namespace": "app:production", "dry_run": False})
    assert refused.status_code == 403
    contradictory = viewer.post("/v1/admin/repair", json={"dry_run": True, "confirm_delete": True})
    assert contradictory.status_code == 400
    admin = server.admin()
    started = admin.post("/v1/admin/repair", json={"namespace": "app:production", "dry_run": False})
    assert started.status_code == 202
    done = wait_job(admin, started.json()["id"])
    assert done["state"] == "succeeded"
    assert done["result"]["done"] == ["rewrapped 3 DEKs in app:production"]
    assert done["result"]["remaining"] == []


def test_the_job_history_is_bounded(start_server: Callable[..., Server]) -> None:
    server = start_server(job_history=2)
    admin = server.admin()
    ids = []
    for _ in range(3):
        job = admin.post("/v1/admin/jobs", json={"kind": "rewrap-deks", "namespace": "tenant-7"}).json()
        wait_job(admin, job["id"])
        ids.append(job["id"])
    assert [j["id"] for j in admin.get("/v1/admin/jobs").json()["jobs"]] == [ids[2], ids[1]]
    assert admin.get(f"/v1/admin/jobs/{ids[0]}").status_code == 404


@pytest.mark.postgres
def test_rotation_through_the_api_on_postgresql(postgres_url: str, kek_hex: str, tokens: Tokens) -> None:
    seed_store(postgres_url, kek_hex)
    server, stop = serve(
        AdminSettings(tokens=tokens.entries, port=0), lambda: StoreOperations.open(postgres_url, [KEK_URI]), tokens
    )
    try:
        admin = server.admin()
        job = admin.post("/v1/admin/encryption/rotate", json={"namespace": "tenant-7"}).json()
        done = wait_job(admin, job["id"])
        assert done["state"] == "succeeded" and done["result"]["rewrap"]["processed"] == 3
        keys = admin.get("/v1/admin/namespaces/tenant-7/keys").json()["keys"]
        assert [(k["version"], k["status"], k["secret_versions"]) for k in keys] == [
            (1, "retired", 0),
            (2, "active", 3),
        ]
        rotations = admin.get("/v1/admin/audit", params={"action": "rotate", "namespace": "tenant-7"}).json()
        assert [e["actor"] for e in rotations["events"]] == ["alice"]
        assert admin.get("/v1/admin/namespaces/ghost").status_code == 404
    finally:
        stop()


def test_a_destructive_repair_needs_confirm_delete_and_the_admin_role(server: Server, seeded: Seed) -> None:
    db = seeded.url.removeprefix("sqlite:///")
    # A ciphertext moved onto another secret's row, as a database-only attacker could: unrecoverable.
    write_blob(db, "tenant-7", "svc/secret-0001", 1, read_blob(db, "tenant-7", "svc/secret-0000", 1))
    admin, viewer = server.admin(), server.viewer()
    plan = viewer.post("/v1/admin/repair", json={"namespace": "tenant-7"}).json()
    assert plan["needs_confirmation"] == ["delete unrecoverable secret tenant-7/svc/secret-0001 v1"]
    denied = viewer.post("/v1/admin/repair", json={"namespace": "tenant-7", "dry_run": False, "confirm_delete": True})
    assert denied.status_code == 403
    unconfirmed = admin.post("/v1/admin/repair", json={"namespace": "tenant-7", "dry_run": False}).json()
    assert wait_job(admin, unconfirmed["id"])["result"]["needs_confirmation"] == plan["needs_confirmation"]
    assert viewer.get("/v1/admin/namespaces/tenant-7/secrets/svc/secret-0001").status_code == 200
    confirmed = admin.post(
        "/v1/admin/repair", json={"namespace": "tenant-7", "dry_run": False, "confirm_delete": True}
    ).json()
    done = wait_job(admin, confirmed["id"])
    assert done["result"]["done"] == [
        "deleted secret tenant-7/svc/secret-0001 (1 versions; its current version was unrecoverable)"
    ]
    assert viewer.get("/v1/admin/namespaces/tenant-7/secrets/svc/secret-0001").status_code == 404
    events = viewer.get("/v1/admin/audit", params={"action": "repair", "name": "svc/secret-0001"}).json()["events"]
    assert [(e["actor"], e["detail"]) for e in events] == [("alice", {"deleted": True, "whole_secret": True})]

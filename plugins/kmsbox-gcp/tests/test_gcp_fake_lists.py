"""List filters and ordering, and the destroy-delay bounds, of the fake Cloud KMS through the official client.

Google's own samples clean up with ``filter="state != DESTROYED AND state !=
DESTROY_SCHEDULED"``; that and the rest of Cloud KMS's filter language must work.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest
from google.api_core import exceptions as gexc
from google.cloud.kms_v1 import CryptoKey, CryptoKeyVersion, KeyManagementServiceClient
from google.protobuf import duration_pb2

State = CryptoKeyVersion.CryptoKeyVersionState
LOCATION = "projects/kmsbox-fake/locations/global"
ENCRYPT_DECRYPT = CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT


def _ring(client: KeyManagementServiceClient, unique: Callable[[str], str]) -> str:
    return client.create_key_ring(request={"parent": LOCATION, "key_ring_id": unique("ring")}).name


def _key(client: KeyManagementServiceClient, ring: str, key_id: str, **spec: object) -> CryptoKey:
    crypto_key = {"purpose": ENCRYPT_DECRYPT, **spec}
    return client.create_crypto_key(request={"parent": ring, "crypto_key_id": key_id, "crypto_key": crypto_key})


def _versions_in_states(client: KeyManagementServiceClient, key: str) -> dict[int, str]:
    """A key with versions 1..5: 1 and 2 ENABLED, 3 DISABLED, 4 DESTROY_SCHEDULED, 5 ENABLED."""
    for _ in range(4):
        client.create_crypto_key_version(request={"parent": key, "crypto_key_version": {}})
    client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": f"{key}/cryptoKeyVersions/3", "state": State.DISABLED},
            "update_mask": {"paths": ["state"]},
        }
    )
    client.destroy_crypto_key_version(request={"name": f"{key}/cryptoKeyVersions/4"})
    return {v.name: v.state.name for v in client.list_crypto_key_versions(request={"parent": key})}


def _listed(client: KeyManagementServiceClient, key: str, **request: object) -> list[int]:
    versions = client.list_crypto_key_versions(request={"parent": key, **request})
    return [int(v.name.rsplit("/", 1)[1]) for v in versions]


def test_googles_sample_teardown_destroys_what_is_not_destroyed_yet(
    kms_client: KeyManagementServiceClient, unique: Callable[[str], str]
) -> None:
    ring = _ring(kms_client, unique)
    rotating = _key(
        kms_client,
        ring,
        "rotating",
        rotation_period=dt.timedelta(days=30),
        next_rotation_time=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    _versions_in_states(kms_client, _key(kms_client, ring, "plain").name)
    # What the samples' teardown does: stop rotation, then destroy every version not already on its way out.
    for key in kms_client.list_crypto_keys(request={"parent": ring}):
        if key.rotation_period or key.next_rotation_time:
            kms_client.update_crypto_key(
                request={
                    "crypto_key": {"name": key.name},
                    "update_mask": {"paths": ["rotation_period", "next_rotation_time"]},
                }
            )
        remaining = "state != DESTROYED AND state != DESTROY_SCHEDULED"
        for version in kms_client.list_crypto_key_versions(request={"parent": key.name, "filter": remaining}):
            kms_client.destroy_crypto_key_version(request={"name": version.name})
    assert "rotation_period" not in kms_client.get_crypto_key(name=rotating.name)
    for key in kms_client.list_crypto_keys(request={"parent": ring}):
        states = {v.state for v in kms_client.list_crypto_key_versions(request={"parent": key.name})}
        assert states == {State.DESTROY_SCHEDULED}


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("state = ENABLED", [1, 2, 5]),
        ("state != ENABLED", [3, 4]),
        ("state=DISABLED", [3]),
        ("NOT state = ENABLED", [3, 4]),
        ("-state = ENABLED", [3, 4]),
        ("state = ENABLED AND name:/2", [2]),
        ("state = ENABLED name:/2", [2]),  # a space is AND
        ("state = DISABLED OR state = DESTROY_SCHEDULED", [3, 4]),
        ("name:/1 AND state = ENABLED OR state = DISABLED", [1]),  # OR binds tighter than AND
        ("(name:/1 AND state = ENABLED) OR state = DISABLED", [1, 3]),
        ('name:"cryptoKeyVersions/5"', [5]),
        ("name:CRYPTOKEYVERSIONS/5", [5]),  # containment is case-insensitive
        ("destroy_time:2", [4]),
        ('create_time > "2000-01-01T00:00:00Z"', [1, 2, 3, 4, 5]),
        ('create_time < "2000-01-01T00:00:00Z"', []),
        ("algorithm = GOOGLE_SYMMETRIC_ENCRYPTION", [1, 2, 3, 4, 5]),
        ("protection_level = HSM", []),
    ],
)
def test_version_filters(
    kms_client: KeyManagementServiceClient, unique: Callable[[str], str], filter_text: str, expected: list[int]
) -> None:
    key = _key(kms_client, _ring(kms_client, unique), "k").name
    _versions_in_states(kms_client, key)
    assert _listed(kms_client, key, filter=filter_text) == expected


def test_order_by_and_paging_follow_the_filter(
    kms_client: KeyManagementServiceClient, unique: Callable[[str], str]
) -> None:
    key = _key(kms_client, _ring(kms_client, unique), "k").name
    _versions_in_states(kms_client, key)
    assert _listed(kms_client, key, order_by="name desc") == [5, 4, 3, 2, 1]
    assert _listed(kms_client, key, order_by="state, name desc") == [5, 2, 1, 3, 4]
    pages = list(
        kms_client.list_crypto_key_versions(
            request={"parent": key, "filter": "state = ENABLED", "order_by": "name desc", "page_size": 2}
        ).pages
    )
    assert [[int(v.name[-1]) for v in page.crypto_key_versions] for page in pages] == [[5, 2], [1]]
    assert pages[0].total_size == 3
    with pytest.raises(gexc.InvalidArgument, match="Invalid page_token"):
        kms_client.list_crypto_key_versions(
            request={"parent": key, "filter": "state = DISABLED", "page_token": pages[0].next_page_token}
        )


def test_key_and_key_ring_filters(kms_client: KeyManagementServiceClient, unique: Callable[[str], str]) -> None:
    ring = _ring(kms_client, unique)
    _key(kms_client, ring, "alpha", labels={"team": "alpha"})
    _key(kms_client, ring, "beta", labels={"team": "beta", "tier": "gold"})
    unrotated = _key(kms_client, ring, "gamma")
    kms_client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": unrotated.primary.name, "state": State.DISABLED},
            "update_mask": {"paths": ["state"]},
        }
    )

    def keys(**request: object) -> list[str]:
        listed = kms_client.list_crypto_keys(request={"parent": ring, **request})
        return [k.name.rsplit("/", 1)[1] for k in listed]

    assert keys(filter="labels.team = alpha") == ["alpha"]
    assert keys(filter="labels:tier") == ["beta"]
    assert keys(filter="primary.state = ENABLED") == ["alpha", "beta"]
    assert keys(filter="purpose = ENCRYPT_DECRYPT", order_by="name desc") == ["gamma", "beta", "alpha"]
    assert keys(filter='destroy_scheduled_duration = "2592000s"') == ["alpha", "beta", "gamma"]
    rings = kms_client.list_key_rings(request={"parent": LOCATION, "filter": f"name:{ring.rsplit('/', 1)[1]}"})
    assert [r.name for r in rings] == [ring]


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("filter", "colour = red"),
        ("filter", "state ="),
        ("filter", "state = ENABLED AND"),
        ("filter", "(state = ENABLED"),
        ("filter", "= ENABLED"),
        ("filter", "state ~ ENABLED"),
        ("filter", "primary.nothing = 1"),
        ("order_by", "colour"),
        ("order_by", "name sideways"),
        ("order_by", "name desc extra"),
        ("order_by", "name,"),
    ],
)
def test_bad_filters_and_orders_are_invalid_argument(
    kms_client: KeyManagementServiceClient, unique: Callable[[str], str], field: str, text: str
) -> None:
    key = _key(kms_client, _ring(kms_client, unique), "k").name
    with pytest.raises(gexc.InvalidArgument, match="Invalid filter or order_by"):
        list(kms_client.list_crypto_key_versions(request={"parent": key, field: text}))


@pytest.mark.parametrize(
    "delay", [dt.timedelta(seconds=60), dt.timedelta(hours=23, minutes=59), dt.timedelta(days=121), dt.timedelta(0)]
)
def test_destroy_delay_outside_24_hours_to_120_days_is_invalid_argument(
    kms_client: KeyManagementServiceClient, unique: Callable[[str], str], delay: dt.timedelta
) -> None:
    ring = _ring(kms_client, unique)
    with pytest.raises(gexc.InvalidArgument, match="destroy_scheduled_duration must be at least 24 hours"):
        _key(
            kms_client, ring, "k", destroy_scheduled_duration=duration_pb2.Duration(seconds=int(delay.total_seconds()))
        )
    with pytest.raises(gexc.NotFound):
        kms_client.get_crypto_key(name=f"{ring}/cryptoKeys/k")


@pytest.mark.parametrize("delay", [dt.timedelta(hours=24), dt.timedelta(days=120)])
def test_destroy_delay_at_the_bounds_is_kept(
    kms_client: KeyManagementServiceClient, unique: Callable[[str], str], delay: dt.timedelta
) -> None:
    key = _key(kms_client, _ring(kms_client, unique), "k", destroy_scheduled_duration=delay)
    assert key.destroy_scheduled_duration == delay
    destroyed = kms_client.destroy_crypto_key_version(request={"name": key.primary.name})
    assert abs(destroyed.destroy_time.timestamp() - (time.time() + delay.total_seconds())) < 60

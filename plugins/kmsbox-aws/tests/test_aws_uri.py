"""aws-kms:// URIs: what parses, what is a ConfigError, and how the plugin is registered."""

from __future__ import annotations

import pytest
from kmsbox_aws import AwsKmsKekProvider, key_uri, parse_uri

from kmsbox.errors import ConfigError
from kmsbox.kek import open_kek
from kmsbox.plugins import fake_servers, kek_factories

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:us-east-2:111122223333:key/{KEY_ID}"


@pytest.mark.parametrize(
    "uri",
    [
        "aws-kms://",
        "aws-kms://arn",
        f"aws-kms://{KEY_ID}",  # a bare key ID: the region and account would be guessed
        "aws-kms://alias/my-key",  # a bare alias name: same
        f"aws-kms://arn:aws:s3:us-east-2:111122223333:key/{KEY_ID}",  # another service
        f"aws-kms://arn:aws:kms:us_east_2:111122223333:key/{KEY_ID}",  # not a region
        f"aws-kms://arn:aws:kms::111122223333:key/{KEY_ID}",  # no region
        f"aws-kms://arn:aws:kms:us-east-2:11112222333:key/{KEY_ID}",  # 11-digit account
        f"aws-kms://arn:aws:kms:us-east-2:111122223333:key/{KEY_ID.upper()}",  # AWS key IDs are lowercase
        "aws-kms://arn:aws:kms:us-east-2:111122223333:key/not-a-key-id",
        "aws-kms://arn:aws:kms:us-east-2:111122223333:key/",
        f"aws-kms://arn:aws:kms:us-east-2:111122223333:keys/{KEY_ID}",
        "aws-kms://arn:aws:kms:us-east-2:111122223333:alias/",
        "aws-kms://arn:aws:kms:us-east-2:111122223333:alias/has space",
        "aws-kms://arn:aws:kms:us-east-2:111122223333:alias/semi;colon",
        f"aws-kms://arn:aws:kms:us-east-2:111122223333:alias/{'a' * 251}",
        f"aws-kms://{KEY_ARN}?region=us-west-2",
        f"aws-kms://{KEY_ARN} ",
        f"aws-kms://{KEY_ARN}\n",
        f"aws-kms://arn:azure:kms:us-east-2:111122223333:key/{KEY_ID}",
    ],
)
def test_malformed_uri_is_config_error(uri: str) -> None:
    with pytest.raises(ConfigError):
        open_kek(uri)


def test_not_an_aws_kms_uri_is_config_error() -> None:
    with pytest.raises(ConfigError):
        AwsKmsKekProvider(f"gcp-kms://{KEY_ARN}")


@pytest.mark.parametrize(
    ("arn", "partition", "region", "kind"),
    [
        (KEY_ARN, "aws", "us-east-2", "key"),
        ("arn:aws:kms:us-east-2:111122223333:alias/ExampleAlias", "aws", "us-east-2", "alias"),
        ("arn:aws:kms:eu-west-1:111122223333:alias/team/app_prod-1", "aws", "eu-west-1", "alias"),
        (f"arn:aws-cn:kms:cn-north-1:111122223333:key/{KEY_ID}", "aws-cn", "cn-north-1", "key"),
        (f"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/{KEY_ID}", "aws-us-gov", "us-gov-west-1", "key"),
        (
            "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "aws",
            "ap-southeast-2",
            "key",
        ),
    ],
)
def test_well_formed_uri_parses(arn: str, partition: str, region: str, kind: str) -> None:
    parsed = parse_uri(f"aws-kms://{arn}")
    assert (parsed.partition, parsed.region, parsed.account, parsed.kind) == (partition, region, "111122223333", kind)
    assert parsed.arn == arn
    assert key_uri(arn) == f"aws-kms://{arn}"


def test_opening_makes_no_call_and_takes_the_region_from_the_arn(monkeypatch: pytest.MonkeyPatch) -> None:
    # No credentials and an endpoint nobody listens on: opening must still succeed.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    provider = open_kek(f"aws-kms://{KEY_ARN}")
    assert isinstance(provider, AwsKmsKekProvider)
    assert provider.arn == KEY_ARN
    assert provider.primary_version() == KEY_ARN  # a key ARN is its own version: no DescribeKey
    assert "KMSBOX" not in repr(provider) and repr(provider) == f"AwsKmsKekProvider(uri='aws-kms://{KEY_ARN}')"
    provider.close()


def test_malformed_endpoint_setting_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "not a url")
    with pytest.raises(ConfigError):
        open_kek(f"aws-kms://{KEY_ARN}")


def test_plugin_registers_scheme_and_fake() -> None:
    assert kek_factories()["aws-kms"].plugin == "aws"
    assert fake_servers()["aws"].plugin == "aws"


def test_unknown_profile_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "kmsbox-no-such-profile")
    with pytest.raises(ConfigError, match="kmsbox-no-such-profile"):
        open_kek(f"aws-kms://{KEY_ARN}")

"""kmsbox hook implementations of the AWS plugin (entry point ``aws``)."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_fake_servers", "register_kek_providers"]


def _open_aws_kms_kek(uri: str) -> Any:
    # boto3 loads only when an AWS key is used, not with the plugin.
    from kmsbox_aws.provider import open_aws_kms_kek

    return open_aws_kms_kek(uri)


@hookimpl
def register_kek_providers(register: Any) -> None:
    """Register the ``aws-kms://`` scheme."""
    register("aws-kms", _open_aws_kms_kek, "AWS KMS key or alias (boto3)")


@hookimpl
def register_fake_servers(register: Any) -> None:
    """Register the fake ``aws`` (moto's server behind kmsbox's fault injector)."""

    def start(**options: Any) -> Any:
        # Imported on use: moto is only in the 'fake' extra.
        from kmsbox_aws.fake import start_fake

        return start_fake(**options)

    register("aws", start, "fake AWS KMS (moto server; needs kmsbox-aws[fake])")

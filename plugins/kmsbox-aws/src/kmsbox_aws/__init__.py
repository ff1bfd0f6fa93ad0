"""kmsbox-aws: the AWS KMS key-encryption-key provider (``aws-kms://``) and its fake.

The fake lives in :mod:`kmsbox_aws.fake` and needs the ``fake`` extra (moto). The names
below load on first use, so that loading the plugin (every kmsbox process does) does not
import boto3: it would double the heap a full garbage collection walks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kmsbox.plugins import load_lazily

if TYPE_CHECKING:
    from kmsbox_aws._arn import KmsArn, key_uri, parse_uri
    from kmsbox_aws.provider import AwsKmsKekProvider, make_kms_client, open_aws_kms_kek

__all__ = ["AwsKmsKekProvider", "KmsArn", "key_uri", "make_kms_client", "open_aws_kms_kek", "parse_uri"]

_HOMES = {
    "KmsArn": "kmsbox_aws._arn",
    "key_uri": "kmsbox_aws._arn",
    "parse_uri": "kmsbox_aws._arn",
    "AwsKmsKekProvider": "kmsbox_aws.provider",
    "make_kms_client": "kmsbox_aws.provider",
    "open_aws_kms_kek": "kmsbox_aws.provider",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)

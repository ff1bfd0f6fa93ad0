"""kmsbox-aws: the AWS KMS key-encryption-key provider (``aws-kms://``) and its fake.

The fake lives in :mod:`kmsbox_aws.fake` and needs the ``fake`` extra (moto).
"""

from __future__ import annotations

from kmsbox_aws._arn import KmsArn, key_uri, parse_uri
from kmsbox_aws.provider import AwsKmsKekProvider, make_kms_client, open_aws_kms_kek

__all__ = ["AwsKmsKekProvider", "KmsArn", "key_uri", "make_kms_client", "open_aws_kms_kek", "parse_uri"]

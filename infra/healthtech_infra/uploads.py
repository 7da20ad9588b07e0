"""Clinic uploads: one managed policy that lets a clinic's IAM user or role write only its own folder.

Design (docs/aws.md "Clinic uploads"): every clinic gets its own IAM user or role, tagged
`source=<clinic>` by an administrator, with this policy attached. The policy allows s3:PutObject on
`raw/${aws:PrincipalTag/source}/*` of the raw bucket, so one policy serves every clinic and a clinic
cannot write another clinic's folder (nor read anything). The pipeline already treats each folder
under raw/ as its own pair of workbooks.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .config import RAW_PREFIX, EtlConfig

SOURCE_TAG = "source"
# An IAM policy variable, resolved per request from the caller's tag (not a CDK token).
UPLOAD_KEY_PATTERN = f"{RAW_PREFIX}${{aws:PrincipalTag/{SOURCE_TAG}}}/*"


class ClinicUploadPolicy(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: EtlConfig, raw_bucket: s3.IBucket, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=f"{config.name_prefix}-clinic-upload",
            description=(
                f"healthtech-etl {config.env}: upload workbooks to raw/<source>/ of the raw bucket, where "
                "<source> is the caller's 'source' tag; no read, no list"
            ),
            statements=upload_statements(Stack.of(self), raw_bucket, key),
        )


def upload_statements(stack: Stack, raw_bucket: s3.IBucket, key: kms.IKey) -> list[iam.PolicyStatement]:
    return [
        iam.PolicyStatement(
            sid="UploadToOwnSourceFolder",
            # AbortMultipartUpload: the CLI cancels a failed large upload (its parts cost storage).
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[raw_bucket.arn_for_objects(UPLOAD_KEY_PATTERN)],
            # A caller without the tag gets nothing (not raw//*).
            conditions={"Null": {f"aws:PrincipalTag/{SOURCE_TAG}": "false"}},
        ),
        # SSE-KMS with the stack's key, only through S3 and only for the raw bucket (with S3 Bucket
        # Keys the encryption context is the bucket ARN). kms:Decrypt because S3 reads the encrypted
        # parts of a multipart upload (the AWS CLI uses one from 8 MB) to complete it; it reads no
        # object for the caller, who has no s3:GetObject.
        iam.PolicyStatement(
            sid="EncryptUploadsWithDataKey",
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resources=[key.key_arn],
            conditions={
                "StringEquals": {
                    "kms:ViaService": f"s3.{stack.region}.amazonaws.com",
                    "kms:EncryptionContext:aws:s3:arn": raw_bucket.bucket_arn,
                }
            },
        ),
    ]

"""Where AWS clients are built (only here, inside a run) and which AWS errors are retried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError
from prefect_aws import AwsCredentials

if TYPE_CHECKING:
    from mypy_boto3_emr import EMRClient
    from mypy_boto3_glue import GlueClient
    from mypy_boto3_s3 import S3Client

# botocore retries throttling and 5xx itself, pacing calls to what the account allows.
BOTO_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 8})
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
    }
)
# Retry knobs shared by every AWS task: a few tries, backing off, with jitter.
AWS_TASK_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 8, 30],
    "retry_jitter_factor": 0.5,
}


def emr_client(credentials_block: str) -> EMRClient:
    """An EMR client from the named ``AwsCredentials`` block."""
    return session(credentials_block).client("emr", config=BOTO_CONFIG)


def s3_client(credentials_block: str) -> S3Client:
    """An S3 client from the named ``AwsCredentials`` block."""
    return session(credentials_block).client("s3", config=BOTO_CONFIG)


def glue_client(credentials_block: str) -> GlueClient:
    """A Glue client from the named ``AwsCredentials`` block."""
    return session(credentials_block).client("glue", config=BOTO_CONFIG)


def sts_client(credentials_block: str) -> Any:
    """An STS client from the named ``AwsCredentials`` block."""
    return session(credentials_block).client("sts", config=BOTO_CONFIG)


def session(credentials_block: str) -> Any:
    """A boto3 session from the named ``AwsCredentials`` block."""
    # Tasks are synchronous, so load() returns the block, not a coroutine.
    credentials = cast(AwsCredentials, AwsCredentials.load(credentials_block))
    return credentials.get_boto3_session()


def is_transient(error: BaseException | None) -> bool:
    """True for throttling, 5xx and connection errors: safe and useful to try again."""
    if isinstance(error, (EndpointConnectionError, ConnectionError)):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLING_CODES or status >= 500
    return False


def retry_transient_aws_errors(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient AWS errors, never anything else.

    A failed step, a validation error or AccessDenied would fail the same way again.
    """
    return is_transient(state.data if isinstance(state.data, BaseException) else None)

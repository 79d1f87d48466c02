"""Where AWS clients are built (only here, inside a run) and which AWS errors are retried."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.loaders import Loader, create_loader
from prefect_aws import AwsCredentials

from tasks.ops.retry import is_transient

if TYPE_CHECKING:
    from mypy_boto3_emr import EMRClient
    from mypy_boto3_emr_serverless import EMRServerlessClient
    from mypy_boto3_glue import GlueClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

# The block every flow loads unless told otherwise (`make` and the docs create it).
DEFAULT_CREDENTIALS_BLOCK = "sparkify-aws"

# botocore retries throttling and 5xx itself, pacing calls to what the account allows.
BOTO_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 8})
# For calls that create something and carry no idempotency token (RunJobFlow,
# AddJobFlowSteps), or one not to be relied on alone (EMR Serverless's CreateApplication
# and StartJobRun): botocore re-sends a request whose response was lost, which would
# create a second cluster, step or job run. Such a call is tried once; the task retries
# it, after looking for what the lost attempt made.
SINGLE_ATTEMPT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})
# Retry knobs shared by every AWS task: a few tries, backing off, with jitter.
AWS_TASK_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 8, 30],
    "retry_jitter_factor": 0.5,
}


# botocore reads each service's model and endpoint rules (JSON files, up to megabytes) once
# per session, and every task builds its own session: about a second of parsing per flow
# run. One loader for the process keeps it to once; the files never change under a run.
_SERVICE_MODELS: Loader = create_loader()


@dataclass
class AwsClients:
    """The clients of one task, all from one load of the ``AwsCredentials`` block.

    Each client is built on first use, inside the run (moto must be active before a
    client exists), and only once.
    """

    session: Any

    @cached_property
    def emr(self) -> EMRClient:
        """EMR client."""
        return cast("EMRClient", self.client("emr"))

    @cached_property
    def emr_single_attempt(self) -> EMRClient:
        """EMR client that never re-sends a request: for the calls that create things."""
        return cast("EMRClient", self.client("emr", SINGLE_ATTEMPT_CONFIG))

    @cached_property
    def emr_serverless(self) -> EMRServerlessClient:
        """EMR Serverless client."""
        return cast("EMRServerlessClient", self.client("emr-serverless"))

    @cached_property
    def emr_serverless_single_attempt(self) -> EMRServerlessClient:
        """EMR Serverless client that never re-sends: for CreateApplication and StartJobRun."""
        return cast("EMRServerlessClient", self.client("emr-serverless", SINGLE_ATTEMPT_CONFIG))

    @cached_property
    def s3(self) -> S3Client:
        """S3 client."""
        return cast("S3Client", self.client("s3"))

    @cached_property
    def glue(self) -> GlueClient:
        """Glue client."""
        return cast("GlueClient", self.client("glue"))

    @cached_property
    def sts(self) -> STSClient:
        """STS client: who the credentials are."""
        return cast("STSClient", self.client("sts"))

    def client(self, service: str, config: Config = BOTO_CONFIG) -> Any:
        """A new client of ``service``: the one place where the project builds clients."""
        return self.session.client(service, config=config)


def aws_clients(credentials_block: str) -> AwsClients:
    """Clients from the named ``AwsCredentials`` block, loaded once."""
    # Tasks are synchronous, so load() returns the block, not a coroutine.
    credentials = cast(AwsCredentials, AwsCredentials.load(credentials_block))
    session = credentials.get_boto3_session()
    # boto3 keeps its botocore session in `_session` (what `botocore_session=` sets).
    session._session.register_component("data_loader", _SERVICE_MODELS)
    return AwsClients(session)


def retry_transient_aws_errors(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient AWS errors, never anything else.

    A failed step, a validation error or AccessDenied would fail the same way again.
    """
    return is_transient(state.data if isinstance(state.data, BaseException) else None)

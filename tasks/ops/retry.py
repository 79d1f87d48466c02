"""Which AWS errors are worth trying again (Prefect-free, shared by ops and tasks)."""

from __future__ import annotations

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

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
# Per-entry error codes of batch APIs (Glue's BatchCreatePartition) that a retry can fix.
TRANSIENT_ENTRY_CODES = THROTTLING_CODES | {"InternalServiceException", "OperationTimeoutException"}


def is_transient(error: BaseException | None) -> bool:
    """True for throttling, 5xx, timeouts and lost connections: worth another try.

    An error raised from a transient one (``raise ... from err``) is transient too, and an
    error may say so itself with a true ``transient`` attribute (a batch entry's throttle).
    """
    if error is None:
        return False
    if getattr(error, "transient", False):
        return True
    # ConnectionError covers connect timeouts; HTTPClientError covers a read timeout,
    # the response lost after AWS may already have acted.
    if isinstance(error, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLING_CODES or status >= 500
    return is_transient(error.__cause__)

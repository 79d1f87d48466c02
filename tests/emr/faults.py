"""Seeded AWS faults for the EMR flow: throttling, 5xx, connect timeouts, lost responses.

Every client the project builds goes through ``AwsClients.client``; :func:`inject_faults`
puts a :class:`FaultInjector` in front of moto on such a client. With probability
``rate`` per request (one seeded ``random.Random`` per plan, so a run is reproducible)
the injector answers with a fault instead of moto:

- throttling: the service's own throttling error (HTTP 400, or S3's 503 SlowDown);
- server error: HTTP 500 or 503 with the service's internal-error code;
- connect timeout: ``ConnectTimeoutError``; the request never reached AWS;
- response lost: moto acts on the request, then ``ReadTimeoutError`` is raised, as when
  the connection drops after AWS did the work (the fault that duplicates clusters).

AWS does not act on the first three. botocore's before-send event calls every handler,
even after one has answered, so an injector registered ahead of moto could not stop moto
from acting on a throttled request: the injector takes moto's place on the client instead
and calls moto itself when AWS should act.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from io import BytesIO
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HeadersDict
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from moto.core.models import botocore_stubber


class FaultKind(StrEnum):
    """What goes wrong with one request."""

    THROTTLING = "throttling"
    SERVER_ERROR = "server error (5xx)"
    CONNECT_TIMEOUT = "connect timeout"
    RESPONSE_LOST = "response lost after AWS acted"


class FaultPlan:
    """How often faults strike, which kinds, and a record of every fault injected.

    One plan is shared by every client of a test, so a single seeded generator decides
    all faults in call order: the same seed gives the same faults.
    """

    def __init__(
        self,
        rate: float,
        seed: int,
        kinds: tuple[FaultKind, ...] = tuple(FaultKind),
        script: dict[str, list[FaultKind | None]] | None = None,
    ) -> None:
        """A plan; ``script`` gives some operations (``"emr.RunJobFlow"``) their faults in
        order, one per request sent (None: no fault), before the seeded draw takes over."""
        self.rate, self.seed, self.kinds = rate, seed, kinds
        self._script = {operation: list(faults) for operation, faults in (script or {}).items()}
        self._random = random.Random(seed)
        self._paused = False
        self.injected: Counter[tuple[FaultKind, str]] = Counter()  # (kind, "emr.RunJobFlow")

    def choose(self, operation: str) -> FaultKind | None:
        """The fault for this request, or None; every fault is recorded."""
        if self._paused:
            return None
        if self._script.get(operation):
            kind = self._script[operation].pop(0)
        elif self._random.random() < self.rate:
            kind = self._random.choice(self.kinds)
        else:
            return None
        if kind is not None:
            self.injected[kind, operation] += 1
        return kind

    def status_for(self, kind: FaultKind) -> int:
        """A 5xx status: 500 or 503, seeded like the rest."""
        return self._random.choice((500, 503)) if kind is FaultKind.SERVER_ERROR else 400

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No faults inside (the sweeper and the checks run on a healthy AWS)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def by_kind(self) -> dict[str, int]:
        """Faults injected per kind (every kind listed, zeros included)."""
        counts = Counter[str]()
        for (kind, _), count in self.injected.items():
            counts[kind.value] += count
        return {kind.value: counts[kind.value] for kind in FaultKind}

    def by_operation(self, kind: FaultKind) -> dict[str, int]:
        """Faults of one kind per operation, e.g. the lost RunJobFlow responses."""
        return dict(
            sorted((op, count) for (seen, op), count in self.injected.items() if seen is kind)
        )


class _RawBody(BytesIO):
    """The raw body botocore reads a response from (it streams it)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.read()


# Error bodies by protocol: (code, message) -> body. The parsers read the code from them.
def _json_error(code: str, message: str) -> bytes:
    return f'{{"__type": "{code}", "message": "{message}"}}'.encode()


def _query_error(code: str, message: str) -> bytes:
    return (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>fault-injected</RequestId></ErrorResponse>"
    ).encode()


def _rest_xml_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-injected</RequestId></Error>"
    ).encode()


_ERROR_BODIES = {
    "json": _json_error,
    "rest-json": _json_error,  # EMR Serverless (the sweeper's job runs)
    "query": _query_error,
    "rest-xml": _rest_xml_error,
}
_CONTENT_TYPES = {
    "json": "application/x-amz-json-1.1",
    "rest-json": "application/json",
    "query": "text/xml",
    "rest-xml": "text/xml",
}
# What each protocol's services answer when throttling, and on an internal error.
_THROTTLING = {
    "json": (400, "ThrottlingException", "Rate exceeded"),
    "rest-json": (429, "ThrottlingException", "Rate exceeded"),
    "query": (400, "Throttling", "Rate exceeded"),
    "rest-xml": (503, "SlowDown", "Please reduce your request rate."),
}
_SERVER_ERROR_CODES = {500: "InternalFailure", 503: "ServiceUnavailable"}


class FaultInjector:
    """The before-send handler of one client: a fault, or moto's own answer."""

    def __init__(self, plan: FaultPlan, service: str, protocol: str) -> None:
        if protocol not in _ERROR_BODIES:
            raise ValueError(f"no fault bodies for the {protocol} protocol ({service})")
        self._plan, self._service, self._protocol = plan, service, protocol

    def __call__(
        self, request: AWSPreparedRequest, event_name: str, **kwargs: Any
    ) -> AWSResponse | None:
        operation = f"{self._service}.{event_name.rsplit('.', 1)[-1]}"
        kind = self._plan.choose(operation)
        if kind is FaultKind.CONNECT_TIMEOUT:
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind is FaultKind.RESPONSE_LOST:
            botocore_stubber(event_name=event_name, request=request, **kwargs)  # AWS acts
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind is not None:
            return self._error_response(request, kind)
        return botocore_stubber(event_name=event_name, request=request, **kwargs)

    def _error_response(self, request: AWSPreparedRequest, kind: FaultKind) -> AWSResponse:
        if kind is FaultKind.THROTTLING:
            status, code, message = _THROTTLING[self._protocol]
        else:
            status = self._plan.status_for(kind)
            code, message = _SERVER_ERROR_CODES[status], "Injected internal error"
        headers = HeadersDict(
            {
                "Content-Type": _CONTENT_TYPES[self._protocol],
                "x-amzn-RequestId": "fault-injected",
                "x-amz-request-id": "fault-injected",
            }
        )
        body = _ERROR_BODIES[self._protocol](code, message)
        return AWSResponse(request.url, status, headers, _RawBody(body))


def inject_faults(client: Any, plan: FaultPlan) -> Any:
    """Put a seeded injector in moto's place on ``client``; returns the client.

    Only this client changes: botocore gives every client its own copy of the handlers.
    """
    model = client.meta.service_model
    events = client.meta.events
    events.unregister("before-send", botocore_stubber)
    events.register_first("before-send", FaultInjector(plan, model.service_name, model.protocol))
    return client

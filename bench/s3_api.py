"""moto's server on 127.0.0.1 in its own process, counting the S3 requests it answers.

``python -m bench.s3_api PORT REQUEST_LOG [--narrow-listing]`` serves what ``moto_server``
serves (S3, Glue, EMR...) and appends one line per request to REQUEST_LOG: its kind (LIST,
GET, HEAD, PUT, COPY, DELETE, DELETE_MANY, MULTIPART), when it came (epoch seconds) and its
path. The tests (once per session) and ``bench/s3_publication.py`` start it with
:class:`S3Api`, on a free port, with a bounded wait, and show its log when it fails.

With ``--narrow-listing`` (the bench), moto lists only the keys under a LIST's
prefix instead of every key of the bucket: see :func:`narrow_moto_listing`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from tasks.ops.names import PROJECT_ROOT

STARTUP_SECONDS = 30.0
# A client whose user agent holds this is a reader the bench runs beside the job: its
# requests are logged as READER_<kind>, apart from the job's.
READER_AGENT = "bench-reader"
READER_PREFIX = "READER_"

Environ = dict[str, Any]
WsgiApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


def request_kind(environ: Environ) -> str:
    """The S3 request a path-style HTTP request is (a request without a key is the bucket's)."""
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    has_key = "/" in environ.get("PATH_INFO", "").strip("/")
    if method == "GET":
        return "GET" if has_key else "LIST"
    if method == "PUT" and environ.get("HTTP_X_AMZ_COPY_SOURCE"):
        return "COPY"
    if method == "POST":
        return "DELETE_MANY" if "delete" in query else "MULTIPART"
    if method == "PUT" and "partNumber" in query:
        return "MULTIPART"
    return str(method)


def counting(app: WsgiApp, log_path: Path) -> WsgiApp:
    """``app``, writing each request's kind and path to ``log_path`` before answering it."""
    lock = threading.Lock()
    log = log_path.open("a", encoding="utf-8", buffering=1)

    def counted(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            kind, path = request_kind(environ), environ.get("PATH_INFO", "")
            if READER_AGENT in environ.get("HTTP_USER_AGENT", ""):
                kind = READER_PREFIX + kind
            log.write(f"{kind} {time.time():.4f} {path}\n")
        return app(environ, start_response)

    return counted


def narrow_moto_listing() -> None:
    """Make moto's LIST look up each key of the bucket only when its name has the prefix.

    moto answers a LIST with a prefix by resolving every key of the bucket through a
    Python lookup, and then keeping those under the prefix: 25 ms a LIST in a bucket of
    50,000 keys. A full run at lake M holds more (20,000 song files, the tables, their
    staging) and makes about 100,000 LISTs, so moto's scan alone would take 40 minutes of
    it. Here the names are filtered first (7 ms among 50,000 keys) and moto's own code lists
    what is left, so the answer is the same (``tests/test_s3_api.py`` compares both).
    """
    from moto.s3.models import FakeTableStorageBucket, S3Backend
    from moto.s3.utils import _VersionedKeyStore

    list_every_key = S3Backend.list_objects

    def list_keys_under_prefix(
        self: Any, bucket: Any, prefix: str | None, *rest: Any, **named: Any
    ) -> Any:
        if not prefix or isinstance(bucket, FakeTableStorageBucket):
            return list_every_key(self, bucket, prefix, *rest, **named)
        under_prefix = _VersionedKeyStore()
        # dict(...) copies the name -> versions table at once, as moto's own iteration does,
        # so a write answered on another thread cannot change it under the filter.
        every_key = dict(bucket.keys)
        dict.update(under_prefix, {n: v for n, v in every_key.items() if n.startswith(prefix)})
        narrowed = SimpleNamespace(keys=under_prefix)  # all of a bucket that moto's list reads
        return list_every_key(self, narrowed, prefix, *rest, **named)  # type: ignore[arg-type]

    S3Backend.list_objects = list_keys_under_prefix  # type: ignore[method-assign]


def serve(port: int, log_path: Path, narrow_listing: bool = False) -> None:
    """Serve moto's backends on 127.0.0.1:``port`` until stopped."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    if narrow_listing:
        narrow_moto_listing()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, counting(app, log_path), threaded=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Api:
    """A running :func:`serve` process: its address and the requests it has answered."""

    folder: Path
    narrow_listing: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def request_log(self) -> Path:
        return self.folder / "requests.log"

    @property
    def server_log(self) -> Path:
        return self.folder / "server.log"

    def start(self) -> None:
        """Start the server; fail with its log if it does not answer within the wait."""
        self.request_log.touch()
        with self.server_log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.s3_api", str(self.port), str(self.request_log)),
                    *(["--narrow-listing"] if self.narrow_listing else []),
                ],
                cwd=PROJECT_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"moto's server did not answer on {self.url} within {STARTUP_SECONDS:.0f} s:\n"
            + self.server_log.read_text(errors="replace")
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def requests_mark(self) -> int:
        """Where the request log ends now: :meth:`requests_since` counts from here."""
        return self.request_log.stat().st_size

    def requests_since(self, mark: int, bucket: str) -> list[Request]:
        """Requests on ``bucket`` since ``mark``, in the order they came."""
        with self.request_log.open("rb") as log:
            log.seek(mark)
            lines = log.read().decode("utf-8").splitlines()
        prefix = f"/{bucket}"
        fields = (line.split(" ", 2) for line in lines)
        requests = [Request(kind, float(at), path) for kind, at, path in fields]
        return [r for r in requests if r.path == prefix or r.path.startswith(prefix + "/")]

    def count_since(self, mark: int, bucket: str) -> Counter[str]:
        """Requests on ``bucket`` since ``mark``, by kind."""
        return Counter(request.kind for request in self.requests_since(mark, bucket))


@dataclass(frozen=True)
class Request:
    """One request the server answered: its kind, when it came, and its path."""

    kind: str
    at: float
    path: str

    @property
    def by_reader(self) -> bool:
        return self.kind.startswith(READER_PREFIX)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), narrow_listing="--narrow-listing" in sys.argv[3:])

"""Build the artefacts spark-submit needs: a zip of ``spark_etl`` and its entry script.

The zip is byte-for-byte reproducible (fixed timestamps, sorted entries), so its digest
names the code: the same code gives the same S3 key and the upload can be skipped.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import spark_etl

PACKAGE_DIR = Path(spark_etl.__file__).resolve().parent
ENTRY_SCRIPT = PACKAGE_DIR / "spark_submit_entry.py"
_FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
# Part of the package for the demo, the tests and the benchmark; never needed where the
# job runs, so it stays out of what is uploaded to S3.
NOT_SHIPPED = frozenset({"sample_lake.py"})


@dataclass(frozen=True)
class JobPackage:
    """The job code as spark-submit takes it.

    Attributes:
        zip_bytes: ``spark_etl`` zipped with the package folder at the zip's root.
        entry_bytes: The entry script passed to spark-submit.
        digest: Short sha256 of both, used to name the uploaded objects.
    """

    zip_bytes: bytes
    entry_bytes: bytes
    digest: str


def build_job_package() -> JobPackage:
    """Zip the installed ``spark_etl`` sources reproducibly.

    Returns:
        The zip, the entry script and their content digest.
    """
    zip_bytes = _zip_package(PACKAGE_DIR)
    entry_bytes = ENTRY_SCRIPT.read_bytes()
    digest = hashlib.sha256(zip_bytes + entry_bytes).hexdigest()[:16]
    return JobPackage(zip_bytes=zip_bytes, entry_bytes=entry_bytes, digest=digest)


def _zip_package(package_dir: Path) -> bytes:
    """Zip the job's .py files below ``package_dir`` with fixed metadata."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(package_dir.rglob("*.py")):
            if source.name in NOT_SHIPPED:
                continue
            arcname = f"{package_dir.name}/{source.relative_to(package_dir).as_posix()}"
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, source.read_bytes())
    return buffer.getvalue()


def write_job_package(package: JobPackage, folder: Path) -> tuple[Path, Path]:
    """Write the package to ``folder`` for a local spark-submit.

    Returns:
        Paths of the zip and of the entry script.
    """
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / "spark_etl.zip"
    entry_path = folder / ENTRY_SCRIPT.name
    zip_path.write_bytes(package.zip_bytes)
    entry_path.write_bytes(package.entry_bytes)
    return zip_path, entry_path

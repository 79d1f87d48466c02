"""What is uploaded to EMR: exactly the job's modules, nothing the cluster never runs."""

from __future__ import annotations

import zipfile
from io import BytesIO

from tasks.ops.job_package import build_job_package

# Written out by hand: a module added to spark_etl must be added here on purpose, and the
# sample-lake generator (demo, tests, benchmark only) must never travel to the cluster.
SHIPPED_MODULES = [
    "spark_etl/__init__.py",
    "spark_etl/__main__.py",
    "spark_etl/args.py",
    "spark_etl/catalogue.py",
    "spark_etl/checks.py",
    "spark_etl/errors.py",
    "spark_etl/failpoints.py",
    "spark_etl/iceberg.py",
    "spark_etl/io.py",
    "spark_etl/jars.py",
    "spark_etl/job.py",
    "spark_etl/jvm_archive.py",
    "spark_etl/lake.py",
    "spark_etl/lease.py",
    "spark_etl/lease_store.py",
    "spark_etl/lineage.py",
    "spark_etl/main.py",
    "spark_etl/maintenance.py",
    "spark_etl/publication.py",
    "spark_etl/s3_lease.py",
    "spark_etl/s3a.py",
    "spark_etl/schemas.py",
    "spark_etl/session.py",
    "spark_etl/spark_submit_entry.py",
    "spark_etl/staging.py",
    "spark_etl/storage.py",
    "spark_etl/summary.py",
    "spark_etl/tables.py",
    "spark_etl/transform.py",
]


def test_the_uploaded_zip_holds_exactly_the_job_modules_in_order() -> None:
    names = zipfile.ZipFile(BytesIO(build_job_package().zip_bytes)).namelist()
    assert names == SHIPPED_MODULES

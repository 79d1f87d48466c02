"""Reading back the Iceberg tables of a Glue database on an S3 API: with pyiceberg, from the
metadata file Glue names, with no Spark catalog."""

from __future__ import annotations

import boto3
from pyiceberg.table import StaticTable
from pyspark.sql import DataFrame, SparkSession

from spark_etl.tables import TABLES

REGION = "us-east-1"


def glue_iceberg_table(
    spark: SparkSession, database: str, name: str, s3_endpoint: str, location: str
) -> DataFrame:
    """The table's current snapshot as a Spark frame to compare.

    Glue must hold it as an Iceberg table at ``location``; its files are read from the S3
    API at ``s3_endpoint`` (moto's server, with moto's test keys).
    """
    glue = boto3.client("glue", region_name=REGION)
    table = glue.get_table(DatabaseName=database, Name=name)["Table"]
    assert table["Parameters"]["table_type"] == "ICEBERG", name
    assert table["StorageDescriptor"]["Location"] == location, name
    moto_s3 = {
        "s3.endpoint": s3_endpoint,
        "s3.region": REGION,
        "s3.access-key-id": "testing",
        "s3.secret-access-key": "testing",
    }
    static = StaticTable.from_metadata(table["Parameters"]["metadata_location"], moto_s3)
    spec = TABLES[name]
    return spark.createDataFrame(static.scan().to_arrow(), spec.schema).select(*spec.column_names)

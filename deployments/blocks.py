"""The ``EmrClusterConfig`` block: the cluster a songs_etl run starts on EMR.

Register the block type with ``prefect block register -m deployments.blocks`` (the
Makefile's ``make blocks`` does it) and create a block in the UI or in Python.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.ops.emr import ClusterSpec


class EmrClusterConfig(Block):
    """How to build the transient EMR cluster of a run (no secret lives here)."""

    _block_type_name = "EMR Cluster Config"
    _description = "The transient EMR cluster of a sparkify-lake run: release, nodes, roles, logs."

    cluster_name: str = Field(default="sparkify-lake", description="Name shown in the EMR console.")
    release_label: str = Field(
        default="emr-spark-8.0.0", description="EMR release (Spark 4.0 on emr-spark-8.0.0)."
    )
    log_uri: str = Field(description="s3:// folder for cluster and step logs.")
    service_role: str = Field(default="EMR_DefaultRole", description="EMR service role.")
    job_flow_role: str = Field(
        default="EMR_EC2_DefaultRole", description="EC2 instance profile of the nodes."
    )
    primary_instance_type: str = Field(default="m5.xlarge")
    core_instance_type: str = Field(default="m5.xlarge")
    core_instance_count: int = Field(default=2, ge=1)
    core_on_spot: bool = Field(default=False, description="Run core nodes on Spot capacity.")
    subnet_id: str | None = Field(default=None, description="EC2 subnet (default VPC when empty).")
    idle_timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=604800,
        description="AutoTerminationPolicy idle time before EMR ends the cluster (a backstop).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags (cost allocation).")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra spark-defaults.")

    def cluster_spec(self) -> ClusterSpec:
        """The Prefect-free description the EMR ops take."""
        return ClusterSpec(
            name=self.cluster_name,
            release_label=self.release_label,
            log_uri=self.log_uri,
            service_role=self.service_role,
            job_flow_role=self.job_flow_role,
            primary_instance_type=self.primary_instance_type,
            core_instance_type=self.core_instance_type,
            core_instance_count=self.core_instance_count,
            core_on_spot=self.core_on_spot,
            subnet_id=self.subnet_id,
            idle_timeout_seconds=self.idle_timeout_seconds,
            tags=dict(self.tags),
            spark_conf=dict(self.spark_conf),
        )

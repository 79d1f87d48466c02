"""AWS's state vocabularies, side by side: an EMR cluster, an EMR step, an EMR Serverless
application and job run, each with the groups of states the runners act on.

Each enum spells its states as the service's API returns them. They change when AWS adds a
state, not when a runner changes, so they live apart from the calls that read them.
"""

from __future__ import annotations

from enum import StrEnum

# EMR


class ClusterState(StrEnum):
    """EMR cluster states (``describe_cluster`` → Cluster.Status.State)."""

    STARTING = "STARTING"
    BOOTSTRAPPING = "BOOTSTRAPPING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    TERMINATED_WITH_ERRORS = "TERMINATED_WITH_ERRORS"


CLUSTER_READY = frozenset({ClusterState.RUNNING, ClusterState.WAITING})
CLUSTER_ENDED = frozenset(
    {ClusterState.TERMINATING, ClusterState.TERMINATED, ClusterState.TERMINATED_WITH_ERRORS}
)
CLUSTER_ACTIVE = frozenset(set(ClusterState) - CLUSTER_ENDED)


class StepState(StrEnum):
    """EMR step states (``describe_step`` → Step.Status.State)."""

    PENDING = "PENDING"
    CANCEL_PENDING = "CANCEL_PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"


# INTERRUPTED is a failure too (botocore's step_complete waiter forgets it).
STEP_FAILED = frozenset({StepState.CANCELLED, StepState.FAILED, StepState.INTERRUPTED})
STEP_ENDED = STEP_FAILED | {StepState.COMPLETED}
STEP_ACTIVE = frozenset({StepState.PENDING, StepState.RUNNING})
CLUSTER_TERMINATED = frozenset({ClusterState.TERMINATED, ClusterState.TERMINATED_WITH_ERRORS})


# EMR Serverless


class ApplicationState(StrEnum):
    """EMR Serverless application states (``get_application`` → application.state)."""

    CREATING = "CREATING"
    CREATED = "CREATED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    TERMINATED = "TERMINATED"


# With auto-start on, a job run submitted to a created or stopped application starts it.
APPLICATION_TAKES_JOBS = frozenset(
    {
        ApplicationState.CREATED,
        ApplicationState.STARTING,
        ApplicationState.STARTED,
        ApplicationState.STOPPED,
    }
)
APPLICATION_LIVE = frozenset(set(ApplicationState) - {ApplicationState.TERMINATED})


class JobRunState(StrEnum):
    """EMR Serverless job run states (``get_job_run`` → jobRun.state)."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


JOB_RUN_FAILED = frozenset({JobRunState.FAILED, JobRunState.CANCELLED})
JOB_RUN_ENDED = JOB_RUN_FAILED | {JobRunState.SUCCESS}
# Still to start or running: what a cancel can stop (CANCELLING is already on its way).
JOB_RUN_CANCELLABLE = frozenset(set(JobRunState) - JOB_RUN_ENDED - {JobRunState.CANCELLING})

"""What a run cost: the usage a runner reports and its estimate at the block's prices.

Each runner turns its own usage into a :class:`RunCost` (EMR on EC2: normalized instance
hours; EMR Serverless: billed vCPU, memory and storage hours). The run report shows it as
one line, so a person reads every runner's cost the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.ops.names import RunnerName


@dataclass(frozen=True)
class RunCost:
    """A run's measured usage and the estimated price of it.

    Attributes:
        runner: The runner that ran the job.
        usage: Each measured quantity and its amount, in report order, such as
            ``{"normalized instance hours": 16.0}``.
        estimated_usd: The estimate in US dollars.
        price_basis: Where the prices come from, such as ``"us-east-1 list prices of
            2026-11-01 (block sparkify-emr)"``.
    """

    runner: RunnerName
    usage: dict[str, float] = field(default_factory=dict)
    estimated_usd: float = 0.0
    price_basis: str = ""

    def line(self) -> str:
        """One line for the log and the report: usage, estimate, basis."""
        used = ", ".join(f"{amount:g} {name}" for name, amount in self.usage.items())
        return f"{self.runner}: {used}; estimated ${self.estimated_usd:.2f} ({self.price_basis})"

"""The layers import one way: flows -> tasks -> ops -> AWS, and spark_etl stands alone.

Read from the source with ``ast`` (imports inside functions included), so a lazy import
that runs up the layers is caught as surely as one at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.ops.names import PROJECT_ROOT

SPARK_ETL_MAY_IMPORT = ("pyspark", "py4j")
# The one exception, in one module and imported only for an output on S3: the lease's
# compare-and-swap needs S3's conditional writes, which neither EMRFS nor S3A can ask for,
# and boto3 is on the Python of EMR and EMR Serverless (spark_etl/s3_lease.py).
SPARK_ETL_ALSO_MAY_IMPORT = {"spark_etl.s3_lease": ("boto3", "botocore", "mypy_boto3_s3")}


def modules_of(package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of a top-level package."""
    root = PROJECT_ROOT / package
    return {
        ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts): path
        for path in sorted(root.rglob("*.py"))
    }


def imported_names(path: Path) -> Iterator[str]:
    """Every module a file imports, anywhere in it (absolute imports only: the project's)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def top_level(name: str) -> str:
    return name.split(".", 1)[0]


def test_tasks_import_nothing_from_flows_or_deployments() -> None:
    upward = {
        module: sorted(
            name for name in imported_names(path) if top_level(name) in ("flows", "deployments")
        )
        for module, path in modules_of("tasks").items()
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_ops_import_no_prefect_and_no_task_module() -> None:
    leaks = {
        module: sorted(
            name
            for name in imported_names(path)
            if top_level(name) == "prefect"
            or name.startswith("prefect_aws")
            or (top_level(name) == "tasks" and not name.startswith("tasks.ops"))
        )
        for module, path in modules_of("tasks").items()
        if module.startswith("tasks.ops")
    }
    assert {module: names for module, names in leaks.items() if names} == {}


def test_spark_etl_imports_only_itself_pyspark_and_the_standard_library() -> None:
    import sys

    outside = {
        module: sorted(
            name
            for name in imported_names(path)
            if top_level(name)
            not in (
                *SPARK_ETL_MAY_IMPORT,
                *SPARK_ETL_ALSO_MAY_IMPORT.get(module, ()),
                "spark_etl",
                "__future__",
            )
            and top_level(name) not in sys.stdlib_module_names
        )
        for module, path in modules_of("spark_etl").items()
    }
    assert {module: names for module, names in outside.items() if names} == {}


def import_graph(package: str) -> dict[str, set[str]]:
    """Which of the package's own modules each module imports."""
    modules = modules_of(package)
    return {
        module: {name for name in imported_names(path) if name in modules and name != module}
        for module, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules, or [] when there is none (depth-first)."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str]:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return []
        visiting.append(module)
        for imported in sorted(graph[module]):
            cycle = visit(imported)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return []


@pytest.mark.parametrize("package", ["spark_etl", "tasks"])
def test_no_import_cycle_inside_a_package(package: str) -> None:
    assert find_cycle(import_graph(package)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]

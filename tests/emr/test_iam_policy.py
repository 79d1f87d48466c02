"""The IAM policies in docs/aws.md allow exactly the AWS actions the code calls.

The calls are found in the source (ast), not by running it, by the types the code gives
its clients, whatever their variables are called: a parameter annotated with a
``mypy_boto3_*`` client type, a property of ``AwsClients`` (read from its return
annotations), and names and ``self`` attributes assigned from either, in ``tasks/*.py``
and ``tasks/ops/*.py``, paginators included. A call named like an AWS API on a receiver
whose type cannot be told fails the test: it must be typed, so that it is checked.
botocore names the API operation of each method; the operation names the IAM action, but
for S3, whose actions differ (table below, from the S3 API reference's "Permissions" of
each operation). Each runner's policy covers the calls of every file but the other
runner's own.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest

from tasks.ops.emr import HEARTBEAT_TAG_KEY
from tasks.ops.names import PROJECT_ROOT
from tasks.ops.ownership import PROJECT_TAG_KEY, PROJECT_TAG_VALUE

POLICY_DOC = PROJECT_ROOT / "docs" / "aws.md"
POLICY_SECTION = "## Least-privilege policy for the flow's credentials"
SERVERLESS_POLICY_SECTION = "## EMR Serverless: least-privilege policy for the flow's credentials"
EXECUTION_ROLE_SECTION = "## EMR Serverless: the job's execution role"
SCANNED_FILES = sorted([*PROJECT_ROOT.glob("tasks/*.py"), *PROJECT_ROOT.glob("tasks/ops/*.py")])
# The files of one runner alone; everything else (upload, preflight, Glue...) both use.
EMR_ONLY = {PROJECT_ROOT / "tasks" / "emr.py", PROJECT_ROOT / "tasks" / "ops" / "emr.py"}
SERVERLESS_ONLY = {
    PROJECT_ROOT / "tasks" / "emr_serverless.py",
    PROJECT_ROOT / "tasks" / "ops" / "emr_serverless.py",
}

# Where the project's clients get their type: AwsClients' properties say which client
# each one is by their return annotations.
AWS_CLIENTS_MODULE = PROJECT_ROOT / "tasks" / "aws.py"
IAM_PREFIXES = {
    "emr": "elasticmapreduce",
    "emr-serverless": "emr-serverless",
    "s3": "s3",
    "glue": "glue",
    "sts": "sts",
}
# S3 authorizes these operations with actions of other names (HEAD and GET of an object
# are both s3:GetObject; listing a bucket is s3:ListBucket).
S3_ACTIONS = {
    "HeadObject": "GetObject",
    "GetObject": "GetObject",
    "ListObjectsV2": "ListBucket",
    "PutObject": "PutObject",
    "DeleteObject": "DeleteObject",
}
# Needs no permission at all (STS documents it): the policy must not list it.
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}
# Never called by the code, but RunJobFlow needs it to hand the roles to EMR.
NEEDED_BY_OTHER_ACTIONS = {"iam:PassRole"}
# StartJobRun hands the execution role over; it and CreateApplication tag what they make
# (the Service Authorization Reference lists TagResource under both).
SERVERLESS_NEEDED_BY_OTHER_ACTIONS = {"iam:PassRole", "emr-serverless:TagResource"}


@dataclass(frozen=True)
class AwsCall:
    """One boto3 client method called in the source."""

    service: str
    method: str
    where: str


@pytest.mark.parametrize(
    ("section", "skipped", "services", "needed_by_others"),
    [
        pytest.param(
            POLICY_SECTION,
            SERVERLESS_ONLY,
            {"emr", "s3", "glue", "sts"},
            NEEDED_BY_OTHER_ACTIONS,
            id="EMR",
        ),
        pytest.param(
            SERVERLESS_POLICY_SECTION,
            EMR_ONLY,
            {"emr-serverless", "s3", "glue", "sts"},
            SERVERLESS_NEEDED_BY_OTHER_ACTIONS,
            id="EMR Serverless",
        ),
    ],
)
def test_the_policy_allows_exactly_the_actions_the_code_calls(
    section: str, skipped: set[Path], services: set[str], needed_by_others: set[str]
) -> None:
    calls = list(aws_calls_in([path for path in SCANNED_FILES if path not in skipped]))
    needed = {iam_action(call) for call in calls} - NEEDS_NO_PERMISSION
    allowed = allowed_actions(policy_in_doc(section))

    # Every service the runner uses was found: the scan is not silently empty.
    assert {call.service for call in calls} == services
    assert needed_by_others <= allowed
    # Equality: a missing permission fails a run, an extra one is privilege nobody uses.
    granted = allowed - needed_by_others
    missing, unused = sorted(needed - granted), sorted(granted - needed)
    assert (missing, unused) == ([], []), "calls found:\n" + "\n".join(
        f"{call.where}: {call.service}.{call.method} -> {iam_action(call)}" for call in calls
    )


def test_serverless_writes_reach_only_project_applications_and_job_runs() -> None:
    statements = policy_in_doc(SERVERLESS_POLICY_SECTION)["Statement"]
    project_request = {"StringEquals": {f"aws:RequestTag/{PROJECT_TAG_KEY}": PROJECT_TAG_VALUE}}
    project_resource = {"StringEquals": {f"aws:ResourceTag/{PROJECT_TAG_KEY}": PROJECT_TAG_VALUE}}
    tag_readers = {
        "emr-serverless:ListApplications",
        "emr-serverless:GetApplication",
        "emr-serverless:GetJobRun",
    }

    for creating in ("emr-serverless:CreateApplication", "emr-serverless:TagResource"):
        [statement] = statements_granting(statements, creating)
        assert (actions_of(statement), statement["Condition"]) == ([creating], project_request)
    [find] = [s for s in statements if tag_readers & set(actions_of(s))]
    assert set(actions_of(find)) == tag_readers and "Condition" not in find
    [pass_role] = statements_granting(statements, "iam:PassRole")
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}
    }
    drive = [
        s
        for s in statements
        if any(a.startswith("emr-serverless:") for a in actions_of(s))
        and not {"emr-serverless:CreateApplication", "emr-serverless:TagResource"}
        & set(actions_of(s))
        and s is not find
    ]
    assert {action for s in drive for action in actions_of(s)} == {
        "emr-serverless:StartJobRun",
        "emr-serverless:ListJobRuns",
        "emr-serverless:CancelJobRun",
    }
    for statement in drive:
        assert statement["Condition"] == project_resource, statement["Sid"]
        assert statement["Resource"].startswith(
            "arn:aws:emr-serverless:*:123456789012:/applications/"
        )


def test_the_execution_role_trusts_emr_serverless_and_touches_only_s3() -> None:
    section = policy_section(EXECUTION_ROLE_SECTION)
    trust, permissions = (json.loads(block) for block in json_blocks(section, expected=2))

    assert [s["Principal"] for s in trust["Statement"]] == [
        {"Service": "emr-serverless.amazonaws.com"}
    ]
    assert {a.split(":")[0] for a in allowed_actions(permissions)} == {"s3"}


def test_emr_writes_reach_only_project_clusters_and_tagging_only_the_heartbeat() -> None:
    statements = policy_in_doc()["Statement"]
    project_resource = {
        "StringEquals": {f"elasticmapreduce:ResourceTag/{PROJECT_TAG_KEY}": PROJECT_TAG_VALUE}
    }
    unscoped_reads = {"elasticmapreduce:ListClusters", "elasticmapreduce:DescribeCluster"}

    [start] = statements_granting(statements, "elasticmapreduce:RunJobFlow")
    assert start["Condition"] == {
        "StringEquals": {f"aws:RequestTag/{PROJECT_TAG_KEY}": PROJECT_TAG_VALUE}
    }
    [tagging] = statements_granting(statements, "elasticmapreduce:AddTags")
    assert actions_of(tagging) == ["elasticmapreduce:AddTags"]
    assert tagging["Condition"] == {
        **project_resource,
        "ForAllValues:StringEquals": {"aws:TagKeys": [HEARTBEAT_TAG_KEY]},
    }
    [find] = [s for s in statements if unscoped_reads & set(actions_of(s))]
    assert set(actions_of(find)) == unscoped_reads and "Condition" not in find
    drive = [
        s
        for s in statements
        if s not in (start, tagging, find)
        and any(a.startswith("elasticmapreduce:") for a in actions_of(s))
    ]
    assert drive, "no statement drives the clusters"
    for statement in drive:
        assert statement["Condition"] == project_resource, statement["Sid"]
        assert statement["Resource"] == "arn:aws:elasticmapreduce:*:123456789012:cluster/*"


def test_the_scan_finds_clients_by_type_whatever_their_names(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from mypy_boto3_emr import EMRClient\n"
        "from tasks.aws import aws_clients\n"
        "from tasks.ops import emr as emr_ops\n"
        "class Heartbeat:\n"
        "    def __init__(self, client: EMRClient) -> None:\n"
        "        self._anything = client\n"
        "    def beat(self) -> None:\n"
        "        self._anything.add_tags(ResourceId='j-1', Tags=[])\n"
        "def f(block):\n"
        "    client = aws_clients(block).glue\n"
        "    client.get_paginator('get_partitions')\n"
        "    aws_clients(block).s3.put_object(Bucket='b', Key='k', Body=b'')\n"
        "    emr_ops.find_flow_run_clusters(client, 'run')\n"  # not a client call
        "    return client.meta.region_name\n"
    )

    assert [(c.service, c.method) for c in aws_calls_in([source])] == [
        ("emr", "add_tags"),
        ("glue", "get_partitions"),
        ("s3", "put_object"),
    ]


def test_an_api_call_on_a_receiver_of_unknown_type_fails_the_scan(tmp_path: Path) -> None:
    source = tmp_path / "untyped.py"
    source.write_text("def f(client):\n    client.run_job_flow(Name='c')\n")

    with pytest.raises(AssertionError, match=r"untyped.py:2: client.run_job_flow"):
        list(aws_calls_in([source]))


def aws_calls_in(paths: list[Path]) -> Iterator[AwsCall]:
    """Every method call on a receiver typed as a boto3 client, in source order.

    Raises:
        AssertionError: A call named like an AWS API on a receiver of no known type.
    """
    properties = client_properties()
    api_methods = {method for service in IAM_PREFIXES for method in api_method_names(service)}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        types = ClientTypes(client_type_names(tree), properties, imported_modules(tree))
        found, untyped = types.calls_in(tree, api_methods)
        where = f"{path.relative_to(path.parents[1])}"  # ops/emr.py
        assert not untyped, "cannot tell which client these calls are on; annotate them:\n" + (
            "\n".join(f"{where}:{line}: {text}" for line, text in untyped)
        )
        for line, service, method in found:
            yield AwsCall(service, method, f"{where}:{line}")


class ClientTypes:
    """Which AWS service each expression of one file is a client of, from its types."""

    def __init__(
        self, type_names: dict[str, str], properties: dict[str, str], modules: set[str]
    ) -> None:
        self.type_names, self.properties, self.modules = type_names, properties, modules
        self.self_attributes: dict[str, str] = {}

    def calls_in(
        self, tree: ast.Module, api_methods: set[str]
    ) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
        """(line, service, method) of each client call; (line, text) of each untyped one."""
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for function in functions:  # self attributes first: methods use what __init__ set
            self.names_in(function, {})
        enclosing = {
            inner: outer
            for outer in functions
            for inner in ast.walk(outer)
            if isinstance(inner, ast.FunctionDef) and inner is not outer
        }
        found, untyped = [], []
        for function in functions:
            names = self.names_with_closure(function, enclosing)
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                if not isinstance(call.func, ast.Attribute):
                    continue
                service = self.service_of(call.func.value, names)
                if service not in (None, "AwsClients"):
                    method = paginated_method(call) or call.func.attr
                    found.append((call.lineno, service, method))
                elif call.func.attr in api_methods and not self.is_module(call.func.value):
                    untyped.append((call.lineno, ast.unparse(call.func)))
        return sorted(set(found)), sorted(set(untyped))

    def names_with_closure(
        self, function: ast.FunctionDef, enclosing: dict[ast.FunctionDef, ast.FunctionDef]
    ) -> dict[str, str]:
        """The function's names, and those it sees of the functions it is nested in."""
        outer = enclosing.get(function)
        inherited = self.names_with_closure(outer, enclosing) if outer else {}
        return self.names_in(function, inherited)

    def names_in(self, function: ast.FunctionDef, inherited: dict[str, str]) -> dict[str, str]:
        """The function's names that hold a client (or an ``AwsClients``), by service."""
        names = dict(inherited)
        for argument in [*function.args.args, *function.args.kwonlyargs]:
            service = self.annotated(argument.annotation)
            if service:
                names[argument.arg] = service
        assignments = [n for n in ast.walk(function) if isinstance(n, ast.Assign)]
        for assignment in sorted(assignments, key=lambda node: node.lineno):
            for target in assignment.targets:
                self.assign(target, assignment.value, names)
        return names

    def assign(self, target: ast.expr, value: ast.expr, names: dict[str, str]) -> None:
        """Give ``target`` the type of ``value`` (pairwise for ``a, b = x, y``)."""
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for one_target, one_value in zip(target.elts, value.elts, strict=False):
                self.assign(one_target, one_value, names)
            return
        service = self.service_of(value, names)
        if service and isinstance(target, ast.Name):
            names[target.id] = service
        elif service and is_self_attribute(target):
            self.self_attributes[target.attr] = service  # type: ignore[attr-defined]

    def service_of(self, node: ast.expr, names: dict[str, str]) -> str | None:
        if isinstance(node, ast.Name):
            return names.get(node.id)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "aws_clients":
            return "AwsClients"
        if is_self_attribute(node):
            return self.self_attributes.get(node.attr)  # type: ignore[attr-defined]
        if isinstance(node, ast.Attribute) and self.service_of(node.value, names) == "AwsClients":
            return self.properties.get(node.attr)
        return None

    def annotated(self, annotation: ast.expr | None) -> str | None:
        if annotation is None:
            return None
        text = ast.unparse(annotation).strip("'\"")
        return "AwsClients" if text == "AwsClients" else self.type_names.get(text)

    def is_module(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id in self.modules


def is_self_attribute(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    )


def client_type_names(tree: ast.Module) -> dict[str, str]:
    """``{"EMRClient": "emr"}`` for ``from mypy_boto3_emr import EMRClient``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mypy_boto3_"):
            service = node.module.removeprefix("mypy_boto3_").replace("_", "-")  # type: ignore[union-attr]
            for alias in node.names:
                if alias.name.endswith("Client"):
                    names[alias.asname or alias.name] = service
    return names


def imported_modules(tree: ast.Module) -> set[str]:
    """The names a file binds to modules (``emr_ops`` for ``import ... as emr_ops``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module in ("tasks", "tasks.ops"):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


@cache
def client_properties() -> dict[str, str]:
    """``AwsClients``' properties and the service of the client each returns."""
    tree = ast.parse(AWS_CLIENTS_MODULE.read_text())
    type_names = client_type_names(tree)
    [aws_clients_class] = [
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "AwsClients"
    ]
    return {
        method.name: type_names[ast.unparse(method.returns).strip("'\"")]
        for method in aws_clients_class.body
        if isinstance(method, ast.FunctionDef)
        and method.returns is not None
        and ast.unparse(method.returns).strip("'\"") in type_names
    }


def api_method_names(service: str) -> set[str]:
    """The client methods that are API operations of ``service``."""
    return set(client(service).meta.method_to_api_mapping)


def paginated_method(call: ast.Call) -> str | None:
    """``list_steps`` for ``emr.get_paginator("list_steps")``, else None."""
    if not isinstance(call.func, ast.Attribute) or call.func.attr != "get_paginator":
        return None
    [name] = call.args
    assert isinstance(name, ast.Constant) and isinstance(name.value, str), ast.unparse(call)
    return name.value


def iam_action(call: AwsCall) -> str:
    """``elasticmapreduce:RunJobFlow`` for ``emr.run_job_flow``."""
    operations = client(call.service).meta.method_to_api_mapping
    assert call.method in operations, f"{call.where}: {call.method} is no {call.service} API"
    operation = operations[call.method]
    if call.service == "s3":
        assert operation in S3_ACTIONS, (
            f"{call.where}: which IAM action authorizes S3 {operation}? Look it up in the "
            "S3 API reference and add it to S3_ACTIONS"
        )
        operation = S3_ACTIONS[operation]
    return f"{IAM_PREFIXES[call.service]}:{operation}"


@cache
def client(service: str) -> Any:
    """A client only for its method table: it never sends a request."""
    session = boto3.session.Session(
        aws_access_key_id="unused", aws_secret_access_key="unused", region_name="us-east-1"
    )
    return session.client(service)  # type: ignore[call-overload]


def policy_in_doc(heading: str = POLICY_SECTION) -> dict[str, Any]:
    """The JSON block of a policy section of docs/aws.md."""
    [block] = json_blocks(policy_section(heading), expected=1)
    policy: dict[str, Any] = json.loads(block)
    return policy


def policy_section(heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next ``## `` one."""
    lines = POLICY_DOC.read_text().split("\n")
    assert heading in lines, heading
    section = "\n".join(lines[lines.index(heading) + 1 :])
    return section.split("\n## ", 1)[0]


def json_blocks(section: str, expected: int) -> list[str]:
    blocks = re.findall(r"```json\n(.*?)\n```", section, flags=re.DOTALL)
    assert len(blocks) == expected, blocks
    return list(blocks)


def allowed_actions(policy: dict[str, Any]) -> set[str]:
    effects = {statement["Effect"] for statement in policy["Statement"]}
    if effects != {"Allow"}:
        pytest.fail(f"only Allow statements are expected, found {effects}")
    return {action for statement in policy["Statement"] for action in actions_of(statement)}


def actions_of(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def statements_granting(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [statement for statement in statements if action in actions_of(statement)]

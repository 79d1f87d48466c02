"""Create the prefect-aws ``AwsCredentials`` block the flows load (default name ``sparkify-aws``).

    python -m deployments.aws_credentials --profile analytics --region us-east-1
    python -m deployments.aws_credentials --from-env        # AWS_ACCESS_KEY_ID/... of this shell

A profile (or an instance role: ``--profile`` left out and no ``--from-env``) stores no
key in Prefect at all; ``--from-env`` stores the keys as secrets in the block. Nothing
secret is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from prefect_aws import AwsCredentials


def build_credentials(profile: str | None, region: str, from_env: bool) -> AwsCredentials:
    """The block's value: a profile reference, the environment's keys, or neither (a role).

    Raises:
        ValueError: ``from_env`` without AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set.
    """
    if from_env:
        key_id, secret = (
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )
        if not key_id or not secret:
            raise ValueError("--from-env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set")
        return AwsCredentials(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),
            region_name=region,
        )
    return AwsCredentials(profile_name=profile, region_name=region)


def main(argv: Sequence[str] | None = None) -> int:
    """Save the block; print what kind of credentials it holds, never their value."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.aws_credentials", description=__doc__
    )
    parser.add_argument("--name", default="sparkify-aws", help="block name (default sparkify-aws)")
    parser.add_argument(
        "--profile", default=None, help="AWS profile of ~/.aws/config on the worker"
    )
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument("--from-env", action="store_true", help="store this shell's AWS keys")
    args = parser.parse_args(argv)
    try:
        credentials = build_credentials(args.profile, args.region, args.from_env)
    except ValueError as err:
        print(f"aws_credentials: error: {err}", file=sys.stderr)
        return 2
    credentials.save(args.name, overwrite=True)
    kind = (
        "access keys (stored as secrets)"
        if args.from_env
        else (
            f"profile {args.profile!r}"
            if args.profile
            else "the worker's default chain (instance role)"
        )
    )
    print(f"Saved AwsCredentials block {args.name!r} in {args.region}: {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

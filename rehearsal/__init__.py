"""Harnesses that rehearse the AWS runners with no AWS account (not installed: a checkout's)."""

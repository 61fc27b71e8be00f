"""Shared fixtures: the example policy, scapy frame builders."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def example_policy():
    from hostsdn.runtime.policyfile import load_policy

    return load_policy(EXAMPLES / "policy.yaml")


from etcd_fixtures import etcd  # noqa: F401  (a real etcd: tests/etcd_fixtures.py)

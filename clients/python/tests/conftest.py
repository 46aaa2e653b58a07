"""The live brig these tests run against: the e2e suite (tests/e2e/sdk.rs)
starts brig-api, redis-server and the sandboxes, then runs pytest with
BRIG_URL, BRIG_API_KEY (alice), BRIG_OTHER_API_KEY (bob), BRIG_LIMITED_URL
(an API allowing two requests a second) and BRIG_METRICS_TOKEN."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

import brig


def setting(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these through `cargo nextest run -p brig-e2e -E 'test(sdk::)'`")
    return value


@pytest.fixture
def client() -> Iterator[brig.Client]:
    with brig.Client(setting("BRIG_URL"), setting("BRIG_API_KEY")) as c:
        yield c


@pytest.fixture
def bob() -> Iterator[brig.Client]:
    with brig.Client(setting("BRIG_URL"), setting("BRIG_OTHER_API_KEY")) as c:
        yield c


@pytest.fixture
def session(client: brig.Client) -> Iterator[brig.Session]:
    with client.session() as s:
        yield s

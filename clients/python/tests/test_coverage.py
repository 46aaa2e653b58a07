"""Every operation of the live server's OpenAPI document has a method in both
clients, and the SDK's version is the API's."""

from __future__ import annotations

import inspect
from typing import Set

import brig
from brig._calls import OPERATION_ATTR

SYNC = [brig.Client, brig.Session, brig.Files, brig.Execution, brig.Context]
ASYNC = [brig.AsyncClient, brig.AsyncSession, brig.AsyncFiles, brig.AsyncExecution, brig.AsyncContext]


def covered(classes: list[type]) -> Set[str]:
    found = set()
    for cls in classes:
        for _, member in inspect.getmembers(cls, callable):
            operation = getattr(member, OPERATION_ATTR, None)
            if operation:
                found.add(operation)
    return found


def test_every_openapi_operation_has_a_method_in_both_clients(client: brig.Client) -> None:
    document = client.openapi()
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert len(operations) > 30
    assert operations - covered(SYNC) == set(), "operations with no brig.Client method"
    assert operations - covered(ASYNC) == set(), "operations with no brig.AsyncClient method"
    assert covered(SYNC) - operations == set(), "methods naming operations the API does not have"
    assert covered(SYNC) == covered(ASYNC)


def test_the_async_client_has_the_same_methods_as_the_blocking_one() -> None:
    for sync, async_ in zip(SYNC, ASYNC):
        public = {name for name in dir(sync) if not name.startswith("_")}
        assert public - set(dir(async_)) == set(), f"{async_.__name__} lacks them"


def test_the_sdk_version_follows_the_api(client: brig.Client) -> None:
    assert brig.__version__ == client.openapi()["info"]["version"]

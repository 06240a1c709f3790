"""keyturn's SDK for consumer applications: read a credential, cache it, fall back from
current to next to previous on an authentication failure, report the version in use.

Needs only httpx (`pip install 'keyturn[client]'`): nothing here imports keyturn's server.

    from keyturn.client import Client, errors

    client = Client.from_env(consumer="billing")   # KEYTURN_URL, KEYTURN_TOKEN
    conn = client.use("acme/db", lambda v: psycopg.connect(password=v.value), errors.psycopg)
"""

from __future__ import annotations

from keyturn.client import errors
from keyturn.client.aio import AsyncClient
from keyturn.client.core import FailureBudget, Retry
from keyturn.client.sync import Attempt, Attempts, Client
from keyturn.client.values import (
    BudgetExhausted,
    Bundle,
    ClientError,
    Refused,
    Unreachable,
    Value,
)

__all__ = [
    "AsyncClient",
    "Attempt",
    "Attempts",
    "BudgetExhausted",
    "Bundle",
    "Client",
    "ClientError",
    "FailureBudget",
    "Refused",
    "Retry",
    "Unreachable",
    "Value",
    "errors",
]

"""Messages by status and category: `sms_messages_total` counts each message entering a status,
once the transaction that moved it commits (a change rolled back never happened).

Callers say what entered which status beside the event they write; the count waits in the
session's `info` until its commit. Each process counts what it did (the API what it accepted
or cancelled, workers what they sent and heard back): sum over the processes scraped."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

MESSAGES = Counter(
    "sms_messages_total",
    "Messages that entered a status, by status and category",
    ["status", "category"],
)

_PENDING = "sms_messages_entered"


def count_entered(session: AsyncSession, status: str, categories: Iterable[str]) -> None:
    """One message per category given (repeat a category for each of its messages), called
    beside the change, inside the transaction that makes it."""
    if session.sync_session.get_transaction() is None:
        raise RuntimeError("count a status change inside the transaction that makes it")
    pending: Tally[tuple[str, str]] = session.info.setdefault(_PENDING, Tally())
    pending.update((str(status), str(category)) for category in categories)


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: the outer commit counts
        return
    pending: Tally[tuple[str, str]] | None = session.info.pop(_PENDING, None)
    for (status, category), count in (pending or {}).items():
        MESSAGES.labels(status, category).inc(count)


@event.listens_for(Session, "after_transaction_end")
def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back or closed: counted nothing
        session.info.pop(_PENDING, None)

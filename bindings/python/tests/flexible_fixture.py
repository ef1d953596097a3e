"""Flexible sync as a user's ``mypy --strict`` sees it: test.sh checks this file, and
test_flexible.py runs it. The models of the flexible sync tests, and the subscription API used
through its types (typed and untyped)."""

from __future__ import annotations

from typing import Annotated, List, Optional, Tuple

import tandem


class Project(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey, tandem.Persisted("_id")]
    name: str = ""


class Todo(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey, tandem.Persisted("_id")]
    title: str = ""
    done: bool = False
    count: int = 0
    owner: str = ""
    project: Optional[Project] = None


MODELS = [Todo, Project]


def ids(db: tandem.TypedDatabase) -> List[int]:
    """The ids of the todos the file holds, sorted."""
    return sorted(t.id for t in db.objects(Todo))


def subscribe_all(db: tandem.TypedDatabase) -> tandem.TypedSubscriptionSet:
    """Every todo and project (a writer's subscriptions), in a ``with`` block."""
    with db.subscriptions.update() as subs:
        subs.add(Todo, name="todos")
        subs.add(Project)
    return db.subscriptions


def subscribe_big(db: tandem.TypedDatabase, above: int) -> tandem.TypedSubscriptionSet:
    """The named subscription "big": the todos whose count is above ``above`` (a name replaces
    the subscription of that name)."""
    return db.update_subscriptions(lambda subs: subs.add(Todo, "count > $0", above, name="big"))


def summary(subs: tandem.TypedSubscriptionSet) -> List[Tuple[Optional[str], str, str]]:
    return [(s.name, s.class_name, s.query) for s in subs]


async def wait(subs: tandem.TypedSubscriptionSet) -> tandem.SubscriptionState:
    """Waits (30 s at most) for the set's bootstrap through the session ``db.sync`` started."""
    done = await subs.wait_for_synchronization(30_000)
    assert done.version == subs.version
    return done.state


async def wait_untyped(session: tandem.SyncSession) -> tandem.SubscriptionSet:
    """The untyped wait: the latest set, as long as it takes."""
    return await session.wait_for_subscriptions()


def untyped_subscribe(raw: tandem.Database, query: str, value: int) -> tandem.SubscriptionSet:
    """The untyped update: a list of ``tandem.SubscriptionChange`` variants, as they are."""
    return raw.update_subscriptions([
        tandem.SubscriptionChange.CLEAR(),
        tandem.SubscriptionChange.ADD(name="q", class_name="Todo", query=query,
                                      args=[tandem.to_value(value)]),
    ])


def untyped_wait_blocking(session: tandem.SyncSession, version: int) -> tandem.SubscriptionSet:
    return session.wait_for_subscriptions_blocking(version, 30_000)


def rejected(code: int, message: str) -> List[Tuple[str, object, str]]:
    """An error event's compensating writes, as (class, primary key, reason)."""
    return [(w.class_name, w.primary_key, w.reason) for w in tandem.compensating_writes(code, message)]

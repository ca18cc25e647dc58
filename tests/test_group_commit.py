"""The group commit of webhook deliveries: the pure GroupCommit (one thread, callers on an event
loop), and the ledger's one-transaction insert of a group, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa

from controller.group_commit import GroupCommit
from controller.ledger import Ledger
from controller.ledger import tables as t
from controller.model import Delivery, DeliveryKind, DeliveryStatus
from tests.conftest import postgres_ledger


def test_callers_that_arrive_while_a_group_is_handled_form_the_next_group() -> None:
    seen: list[list[int]] = []
    first = threading.Event()

    def handle(items: list[int]) -> list[int | BaseException]:
        seen.append(items)
        if len(seen) == 1:
            first.wait(5)  # the first group is slow: the others queue up behind it
        return [ValueError(f"odd {i}") if i % 7 == 0 else i * 10 for i in items]

    group = GroupCommit(handle, most=16)

    async def main() -> list[int | BaseException]:
        head = asyncio.create_task(group.submit(1))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(group.submit(i)) for i in range(2, 41)]
        await asyncio.sleep(0.05)
        first.set()
        return list(await asyncio.gather(head, *rest, return_exceptions=True))

    answers = asyncio.run(main())
    group.close()
    for i, answer in zip(range(1, 41), answers, strict=True):
        if i % 7 == 0:
            assert isinstance(answer, ValueError) and str(answer) == f"odd {i}", "only that caller gets its error"
        else:
            assert answer == i * 10, "each caller gets its own item's result"
    assert seen[0] == [1]
    assert [len(g) for g in seen[1:]] == [16, 16, 7], "39 waiting callers: groups of at most 16, in order"
    assert [i for g in seen for i in g] == list(range(1, 41))


def test_a_group_that_fails_fails_each_caller_and_the_thread_goes_on() -> None:
    calls = 0

    def handle(items: list[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return [s.upper() for s in items]

    group = GroupCommit(handle)

    async def main() -> tuple[BaseException | str, str]:
        failed = await asyncio.gather(group.submit("a"), return_exceptions=True)
        return failed[0], await group.submit("b")

    failed, then = asyncio.run(main())
    assert isinstance(failed, OSError) and then == "B"
    group.close()


def test_close_handles_what_was_submitted_before_it() -> None:
    handled: list[int] = []

    def handle(items: list[int]) -> list[int]:
        time.sleep(0.01)
        handled.extend(items)
        return items

    group = GroupCommit(handle, most=4)

    async def main() -> None:
        tasks = [asyncio.create_task(group.submit(i)) for i in range(10)]
        await asyncio.sleep(0)  # every submit has queued its item
        await asyncio.to_thread(group.close)
        assert sorted(await asyncio.gather(*tasks)) == list(range(10))

    asyncio.run(main())
    assert sorted(handled) == list(range(10))


def _push(provider: str, delivery_id: str) -> Delivery:
    return Delivery(provider, delivery_id, "push", DeliveryKind.PUSH, "hello", status=DeliveryStatus.QUEUED)


def test_a_group_is_recorded_in_order_and_replays_get_none(ledger: Ledger) -> None:
    assert ledger.record_delivery(_push("github", "x1"), "a") is not None
    group = [
        _push("github", "x2"),
        _push("github", "x1"),  # seen before
        _push("github", "x3"),
        _push("github", "x2"),  # earlier in the same group
        _push("gitlab", "x1"),  # another forge's id space
    ]
    rows = ledger.record_deliveries(group, "a")
    assert rows[1] is None and rows[3] is None
    new = [r for r in (rows[0], rows[2], rows[4]) if r is not None]
    assert len(new) == 3 and new == sorted(new), "ids in arrival order"
    recorded = {(d.provider, d.delivery_id): d for d in ledger.deliveries(10)}
    assert set(recorded) == {("github", "x1"), ("github", "x2"), ("github", "x3"), ("gitlab", "x1")}
    assert recorded[("github", "x3")].id == rows[2]
    with ledger.engine.connect() as conn:
        holders = set(conn.execute(sa.select(t.deliveries.c.claimed_by)).scalars())
    assert holders == {"a"}
    assert ledger.record_deliveries([], "a") == []


def test_an_id_another_replica_records_during_the_group_is_a_replay_and_the_rest_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PostgreSQL: only there do several replicas write one ledger (SQLite serves one)
    with postgres_ledger() as ledger:
        unseen = ledger._unseen

        def racing(conn: sa.Connection, keys: list[tuple[str, str]]) -> list[int]:
            fresh = unseen(conn, keys)
            if ("github", "y2") in keys:  # the other replica commits "y2" after this group looked for it
                with ledger.engine.begin() as other:
                    other.execute(
                        t.deliveries.insert().values(
                            provider="github",
                            delivery_id="y2",
                            event="push",
                            kind="push",
                            status="queued",
                            received_at=sa.func.now(),
                            claimed_by="b",
                        )
                    )
            return fresh

        monkeypatch.setattr(ledger, "_unseen", racing)
        rows = ledger.record_deliveries([_push("github", "y1"), _push("github", "y2"), _push("github", "y3")], "a")
        assert rows[1] is None and isinstance(rows[0], int) and isinstance(rows[2], int)
        assert sorted(d.delivery_id for d in ledger.deliveries(10)) == ["y1", "y2", "y3"]

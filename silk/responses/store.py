"""Stored responses: keep, continue, list, delete and expire them, always per account.

Storage is not money: nothing here touches a balance. A row is written only after the
answer, only with store true, and is never logged; another account's id reads as missing.
A row names the key that made it: a member key reads, continues and deletes only its own
key's responses (another key's read as missing), an owner key all of the account's.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Select, delete, insert, literal, select
from sqlalchemy.engine import Engine

from silk.database import utcnow
from silk.errors import InvalidRequest, NotFound
from silk.jsonio import dumps_bytes
from silk.responses.models import StoredResponse
from silk.sqlite_writes import write_begin

_TABLE = StoredResponse.__table__
_INSERT = insert(_TABLE)  # built once (SQLAlchemy caches its compiled form); saves bind values
MAX_CHAIN = 1000  # responses a conversation may go back through previous_response_id
# What a stored response may keep, in bytes of JSON, beside what its request sent upstream:
# this many times the bytes sent (items are wordier than the chat messages they become), and
# this many more (the fields echoed back, ids, metadata).
KEPT_PER_SENT = 8
KEPT_BESIDE = 16 * 1024


def missing(response_id: str, param: str | None = None) -> NotFound:
    """The 404 for a response this account does not have (never another account's)."""
    return NotFound(f"No response with id '{response_id[:64]}' found.", param=param,
                    code="response_not_found")


def with_ids(response_id: str, items: list[dict]) -> list[dict]:
    """The input items as kept: each with an id (given, or made from the response's)."""
    return [item if isinstance(item.get("id"), str) else
            {**item, "id": f"in_{response_id[5:]}_{index}"} for index, item in enumerate(items)]


def room(items: list[dict], echoed: dict, sent: int) -> None:
    """Refuse (400) to keep a response whose input items and echoed fields are far larger
    than what its request sent upstream.

    What the gateway neither sends nor reads (a field it does not know, metadata) costs
    nothing: kept without bound, it would be free room in the database, and each
    continuation would load every earlier response's into a worker's memory. What is sent
    is billed, and the provider's context bounds a conversation's.
    """
    kept = len(dumps_bytes(items)) + len(dumps_bytes(echoed))
    allowed = KEPT_PER_SENT * sent + KEPT_BESIDE
    if kept > allowed:
        raise InvalidRequest(
            f"Invalid 'store': this response would keep {kept} bytes (its input items, "
            f"metadata and the other fields echoed back), more than the {allowed} allowed "
            "for what it sends the model: leave out what the model does not read (unknown "
            "fields, large metadata), or send store: false.", param="store")


def save(engine: Engine, account_id: int, key_id: int, response: dict, items: list[dict],
         retention_days: float) -> None:
    """Keep a finished response and its input items for `retention_days`.

    The commit does not wait for the disk: the answer is already the client's, and a
    stored response is a convenience, not money (silk.sqlite_writes.write_begin).
    """
    now = utcnow()
    with write_begin(engine, durable=False) as connection:  # a lock wait must yield
        connection.execute(_INSERT, {
            "id": response["id"], "account_id": account_id, "key_id": key_id,
            "previous_response_id": response.get("previous_response_id"),
            "model": response["model"], "status": response["status"], "input_items": items,
            "response": response, "created_at": now,
            "expires_at": now + timedelta(days=retention_days)})


def _mine(account_id: int, key_id: int | None, response_id: str) -> list:
    """The conditions of a response the caller may see: of its account and, for a member
    key (`key_id` given), of that key; an owner key passes None."""
    where = [_TABLE.c.id == response_id, _TABLE.c.account_id == account_id]
    if key_id is not None:
        where.append(_TABLE.c.key_id == key_id)
    return where


def _kept(response_id: str) -> bool:
    """Whether an id may name a stored response: none holds a NUL, which PostgreSQL's text
    refuses (SQLite's takes it), so such an id is not looked up and is a 404 on both."""
    return "\x00" not in response_id


def _row(connection, account_id: int, key_id: int | None, response_id: str):
    if not _kept(response_id):
        return None
    return connection.execute(
        select(_TABLE.c.previous_response_id, _TABLE.c.input_items, _TABLE.c.response)
        .where(*_mine(account_id, key_id, response_id),
               _TABLE.c.expires_at > utcnow())).first()


def get(engine: Engine, account_id: int, key_id: int | None, response_id: str) -> dict:
    """The stored Response object; 404 when this account has none by that id."""
    with engine.connect() as connection:
        row = _row(connection, account_id, key_id, response_id)
    if row is None:
        raise missing(response_id)
    return row.response


def conversation(engine: Engine, account_id: int, key_id: int | None,
                 response_id: str) -> list[dict]:
    """The items a new response continues from: every earlier input and output, oldest first.

    A response deleted or expired inside the chain ends it there (its content is gone).
    The chain is read in one query, however long it is.
    """
    if not _kept(response_id):
        raise missing(response_id, "previous_response_id")
    with engine.connect() as connection:
        rows = connection.execute(_chain(account_id, key_id, response_id)).all()
    if not rows:
        raise missing(response_id, "previous_response_id")
    chain: list[list[dict]] = []
    seen: set[str] = set()
    for row in rows:  # newest first
        if row.id in seen:
            break
        seen.add(row.id)
        chain.append(list(row.input_items) + list(row.response.get("output") or []))
    return [item for items in reversed(chain) for item in items]


def _chain(account_id: int, key_id: int | None, response_id: str) -> Select:
    """The responses `response_id` continues, itself first, as far as the caller may see
    them and at most MAX_CHAIN: a recursive query that walks previous_response_id."""
    visible = [_TABLE.c.account_id == account_id, _TABLE.c.expires_at > utcnow()]
    if key_id is not None:
        visible.append(_TABLE.c.key_id == key_id)
    first = select(_TABLE.c.id, _TABLE.c.previous_response_id, literal(1).label("depth")) \
        .where(_TABLE.c.id == response_id, *visible).cte("chain", recursive=True)
    chain = first.union_all(
        select(_TABLE.c.id, _TABLE.c.previous_response_id, first.c.depth + 1)
        .where(_TABLE.c.id == first.c.previous_response_id, first.c.depth < MAX_CHAIN,
               *visible))
    return (select(_TABLE.c.id, _TABLE.c.input_items, _TABLE.c.response)
            .join_from(chain, _TABLE, _TABLE.c.id == chain.c.id)
            .order_by(chain.c.depth))


def input_items(engine: Engine, account_id: int, key_id: int | None, response_id: str, *,
                after: str | None, limit: int, order: str) -> dict:
    """A page of a response's input items, as OpenAI's list object."""
    with engine.connect() as connection:
        row = _row(connection, account_id, key_id, response_id)
    if row is None:
        raise missing(response_id)
    items = list(row.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise NotFound(f"No input item with id '{after[:64]}' in this response.",
                           param="after", code="item_not_found")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit}


def remove(engine: Engine, account_id: int, key_id: int | None, response_id: str) -> None:
    """Delete a stored response; 404 when this account has none by that id (an expired one
    is gone for every call, though the sweep deletes its row)."""
    if not _kept(response_id):
        raise missing(response_id)
    with write_begin(engine) as connection:
        gone = connection.execute(delete(_TABLE).where(
            *_mine(account_id, key_id, response_id), _TABLE.c.expires_at > utcnow())).rowcount
    if not gone:
        raise missing(response_id)


def expire(engine: Engine) -> int:
    """Delete every stored response past its expiry; returns how many (the sweep's chore)."""
    with write_begin(engine) as connection:
        return connection.execute(delete(_TABLE).where(
            _TABLE.c.expires_at <= utcnow())).rowcount

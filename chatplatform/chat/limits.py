"""Redis-backed rate limits and connection counters, shared by every web process.

Fixed one-minute windows (INCR + EXPIRE in one pipeline): simple, one round trip, and a burst of
twice the limit across a window boundary is acceptable for abuse protection.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref

import redis.asyncio as aioredis
from django.conf import settings

from chatplatform.chat import config

WINDOW_S = 60
# Commands here take well under a millisecond: 32 connections serve thousands of sockets.
REDIS_POOL_SIZE = 32
REDIS_POOL_WAIT_S = 5.0
_KEY_PREFIX = "chat:limit"

# An asyncio client belongs to the event loop it was made on: one per loop (a server has one;
# a test session may run several).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def redis_client() -> aioredis.Redis:
    """The async Redis client (connection pool) of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A blocking pool: under a burst, callers wait briefly for a free connection instead
        # of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=REDIS_POOL_SIZE, timeout=REDIS_POOL_WAIT_S
        )
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client


async def allow_message(conversation_id: str, client_ip: str, connection_id: str) -> str | None:
    """Count one message; None when it may go on, else which limit it broke ("conversation"
    or "ip"). One round trip: both window counters, and the sender's socket and presence on
    the conversation are marked live."""
    window = int(time.time()) // WINDOW_S
    per_conversation, per_ip = await _count_and_touch(
        f"{_KEY_PREFIX}:conv:{conversation_id}:{window}",
        f"{_KEY_PREFIX}:ip:{client_ip}:{window}",
        client_ip,
        connection_id,
        conversation_id,
    )
    if per_conversation > config.MESSAGES_PER_MINUTE_PER_CONVERSATION:
        return "conversation"
    if per_ip > config.MESSAGES_PER_MINUTE_PER_IP:
        return "ip"
    return None


async def allow_frame(
    client_ip: str, connection_id: str, conversation_id: str | None
) -> str | None:
    """Count one frame other than a message (hello, feedback, handoff, ping); None when it may
    go on, else which limit it broke ("connection" or "ip"). One round trip, which also marks
    the socket (and its presence on its conversation) live."""
    window = int(time.time()) // WINDOW_S
    per_connection, per_ip = await _count_and_touch(
        f"{_KEY_PREFIX}:frames:conn:{connection_id}:{window}",
        f"{_KEY_PREFIX}:frames:ip:{client_ip}:{window}",
        client_ip,
        connection_id,
        conversation_id,
    )
    if per_connection > config.FRAMES_PER_MINUTE_PER_CONNECTION:
        return "connection"
    if per_ip > config.FRAMES_PER_MINUTE_PER_IP:
        return "ip"
    return None


async def _count_and_touch(
    own_key: str,
    ip_key: str,
    client_ip: str,
    connection_id: str,
    conversation_id: str | None,
) -> tuple[int, int]:
    """Add one to two window counters (this sender's and its address's) and mark the socket
    live, in one transaction; returns the two counts."""
    async with redis_client().pipeline(transaction=True) as pipe:
        for key in (own_key, ip_key):
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
        _queue_touch(pipe, client_ip, connection_id, conversation_id)
        own, _, per_ip, *_ = await pipe.execute()
    return int(own), int(per_ip)


def _queue_touch(
    pipe: aioredis.client.Pipeline,
    client_ip: str,
    connection_id: str,
    conversation_id: str | None,
) -> None:
    """Queue the refresh of a live socket's entries: its connection count and its presence.

    The keys' own expiry is pushed back too: set only when the first socket opened, it would
    drop every entry (and so the whole count) while sockets are still alive and talking.
    """
    lapses_at = time.time() + config.CONNECTION_COUNT_TTL_S
    connections = _connections_key(client_ip)
    pipe.zadd(connections, {connection_id: lapses_at})
    pipe.expire(connections, _whole_seconds(config.CONNECTION_COUNT_TTL_S))
    if conversation_id is not None:
        presence = _presence_key(conversation_id)
        pipe.zadd(presence, {connection_id: time.time() + config.PRESENCE_TTL_S})
        pipe.expire(presence, _whole_seconds(config.PRESENCE_TTL_S))


def _whole_seconds(ttl_s: float) -> int:
    """A key expiry for EXPIRE (whole seconds, at least 1) that outlives the entries' scores."""
    return max(1, math.ceil(ttl_s))


def _connections_key(client_ip: str) -> str:
    return f"chat:connections:{client_ip}"


async def open_connection(client_ip: str, connection_id: str) -> bool:
    """Count a new socket from `client_ip`; False (and not counted) when over the limit.

    A sorted set of live sockets scored by when their count lapses: a socket whose process
    died without a disconnect stops counting after CONNECTION_COUNT_TTL_S instead of blocking
    its address for good. Live sockets refresh their entry on every frame (`allow_frame`,
    `allow_message`), and the consumer closes a socket silent for that long, so a socket that
    no longer counts is no longer open either.
    """
    key, now = _connections_key(client_ip), time.time()
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {connection_id: now + config.CONNECTION_COUNT_TTL_S})
        pipe.zcard(key)
        pipe.expire(key, _whole_seconds(config.CONNECTION_COUNT_TTL_S))
        _, _, count, _ = await pipe.execute()
    if int(count) > config.CONNECTIONS_PER_IP:
        await redis_client().zrem(key, connection_id)
        return False
    return True


async def close_connection(client_ip: str, connection_id: str) -> None:
    await redis_client().zrem(_connections_key(client_ip), connection_id)


def _presence_key(conversation_id: str) -> str:
    # Not "chat:presence:": earlier versions kept a counter (a string) under that name, and a
    # sorted-set command on one left in Redis across an upgrade fails with WRONGTYPE.
    return f"chat:present:{conversation_id}"


async def join_conversation(conversation_id: str, connection_id: str) -> None:
    """Mark a socket as present on the conversation (used to decide whether to cancel
    generation when a socket closes).

    A sorted set of socket names scored by when their presence lapses, like the connection
    count: joining or leaving twice cannot miscount, a socket whose process died stops
    counting after PRESENCE_TTL_S, and live sockets refresh their entry on traffic.
    """
    key = _presence_key(conversation_id)
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.zadd(key, {connection_id: time.time() + config.PRESENCE_TTL_S})
        pipe.expire(key, _whole_seconds(config.PRESENCE_TTL_S))
        await pipe.execute()


async def leave_conversation(conversation_id: str, connection_id: str) -> None:
    await redis_client().zrem(_presence_key(conversation_id), connection_id)


async def someone_present(conversation_id: str) -> bool:
    """Whether a live socket (one whose presence has not lapsed) is on the conversation."""
    live = await redis_client().zcount(_presence_key(conversation_id), f"({time.time()}", "+inf")
    return int(live) > 0


async def request_cancel(message_id: str) -> None:
    from inference.contracts import cancel_key

    await redis_client().set(cancel_key(message_id), "1", ex=config.CANCEL_KEY_TTL_S)


async def close_unanswered(message_id: str) -> bool:
    """Close a message that timed out, unless its worker already concluded it.

    True: the message is closed here (its answer will never be sent: the worker finds it
    answered and sends nothing more) and its generation is cancelled. False: the worker took
    the key first, so its final event (or the stored answer) is on its way.
    """
    from inference.contracts import ANSWERED_TTL_S, answered_key

    client = redis_client()
    if not await client.set(answered_key(message_id), "timeout", nx=True, ex=ANSWERED_TTL_S):
        return False
    await request_cancel(message_id)
    return True

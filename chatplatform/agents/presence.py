"""Which agents are connected: Redis, shared by every web process and the sweep.

Per agent, a sorted set of their open inbox sockets scored by when each was last heard from
(connect, any frame: the page pings every INBOX_PING_INTERVAL_S), and the time of their last
sign of life (a socket's close included). A socket whose process died never says goodbye: it
stops counting once silent for PRESENCE_TTL_S.
"""

from __future__ import annotations

import time

import redis
from django.conf import settings

from chatplatform.agents import config
from chatplatform.chat.limits import redis_client

KEEP_S = 24 * 3600  # the keys of an agent who never comes back expire eventually


def _sockets_key(user_id: int) -> str:
    return f"chat:agents:sockets:{user_id}"


def _seen_key(user_id: int) -> str:
    return f"chat:agents:seen:{user_id}"


async def heard_from(user_id: int, channel_name: str) -> None:
    """The socket is open and live (connect, or any frame)."""
    now = time.time()
    pipe = redis_client().pipeline(transaction=False)
    pipe.zadd(_sockets_key(user_id), {channel_name: now})
    pipe.expire(_sockets_key(user_id), KEEP_S)
    pipe.set(_seen_key(user_id), now, ex=KEEP_S)
    await pipe.execute()


async def closed(user_id: int, channel_name: str) -> None:
    pipe = redis_client().pipeline(transaction=False)
    pipe.zrem(_sockets_key(user_id), channel_name)
    pipe.set(_seen_key(user_id), time.time(), ex=KEEP_S)
    await pipe.execute()


def away_for(user_id: int, now: float | None = None) -> float | None:
    """Seconds since the agent's last sign of life, or None while a socket of theirs is live."""
    now = time.time() if now is None else now
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        live = client.zcount(_sockets_key(user_id), now - config.PRESENCE_TTL_S, "+inf")
        seen = client.get(_seen_key(user_id))
    finally:
        client.close()
    if live:
        return None
    return now - float(seen) if seen is not None else float("inf")

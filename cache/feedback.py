"""Customers' thumbs up/down on cached answers: a disliked entry is demoted, then flagged."""

from __future__ import annotations

from cache.ids import site_of
from cache.replica import Replica
from cache.types import State

# KEYS entry hash, site LRU zset; ARGV field, flag threshold, entry id, active and flagged
# state names. Returns the state after, or nil for no such entry.
_FEEDBACK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local state = redis.call('HGET', KEYS[1], 'state')
if state == ARGV[4] then
  local net = tonumber(redis.call('HGET', KEYS[1], 'neg') or '0')
    - tonumber(redis.call('HGET', KEYS[1], 'pos') or '0')
  if net >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'state', ARGV[5], 'note', 'feedback')
    redis.call('ZREM', KEYS[2], ARGV[3])
    state = ARGV[5]
  end
end
return state
"""


def record_feedback(replica: Replica, entry_id: str, positive: bool) -> str | None:
    """A customer's thumbs up/down on a cached answer. Returns the entry's state after.

    One net thumbs-down demotes the entry (it needs more confidence to be served); at
    `flag_after_net_negative` it is flagged: no longer served, listed for review.
    """
    if not isinstance(entry_id, str):
        return None
    # One script: the count lands only on an entry that exists (HINCRBY alone would recreate
    # a just-deleted one as a half-written hash), and the flag is decided on the counts it
    # made. A flagged generated entry leaves the LRU set, so the site's bound does not evict
    # it before an admin reviewed it (its TTL still ends it).
    state = replica.redis.eval(
        _FEEDBACK,
        2,
        replica.store.keys.entry(entry_id),
        replica.store.keys.site_generated(site_of(entry_id)),
        "pos" if positive else "neg",
        replica.config.flag_after_net_negative,
        entry_id,
        State.ACTIVE.value,
        State.FLAGGED.value,
    )
    if state is None:
        return None
    replica.changed(site_of(entry_id), "upsert", [entry_id])
    return state.decode()

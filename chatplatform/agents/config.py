"""Timings and limits of the human-agent side, read once from the environment."""

from __future__ import annotations

from chatplatform.settings.env import at_least, get_from_env, positive_float, positive_int

# The inbox page pings its socket this often (PING_EVERY_MS in static/agents/inbox.js); an
# agent socket not heard from for PRESENCE_TTL_S is taken for gone (its process died unseen).
INBOX_PING_INTERVAL_S = 20
PRESENCE_TTL_S = 3 * INBOX_PING_INTERVAL_S
# An agent whose every socket is gone this long (a reload takes a second or two; a dropped
# laptop connection a few more) loses their conversations: they go back to the queue.
RECONNECT_GRACE_S = get_from_env("AGENT_RECONNECT_GRACE_S", 60.0, at_least(1.0, "one second"))
# The periodic sweep (CPU worker's beat): conversations of vanished agents back to the queue,
# "no agent answered" after each site's reply_within_minutes.
SWEEP_INTERVAL_S = 15.0

# Webhook deliveries: attempt n waits about BASE * 2^(n-1) seconds after attempt n-1 failed
# (half of it jittered, so a receiver that comes back is not hit by every retry at once).
# 8 attempts at 10 s span ~21 minutes: a receiver's deploy or short outage is ridden out.
WEBHOOK_RETRY_BASE_S = get_from_env("AGENT_WEBHOOK_RETRY_BASE_S", 10.0, positive_float)
WEBHOOK_MAX_ATTEMPTS = get_from_env("AGENT_WEBHOOK_MAX_ATTEMPTS", 8, positive_int)
WEBHOOK_MAX_DELAY_S = 3600.0
WEBHOOK_TIMEOUT_S = 10.0  # per attempt: connect + response

# What the inbox shows of a conversation: the whole support exchange, bounded.
TRANSCRIPT_LIMIT = 200
PREVIEW_CHARS = 140
# Links in notification e-mails point here (the inbox is at PLATFORM_URL/agents/).
PLATFORM_URL = get_from_env("PLATFORM_URL", "http://127.0.0.1:8000").rstrip("/")

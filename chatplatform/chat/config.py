"""Limits and timings of the realtime chat, read once from the environment.

Each value is a named constant with its reasoning; operators override the limits through the
environment (e.g. the load benchmark, which opens hundreds of sockets from one address).
"""

from __future__ import annotations

from chatplatform.settings.env import at_least, get_from_env, positive_float, positive_int

PROTOCOL_VERSION = 1

# A customer question is a few sentences; 2,000 characters is a long complaint. Bigger text is
# answered with `message_too_long` rather than sent to the cache and model.
MAX_MESSAGE_CHARS = get_from_env("CHAT_MAX_MESSAGE_CHARS", 2000, positive_int)
# Whole websocket frame limit (JSON envelope + text + escapes): anything bigger is not a
# legitimate client frame and is refused before parsing.
MAX_FRAME_BYTES = 4 * MAX_MESSAGE_CHARS + 1024

# A person types at most a few messages a minute; 20 leaves room for quick-reply clicks.
MESSAGES_PER_MINUTE_PER_CONVERSATION = get_from_env(
    "CHAT_MESSAGES_PER_MINUTE_PER_CONV", 20, positive_int
)
# One address may be an office behind NAT: a few dozen customers typing at once.
MESSAGES_PER_MINUTE_PER_IP = get_from_env("CHAT_MESSAGES_PER_MINUTE_PER_IP", 120, positive_int)
# Open sockets per address: several tabs for each of a few dozen people behind one NAT.
CONNECTIONS_PER_IP = get_from_env("CHAT_CONNECTIONS_PER_IP", 50, positive_int)
# Other frames (hello, feedback, handoff, ping) per socket: a widget sends one hello, a ping
# every 4 minutes and a few feedback clicks; 30 a minute is far above that and still stops a
# script from flooding the database and the cache with feedback.
FRAMES_PER_MINUTE_PER_CONNECTION = get_from_env("CHAT_FRAMES_PER_MINUTE_PER_CONN", 30, positive_int)
# The same per address: the CONNECTIONS_PER_IP sockets behind one NAT, a few frames each.
FRAMES_PER_MINUTE_PER_IP = get_from_env("CHAT_FRAMES_PER_MINUTE_PER_IP", 300, positive_int)
# A socket whose web process died never says goodbye: it stops counting against its address
# this long after its last frame. A socket silent this long is closed by the server (the
# widget pings every 4 minutes while open), so a socket that no longer counts is not open.
# The widget pings every WIDGET_PING_INTERVAL_S (PING_EVERY_MS in static/widget.js): a timeout
# shorter than two pings would close open widgets whose customer is only reading.
WIDGET_PING_INTERVAL_S = 240
CONNECTION_COUNT_TTL_S = get_from_env(
    "CHAT_IDLE_TIMEOUT_S",
    600.0,
    at_least(2 * WIDGET_PING_INTERVAL_S, "two of the widget's pings"),
)
# Same for "someone is connected to this conversation" (refreshed by the same traffic).
PRESENCE_TTL_S = CONNECTION_COUNT_TTL_S

# The holding reply must reach the customer inside the SLA: it is sent this long before the
# deadline if no token has arrived (covers FAQ suggestion lookup + send on a loaded box).
HOLDING_REPLY_MARGIN_MS = get_from_env("CHAT_HOLDING_REPLY_MARGIN_MS", 80, positive_int)
# After the holding reply the answer still follows; past this we give up and say so. The
# timeout is final: the generation is cancelled and no answer follows it (docs/protocol.md).
ANSWER_TIMEOUT_S = get_from_env("CHAT_ANSWER_TIMEOUT_S", 60.0, positive_float)
# When the model concluded just before the timeout, its answer is on its way: streamed within
# a second, or stored by the finalize task, which a killed CPU worker's redelivery (30 s
# visibility timeout + 7 s sweep, chatplatform/settings/base.py) may delay this long.
ANSWER_ON_ITS_WAY_S = 45.0
# A question that would wait longer than this for a model slot (the Redis queue's backlog and
# the workers' reported capacity, inference/admission.py) is refused at once as `overloaded`
# instead of waiting for the answer timeout.
SHED_AFTER_S = get_from_env("CHAT_SHED_AFTER_S", 30.0, positive_float)
# A customer whose socket dropped usually comes back within seconds (reload, flaky network);
# only when nobody is connected to the conversation after this do we cancel its generation.
CANCEL_GRACE_S = get_from_env("CHAT_CANCEL_GRACE_S", 15.0, positive_float)
CANCEL_KEY_TTL_S = 600  # longer than any request can live in a worker

# An open chat re-reads its site's settings (active, origins, cache switch, SLA, instructions)
# when it is older than this, so an admin's change reaches open widgets within seconds at the
# cost of one indexed query per site per socket per interval.
SITE_REFRESH_S = get_from_env("CHAT_SITE_REFRESH_S", 5.0, positive_float)

# Answers from the model are short support replies: bounded cost and latency per message.
MAX_NEW_TOKENS = get_from_env("CHAT_MAX_NEW_TOKENS", 96, positive_int)
# How much of the conversation goes into the prompt (the prompt builder trims further).
PROMPT_HISTORY_TURNS = 6
# FAQ entries offered as grounding to the model and as suggestions in a holding reply.
SUGGESTION_COUNT = 3
# The site's FAQ head: its first FAQs by id (a fixed order), up to this many entries and
# characters, open every prompt of the site after the instructions, so a prefix-sharing KV
# cache computes them once for all its customers (the question's nearest FAQs come with the
# question either way). Head + suggestions stay within the cache's limit of FAQ versions per
# answer (cache.admission.MAX_GROUNDING, 16). The default suits the CPU: there the batching
# manager's attention costs in proportion to every running prompt's whole length, cached or
# not, and a 400-character head took the distinct-question TTFT p50 from 59 ms to 444 ms
# (docs/benchmarks.md); a GPU deployment with paged attention kernels can raise it.
SITE_FAQ_HEAD_ENTRIES = 10
SITE_FAQ_HEAD_CHARS = get_from_env("CHAT_SITE_FAQ_HEAD_CHARS", 100, positive_int)
# Quick-reply buttons shown when the widget opens.
QUICK_REPLY_COUNT = 4
# A rating's optional comment: a few sentences about the support received.
MAX_RATING_COMMENT_CHARS = 1000

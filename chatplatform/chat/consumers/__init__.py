"""The websocket consumers; the customer's widget socket at /ws/chat/ is `ChatConsumer`.

Protocol v1 (docs/protocol.md). Per customer message: validate, rate-limit, persist, ack, look up
the cache; a hit is sent whole, a miss becomes an inference task whose stream arrives as
channel-layer group messages (handled by the methods named after their type: `answer_start`,
`answer_delta`, ...) and is relayed. A holding reply goes out inside the SLA when no token has
come by then. Every client error is `{type: "error", code, message}` and the socket stays open.

The customer consumer is built in layers, one module each, along its seams:
- `connection`: the socket's life (counting, idle close, frame guard, site checks, sending);
- `delivery`: answers on their way (SLA timers, holding replies, the worker's stream, failures);
- `hello`: joining a conversation, new or resumed, and catching up on what was missed;
- `customer`: the customer's frames (messages, feedback, handoff) and the cache/model answer.
"""

import logging

from chatplatform.chat.consumers.connection import CLOSE_IDLE, CLOSE_TOO_MANY_CONNECTIONS
from chatplatform.chat.consumers.customer import ChatConsumer

# The parent logger of every consumer module (their records propagate to it).
logger = logging.getLogger(__name__)

__all__ = ["CLOSE_IDLE", "CLOSE_TOO_MANY_CONNECTIONS", "ChatConsumer", "logger"]

"""Built-in English customer-service text for training the offline model's tokenizer.

The offline model must build with no downloads, so its byte-level BPE tokenizer is trained on
sentences generated here from small templates. The vocabulary only has to look like a real
one (common English words as single tokens, everything else falling back to bytes); the model
weights are random, so nothing depends on the text being rich.
"""

from __future__ import annotations

import itertools

_GREETINGS = ["Hello", "Hi", "Good morning", "Good afternoon", "Thanks for reaching out", "Hey"]
_TOPICS = [
    "my order",
    "a refund",
    "the delivery",
    "my account",
    "the password reset",
    "my subscription",
    "an invoice",
    "the warranty",
    "a damaged item",
    "the shipping address",
    "my card payment",
    "the opening hours",
    "a cancelled booking",
    "the return label",
]
_QUESTIONS = [
    "How do I {verb} {topic}?",
    "Can you help me with {topic}?",
    "I have a problem with {topic}, what should I do?",
    "Why is {topic} taking so long?",
    "Where can I find information about {topic}?",
    "Is it possible to {verb} {topic} today?",
]
_VERBS = ["change", "cancel", "track", "update", "check", "fix", "renew"]
_ANSWERS = [
    "You can {verb} {topic} from the settings page of your account.",
    "Our support team usually answers within one business day.",
    "Please send us your order number and we will look into it right away.",
    "Refunds are processed within five to seven working days after we receive the item.",
    "We are open Monday to Friday from nine in the morning until six in the evening.",
    "I am sorry for the trouble. Let me check {topic} for you.",
    "If the problem continues, please contact us by email or phone.",
]


def training_sentences() -> list[str]:
    """Every sentence the tokenizer trains on (a few thousand, deterministic order)."""
    sentences: list[str] = []
    for topic, verb in itertools.product(_TOPICS, _VERBS):
        for template in _QUESTIONS + _ANSWERS:
            sentences.append(template.format(topic=topic, verb=verb))
        for greeting in _GREETINGS:
            sentences.append(f"{greeting}! I would like to {verb} {topic}.")
    # Chat-shaped lines, so the template's markers and digits become ordinary tokens too.
    for number, topic in enumerate(_TOPICS):
        sentences.append(f"User: What about {topic} number {number * 137 + 42}?\n\nAssistant: ")
    return sentences

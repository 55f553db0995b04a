"""Suggestions about to be shown for a customer question, as the chat stores them with it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chatplatform.suggestions.models import SuggestionOffer


@dataclass(frozen=True)
class ShownOffer:
    """Suggestions about to be shown for a question, stored with it (store.save_questions)."""

    policy: str
    faqs: tuple[tuple[int, str], ...]  # (faq_id, question), best first
    waiting: bool  # suggest_first: the model is asked only on "none of these" or a new message

    def row(
        self, question_id: str, site_id: int, conversation_id: str, received_at: datetime
    ) -> SuggestionOffer:
        return SuggestionOffer(
            question_id=question_id,
            site_id=site_id,
            conversation_id=conversation_id,
            received_at=received_at,
            policy=self.policy,
            faqs=[{"faq_id": faq_id, "question": question} for faq_id, question in self.faqs],
            waiting=self.waiting,
        )

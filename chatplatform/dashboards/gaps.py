"""FAQ gaps: the questions that missed the cache, grouped by meaning.

The most recent `MAX_MISSES` missed questions in the range (a bound, so the page stays fast
however much traffic there was) are embedded with the semantic cache's sentence encoder and
grouped per site by average-linkage agglomerative clustering on cosine distance: a group is
questions whose mean similarity stays above `1 - DISTANCE_THRESHOLD`. Each group becomes a
candidate FAQ: its most central phrasing as the question, its other phrasings as variants, and
the model's best answer (one a customer rated up, else the central question's answer).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np

from chatplatform.conversations.models import Message
from chatplatform.dashboards.queries import MISS_SOURCES, Scope, messages_in

# Embedding is the cost: MiniLM on 2 busy CPU cores took 17 s for 500 questions (34 ms each),
# so a page embeds at most this many distinct questions (the most recent: the most relevant),
# and encoder.py remembers embeddings of texts it has seen, so reloads are quick.
MAX_MISSES = 200
# Cosine distance under which questions are "the same question" (average linkage). On 500
# Banking77 test questions of 20 intents: 0.45 -> 68 groups, homogeneity 0.95, completeness
# 0.78; 0.5 -> 48 groups, 0.94 / 0.84; 0.6 -> 27 groups, 0.91 / 0.92. A group that mixes two
# questions makes a wrong FAQ, a split one only a duplicate row, so we stay on the pure side.
DISTANCE_THRESHOLD = 0.5
MAX_PHRASINGS = 5  # shown and prefilled as FAQ variants
MAX_ANSWER_CHARS = 2000  # keeps the prefilled admin URL well under browsers' limits

Encode = Callable[[list[str]], np.ndarray]  # texts -> unit vectors, shape [N, D]


@dataclass(frozen=True)
class Miss:
    site_id: int
    question: str
    answer: str  # the model's answer; "" when only a holding reply was sent
    rated_up: bool


@dataclass
class Gap:
    site_id: int
    count: int  # missed questions in this group, repeats included
    question: str  # the most central phrasing
    phrasings: list[str] = field(default_factory=list)  # the others, most frequent first
    answer: str = ""

    def create_faq_url(self) -> str:
        """The admin's add form, prefilled (the FAQ admin reads `variant` for the inline)."""
        query = [("site", self.site_id), ("question", self.question), ("answer", self.answer)]
        query += [("variant", text) for text in self.phrasings]
        return "/admin/faq/faq/add/?" + urlencode(query)


def recent_misses(scope: Scope, limit: int = MAX_MISSES) -> list[Miss]:
    """The latest `limit` missed customer questions, one per question, with the model's answer.

    One query per site: each walks its site's (site, role, received_at) index backwards and
    stops at the limit, where one query over several sites would sort all their misses first.
    """
    rows: list[tuple] = []
    for site_id in scope.site_ids:
        site_scope = Scope([site_id], scope.start, scope.end)
        rows += (
            messages_in(site_scope)
            .filter(role=Message.Role.ASSISTANT, source__in=MISS_SOURCES, in_reply_to__isnull=False)
            .order_by("-received_at")
            .values_list(
                "received_at",
                "site_id",
                "in_reply_to_id",
                "in_reply_to__text",
                "source",
                "text",
                "feedback",
            )[: limit * 2]
        )
    rows.sort(key=lambda row: row[0], reverse=True)
    # A question answered with a holding reply and then the model's answer has two rows: keep
    # one, with the model's answer (hence twice the limit fetched above).
    by_question: dict[object, Miss] = {}
    for _, site_id, question_id, question, source, text, feedback in rows[: limit * 2]:
        if source == Message.Source.LLM:
            by_question[question_id] = Miss(site_id, question, text, feedback == 1)
        elif question_id not in by_question:
            by_question[question_id] = Miss(site_id, question, "", False)
    return list(by_question.values())[:limit]


def cluster_labels(vectors: np.ndarray, threshold: float = DISTANCE_THRESHOLD) -> list[int]:
    if len(vectors) == 1:
        return [0]
    # Imported here: scikit-learn takes seconds to import, and every web process loads this
    # module through the URLconf while only the FAQ-gaps page needs it.
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold, metric="cosine", linkage="average"
    )
    return [int(label) for label in model.fit_predict(vectors)]


def group_misses(
    misses: list[Miss], encode: Encode, threshold: float = DISTANCE_THRESHOLD
) -> list[Gap]:
    """Groups of similar missed questions, largest first (ties: alphabetical question)."""
    gaps: list[Gap] = []
    per_site: dict[int, list[Miss]] = defaultdict(list)
    for miss in misses:
        per_site[miss.site_id].append(miss)
    for site_id, site_misses in per_site.items():
        # Embed each distinct text once; repeats still count towards the group's size.
        texts = sorted({m.question for m in site_misses})
        vectors = np.asarray(encode(texts), dtype=np.float32)
        labels = cluster_labels(vectors, threshold)
        members: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            members[label].append(index)
        for indexes in members.values():
            gaps.append(_gap(site_id, [texts[i] for i in indexes], vectors[indexes], site_misses))
    gaps.sort(key=lambda gap: (-gap.count, gap.question))
    return gaps


def _gap(site_id: int, texts: list[str], vectors: np.ndarray, misses: list[Miss]) -> Gap:
    in_group = set(texts)
    group = [m for m in misses if m.question in in_group]
    # Most central phrasing: highest mean cosine similarity to the group (vectors are unit).
    centrality = (vectors @ vectors.T).mean(axis=1)
    central = texts[int(np.argmax(centrality))]
    frequency = Counter(m.question for m in group)
    others = sorted((t for t in texts if t != central), key=lambda t: (-frequency[t], t))
    return Gap(
        site_id=site_id,
        count=len(group),
        question=central,
        phrasings=others[:MAX_PHRASINGS],
        answer=_best_answer(central, group)[:MAX_ANSWER_CHARS],
    )


def _best_answer(central: str, group: list[Miss]) -> str:
    """An answer a customer rated up, else the central question's, else any model answer."""
    answered = [m for m in group if m.answer]
    for candidates in (
        [m for m in answered if m.rated_up],
        [m for m in answered if m.question == central],
        answered,
    ):
        if candidates:
            return candidates[0].answer
    return ""


def faq_gaps(scope: Scope, encode: Encode, limit: int = MAX_MISSES) -> list[Gap]:
    misses = recent_misses(scope, limit)
    return group_misses(misses, encode) if misses else []

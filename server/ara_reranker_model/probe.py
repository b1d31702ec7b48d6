"""Whether a Triton model can compute: one short inference over Triton's HTTP API (KServe v2 JSON), standard library
only, so that it runs in the Triton image as Kubernetes' liveness check.

Triton keeps answering ``/v2/health/live`` and ``/v2/health/ready`` with 200 after a Python-backend model's stub
process died (its OOM kill, say): only an inference tells. Exit status 0 when the model scored the row, 1 otherwise.

    python3 -m ara_reranker_model.probe [--url http://127.0.0.1:8000] [--model ara_reranker] [--timeout 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from ara_reranker_model.layout import TRITON_MODEL

__all__ = ["probe", "main"]

# One row of two tokens (XLM-R's <s> </s>; BERT's [PAD] [UNK]): any model scores it; token type ids are sent
# because models that read them refuse a request without them, and the others ignore them.
ROW = [0, 2]


def probe(url: str, model: str = TRITON_MODEL, timeout_s: float = 10.0) -> str | None:
    """None when ``model`` on the Triton at ``url`` scored one row; else why not."""
    tensors = [{"name": name, "shape": [1, len(ROW)], "datatype": "INT64", "data": values}
               for name, values in (("input_ids", ROW), ("attention_mask", [1] * len(ROW)), ("token_type_ids", [0] * len(ROW)))]
    body = json.dumps({"inputs": tensors, "outputs": [{"name": "logits"}]}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    outputs = {o.get("name"): o for o in answer.get("outputs", [])}
    if "logits" not in outputs or len(outputs["logits"].get("data", [])) != 1:
        return f"no logit in the answer: {str(answer)[:300]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 if the Triton model scores one row (a liveness check).")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Triton's HTTP endpoint")
    parser.add_argument("--model", default=TRITON_MODEL)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    args = parser.parse_args(argv)
    problem = probe(args.url, args.model, args.timeout)
    if problem is not None:
        print(f"model {args.model} cannot compute: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The two hops and nothing between them: a bare relay that bench.overhead measures beside the gateway.

A Python ``grpc.aio`` server, as the gateway is, that answers reranker.v1 ``Rerank`` with one Triton call made as the
gateway makes it (its ``TritonEndpoint``: the same generated stub, channel options and request). It does none of the
gateway's work: the request's bytes are not parsed, the one pair it scores is tokenized once at start, and there is no
validation, admission, dispatch, ranking beyond one document, metrics or request log. A call through it costs the
two network hops alone (the caller to a Python gRPC server, that server to Triton and back), so the gateway's p50
over the relay's, for the same request, is the gateway's own work, and the relay's over the model in-process is the
hops' floor::

    with Relay(triton_url, model_dir, query, document) as relay:
        RerankerClient(relay.target).stub.Rerank(request)

(``python -m bench.relay --triton URL --tokenizer DIR --port N --query Q --document D`` is the process it runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

__all__ = ["Relay"]


class Relay:
    """The relay in a child process on a free loopback port, serving one (query, document) pair."""

    def __init__(self, triton_url: str, model_dir: Path, query: str, document: str) -> None:
        self.triton_url, self.model_dir, self.query, self.document = triton_url, Path(model_dir), query, document
        self.target = ""
        self._log = tempfile.NamedTemporaryFile(prefix="relay-", suffix=".log", delete=False)
        self._child = None

    def __enter__(self) -> "Relay":
        import grpc

        from ara_reranker_server.launcher.child_process import ChildProcess
        from ara_reranker_server.ports import free_port
        from bench.results import PROJECT_ROOT

        port = free_port()
        self.target = f"127.0.0.1:{port}"
        self._child = ChildProcess("relay", Path(self._log.name))
        self._child.start([sys.executable, "-m", "bench.relay", "--triton", self.triton_url, "--tokenizer", str(self.model_dir),
                           "--port", str(port), "--query", self.query, "--document", self.document], cwd=PROJECT_ROOT)

        def ready() -> bool:
            with grpc.insecure_channel(self.target) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return True
                except grpc.FutureTimeoutError:
                    return False

        try:
            self._child.wait_ready(ready, 60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._child is not None:
            self._child.stop()
        Path(self._log.name).unlink(missing_ok=True)


async def serve(args: argparse.Namespace) -> None:
    import grpc
    from transformers import AutoTokenizer

    from ara_reranker_client.v1 import reranker_pb2
    from ara_reranker_model.inputs import padded_rows
    from ara_reranker_server.api.reranker_grpc import SERVICE_NAME
    from ara_reranker_server.ranking import sigmoid
    from ara_reranker_server.triton_endpoint import TritonEndpoint, infer_request, logits_of

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    ids, mask = padded_rows(tokenizer([args.query], [args.document])["input_ids"], tokenizer.pad_token_id)
    request = infer_request(args.model, [("input_ids", ids), ("attention_mask", mask)], "interactive")
    endpoint = TritonEndpoint(args.triton)

    async def rerank(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        logit = float(logits_of(await endpoint.infer(request, timeout=60.0), 1, args.triton)[0])
        return reranker_pb2.RerankResponse(results=[reranker_pb2.RankedDocument(
            index=0, score=float(sigmoid(logit)), logit=logit)]).SerializeToString()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Rerank": grpc.unary_unary_rpc_method_handler(rerank)}),))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triton", required=True, help="Triton's gRPC address")
    parser.add_argument("--model", default="ara_reranker", help="the Triton model")
    parser.add_argument("--tokenizer", required=True, help="the model directory (its tokenizer)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--query", required=True)
    parser.add_argument("--document", required=True)
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

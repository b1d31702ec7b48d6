"""What the docs' ``grpcurl`` lines do, for machines without grpcurl (it is a Go binary, in no Debian release
and not on PyPI): the same call made through the gateway's server reflection, with grpcurl's flags and
its JSON in and out. tests/test_docs_examples.py puts it on PATH as ``grpcurl`` when no real one is there.

    python -m tests.docs_grpcurl [-plaintext | -cacert ca.pem] [-H 'name: value']... [-d JSON] host:port list|service/method

A field the request JSON names that the method's message lacks is an error (exit 1), as with grpcurl.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpcurl", description=__doc__, prefix_chars="-")
    parser.add_argument("-plaintext", action="store_true")
    parser.add_argument("-cacert")
    parser.add_argument("-H", action="append", default=[], dest="headers")
    parser.add_argument("-d", dest="data", default="{}")
    parser.add_argument("target")
    parser.add_argument("call", help="list, or service/method")
    return parser


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.plaintext:
        return grpc.insecure_channel(args.target)
    roots = open(args.cacert, "rb").read() if args.cacert else None
    return grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=roots))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    metadata = [tuple(part.strip() for part in header.split(":", 1)) for header in args.headers]
    with _channel(args) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if args.call == "list":
            print("\n".join(sorted(database.get_services())))
            return 0
        service_name, _, method_name = args.call.replace("/", ".").rpartition(".")
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(args.data, request_class())
        call = channel.unary_unary(f"/{service_name}/{method_name}", request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)
        try:
            response = call(request, metadata=metadata, timeout=60)
        except grpc.RpcError as error:
            print(f"ERROR:\n  Code: {error.code().name}\n  Message: {error.details()}", file=sys.stderr)
            return 1
    print(json_format.MessageToJson(response, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The field tables of docs/api.md, written from ``proto/reranker/v1/reranker.proto`` and its comments.

protoc (grpc_tools') reads the proto with its source info; each service, message and enum becomes a heading with
its comment, each field a row (name, type, comment), each enum value a row (name, number, comment). Message and
enum types link to their own heading."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO = "reranker/v1/reranker.proto"
# FileDescriptorProto / DescriptorProto field numbers, as source-info paths name them.
MESSAGE, ENUM, SERVICE, FIELD, VALUE, METHOD = 4, 5, 6, 2, 2, 2
SCALARS = {getattr(descriptor_pb2.FieldDescriptorProto, name): name.removeprefix("TYPE_").lower()
           for name in descriptor_pb2.FieldDescriptorProto.Type.keys()}


def descriptor(proto: str = PROTO) -> tuple[descriptor_pb2.FileDescriptorProto, dict[tuple[int, ...], str]]:
    """The proto file's descriptor and its comments by source-info path."""
    import grpc_tools
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
                            "--include_source_info", f"--descriptor_set_out={out}", proto])
        if code != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    file = files.file[0]
    comments = {tuple(loc.path): _text(loc.leading_comments) for loc in file.source_code_info.location if loc.leading_comments}
    return file, comments


def _text(comment: str) -> str:
    return re.sub(r"\s+", " ", comment).strip().replace("|", "\\|")


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        name = field.type_name.rsplit(".", 1)[-1]
        kind = f"[`{name}`](#{name.lower()})"
    else:
        kind = f"`{SCALARS[field.type]}`"
    if field.label == field.LABEL_REPEATED:
        return f"repeated {kind}"
    return f"optional {kind}" if field.proto3_optional else kind


def markdown() -> str:
    """Every service method, message (with each field) and enum (with each value) of the proto, in file order."""
    file, comments = descriptor()
    out = []
    for s, service in enumerate(file.service):
        out += [f"#### `{file.package}.{service.name}`", "", comments.get((SERVICE, s), ""), "",
                "| method | request → response | meaning |", "|---|---|---|"]
        out += [f"| `{m.name}` | [`{m.input_type.rsplit('.', 1)[-1]}`](#{m.input_type.rsplit('.', 1)[-1].lower()}) → "
                f"[`{m.output_type.rsplit('.', 1)[-1]}`](#{m.output_type.rsplit('.', 1)[-1].lower()}) | "
                f"{comments.get((SERVICE, s, METHOD, i), '')} |" for i, m in enumerate(service.method)]
        out.append("")
    for e, enum in enumerate(file.enum_type):
        out += [f"#### `{enum.name}`", "", comments.get((ENUM, e), ""), "", "| value | number | meaning |", "|---|---|---|"]
        out += [f"| `{v.name}` | {v.number} | {comments.get((ENUM, e, VALUE, i), '')} |" for i, v in enumerate(enum.value)]
        out.append("")
    for m, message in enumerate(file.message_type):
        out += [f"#### `{message.name}`", ""]
        if comments.get((MESSAGE, m)):
            out += [comments[(MESSAGE, m)], ""]
        if not message.field:
            out += ["No fields.", ""]
            continue
        out += ["| field | type | meaning |", "|---|---|---|"]
        out += [f"| `{f.name}` | {_type(f)} | {comments.get((MESSAGE, m, FIELD, i), '')} |" for i, f in enumerate(message.field)]
        out.append("")
    return "\n".join(line for line in out).replace("\n\n\n", "\n\n").strip() + "\n"


def undocumented() -> list[str]:
    """Messages, fields, enums and values of the proto that have no comment."""
    file, comments = descriptor()
    missing = [f"{e.name}" for i, e in enumerate(file.enum_type) if (ENUM, i) not in comments]
    missing += [f"{e.name}.{v.name}" for i, e in enumerate(file.enum_type) for j, v in enumerate(e.value)
                if (ENUM, i, VALUE, j) not in comments]
    missing += [f"{m.name}.{f.name}" for i, m in enumerate(file.message_type) for j, f in enumerate(m.field)
                if (MESSAGE, i, FIELD, j) not in comments]
    missing += [f"{s.name}.{r.name}" for i, s in enumerate(file.service) for j, r in enumerate(s.method)
                if (SERVICE, i, METHOD, j) not in comments]
    return missing

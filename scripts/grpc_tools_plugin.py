"""A protoc plugin (CodeGeneratorRequest on stdin, CodeGeneratorResponse on
stdout) that runs one of grpcio-tools' builtin generators (python,
grpc_python) on the request's descriptors: grpcio-tools ships protoc as a
Python module, not as plugin executables buf could call.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc  # type: ignore[import-untyped]

GENERATORS = ("python", "grpc_python")


def default_json_name(name: str) -> str:
    """protoc's ToJsonName: snake_case to lowerCamelCase."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def strip_default_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """buf fills in every field's json_name; protoc keeps only explicit ones, and the
    python generator embeds the descriptor as is: without this the bytes differ."""
    for message in messages:
        for field in message.field:
            if field.json_name == default_json_name(field.name):
                field.ClearField("json_name")
        strip_default_json_names(message.nested_type)


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    generator = request.parameter or "python"
    if generator not in GENERATORS:
        response.error = f"unknown generator {generator!r} (opt: one of {', '.join(GENERATORS)})"
    else:
        for file in request.proto_file:
            strip_default_json_names(file.message_type)
        with tempfile.TemporaryDirectory() as tmp:
            descriptors = Path(tmp, "in.binpb")
            descriptors.write_bytes(
                descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString()
            )
            out = Path(tmp, "out")
            out.mkdir()
            args = ["protoc", f"--descriptor_set_in={descriptors}", f"--{generator}_out={out}"]
            rc = protoc.main([*args, *request.file_to_generate])
            if rc != 0:
                response.error = f"grpc_tools.protoc --{generator}_out failed (exit {rc})"
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())

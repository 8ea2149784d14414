"""A protoc plugin (CodeGeneratorRequest on stdin, CodeGeneratorResponse on
stdout) for buf.gen.yaml that writes the same Python as scripts/gen-protos.sh:
grpcio-tools' builtin generators (python, grpc_python; grpcio-tools ships
protoc as a Python module, not as plugin executables buf could call) and
mypy-protobuf's (mypy, mypy_grpc), all from the venv.

Options: ``gen=python|grpc_python|mypy|mypy_grpc`` and ``package=PKG``: only
the files of that proto package are generated (parley.v1 goes to the client
distribution, parley.internal.v1 to the server's; buf's own type filters
would also generate the files the package imports).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc  # type: ignore[import-untyped]

BUILTIN = ("python", "grpc_python")
MYPY = ("mypy", "mypy_grpc")


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


def run_builtin(generator: str, request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    for file in request.proto_file:
        strip_default_json_names(file.message_type)
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = Path(tmp, "in.binpb")
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = Path(tmp, "out")
        out.mkdir()
        args = ["protoc", f"--descriptor_set_in={descriptors}", f"--{generator}_out={out}"]
        rc = protoc.main([*args, *request.file_to_generate])
        if rc != 0:
            response.error = f"grpc_tools.protoc --{generator}_out failed (exit {rc})"
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    return response


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    options = dict(item.split("=", 1) for item in request.parameter.split(",") if "=" in item)
    generator, package = options.get("gen", "python"), options.get("package")
    if package:
        packages = {f.name: f.package for f in request.proto_file}
        keep = [name for name in request.file_to_generate if packages.get(name) == package]
        del request.file_to_generate[:]
        request.file_to_generate.extend(keep)
    request.parameter = ""
    if not request.file_to_generate:  # buf calls once per directory: another package's
        output = plugin_pb2.CodeGeneratorResponse(
            supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
        ).SerializeToString()
    elif generator in BUILTIN:
        output = run_builtin(generator, request).SerializeToString()
    elif generator in MYPY:
        plugin = Path(sys.executable).with_name(f"protoc-gen-{generator}")
        output = subprocess.run(
            [str(plugin)], input=request.SerializeToString(), capture_output=True, check=True
        ).stdout
    else:
        failed = plugin_pb2.CodeGeneratorResponse(error=f"unknown gen={generator!r}: {BUILTIN + MYPY}")
        output = failed.SerializeToString()
    sys.stdout.buffer.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

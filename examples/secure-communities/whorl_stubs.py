"""The whorl API's Python modules, generated at start-up from proto/whorl/v1
with grpcio-tools into a temporary folder (nothing generated is kept)."""

import os
import sys
import tempfile

from grpc_tools import protoc
import grpc_tools

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")
FILES = ("common.proto", "identification.proto", "gallery.proto", "notifications.proto")


def load():
    out = tempfile.mkdtemp(prefix="whorl-py-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [os.path.join("whorl", "v1", f) for f in FILES]
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    from whorl.v1 import (  # noqa: E402
        common_pb2,
        gallery_pb2,
        gallery_pb2_grpc,
        identification_pb2,
        identification_pb2_grpc,
        notifications_pb2,
        notifications_pb2_grpc,
    )

    return {
        "common": common_pb2,
        "gallery": gallery_pb2,
        "gallery_grpc": gallery_pb2_grpc,
        "ident": identification_pb2,
        "ident_grpc": identification_pb2_grpc,
        "notify": notifications_pb2,
        "notify_grpc": notifications_pb2_grpc,
    }


def metadata(token):
    return [("authorization", f"Bearer {token}")] if token else []

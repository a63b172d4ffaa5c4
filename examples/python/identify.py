#!/usr/bin/env python3
"""Search a whorl server from Python: health, reflection, Identify.

The stubs are generated at start-up from proto/whorl/v1 with grpcio-tools
(nothing generated is kept in the repository).

    pip install grpcio grpcio-tools grpcio-health-checking grpcio-reflection
    python examples/python/identify.py --server 127.0.0.1:50051 PROBE.iso [--expect SUBJECT]

Exit status 0 when the server is SERVING, lists the whorl services by
reflection and (with --expect) ranks SUBJECT first.
"""

import argparse
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc
import grpc_tools
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")


def stubs():
    """Generates the Python modules of the whorl API into a temporary folder."""
    out = tempfile.mkdtemp(prefix="whorl-py-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [os.path.join("whorl", "v1", f) for f in ("common.proto", "identification.proto", "gallery.proto")]
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    from whorl.v1 import common_pb2, identification_pb2, identification_pb2_grpc  # noqa: E402

    return common_pb2, identification_pb2, identification_pb2_grpc


def wait_serving(channel, timeout):
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.time() + timeout
    while True:
        try:
            r = health.Check(health_pb2.HealthCheckRequest(service="whorl.v1.Identification"), timeout=5)
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                return
            state = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
        except grpc.RpcError as e:
            state = e.code().name
        if time.time() > deadline:
            sys.exit(f"server not SERVING after {timeout} s (last: {state})")
        time.sleep(0.5)


def services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    for resp in stub.ServerReflectionInfo(iter([req]), timeout=10):
        return [s.name for s in resp.list_services_response.service]
    return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--token", default=os.environ.get("WHORL_TOKEN"))
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait for SERVING")
    ap.add_argument("--expect", help="subject that must rank first")
    ap.add_argument("files", nargs="+", help="template files: the fingers of one person")
    a = ap.parse_args()

    common_pb2, identification_pb2, identification_pb2_grpc = stubs()
    channel = grpc.insecure_channel(a.server)
    wait_serving(channel, a.wait)
    names = services(channel)
    print("services:", ", ".join(sorted(names)))
    if "whorl.v1.Identification" not in names:
        sys.exit("reflection does not list whorl.v1.Identification")

    probe = common_pb2.Probe(templates=[common_pb2.FingerTemplate(data=open(f, "rb").read()) for f in a.files])
    metadata = [("authorization", f"Bearer {a.token}")] if a.token else []
    stub = identification_pb2_grpc.IdentificationStub(channel)
    r = stub.Identify(identification_pb2.IdentifyRequest(probe=probe, max_candidates=5), timeout=30, metadata=metadata)
    decision = common_pb2.Decision.Name(r.decision)
    print(f"decision: {decision} (threshold {r.operating_point.threshold:.2f} decades, backend {r.backend})")
    for c in r.candidates:
        print(f"  {c.rank}. {c.subject_id}  fused {c.fused_score:.2f}  hit={c.hit}")
    if a.expect:
        if not r.candidates or r.candidates[0].subject_id != a.expect:
            sys.exit(f"expected {a.expect} first")
        print(f"ok: {a.expect} ranked first")


if __name__ == "__main__":
    main()

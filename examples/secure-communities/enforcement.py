#!/usr/bin/env python3
"""The enforcement side: subscribes to hit notifications of the
immigration gallery (highest priority first is the agency's business; the
server delivers in order, at least once, until acknowledged), prints each
event and acknowledges it.

    python examples/secure-communities/enforcement.py --server HOST:PORT \
        --token NOTIFY_TOKEN --subscriber ice-ero [--gallery immigration] \
        [--min-priority N] [--expect N] [--idle 5]

With --expect N: exits 0 once N distinct events arrived and then nothing
more for --idle seconds (1 if more, or fewer, arrive).
"""

import argparse
import os
import sys
import threading
import time

import grpc

import whorl_stubs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--token", default=os.environ.get("WHORL_TOKEN"))
    ap.add_argument("--subscriber", default="")
    ap.add_argument("--gallery", default="immigration")
    ap.add_argument("--min-priority", type=int, default=0)
    ap.add_argument("--expect", type=int)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()

    pb = whorl_stubs.load()
    channel = grpc.insecure_channel(a.server)
    stub = pb["notify_grpc"].NotificationsStub(channel)
    md = whorl_stubs.metadata(a.token)
    req = pb["notify"].SubscribeRequest(subscriber=a.subscriber, galleries=[a.gallery], min_priority=a.min_priority)
    stream = stub.Subscribe(req, metadata=md)
    seen = {}
    last = [time.time()]
    start = time.time()

    def watchdog():
        while True:
            time.sleep(0.2)
            done = a.expect is not None and len(seen) >= a.expect and time.time() - last[0] > a.idle
            if done or time.time() - start > a.timeout:
                stream.cancel()
                return

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        for e in stream:
            new = e.id not in seen
            seen[e.id] = e
            last[0] = time.time()
            print(
                f"{'EVENT' if new else 'again'} {e.id}: {e.subject_id} in {e.gallery}, priority {e.priority}, "
                f"score {e.fused_score:.1f} (threshold {e.operating_point.threshold:.1f}), "
                f"booking {e.transaction_id}, by {e.client}, probe sha256 {e.probe_sha256[:12]}..."
            )
            stub.Ack(pb["notify"].AckRequest(subscriber=a.subscriber, gallery=e.gallery, sequence=e.sequence), metadata=md)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.CANCELLED:
            sys.exit(f"subscription failed: {err.code().name} {err.details()}")
    if a.expect is not None and len(seen) != a.expect:
        sys.exit(f"expected {a.expect} event(s), received {len(seen)}: {sorted(seen)}")
    print(f"{len(seen)} event(s) received and acknowledged")


if __name__ == "__main__":
    main()

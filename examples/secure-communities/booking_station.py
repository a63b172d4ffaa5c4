#!/usr/bin/env python3
"""A booking station: the fingerprints of a person being booked are checked
at once against the criminal-history and the immigration galleries; both
answers come back in one reply, one section per gallery.

    python examples/secure-communities/booking_station.py --server HOST:PORT \
        --token TOKEN --booking B-2026-0001 [--expect-hit immigration:SUBJECT] \
        [--expect-no-hit] FINGER.iso...

Exit status 0 when the reply holds a section for every gallery asked and
matches the expectation.
"""

import argparse
import os
import sys

import grpc

import whorl_stubs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--token", default=os.environ.get("WHORL_TOKEN"))
    ap.add_argument("--booking", required=True, help="the booking (transaction) number")
    ap.add_argument("--galleries", default="criminal,immigration")
    ap.add_argument("--expect-hit", help="GALLERY:SUBJECT that must be a hit")
    ap.add_argument("--expect-no-hit", action="store_true", help="no gallery may report a hit")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    pb = whorl_stubs.load()
    channel = grpc.insecure_channel(a.server)
    stub = pb["ident_grpc"].IdentificationStub(channel)
    templates = [pb["common"].FingerTemplate(data=open(f, "rb").read()) for f in a.files]
    galleries = a.galleries.split(",")
    req = pb["ident"].IdentifyRequest(
        probe=pb["common"].Probe(templates=templates),
        galleries=galleries,
        transaction_id=a.booking,
        request_id=a.booking,
    )
    r = stub.Identify(req, metadata=whorl_stubs.metadata(a.token), timeout=30)
    hit_name = pb["common"].Decision.Name
    seen = {}
    for s in r.galleries:
        if s.HasField("error") and s.error.code != 0:
            print(f"{s.gallery}: ERROR {s.error.code} {s.error.message}")
            seen[s.gallery] = None
            continue
        top = s.candidates[0] if s.candidates else None
        print(
            f"{s.gallery}: {hit_name(s.decision)}"
            + (f", best {top.subject_id} ({top.fused_score:.1f} decades, threshold {s.operating_point.threshold:.1f})" if top else "")
            + f", {s.operating_point.gallery_subjects} subjects searched"
            + (f", notifications {list(s.notifications)}" if s.notifications else "")
        )
        seen[s.gallery] = (s.decision, top.subject_id if top else None)
    missing = [g for g in galleries if g not in seen]
    if missing:
        sys.exit(f"no section for {missing}")
    if a.expect_hit:
        g, subject = a.expect_hit.split(":", 1)
        d = seen.get(g)
        if not d or d[0] != pb["common"].DECISION_HIT or d[1] != subject:
            sys.exit(f"expected a hit on {subject} in {g}, got {d}")
    if a.expect_no_hit:
        hits = [g for g, d in seen.items() if d and d[0] == pb["common"].DECISION_HIT]
        if hits:
            sys.exit(f"expected no hit, got hits in {hits}")
    print("ok")


if __name__ == "__main__":
    main()

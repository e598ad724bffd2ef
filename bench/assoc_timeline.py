"""Where an association's time goes inside the box: steps stamped after the TCP accept.

Runs an appliance in this process (a fresh data directory, embedded defaults), wraps pynetdicom's
accept, request handler, FSM actions (AE-6: the A-ASSOCIATE-RQ read, AE-7: the A-ASSOCIATE-AC sent,
DT-2: a P-DATA read, AR-2/AR-4: the release) and the box's own steps (policy, C-GET's reordering,
negotiation, serve_get, responses sent), then runs dcmtk's echoscu or getscu (a query that matches
nothing) ``--runs`` times and prints the median time of each stamp after the accept. Stamps are the
first of each kind per association; the wrappers cost a few microseconds each.

    PYTHONPATH=$PWD .venv/bin/python bench/assoc_timeline.py --tool getscu --runs 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pynetdicom.acse as acse  # noqa: E402
import pynetdicom.association as association  # noqa: E402
import pynetdicom.fsm as fsm  # noqa: E402
import pynetdicom.transport as transport  # noqa: E402
from helpers import free_port, init_data_dir  # noqa: E402

from appliance.app import build  # noqa: E402
from appliance.config import load  # noqa: E402
from appliance.dicom import get as get_mod  # noqa: E402
from appliance.dicom import get_loop, node, outbound, policy  # noqa: E402

STAMPS: dict[str, float] = {}


def stamp(name: str) -> None:
    STAMPS.setdefault(name, time.perf_counter())


def wrap(owner, attr: str, name: str) -> None:
    original = getattr(owner, attr)

    def stamped(*args, **kwargs):
        stamp(f"{name} >")
        try:
            return original(*args, **kwargs)
        finally:
            stamp(f"{name} <")

    setattr(owner, attr, stamped)


def instrument() -> None:
    wrap(transport.AssociationServer, "get_request", "accept")
    wrap(transport.RequestHandler, "handle", "handle (Association, threads)")
    for action in ("AE-6", "AE-7", "DT-2", "AR-2", "AR-4"):
        description, function, *rest = fsm.ACTIONS[action]
        holder = type("Holder", (), {"run": staticmethod(function)})
        wrap(holder, "run", action)
        fsm.ACTIONS[action] = (description, holder.run, *rest)
    wrap(node.DicomNode, "_on_requested", "EVT_REQUESTED: node")
    wrap(policy.AssociationPolicy, "check", "policy")
    wrap(get_mod, "prefer_producible", "EVT_REQUESTED: prefer_producible")
    wrap(acse.ACSE, "negotiate_association", "negotiation")  # pynetdicom's, or the acceptance kept (acceptances.py)
    wrap(association.Association, "_run_reactor", "reactor")
    wrap(get_loop, "serve_get", "serve_get")
    wrap(outbound.Outbound, "send_msg", "response sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=("echoscu", "getscu"), default="getscu")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    instrument()  # before build: the node binds the wrapped handlers
    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-assoc-"))
    settings = {"PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(free_port()),
                "PACS_INBOX_ENABLED": "false", "PACS_INTEGRITY_SAMPLE_SIZE": "0"}
    app = build(load(init_data_dir(tmp / "data"), env={**os.environ, **settings}), with_web=False)
    app.start()
    port = str(app.node.bound_address[1])
    command = ["echoscu"] if args.tool == "echoscu" else [
        "getscu", "-S", "--ignore", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3.4.5.6.7.8.9"]
    command += ["-aet", "BENCHSCU", "-aec", "PACSBOX", "127.0.0.1", port]
    after_accept: dict[str, list[float]] = {}
    walls = []
    try:
        for run in range(args.runs + 3):  # the first three warm up
            STAMPS.clear()
            started = time.perf_counter()
            subprocess.run(command, env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, check=True, cwd=tmp)
            STAMPS["dcmtk process exited"] = time.perf_counter()
            walls.append(STAMPS["dcmtk process exited"] - started)
            time.sleep(0.05)  # the association's threads end
            if run >= 3 and "accept >" in STAMPS:
                for name, at in STAMPS.items():
                    after_accept.setdefault(name, []).append((at - STAMPS["accept >"]) * 1000)
    finally:
        app.stop()
    print(f"{args.tool}, {args.runs} runs: wall median {statistics.median(walls[3:]) * 1000:.1f} ms; "
          "medians in ms after the accept:")
    for name, values in sorted(after_accept.items(), key=lambda item: statistics.median(item[1])):
        print(f"  {statistics.median(values):6.2f}  {name}")


if __name__ == "__main__":
    main()

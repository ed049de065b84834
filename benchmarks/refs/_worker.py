"""Line-oriented JSON protocol of the reference workers (stdin requests, stdout replies)."""

from __future__ import annotations

import json
import sys
import traceback


def serve(handlers: dict) -> None:
    """Answer one JSON request per stdin line with one JSON line on stdout until EOF."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = {"ok": True, **handlers[request["cmd"]](**request.get("args", {}))}
        except Exception as exc:  # report, keep serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()

"""Loaded into the operator process by the reliability suite (PYTHONPATH): records every
socket connect, sendto and name lookup the process makes, through Python's audit hooks
(PEP 578), to the file named by $RELIABILITY_NET_LOG. Nothing is blocked; the suite reads the
file and fails if anything but loopback was ever contacted or looked up."""

import json
import os
import sys
import threading
import time

_PATH = os.environ.get("RELIABILITY_NET_LOG")
_EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname"}

if _PATH:
    _path: str = _PATH
    _lock = threading.Lock()

    def _hook(event: str, args: tuple) -> None:  # type: ignore[type-arg]
        if event not in _EVENTS:
            return
        try:
            if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
                sock, addr = args[0], args[1]
                family = int(getattr(sock, "family", 0))
                record = {"event": event, "family": family, "addr": repr(addr)}
            elif event == "socket.getaddrinfo":
                record = {"event": event, "host": repr(args[0]), "port": repr(args[1])}
            else:
                record = {"event": event, "host": repr(args[0])}
            record["t"] = time.time()
            line = json.dumps(record)
            with _lock, open(_path, "a") as f:
                f.write(line + "\n")
        except Exception:
            pass

    sys.addaudithook(_hook)

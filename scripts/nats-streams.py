#!/usr/bin/env python3
"""Prints the names of the JetStream streams on a NATS server, one per line.

scripts/test.sh uses it to check that a test run leaves no stream of its own behind (the
project's tests and benches name theirs with the run's id). It speaks the NATS protocol over a
plain socket, so the check needs no NATS client installed. Usage: nats-streams.py [host:port]
"""

import json
import socket
import sys


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:4222"
    host, port = address.rsplit(":", 1)
    try:
        conn = socket.create_connection((host, int(port)), timeout=5)
    except OSError as error:
        print(f"nats-streams: NATS is not answering on {address}: {error}", file=sys.stderr)
        return 1
    reader = conn.makefile("rb")
    reader.readline()  # INFO
    conn.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.streams 1\r\n')
    names: list[str] = []
    offset = 0
    while True:
        request = json.dumps({"offset": offset}).encode()
        conn.sendall(
            b"PUB $JS.API.STREAM.NAMES _INBOX.streams %d\r\n%s\r\n" % (len(request), request)
        )
        reply = None
        while reply is None:
            line = reader.readline()
            if not line:
                print("nats-streams: the connection closed", file=sys.stderr)
                return 1
            if line.startswith(b"PING"):
                conn.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                print(f"nats-streams: {line.decode().strip()}", file=sys.stderr)
                return 1
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                reply = json.loads(reader.read(size + 2)[:size])
        if "error" in reply:
            print(f"nats-streams: {reply['error']}", file=sys.stderr)
            return 1
        page = reply.get("streams") or []
        names.extend(page)
        offset += len(page)
        if not page or offset >= reply.get("total", 0):
            break
    for name in names:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""An rpc client written only from docs/PROTOCOL.md, with Python's standard library.

Usage: rpc_client.py HOST PORT [--requests N] [--pipeline K] [--work-us W] [--payload B]
       rpc_client.py HOST PORT --malformed CASE

Drives the server and checks every answer against the specification; prints one JSON line
with what it observed and exits 0 when everything matched, 1 otherwise.
"""
import json
import os
import socket
import struct
import sys

REQUEST, RESPONSE, ERROR = 0x01, 0x02, 0x7F
HEADER = struct.Struct(">IB")          # length of the body, type
REQUEST_FIELDS = struct.Struct(">QI")  # id, work_us
RESPONSE_FIELDS = struct.Struct(">Q")  # id
ERROR_FIELDS = struct.Struct(">H")     # code


def request(request_id, work_us, payload):
    body = REQUEST_FIELDS.pack(request_id, work_us) + payload
    return HEADER.pack(len(body), REQUEST) + body


def read_exact(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return bytes(data)


def read_frame(sock):
    length, kind = HEADER.unpack(read_exact(sock, HEADER.size))
    return kind, read_exact(sock, length)


def closed_by_server(sock):
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def run_requests(sock, requests, pipeline, work_us, payload_size):
    mismatches, answered, next_id = 0, 0, 1
    while answered < requests:
        batch = min(pipeline, requests - answered)
        sent = []
        for _ in range(batch):
            payload = os.urandom(payload_size)
            sent.append((next_id, payload))
            sock.sendall(request(next_id, work_us, payload))
            next_id += 1
        for request_id, payload in sent:
            kind, body = read_frame(sock)
            if kind != RESPONSE:
                mismatches += 1
                continue
            (answer_id,) = RESPONSE_FIELDS.unpack_from(body)
            if answer_id != request_id or body[RESPONSE_FIELDS.size:] != payload:
                mismatches += 1
            answered += 1
    return {"answered": answered, "mismatches": mismatches}


MALFORMED = {
    # name: (bytes to send, expected error code, whether the server must close)
    "too_large": (HEADER.pack(0xFFFFFFFF, REQUEST), 1, True),
    "unknown_type": (HEADER.pack(3, 0x42) + b"abc", 2, False),
    "too_short": (HEADER.pack(0, REQUEST), 3, False),
    "truncated": (HEADER.pack(100, REQUEST) + REQUEST_FIELDS.pack(9, 0) + b"x" * 10, 4, True),
    "work_too_large": (HEADER.pack(12, REQUEST) + REQUEST_FIELDS.pack(9, 2_000_000), 5, False),
}


def run_malformed(sock, case):
    data, code, fatal = MALFORMED[case]
    sock.sendall(data)
    if case == "truncated":
        sock.shutdown(socket.SHUT_WR)
    kind, body = read_frame(sock)
    observed = {"type": kind}
    ok = kind == ERROR and ERROR_FIELDS.unpack_from(body)[0] == code
    if kind == ERROR:
        observed["code"] = ERROR_FIELDS.unpack_from(body)[0]
        observed["reason"] = body[ERROR_FIELDS.size:].decode("utf-8")
    if fatal:
        observed["closed"] = closed_by_server(sock)
        ok = ok and observed["closed"]
    else:
        # The stream is still trusted: the next request is answered.
        sock.sendall(request(77, 0, b"still here"))
        kind, body = read_frame(sock)
        observed["next_answered"] = kind == RESPONSE and body == RESPONSE_FIELDS.pack(77) + b"still here"
        ok = ok and observed["next_answered"]
    observed["ok"] = ok
    return observed


def main():
    args = sys.argv[1:]
    host, port = args[0], int(args[1])
    options = dict(zip(args[2::2], args[3::2]))
    sock = socket.create_connection((host, port), timeout=15)
    if "--malformed" in options:
        result = run_malformed(sock, options["--malformed"])
        ok = result["ok"]
    else:
        result = run_requests(sock, int(options.get("--requests", 100)), int(options.get("--pipeline", 1)),
                              int(options.get("--work-us", 0)), int(options.get("--payload", 64)))
        ok = result["mismatches"] == 0
    sock.close()
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

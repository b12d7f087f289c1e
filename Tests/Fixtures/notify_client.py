#!/usr/bin/env python3
"""A client of the push and poll patterns written only from docs/PROTOCOL.md, with Python's
standard library.

Usage: notify_client.py HOST PORT push [--subscribers N] [--events E] [--payload B]
       notify_client.py HOST PORT short-poll [--jobs J] [--duration-ms D] [--interval-ms I]
       notify_client.py HOST PORT long-poll [--waiters W] [--events E] [--timeout-ms T]
       notify_client.py HOST PORT malformed CASE

Drives the server (started with --pattern push for push, --pattern poll for the others) and
checks every answer against the specification; prints one JSON line with what it observed and
exits 0 when everything matched, 1 otherwise.
"""
import json
import os
import socket
import struct
import sys
import time

HEADER = struct.Struct(">IB")
ERROR = 0x7F
SUBSCRIBE, PUBLISH, SUBSCRIBED, PUBLISHED, EVENT = 0x10, 0x11, 0x90, 0x91, 0x92
SUBMIT, STATUS, ACCEPTED, PENDING, DONE = 0x20, 0x21, 0xA0, 0xA1, 0xA2
WAIT, EVENTS, TIMEOUT = 0x30, 0xB0, 0xB1
FROM_NOW = 2**64 - 1
MASK = 2**64 - 1


def frame(kind, body=b""):
    return HEADER.pack(len(body), kind) + body


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


def expect(sock, kind):
    got, body = read_frame(sock)
    if got != kind:
        detail = body[2:].decode(errors="replace") if got == ERROR else body.hex()
        raise AssertionError("expected type 0x%02x, got 0x%02x (%s)" % (kind, got, detail))
    return body


def connect(host, port):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    return sock


def monotonic_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def publish(sock, topic, payload, stamp=0):
    sock.sendall(frame(PUBLISH, struct.pack(">IQ", topic, stamp) + payload))
    t, seq, listeners = struct.unpack(">IQI", expect(sock, PUBLISHED))
    assert t == topic, "PUBLISHED for topic %d, not %d" % (t, topic)
    return seq, listeners


def parse_events(body):
    topic, count = struct.unpack(">II", body[:8])
    events, at = [], 8
    for _ in range(count):
        seq, stamp, length = struct.unpack(">QQI", body[at:at + 20])
        events.append((seq, stamp, body[at + 20:at + 20 + length]))
        at += 20 + length
    assert at == len(body), "EVENTS body has %d bytes after its records" % (len(body) - at)
    return topic, events


def run_push(host, port, subscribers, events, payload_size):
    topic = 7
    subs = []
    first = None
    for _ in range(subscribers):
        sock = connect(host, port)
        sock.sendall(frame(SUBSCRIBE, struct.pack(">I", topic)))
        t, next_seq = struct.unpack(">IQ", expect(sock, SUBSCRIBED))
        assert t == topic
        first = next_seq if first is None else first
        subs.append((sock, next_seq))
    publisher = connect(host, port)
    sent = []
    for _ in range(events):
        payload = os.urandom(payload_size)
        stamp = monotonic_ns()
        seq, listeners = publish(publisher, topic, payload, stamp)
        assert listeners == subscribers, "PUBLISHED says %d listeners, not %d" % (listeners, subscribers)
        sent.append((seq, stamp, payload))
    seqs = [s for s, _, _ in sent]
    assert seqs == list(range(seqs[0], seqs[0] + events)), "sequence numbers %s are not consecutive" % seqs[:5]
    received = 0
    latencies = []
    for sock, next_seq in subs:
        for seq, stamp, payload in sent:
            body = expect(sock, EVENT)
            t, got_seq, got_stamp = struct.unpack(">IQQ", body[:20])
            assert (t, got_seq, got_stamp, body[20:]) == (topic, seq, stamp, payload), \
                "event %d arrived as seq %d (topic %d) with a different payload or time" % (seq, got_seq, t)
            received += 1
        latencies.append(monotonic_ns() - sent[-1][1])
        sock.close()
    publisher.close()
    return {"subscribers": subscribers, "events": events, "received": received, "first_seq": first}


def run_short_poll(host, port, jobs, duration_ms, interval_ms):
    sock = connect(host, port)
    submitted = []
    for _ in range(jobs):
        start = monotonic_ns()  # before the server's clock starts the job
        sock.sendall(frame(SUBMIT, struct.pack(">I", duration_ms)))
        (job_id,) = struct.unpack(">Q", expect(sock, ACCEPTED))
        submitted.append((job_id, start))
    polls = pending = 0
    done = {}
    while len(done) < jobs:
        for job_id, start in submitted:
            if job_id in done:
                continue
            sock.sendall(frame(STATUS, struct.pack(">Q", job_id)))
            polls += 1
            kind, body = read_frame(sock)
            now = monotonic_ns()
            if kind == PENDING:
                assert struct.unpack(">Q", body) == (job_id,)
                assert now - start < duration_ms * 1_000_000 + 5_000_000_000, "job %d never finishes" % job_id
                pending += 1
            elif kind == DONE:
                got_id, completed, result = struct.unpack(">QQQ", body)
                assert got_id == job_id
                assert result == (job_id * 0x9E3779B97F4A7C15) & MASK, "job %d: wrong result" % job_id
                assert completed >= start + duration_ms * 1_000_000, "job %d done before its duration" % job_id
                assert completed <= now, "job %d completed in the future" % job_id
                done[job_id] = completed
            else:
                raise AssertionError("STATUS answered with type 0x%02x" % kind)
        time.sleep(interval_ms / 1000)
    # A job nobody submitted: an ERROR frame (unknown_job), and the connection goes on.
    sock.sendall(frame(STATUS, struct.pack(">Q", 2**63 + 12345)))
    (code,) = struct.unpack(">H", expect(sock, ERROR)[:2])
    assert code == 6, "unknown job answered with code %d" % code
    sock.sendall(frame(SUBMIT, struct.pack(">I", 0)))
    expect(sock, ACCEPTED)
    sock.close()
    return {"jobs": jobs, "polls": polls, "pending": pending, "done": len(done)}


def run_long_poll(host, port, waiters, events, timeout_ms):
    topic = 9
    publisher = connect(host, port)
    seq0, _ = publish(publisher, topic, b"before")  # the cursor starts after this one
    socks = [connect(host, port) for _ in range(waiters)]
    cursors = [seq0] * waiters
    caught = 0
    for n in range(events):
        for sock, cursor in zip(socks, cursors):
            sock.sendall(frame(WAIT, struct.pack(">IQI", topic, cursor, 10_000)))
        time.sleep(0.05)  # held, not answered
        payload = b"event-%d" % n
        stamp = monotonic_ns()
        seq, listeners = publish(publisher, topic, payload, stamp)
        for i, sock in enumerate(socks):
            t, got = parse_events(expect(sock, EVENTS))
            assert t == topic and got == [(seq, stamp, payload)], "waiter %d got %s" % (i, got)
            cursors[i] = seq
            caught += 1
    # Events published between two WAITs are not lost: the cursor catches them up.
    published = [publish(publisher, topic, b"gap-%d" % k)[0] for k in range(3)]
    for i, sock in enumerate(socks):
        sock.sendall(frame(WAIT, struct.pack(">IQI", topic, cursors[i], 10_000)))
        t, got = parse_events(expect(sock, EVENTS))
        assert [s for s, _, _ in got] == published, "catch-up got %s, not %s" % ([s for s, _, _ in got], published)
    # Nothing new: TIMEOUT at the deadline.
    sock = socks[0]
    start = monotonic_ns()
    sock.sendall(frame(WAIT, struct.pack(">IQI", topic, published[-1], timeout_ms)))
    t, after = struct.unpack(">IQ", expect(sock, TIMEOUT))
    late_ms = (monotonic_ns() - start) / 1e6 - timeout_ms
    assert t == topic and after == published[-1]
    assert -1 <= late_ms < 50, "TIMEOUT came %.1f ms after its deadline" % late_ms
    # A second WAIT while one is held: an ERROR, the held one stays.
    sock.sendall(frame(WAIT, struct.pack(">IQI", topic, published[-1], 10_000)))
    sock.sendall(frame(WAIT, struct.pack(">IQI", topic, published[-1], 10_000)))
    (code,) = struct.unpack(">H", expect(sock, ERROR)[:2])
    assert code == 7, "a second WAIT answered with code %d" % code
    seq, _ = publish(publisher, topic, b"last")
    t, got = parse_events(expect(sock, EVENTS))
    assert [s for s, _, _ in got] == [seq]
    for s in socks:
        s.close()
    publisher.close()
    return {"waiters": waiters, "events": events, "caught": caught, "timeout_late_ms": round(late_ms, 2)}


MALFORMED = {
    # case: (frames to send, expected error code, whether the server then closes)
    "unknown_type": ([frame(0x55, b"xyz")], 2, False),
    "too_short": ([frame(PUBLISH, b"\x00")], 3, False),
    "too_large": ([HEADER.pack(2**31, PUBLISH)], 1, True),
    "truncated": ([frame(PUBLISH, b"\x00" * 12 + b"abc")[:-2]], 4, True),
    "already_subscribed": ([frame(SUBSCRIBE, struct.pack(">I", 1)), frame(SUBSCRIBE, struct.pack(">I", 2))], 8, False),
    "unknown_job": ([frame(STATUS, struct.pack(">Q", 99_999_999))], 6, False),
    "wait_pending": ([frame(WAIT, struct.pack(">IQI", 3, FROM_NOW, 60_000))] * 2, 7, False),
    "out_of_range": ([frame(SUBMIT, struct.pack(">I", 3_600_001))], 9, False),
}


def run_malformed(host, port, case):
    frames, code, closes = MALFORMED[case]
    sock = connect(host, port)
    for f in frames:
        sock.sendall(f)
    if case == "truncated":
        sock.shutdown(socket.SHUT_WR)
    while True:
        kind, body = read_frame(sock)
        if kind == ERROR:
            break
        assert kind in (SUBSCRIBED,), "unexpected type 0x%02x before the ERROR" % kind
    (got,) = struct.unpack(">H", body[:2])
    assert got == code, "%s answered with code %d, not %d" % (case, got, code)
    if closes:
        try:
            assert sock.recv(1) == b"", "the server did not close after %s" % case
        except ConnectionResetError:
            pass
    else:
        # The connection goes on: a valid frame of either pattern is still answered.
        sock.sendall(frame(PUBLISH, struct.pack(">IQ", 5, 0) + b"still-here"))
        expect(sock, PUBLISHED)
    sock.close()
    return {"case": case, "code": got, "closed": closes}


def option(args, name, default):
    return int(args[args.index(name) + 1]) if name in args else default


def main():
    host, port, mode, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    try:
        if mode == "push":
            result = run_push(host, port, option(rest, "--subscribers", 4), option(rest, "--events", 20), option(rest, "--payload", 64))
        elif mode == "short-poll":
            result = run_short_poll(host, port, option(rest, "--jobs", 5), option(rest, "--duration-ms", 100), option(rest, "--interval-ms", 20))
        elif mode == "long-poll":
            result = run_long_poll(host, port, option(rest, "--waiters", 4), option(rest, "--events", 5), option(rest, "--timeout-ms", 100))
        elif mode == "malformed":
            result = run_malformed(host, port, rest[0])
        else:
            raise SystemExit("unknown mode %r: use push, short-poll, long-poll or malformed" % mode)
        result["ok"] = True
        print(json.dumps(result))
        return 0
    except (AssertionError, EOFError, OSError) as error:
        print(json.dumps({"ok": False, "mode": mode, "error": str(error)}))
        return 1


if __name__ == "__main__":
    sys.exit(main())

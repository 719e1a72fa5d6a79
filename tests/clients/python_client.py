#!/usr/bin/env python3
"""Checks a WebSocket echo server with the Python `websockets` client (a third-party implementation).

usage:
  python_client.py echo URL
      Text (random multi-byte UTF-8) and binary (random bytes) messages of 1 B, 125 B, 126 B, 64 KiB,
      64 KiB + 1 B and 1 MiB, each echo compared byte for byte; a ping answered by its pong; a close with
      1000 that completes with 1000 from the server.
  python_client.py shutdown URL --pid PID [--clients N]
      Opens N connections (default 10), sends SIGTERM to PID, and checks that every connection then
      receives a Close with 1001 (going away).

Prints one PASS/FAIL line per check and ends with `N passed, M failed`; exits 1 if any check failed.
Set RINGWS_TEST_SEED to replay the random payloads of a run (the seed is printed).
"""
import argparse
import asyncio
import os
import random
import signal
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SIZES = [1, 125, 126, 64 * 1024, 64 * 1024 + 1, 1024 * 1024]
MESSAGE_BYTES_MAX = 16 * 1024 * 1024
# Guards so that a silent server fails the run instead of hanging it; not performance assertions.
STEP_TIMEOUT_S = 60
# UTF-8 length of a code point -> its range, surrogates excluded from the 3-byte one.
CODE_POINTS = {1: (0x20, 0x7E), 2: (0x80, 0x7FF), 3: (0x800, 0xD7FF), 4: (0x10000, 0x10FFFF)}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed or not self.passed else 0


def random_text(rng, size_bytes):
    """A random string whose UTF-8 encoding is exactly size_bytes long, mixing 1- to 4-byte code points."""
    chars = []
    left = size_bytes
    while left:
        width = rng.randint(1, min(4, left))
        low, high = CODE_POINTS[width]
        chars.append(chr(rng.randint(low, high)))
        left -= width
    return "".join(chars)


def describe_mismatch(sent, got):
    if type(got) is not type(sent):
        return f"sent {type(sent).__name__}, got {type(got).__name__}"
    if len(got) != len(sent):
        return f"sent {len(sent)} units, got {len(got)}"
    first = next(i for i, (a, b) in enumerate(zip(sent, got)) if a != b)
    return f"same length, first difference at index {first}"


async def check_echo(ws, report, name, message):
    try:
        await asyncio.wait_for(ws.send(message), STEP_TIMEOUT_S)
        echoed = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
    except (ConnectionClosed, TimeoutError) as e:
        report.check(name, False, f"{type(e).__name__}: {e}")
        return
    ok = type(echoed) is type(message) and echoed == message
    report.check(name, ok, "" if ok else describe_mismatch(message, echoed))


async def check_ping(ws, report, rng):
    payload = rng.randbytes(16)
    try:
        pong = await asyncio.wait_for(ws.ping(payload), STEP_TIMEOUT_S)
        await asyncio.wait_for(pong, STEP_TIMEOUT_S)  # resolves when the pong with this payload arrives
        report.check("ping answered by a pong with the same payload", True)
    except (ConnectionClosed, TimeoutError) as e:
        report.check("ping answered by a pong with the same payload", False, f"{type(e).__name__}: {e}")


async def check_close(ws, report):
    name = "close 1000 completes with 1000 from the server"
    try:
        await asyncio.wait_for(ws.close(1000, "done"), STEP_TIMEOUT_S)
    except TimeoutError as e:
        report.check(name, False, f"TimeoutError: {e}")
        return
    received = ws.protocol.close_rcvd
    sent = ws.protocol.close_sent
    if received is None:
        report.check(name, False, "no Close frame came back from the server")
    elif sent is None or sent.code != 1000:
        report.check(name, False, f"the client's own Close was {sent}")
    else:
        report.check(name, received.code == 1000, f"the server answered Close {received.code} {received.reason!r}")


async def run_echo(url, report):
    seed = int(os.environ.get("RINGWS_TEST_SEED", random.SystemRandom().randrange(2**32)))
    print(f"websockets client against {url} (seed {seed})", flush=True)
    rng = random.Random(seed)
    async with connect(url, max_size=MESSAGE_BYTES_MAX, ping_interval=None, open_timeout=STEP_TIMEOUT_S) as ws:
        report.check("connect", True)
        for size in SIZES:
            await check_echo(ws, report, f"text echo {size} B (multi-byte UTF-8)", random_text(rng, size))
            await check_echo(ws, report, f"binary echo {size} B", rng.randbytes(size))
        await check_ping(ws, report, rng)
        await check_close(ws, report)


async def await_close_code(ws):
    """Reads until the connection closes; returns the close code the server sent (None if none)."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass
    received = ws.protocol.close_rcvd
    return None if received is None else received.code


async def run_shutdown(url, pid, clients, report):
    print(f"shutdown check: {clients} websockets clients against {url}, then SIGTERM to pid {pid}", flush=True)
    connections = [await connect(url, ping_interval=None, open_timeout=STEP_TIMEOUT_S) for _ in range(clients)]
    report.check(f"{clients} clients connected", True)
    os.kill(pid, signal.SIGTERM)
    codes = await asyncio.wait_for(
        asyncio.gather(*(await_close_code(ws) for ws in connections)), STEP_TIMEOUT_S
    )
    for i, code in enumerate(codes):
        report.check(f"client {i} got Close 1001 on shutdown", code == 1001, f"got close code {code}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["echo", "shutdown"])
    parser.add_argument("url")
    parser.add_argument("--pid", type=int, help="the server's pid (shutdown mode)")
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    if args.mode == "shutdown" and args.pid is None:
        parser.error("shutdown needs --pid")
    return args


async def main(args):
    report = Report()
    try:
        if args.mode == "echo":
            await run_echo(args.url, report)
        else:
            await run_shutdown(args.url, args.pid, args.clients, report)
    except Exception as e:  # a refused handshake, a reset, a timeout: the run fails, with the reason
        report.check(f"{args.mode} run", False, f"{type(e).__name__}: {e}")
    return report.summary()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

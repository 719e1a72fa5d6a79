#!/usr/bin/env python3
"""Checks a WebSocket echo server with the Python `websockets` client (a third-party implementation).

usage:
  python_client.py echo URL
      Text (random multi-byte UTF-8) and binary (random bytes) messages of 1 B, 125 B, 126 B, 64 KiB,
      64 KiB + 1 B and 1 MiB, each echo compared byte for byte; a ping answered by its pong; a close with
      1000 that completes with 1000 from the server. No compression is offered.
  python_client.py deflate URL
      The same with permessage-deflate (RFC 7692) agreed, which must show in the handshake answer:
      text (JSON-like and random multi-byte UTF-8) and binary (JSON-like and random bytes) messages
      from 1 B to 1 MiB, each echo compared byte for byte, and each compressible echo of 4 KiB or more
      must come back compressed (RSV1; the server's default threshold is 128 B). Then a second
      connection offers server_max_window_bits=10 and client_max_window_bits=10: the answer must name
      server_max_window_bits=10, JSON-like echoes must come back compressed and intact, and random
      bytes repeated 2000 bytes apart (which shrink to a few KiB with the first connection's 32 KiB
      window) must not shrink by more than 10 %: no reference may reach past 1 KiB.
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
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Opcode

SIZES = [1, 125, 126, 64 * 1024, 64 * 1024 + 1, 1024 * 1024]
DEFLATE_SIZES = [1, 125, 126, 4096, 64 * 1024, 64 * 1024 + 1, 1024 * 1024]
# A compressible echo at least this long must come back compressed (the server's threshold is 128 B).
COMPRESSED_BYTES_MIN = 4096
# Repeats this far apart are out of reach of a 2^10 = 1024-byte window.
FAR_PERIOD_BYTES = 2000
FAR_SIZE_BYTES = 64 * 1024
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


def json_like(rng, size_bytes):
    """Trade/ticker-like JSON objects, one per line, cut to exactly size_bytes (ASCII)."""
    parts = []
    total = 0
    while total < size_bytes:
        part = (
            f'{{"type":"trade","symbol":"{rng.choice(["BTC-USD", "ETH-USD", "SOL-USD"])}",'
            f'"price":"{rng.uniform(10, 50000):.2f}","size":"{rng.uniform(0, 5):.4f}",'
            f'"side":"{rng.choice(["buy", "sell"])}","ts":{1732406400000 + rng.randrange(10**6)}}}\n'
        )
        parts.append(part)
        total += len(part)
    return "".join(parts)[:size_bytes]


def far_repeats(rng, size_bytes):
    """Random bytes repeated with a period of FAR_PERIOD_BYTES: compressible only with a window > 1 KiB."""
    unit = rng.randbytes(FAR_PERIOD_BYTES)
    return (unit * (size_bytes // FAR_PERIOD_BYTES + 1))[:size_bytes]


def describe_mismatch(sent, got):
    if type(got) is not type(sent):
        return f"sent {type(sent).__name__}, got {type(got).__name__}"
    if len(got) != len(sent):
        return f"sent {len(sent)} units, got {len(got)}"
    first = next(i for i, (a, b) in enumerate(zip(sent, got)) if a != b)
    return f"same length, first difference at index {first}"


async def check_echo(ws, report, name, message):
    """Sends message and checks its echo; returns True when it came back intact."""
    try:
        await asyncio.wait_for(ws.send(message), STEP_TIMEOUT_S)
        echoed = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
    except (ConnectionClosed, TimeoutError) as e:
        report.check(name, False, f"{type(e).__name__}: {e}")
        return False
    ok = type(echoed) is type(message) and echoed == message
    report.check(name, ok, "" if ok else describe_mismatch(message, echoed))
    return ok


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
    rng = seeded_rng("no compression", url)
    # No compression here (websockets offers it by default): the deflate mode covers it.
    async with connect(
        url, compression=None, max_size=MESSAGE_BYTES_MAX, ping_interval=None, open_timeout=STEP_TIMEOUT_S
    ) as ws:
        report.check("connect", True)
        for size in SIZES:
            await check_echo(ws, report, f"text echo {size} B (multi-byte UTF-8)", random_text(rng, size))
            await check_echo(ws, report, f"binary echo {size} B", rng.randbytes(size))
        await check_ping(ws, report, rng)
        await check_close(ws, report)


def check_agreed(ws, report, want_param=None):
    """Checks that the handshake agreed permessage-deflate (and want_param, e.g. a window size);
    returns the extension, or None."""
    answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    agreed = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
    ok = answer.lower().startswith("permessage-deflate") and len(agreed) == 1
    if ok and want_param:
        ok = want_param in [p.strip() for p in answer.split(";")]
    report.check(f"handshake agreed permessage-deflate{f' with {want_param}' if want_param else ''}", ok,
                 f"Sec-WebSocket-Extensions answer: {answer!r}, extensions in use: {ws.protocol.extensions}")
    return agreed[0] if ok else None


def record_compression(extension):
    """Records, for each data message received, [compressed (RSV1 on its first frame), payload bytes
    on the wire (all its frames, before inflating)]."""
    seen = []
    decode = extension.decode

    def recording(frame, **kwargs):
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            seen.append([frame.rsv1, len(frame.data)])
        elif frame.opcode is Opcode.CONT and seen:
            seen[-1][1] += len(frame.data)
        return decode(frame, **kwargs)

    extension.decode = recording  # the frame parser calls extension.decode(frame, max_size=...)
    return seen


async def check_compressed_echo(ws, report, seen, name, message, must_compress):
    """Checks the echo; with must_compress, also that it came back compressed. Returns the echo's
    payload bytes on the wire (None if the echo failed)."""
    if not await check_echo(ws, report, name, message):
        return None
    compressed, wire_bytes = seen[-1]
    if must_compress:
        report.check(f"{name}: came back compressed", compressed, "RSV1 was not set")
    return wire_bytes


DEFLATE_OPTIONS = dict(max_size=MESSAGE_BYTES_MAX, ping_interval=None, open_timeout=STEP_TIMEOUT_S)


def seeded_rng(what, url):
    """A random source seeded from RINGWS_TEST_SEED (or a fresh seed, printed to replay it)."""
    seed = int(os.environ.get("RINGWS_TEST_SEED", random.SystemRandom().randrange(2**32)))
    print(f"websockets client, {what}, against {url} (seed {seed})", flush=True)
    return random.Random(seed)


async def run_deflate(url, report):
    rng = seeded_rng("permessage-deflate", url)
    options = DEFLATE_OPTIONS
    async with connect(url, compression="deflate", **options) as ws:
        extension = check_agreed(ws, report)
        if extension is None:
            return
        seen = record_compression(extension)
        for size in DEFLATE_SIZES:
            big = size >= COMPRESSED_BYTES_MIN
            text = json_like(rng, size)
            await check_compressed_echo(ws, report, seen, f"text echo {size} B (JSON-like)", text, big)
            await check_compressed_echo(ws, report, seen, f"binary echo {size} B (JSON-like)", text.encode(), big)
            await check_echo(ws, report, f"text echo {size} B (multi-byte UTF-8)", random_text(rng, size))
            await check_echo(ws, report, f"binary echo {size} B (random)", rng.randbytes(size))
        name = f"binary echo {FAR_SIZE_BYTES} B (random, repeated {FAR_PERIOD_BYTES} B apart)"
        wire = await check_compressed_echo(ws, report, seen, name, far_repeats(rng, FAR_SIZE_BYTES), True)
        if wire is not None:
            report.check(f"{name}: the 32 KiB window shrinks it to < 1/4", wire < FAR_SIZE_BYTES // 4,
                         f"{wire} B on the wire")
        await check_ping(ws, report, rng)
        await check_close(ws, report)
    await run_deflate_window_10(url, report, rng, options)


async def run_deflate_window_10(url, report, rng, options):
    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=10, client_max_window_bits=10, compress_settings={"memLevel": 5}
    )
    async with connect(url, extensions=[factory], compression="deflate", **options) as ws:
        extension = check_agreed(ws, report, "server_max_window_bits=10")
        if extension is None:
            return
        seen = record_compression(extension)
        for size in [4096, 64 * 1024, 1024 * 1024]:
            text = json_like(rng, size)
            await check_compressed_echo(ws, report, seen, f"window 10: text echo {size} B (JSON-like)", text, True)
        name = f"window 10: binary echo {FAR_SIZE_BYTES} B (random, repeated {FAR_PERIOD_BYTES} B apart)"
        wire = await check_compressed_echo(ws, report, seen, name, far_repeats(rng, FAR_SIZE_BYTES), False)
        if wire is not None:
            report.check(f"{name}: no reference past the 1 KiB window (shrinks < 10 %)",
                         wire >= FAR_SIZE_BYTES * 9 // 10, f"{wire} B on the wire")
        await check_close(ws, report)


async def run_deflate_takeover(url, report):
    """Against `ringws serve --deflate-client-takeover`: the answer leaves the client its window,
    websockets then compresses each message against the previous ones, and every echo must still
    come back intact (the server's per-connection inflater keeps the window)."""
    rng = seeded_rng("client context takeover", url)
    async with connect(url, compression="deflate", **DEFLATE_OPTIONS) as ws:
        extension = check_agreed(ws, report)
        if extension is None:
            return
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        report.check("the answer lets the client keep its window",
                     "client_no_context_takeover" not in answer and not extension.local_no_context_takeover,
                     f"answer {answer!r}")
        base = json_like(rng, 4096)
        for i in range(20):
            # The same object with a small change: most of it matches the previous messages.
            await check_echo(ws, report, f"takeover: text echo {i}", base.replace("{", "{" + str(i), 1))
        for size in [1, 300, 70_000]:
            await check_echo(ws, report, f"takeover: binary echo {size} B (JSON-like)", json_like(rng, size).encode())
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
    parser.add_argument("mode", choices=["echo", "deflate", "deflate-takeover", "shutdown"])
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
        elif args.mode == "deflate":
            await run_deflate(args.url, report)
        elif args.mode == "deflate-takeover":
            await run_deflate_takeover(args.url, report)
        else:
            await run_shutdown(args.url, args.pid, args.clients, report)
    except Exception as e:  # a refused handshake, a reset, a timeout: the run fails, with the reason
        report.check(f"{args.mode} run", False, f"{type(e).__name__}: {e}")
    return report.summary()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

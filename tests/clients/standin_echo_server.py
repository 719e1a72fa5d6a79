#!/usr/bin/env python3
"""A stand-in for `ringws serve --mode echo`, built on Python `websockets`, to check the test scripts
themselves (scripts/autobahn.sh, scripts/clients.sh, scripts/no_epoll.sh) without ringws:

    RINGWS_SERVER_CMD="target/clients-venv/bin/python tests/clients/standin_echo_server.py" scripts/clients.sh

It takes the same command line (`[serve] --addr A --port P [--workers N] [--mode echo]`), prints the same
`listening on ws://A:P` line, echoes every message of up to 16 MiB, answers `GET /metrics`, and on SIGTERM
or SIGINT closes every connection with 1001 and exits 0. Known differences from a conforming server:
it fails Autobahn 7.1.5 and 9.3.x/9.4.x by design, and it uses epoll (so scripts/no_epoll.sh must fail).
"""
import argparse
import asyncio
import signal
import sys

from websockets.asyncio.server import serve

MESSAGE_BYTES_MAX = 16 * 1024 * 1024


async def echo(connection):
    async for message in connection:
        await connection.send(message)


def metrics(connection, request):
    if request.path == "/metrics":
        count = len(connection.server.connections)
        return connection.respond(200, f"# TYPE ringws_connections gauge\nringws_connections {count}\n")
    return None


async def main(args):
    if args.mode != "echo":
        sys.exit(f"standin_echo_server: only --mode echo is supported, not {args.mode}")
    async with serve(
        echo,
        args.addr,
        args.port,
        compression=None,
        max_size=MESSAGE_BYTES_MAX,
        ping_interval=None,
        process_request=metrics,
    ) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)
        print(f"listening on ws://{args.addr}:{args.port}", flush=True)
        await server.wait_closed()
    print("shut down", flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument("--addr", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--workers", type=int, default=1, help="accepted and ignored")
    parser.add_argument("--mode", default="echo")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

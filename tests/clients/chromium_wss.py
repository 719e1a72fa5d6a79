#!/usr/bin/env python3
"""Checks a wss:// echo server from a real page in headless Chromium.

usage: chromium_wss.py URL --spki HASH [--chromium PATH]

Starts Debian's `chromium` headless (fresh profile, no sandbox, no GPU, no QUIC, no background
network), trusting the server's certificate by its SPKI hash (--ignore-certificate-errors-spki-list:
base64 of the SHA-256 of the server key's SubjectPublicKeyInfo), and opens chromium_wss.html with
?url=URL. The page exchanges text and binary messages over wss:// and closes with 1000; this driver
reads the page's title and log over the DevTools protocol (with the `websockets` client) until the page
says DONE, prints its PASS/FAIL lines and ends with `N passed, M failed`. Exits 1 if any check failed
or the page did not finish within STEP_TIMEOUT_S.
"""
import argparse
import asyncio
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from websockets.asyncio.client import connect

HERE = pathlib.Path(__file__).resolve().parent
# A guard so that a stuck page fails the run instead of hanging it; not a performance assertion.
STEP_TIMEOUT_S = 60
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def devtools_port(profile, proc):
    """The port Chromium chose (--remote-debugging-port=0 writes it into DevToolsActivePort)."""
    path = pathlib.Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode}")
        if path.exists():
            lines = path.read_text().split("\n")
            if lines and lines[0].strip():
                return int(lines[0])
        time.sleep(0.1)
    raise RuntimeError("chromium wrote no DevToolsActivePort")


def page_socket(port, page_url):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=STEP_TIMEOUT_S) as r:
        targets = json.load(r)
    for t in targets:
        if t.get("type") == "page" and t.get("url", "").startswith(page_url.split("?")[0]):
            return t["webSocketDebuggerUrl"]
    raise RuntimeError(f"no page target for {page_url}: {targets}")


async def read_page(ws_url):
    """Polls the page's title until DONE; returns (title, log text)."""
    async with connect(ws_url, max_size=None, open_timeout=STEP_TIMEOUT_S) as cdp:
        ident = 0

        async def evaluate(expr):
            nonlocal ident
            ident += 1
            await cdp.send(json.dumps({"id": ident, "method": "Runtime.evaluate",
                                       "params": {"expression": expr, "returnByValue": True}}))
            while True:
                msg = json.loads(await cdp.recv())
                if msg.get("id") == ident:
                    return msg.get("result", {}).get("result", {}).get("value")

        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            title = await evaluate("document.title") or ""
            if title.startswith("DONE"):
                return title, await evaluate("document.getElementById('log').textContent")
            await asyncio.sleep(0.2)
        return "timeout", await evaluate("document.getElementById('log').textContent")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--spki", required=True)
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = p.parse_args()
    page = (HERE / "chromium_wss.html").as_uri() + "?url=" + urllib.request.quote(args.url, safe=":/")
    profile = tempfile.mkdtemp(prefix="ringws-chromium-")
    cmd = [args.chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
           f"--ignore-certificate-errors-spki-list={args.spki}", page]
    print(f"chromium page against {args.url}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = devtools_port(profile, proc)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            try:
                ws_url = page_socket(port, page)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        title, text = asyncio.run(read_page(ws_url))
    except Exception as e:  # noqa: BLE001 - any failure of the harness is a failed check
        print(f"FAIL chromium run: {type(e).__name__}: {e}", flush=True)
        title, text = "error", ""
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        shutil.rmtree(profile, ignore_errors=True)
    print(text or "", end="", flush=True)
    passed = sum(1 for line in (text or "").splitlines() if line.startswith("PASS"))
    failed = sum(1 for line in (text or "").splitlines() if line.startswith("FAIL"))
    if not title.startswith("DONE"):
        failed += 1
        print(f"FAIL the page did not finish ({title}); chromium said:\n{(err or '')[-2000:]}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())

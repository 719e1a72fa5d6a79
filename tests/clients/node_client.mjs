// Checks a WebSocket echo server with the Node `ws` client (a third-party implementation).
//
// usage: node node_client.mjs URL
//   Text (random multi-byte UTF-8) and binary (random bytes) messages of 1 B, 125 B, 126 B, 64 KiB,
//   64 KiB + 1 B and 1 MiB, each echo compared byte for byte; a ping answered by its pong; a close with
//   1000 that completes with 1000 from the server.
// Prints one PASS/FAIL line per check and ends with `N passed, M failed`; exits 1 if any check failed.
import { randomBytes, randomInt } from "node:crypto";
import WebSocket from "ws";

const SIZES = [1, 125, 126, 64 * 1024, 64 * 1024 + 1, 1024 * 1024];
// A guard so that a silent server fails the run instead of hanging it; not a performance assertion.
const STEP_TIMEOUT_MS = 60_000;
// UTF-8 length of a code point -> its range, surrogates excluded from the 3-byte one.
const CODE_POINTS = { 1: [0x20, 0x7e], 2: [0x80, 0x7ff], 3: [0x800, 0xd7ff], 4: [0x10000, 0x10ffff] };

const report = { passed: 0, failed: 0 };

function check(name, ok, detail = "") {
  if (ok) {
    report.passed += 1;
    console.log(`PASS ${name}`);
  } else {
    report.failed += 1;
    console.log(`FAIL ${name}: ${detail}`);
  }
}

// A random string whose UTF-8 encoding is exactly sizeBytes long, mixing 1- to 4-byte code points.
function randomText(sizeBytes) {
  const chars = [];
  for (let left = sizeBytes; left > 0; ) {
    const width = randomInt(1, Math.min(4, left) + 1);
    const [low, high] = CODE_POINTS[width];
    chars.push(String.fromCodePoint(randomInt(low, high + 1)));
    left -= width;
  }
  return chars.join("");
}

// Resolves with the next event `name` of ws, rejects on close, error or timeout (at once if already closed).
function next(ws, name) {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) {
      reject(new Error(`connection already closed: ${ws.closedWith}`));
      return;
    }
    const timer = setTimeout(() => done(reject, new Error(`no ${name} within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
    const onEvent = (...args) => done(resolve, args);
    const onClose = (code, reason) => done(reject, new Error(`connection closed: ${code} ${reason}`));
    const onError = (err) => done(reject, err);
    function done(settle, value) {
      clearTimeout(timer);
      ws.off(name, onEvent).off("close", onClose).off("error", onError);
      settle(value);
    }
    ws.on(name, onEvent);
    if (name !== "close") ws.on("close", onClose);
    ws.on("error", onError);
  });
}

function describeMismatch(sent, got, gotBinary, wantBinary) {
  if (gotBinary !== wantBinary) return `sent ${wantBinary ? "binary" : "text"}, got ${gotBinary ? "binary" : "text"}`;
  if (got.length !== sent.length) return `sent ${sent.length} bytes, got ${got.length}`;
  return `same length, first difference at byte ${sent.findIndex((b, i) => b !== got[i])}`;
}

async function checkEcho(ws, name, payload, binary) {
  const sent = binary ? payload : Buffer.from(payload, "utf8");
  try {
    const reply = next(ws, "message");
    ws.send(payload, { binary });
    const [data, isBinary] = await reply;
    const ok = isBinary === binary && Buffer.compare(data, sent) === 0;
    check(name, ok, ok ? "" : describeMismatch(sent, data, isBinary, binary));
  } catch (err) {
    check(name, false, err.message);
  }
}

async function checkPing(ws) {
  const name = "ping answered by a pong with the same payload";
  const payload = randomBytes(16);
  try {
    const pong = next(ws, "pong");
    ws.ping(payload);
    const [data] = await pong;
    check(name, Buffer.compare(data, payload) === 0, `pong payload ${data.toString("hex")}, ping ${payload.toString("hex")}`);
  } catch (err) {
    check(name, false, err.message);
  }
}

async function checkClose(ws) {
  const name = "close 1000 completes with 1000 from the server";
  try {
    const closed = next(ws, "close");
    ws.close(1000, "done");
    // ws reports 1005 when the server's Close had no code and 1006 when none came before TCP closed.
    const [code, reason] = await closed;
    check(name, code === 1000, `the server answered Close ${code} ${JSON.stringify(reason.toString())}`);
  } catch (err) {
    check(name, false, err.message);
  }
}

async function main(url) {
  console.log(`ws client against ${url}`);
  const ws = new WebSocket(url, { handshakeTimeout: STEP_TIMEOUT_MS });
  ws.closedWith = "";
  ws.on("close", (code, reason) => (ws.closedWith = `${code} ${reason}`));
  ws.on("error", () => {}); // reported by the check that was waiting
  try {
    await next(ws, "open");
    check("connect", true);
  } catch (err) {
    check("connect", false, err.message);
    return;
  }
  for (const size of SIZES) {
    await checkEcho(ws, `text echo ${size} B (multi-byte UTF-8)`, randomText(size), false);
    await checkEcho(ws, `binary echo ${size} B`, randomBytes(size), true);
  }
  await checkPing(ws);
  await checkClose(ws);
}

const url = process.argv[2];
if (!url) {
  console.error("usage: node node_client.mjs URL");
  process.exit(2);
}
await main(url);
console.log(`${report.passed} passed, ${report.failed} failed`);
process.exit(report.failed || !report.passed ? 1 : 0);

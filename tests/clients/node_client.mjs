// Checks a WebSocket echo server with the Node `ws` client (a third-party implementation).
//
// usage: node node_client.mjs URL [--deflate]
//   Text (random multi-byte UTF-8) and binary (random bytes) messages of 1 B, 125 B, 126 B, 64 KiB,
//   64 KiB + 1 B and 1 MiB, each echo compared byte for byte; a ping answered by its pong; a close with
//   1000 that completes with 1000 from the server. No compression is offered (ws offers it by default).
//   --deflate: the same with permessage-deflate (RFC 7692, `perMessageDeflate` with threshold 0, so the
//   client compresses every message), which the handshake must agree (`ws.extensions` and the answer's
//   Sec-WebSocket-Extensions): JSON-like and random text and binary from 1 B to 1 MiB, and each
//   compressible echo of 4 KiB or more must arrive in fewer than half its bytes (counted on the socket;
//   the server's default threshold is 128 B). Then a second connection offers serverMaxWindowBits 10
//   and clientMaxWindowBits 10: the answer must name server_max_window_bits=10, and JSON-like echoes
//   must come back compressed and intact.
// Prints one PASS/FAIL line per check and ends with `N passed, M failed`; exits 1 if any check failed.
import { randomBytes, randomInt } from "node:crypto";
import WebSocket from "ws";

const SIZES = [1, 125, 126, 64 * 1024, 64 * 1024 + 1, 1024 * 1024];
const DEFLATE_SIZES = [1, 125, 126, 4096, 64 * 1024, 64 * 1024 + 1, 1024 * 1024];
// A compressible echo at least this long must arrive compressed (the server's threshold is 128 B).
const COMPRESSED_BYTES_MIN = 4096;
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

// Trade/ticker-like JSON objects, one per line, cut to exactly sizeBytes (ASCII).
function jsonLike(sizeBytes) {
  const parts = [];
  for (let total = 0; total < sizeBytes; ) {
    const symbol = ["BTC-USD", "ETH-USD", "SOL-USD"][randomInt(3)];
    const side = randomInt(2) ? "buy" : "sell";
    const price = (10 + Math.random() * 50000).toFixed(2);
    const size = (Math.random() * 5).toFixed(4);
    const part = `{"type":"trade","symbol":"${symbol}","price":"${price}","size":"${size}","side":"${side}","ts":${1732406400000 + randomInt(1e6)}}\n`;
    parts.push(part);
    total += part.length;
  }
  return parts.join("").slice(0, sizeBytes);
}

function describeMismatch(sent, got, gotBinary, wantBinary) {
  if (gotBinary !== wantBinary) return `sent ${wantBinary ? "binary" : "text"}, got ${gotBinary ? "binary" : "text"}`;
  if (got.length !== sent.length) return `sent ${sent.length} bytes, got ${got.length}`;
  return `same length, first difference at byte ${sent.findIndex((b, i) => b !== got[i])}`;
}

// Sends payload and checks its echo; returns true when it came back intact.
async function checkEcho(ws, name, payload, binary) {
  const sent = binary ? payload : Buffer.from(payload, "utf8");
  try {
    const reply = next(ws, "message");
    ws.send(payload, { binary });
    const [data, isBinary] = await reply;
    const ok = isBinary === binary && Buffer.compare(data, sent) === 0;
    check(name, ok, ok ? "" : describeMismatch(sent, data, isBinary, binary));
    return ok;
  } catch (err) {
    check(name, false, err.message);
    return false;
  }
}

// checkEcho, and with mustCompress also that the echo arrived in fewer than half its bytes: the bytes
// read from the socket while it came (the server sends nothing else meanwhile).
async function checkCompressedEcho(ws, name, payload, binary, mustCompress) {
  const before = ws.rawSocket.bytesRead;
  if (!(await checkEcho(ws, name, payload, binary)) || !mustCompress) return;
  const wire = ws.rawSocket.bytesRead - before;
  const size = binary ? payload.length : Buffer.byteLength(payload, "utf8");
  check(`${name}: came back compressed`, wire < size / 2, `${wire} bytes read for a ${size}-byte echo`);
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

// Opens a connection; resolves with it once open (null if that failed, which is reported). The answer's
// Sec-WebSocket-Extensions and the socket are kept as ws.extensionsAnswer and ws.rawSocket.
async function open(url, perMessageDeflate) {
  const ws = new WebSocket(url, { handshakeTimeout: STEP_TIMEOUT_MS, perMessageDeflate });
  ws.closedWith = "";
  ws.extensionsAnswer = "";
  ws.on("upgrade", (res) => {
    ws.extensionsAnswer = res.headers["sec-websocket-extensions"] ?? "";
    ws.rawSocket = res.socket;
  });
  ws.on("close", (code, reason) => (ws.closedWith = `${code} ${reason}`));
  ws.on("error", () => {}); // reported by the check that was waiting
  try {
    await next(ws, "open");
    check("connect", true);
    return ws;
  } catch (err) {
    check("connect", false, err.message);
    return null;
  }
}

// Checks that the handshake agreed permessage-deflate (and wantParam, e.g. a window size).
function checkAgreed(ws, wantParam) {
  const params = ws.extensionsAnswer.split(";").map((p) => p.trim());
  const ok = ws.extensions === "permessage-deflate" && params[0] === "permessage-deflate" &&
    (!wantParam || params.includes(wantParam));
  check(`handshake agreed permessage-deflate${wantParam ? ` with ${wantParam}` : ""}`, ok,
    `ws.extensions ${JSON.stringify(ws.extensions)}, answer ${JSON.stringify(ws.extensionsAnswer)}`);
  return ok;
}

async function mainDeflate(url) {
  console.log(`ws client with permessage-deflate against ${url}`);
  let ws = await open(url, { threshold: 0 });
  if (!ws || !checkAgreed(ws)) return;
  for (const size of DEFLATE_SIZES) {
    const big = size >= COMPRESSED_BYTES_MIN;
    const text = jsonLike(size);
    await checkCompressedEcho(ws, `text echo ${size} B (JSON-like)`, text, false, big);
    await checkCompressedEcho(ws, `binary echo ${size} B (JSON-like)`, Buffer.from(text), true, big);
    await checkEcho(ws, `text echo ${size} B (multi-byte UTF-8)`, randomText(size), false);
    await checkEcho(ws, `binary echo ${size} B (random)`, randomBytes(size), true);
  }
  await checkPing(ws);
  await checkClose(ws);
  ws = await open(url, { threshold: 0, serverMaxWindowBits: 10, clientMaxWindowBits: 10 });
  if (!ws || !checkAgreed(ws, "server_max_window_bits=10")) return;
  for (const size of [4096, 64 * 1024, 1024 * 1024]) {
    await checkCompressedEcho(ws, `window 10: text echo ${size} B (JSON-like)`, jsonLike(size), false, true);
  }
  await checkClose(ws);
}

async function main(url) {
  console.log(`ws client against ${url}`);
  const ws = await open(url, false);
  if (!ws) return;
  for (const size of SIZES) {
    await checkEcho(ws, `text echo ${size} B (multi-byte UTF-8)`, randomText(size), false);
    await checkEcho(ws, `binary echo ${size} B`, randomBytes(size), true);
  }
  await checkPing(ws);
  await checkClose(ws);
}

const [url, flag] = process.argv.slice(2);
if (!url || (flag !== undefined && flag !== "--deflate")) {
  console.error("usage: node node_client.mjs URL [--deflate]");
  process.exit(2);
}
await (flag ? mainDeflate(url) : main(url));
console.log(`${report.passed} passed, ${report.failed} failed`);
process.exit(report.failed || !report.passed ? 1 : 0);

// The client's own logic without a server: quoting, events, errors, retries
// (against a scripted local HTTP server), frames.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import http from "node:http";
import { test } from "node:test";

import * as brig from "../src/index.js";

test("argv is quoted so that POSIX splitting gives it back", () => {
  const argv = ["echo", "a b", "it's", '"x"', "$HOME", "", "\\", "*?[]", "~", "#", "ünï"];
  const line = brig.quote(argv);
  const back = execFileSync("python3", ["-c", "import shlex,sys,json; print(json.dumps(shlex.split(sys.argv[1])))", line]);
  assert.deepEqual(JSON.parse(back), argv);
  assert.throws(() => brig.quote([]), TypeError);
});

test("server-sent events become typed events; an error event throws its kind", async () => {
  async function* lines() {
    yield* ["event: stdout", "id: 3:0", 'data: {"data": "hi\\n"}', "", ": comment", ""];
    yield* ["event: exit", "id: 3:0", 'data: {"exit_code": 1, "signal": null, "reason": "exited"}', ""];
  }
  const events = [];
  for await (const [name, data, id] of brig.sseEvents(lines())) events.push(brig.streamEvent(name, data, id));
  assert.deepEqual(events[0], { type: "stdout", data: "hi\n", at: { stdout: 3, stderr: 0 } });
  assert.equal(events[1].type, "exit");
  assert.equal(events[1].exitCode, 1);
  assert.throws(() => brig.streamEvent("error", '{"error": "shutting_down", "detail": "bye"}', null), brig.Unavailable);
});

test("errors map by status and code", () => {
  const cases = [
    [401, "unauthorized", brig.Unauthorized], [403, "command_not_allowed", brig.CommandNotAllowed],
    [403, "egress_not_allowed", brig.Forbidden], [404, "not_found", brig.NotFound], [409, "context_busy", brig.Conflict],
    [410, "cursor_expired", brig.Gone], [413, "stdin_too_large", brig.PayloadTooLarge],
    [413, "snapshot_quota_exceeded", brig.QuotaExceeded], [422, "invalid_env", brig.InvalidRequest],
    [429, "session_quota_exceeded", brig.QuotaExceeded], [429, "rate_limited", brig.RateLimited],
    [502, "sandbox_error", brig.ServerError], [503, "shutting_down", brig.Unavailable],
  ];
  for (const [status, code, Kind] of cases) {
    const err = brig.errorFrom(status, JSON.stringify({ error: code, detail: "d" }), "2");
    assert.ok(err instanceof Kind && err instanceof brig.BrigError, `${status} ${code}`);
    assert.deepEqual([err.status, err.code, err.detail, err.retryAfter], [status, code, "d", 2]);
  }
});

/** A local server answering from `answers` in turn; `seen` gets each request's headers. */
async function scripted(answers) {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(req.headers);
    const [status, body, headers = {}] = answers.shift() ?? [500, "{}"];
    res.writeHead(status, { "Content-Type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { seen, server, client: new brig.Client({ url, apiKey: "k".repeat(20), retry: { backoff: 0.001 } }) };
}

const busy = (status = 503, code = "sandbox_unavailable", after = "0") => [status, { error: code, detail: "later" }, { "Retry-After": after }];
const RESULT = { session_id: "s", exit_code: 0, stdout: "ok\n", stderr: "", execution_time: 0.01 };

test("a retried run carries the same Idempotency-Key", async () => {
  const { seen, server, client } = await scripted([busy(), busy(429, "rate_limited"), [200, RESULT]]);
  try {
    assert.equal((await new brig.Session(client, "s").run("echo ok")).stdout, "ok\n");
    assert.equal(seen.length, 3);
    assert.equal(new Set(seen.map((h) => h["idempotency-key"])).size, 1);
    assert.ok(seen[0]["idempotency-key"]);
    assert.equal(seen[0]["x-api-key"], "k".repeat(20));
  } finally {
    server.close();
  }
});

test("calls unsafe to repeat are not retried; a long Retry-After is not waited for; attempts end", async () => {
  let { seen, server, client } = await scripted([busy()]);
  await assert.rejects(client.execution("e").signal("INT"), brig.Unavailable);
  assert.equal(seen.length, 1);
  server.close();
  ({ seen, server, client } = await scripted([busy(429, "rate_limited", "3600")]));
  await assert.rejects(client.sessions(), (err) => err instanceof brig.RateLimited && err.retryAfter === 3600);
  assert.equal(seen.length, 1);
  server.close();
  ({ seen, server, client } = await scripted([busy(), busy(), busy(), busy()]));
  await assert.rejects(client.sessions(), brig.Unavailable);
  assert.equal(seen.length, 4);
  server.close();
});

test("client frames are masked and sized", () => {
  for (const size of [0, 125, 126, 65535, 65536]) {
    const frame = brig.wsFrame(2, Buffer.alloc(size, 7));
    const lengthBytes = size < 126 ? 0 : size < 65536 ? 2 : 8;
    assert.equal(frame.length, 2 + lengthBytes + 4 + size);
    assert.equal(frame[0], 0x82);
    assert.ok(frame[1] & 0x80, "masked");
  }
});

test("a command whose connection broke after sending is not sent again; a read is", async () => {
  let requests = 0;
  const server = http.createServer((req) => { requests++; req.socket.destroy(); });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const client = new brig.Client({ url: `http://127.0.0.1:${server.address().port}`, apiKey: "k".repeat(20), retry: { backoff: 0.001 } });
  try {
    await assert.rejects(new brig.Session(client, "s").run("echo once"), brig.ConnectionFailed);
    assert.equal(requests, 1);
    requests = 0;
    await assert.rejects(client.sessions(), brig.ConnectionFailed);
    assert.equal(requests, 4);
  } finally {
    server.close();
  }
});

test("a connection never made is tried again, unless its body was a stream", async () => {
  const port = await new Promise((resolve) => { const s = http.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); }); });
  const client = new brig.Client({ url: `http://127.0.0.1:${port}`, apiKey: "k".repeat(20), retry: { backoff: 0.001, attempts: 2 } });
  const started = Date.now();
  await assert.rejects(new brig.Session(client, "s").run("echo"), (err) => err instanceof brig.ConnectionFailed && /ECONNREFUSED/.test(err.message));
  async function* body() { yield new Uint8Array([1, 2, 3]); }
  await assert.rejects(new brig.Session(client, "s").files.write("f", body()), (err) => err instanceof brig.ConnectionFailed && /ECONNREFUSED/.test(err.message));
  assert.ok(Date.now() - started < 5000);
});

test("paths and ids that URL resolution would send elsewhere, and argv with control characters, are refused before sending", async () => {
  const client = new brig.Client({ url: "http://127.0.0.1:9", apiKey: "k".repeat(20), retry: { attempts: 1 } });
  const session = new brig.Session(client, "s");
  for (const path of ["../../../snapshots/snap-1", "a/./b", "a//b", "a/..", ""]) {
    await assert.rejects(session.files.remove(path), (err) => err instanceof brig.InvalidRequest && err.code === "invalid_path");
  }
  for (const id of ["..", "."]) await assert.rejects(new brig.Session(client, id).info(), brig.InvalidRequest);
  await assert.rejects(session.run(["python3", "-c", "import os\nprint(1)"]), (err) => err instanceof brig.InvalidRequest && err.code === "invalid_command");
});

/** A server answering every request with this event stream. */
async function streaming(text) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.end(text);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const client = new brig.Client({ url: `http://127.0.0.1:${server.address().port}`, apiKey: "k".repeat(20) });
  return { server, session: new brig.Session(client, "s") };
}

test("event lines split at newlines only; a stream cut before its exit says so", async () => {
  let { server, session } = await streaming('event: stdout\ndata: {"data": "a\u2028b\u0085c"}\n\nevent: exit\ndata: {"exit_code": 0}\n\n');
  const events = [];
  try {
    for await (const event of session.stream("echo")) events.push(event);
  } finally {
    server.close();
  }
  assert.equal(events[0].data, "a\u2028b\u0085c");
  assert.equal(events[1].type, "exit");
  ({ server, session } = await streaming('event: stdout\ndata: {"data": "half"}\n\n'));
  try {
    await assert.rejects(async () => { for await (const _ of session.stream("echo")); }, brig.ConnectionFailed);
  } finally {
    server.close();
  }
});

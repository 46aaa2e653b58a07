// brig's TypeScript client against the live server that tests/e2e/sdk.rs
// starts (BRIG_URL, BRIG_API_KEY, BRIG_OTHER_API_KEY, BRIG_LIMITED_URL, BRIG_METRICS_TOKEN).

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Client, Session, CommandNotAllowed, Conflict, Forbidden, InvalidRequest, NotFound, RateLimited, Unauthorized,
} from "../src/index.js";

function setting(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run these through cargo nextest run -p brig-e2e -E 'test(sdk::)'`);
  return value;
}

const client = () => new Client({ url: setting("BRIG_URL"), apiKey: setting("BRIG_API_KEY") });
const bob = () => new Client({ url: setting("BRIG_URL"), apiKey: setting("BRIG_OTHER_API_KEY") });
const text = (bytes) => new TextDecoder().decode(bytes);
const stdoutOf = (events) => events.filter((e) => e.type === "stdout").map((e) => e.data).join("");

async function collect(iterable) {
  const all = [];
  for await (const item of iterable) all.push(item);
  return all;
}

test("run sends a string as written and an array as exactly its arguments", () =>
  client().withSession({}, async (s) => {
    assert.equal((await s.run("echo hi there")).stdout, "hi there\n");
    const tricky = ["a b", "it's", '"quoted"', "$HOME", "*", ";", "", "back\\slash"];
    const result = await s.run(["sh", "-c", 'for a in "$@"; do echo "[$a]"; done', "sh", ...tricky]);
    assert.equal(result.exitCode, 0);
    assert.deepEqual(result.stdout.trimEnd().split("\n"), tricky.map((a) => `[${a}]`));
    assert.equal(result.reason, "exited");
    assert.equal((await s.run("cat", { stdin: "fed\n" })).stdout, "fed\n");
    assert.equal((await s.run(["sh", "-c", "echo $GREETING"], { env: { GREETING: "hello" } })).stdout, "hello\n");
    await s.run("mkdir -p a/b");
    assert.equal((await s.run("pwd", { cwd: "/workspace/a/b" })).stdout, "/workspace/a/b\n");
    // Longer than Node's fetch waits for an answer: run in the background and waited for.
    const patient = await s.run(["sh", "-c", "echo long"], { timeout: 250 });
    assert.equal(patient.stdout, "long\n");
    assert.equal(patient.exitCode, 0);
    const slow = await s.run("sleep 5", { timeout: 0.5 });
    assert.ok(slow.timedOut && slow.exitCode === 124 && slow.reason === "timed_out");
  }));

test("errors are typed with the API's code and detail", async () => {
  const c = client();
  await c.withSession({}, async (s) => {
    await assert.rejects(s.run("rm -rf /workspace"), (err) => err instanceof CommandNotAllowed && err.status === 403 && err.code === "command_not_allowed");
    await assert.rejects(s.run("env", { env: { PATH: "/evil" } }), (err) => err instanceof InvalidRequest && err.code === "invalid_env" && err.detail.includes("PATH"));
    assert.ok(!(await bob().sessions()).some((x) => x.sessionId === s.id));
    await assert.rejects(new Session(bob(), s.id).info(), NotFound);
  });
  await assert.rejects(new Client({ url: c.url, apiKey: "not-a-key-of-this-server" }).sessions(), Unauthorized);
  await assert.rejects(c.session("x".repeat(300)), InvalidRequest);
});

test("sessions: info, idempotent creation, renewal, network, deletion", async () => {
  const c = client();
  const s = await c.session({ memoryLimit: "256m", ttlSeconds: 120, env: { TEAM: "blue" } });
  const info = await s.info();
  assert.equal(info.status, "active");
  assert.equal(info.ttlSeconds, 120);
  assert.equal(info.memoryLimit, 256 * 1024 * 1024);
  assert.equal((await s.run(["sh", "-c", "echo $TEAM"])).stdout, "blue\n");
  assert.ok((await c.sessions()).some((x) => x.sessionId === s.id));
  assert.equal((await c.session(s.id)).id, s.id);
  assert.equal((await s.renew({ ttlSeconds: 300 })).ttlSeconds, 300);
  assert.equal((await s.network()).enabled, false);
  await assert.rejects(s.setNetwork(["pypi.org:443"]), (err) => err instanceof Forbidden && err.code === "egress_not_allowed");
  await s.delete();
  await assert.rejects(s.info(), NotFound);
  await s.delete({ missingOk: true });
});

test("stream yields typed events then the result", () =>
  client().withSession({}, async (s) => {
    const events = await collect(s.stream(["sh", "-c", "echo one; echo two >&2; sleep 0.2; echo three"]));
    const last = events.at(-1);
    assert.equal(last.type, "exit");
    assert.equal(last.result.stdout, "one\nthree\n");
    assert.equal(stdoutOf(events), "one\nthree\n");
    assert.equal(events.filter((e) => e.type === "stderr").map((e) => e.data).join(""), "two\n");
    await assert.rejects(collect(s.stream("rm -rf /")), CommandNotAllowed);
  }));

test("files round trip, large ones streamed, listed, removed, archived", () =>
  client().withSession({}, async (s) => {
    await s.files.write("notes/a.txt", "alpha");
    await s.files.write("notes/b.txt", new Uint8Array([98, 101, 116, 97]));
    assert.equal(text(await s.files.read("notes/a.txt")), "alpha");
    assert.deepEqual((await s.files.list("notes")).entries.map((e) => e.name).sort(), ["a.txt", "b.txt"]);
    assert.ok((await s.files.list()).entries.some((e) => e.name === "notes")); // the workspace itself
    const big = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => (i * 31) & 255);
    async function* chunks() { for (let i = 0; i < big.length; i += 65536) yield big.subarray(i, i + 65536); }
    await s.files.write("big.bin", chunks());
    assert.deepEqual(await s.files.read("big.bin"), big);
    let streamed = 0;
    for await (const chunk of await s.files.readStream("big.bin")) streamed += chunk.length;
    assert.equal(streamed, big.length);
    await s.files.remove("notes/b.txt");
    await assert.rejects(s.files.read("notes/b.txt"), NotFound);
    const tar = new Uint8Array(await new Response(await s.files.readArchive({ dir: "notes" })).arrayBuffer());
    assert.ok(text(tar).includes("a.txt"));
    await s.files.writeArchive(tar, { dir: "copy" });
    assert.equal((await s.run("cat copy/a.txt")).stdout, "alpha");
    // Not a tar at all: refused whole (the agent names what it could not read).
    await assert.rejects(s.files.writeArchive(new Uint8Array(1024).fill(7)), (err) => err instanceof Conflict && err.code === "file_refused");
    assert.equal((await s.files.list("copy")).entries.length, 1);
  }));

test("executions start, wait, cancel, take stdin and are read by offset and followed", () =>
  client().withSession({}, async (s) => {
    const quick = await s.start(["sh", "-c", "echo started; exit 4"]);
    const done = await quick.wait({ timeout: 30 });
    assert.equal(done.exitCode, 4);
    assert.equal((await quick.status()).status, "completed");
    const slow = await s.start("sleep 30");
    assert.ok((await slow.status()).running);
    assert.equal((await slow.cancel()).status, "cancelled");
    await assert.rejects(slow.signal("INT"), Conflict);
    const cat = await s.start("cat", { pipe: true, timeout: 60 });
    assert.equal(await cat.write("first line\n"), true);
    assert.equal(await cat.write("second line\n", { close: true }), true);
    assert.equal((await cat.wait({ timeout: 30 })).stdout, "first line\nsecond line\n");
    const tail = await cat.output({ stdout: 11, stderr: 0 });
    assert.equal(tail.stdout, "second line\n");
    assert.ok(tail.complete && tail.ending.reason === "exited");
    const events = await collect(cat.events({ stdout: 6, stderr: 0 }));
    assert.equal(stdoutOf(events), "line\nsecond line\n");
    assert.equal(events.at(-1).type, "exit");
    const ids = (await s.executions()).map((e) => e.executionId);
    assert.deepEqual(ids.slice(-3), [quick.id, slow.id, cat.id]);
    const sleeper = await s.start("sleep 30");
    await new Promise((r) => setTimeout(r, 300));
    await sleeper.signal("INT");
    assert.equal((await sleeper.wait({ timeout: 30 })).reason, "signalled");
  }));

test("a terminal and a pipe over the attachment", () =>
  client().withSession({}, async (s) => {
    const shell = await s.start(["sh", "-i"], { tty: { rows: 24, cols: 80 }, timeout: 60 });
    const attached = await shell.attach();
    await attached.send("stty size\n");
    let seen = "";
    while (!seen.includes("24 80")) {
      const chunk = await attached.recv();
      assert.ok(chunk, seen);
      seen += text(chunk);
    }
    await shell.resize(40, 100);
    await attached.send("stty size; exit 3\n");
    const rest = (await collect(attached)).map(text).join("");
    assert.ok(rest.includes("40 100"), rest);
    assert.equal(attached.exit.exitCode, 3);

    const piped = await s.start("cat", { pipe: true, timeout: 60 });
    const pipe = await piped.attach();
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) & 255); // past 1 MiB a message: sent as several
    await pipe.send(new TextEncoder().encode("through the socket\n"));
    await pipe.send(big);
    await pipe.eof();
    const echoed = Buffer.concat(await collect(pipe));
    assert.equal(echoed.subarray(0, 19).toString(), "through the socket\n");
    assert.ok(echoed.subarray(19).equals(Buffer.from(big)));
    assert.equal(pipe.exit.exitCode, 0);
    await piped.wait({ timeout: 30 }); // its record too says it ended (the exit message may come first)
    await assert.rejects(piped.attach(), Conflict);
  }));

test("runCode keeps state; contexts report errors, time out and are nobody else's", () =>
  client().withSession({}, async (s) => {
    assert.equal((await s.runCode("x = 41")).error, null);
    assert.equal((await s.runCode("x + 1")).result, "42");
    const failed = await s.runCode("1 / 0");
    assert.equal(failed.error.name, "ZeroDivisionError");
    const context = await s.context("python");
    const spun = await context.run("while True: pass", { timeout: 1 });
    assert.ok(spun.timedOut && spun.error.name === "KeyboardInterrupt");
    assert.equal((await context.run("'alive'")).result, "'alive'");
    await context.interrupt();
    await assert.rejects(bob().context(context.id).run("1"), NotFound);
    await context.delete();
    await assert.rejects(context.run("1"), NotFound);
    for (let i = 0; i < 2; i++) await assert.rejects(s.runCode("1", { language: "cobol" }), InvalidRequest);
    await (await s._contexts.get("python")).delete();
    await assert.rejects(s.runCode("x"), NotFound);
    assert.equal((await s.runCode("x")).error.name, "NameError");
  }));

test("snapshots restore into a new session and a suspended session resumes", async () => {
  const c = client();
  await c.withSession({}, async (first) => {
    await first.files.write("kept.txt", "worth keeping");
    const snap = await first.snapshot();
    assert.equal(snap.sessionId, first.id);
    assert.ok((await c.snapshots()).some((x) => x.snapshotId === snap.snapshotId));
    assert.deepEqual(await c.snapshot(snap.snapshotId), snap);
    await c.withSession({ fromSnapshot: snap.snapshotId }, async (second) => {
      assert.equal(text(await second.files.read("kept.txt")), "worth keeping");
    });
    await c.deleteSnapshot(snap.snapshotId);
    await assert.rejects(c.snapshot(snap.snapshotId), NotFound);
    assert.equal((await first.suspend()).status, "suspended");
    const resumed = await first.run("cat kept.txt");
    assert.ok(resumed.sessionResumed);
    assert.equal(resumed.stdout, "worth keeping");
  });
});

test("the service endpoints and MCP", async () => {
  const c = client();
  assert.equal((await c.health()).status, "ok");
  assert.equal((await c.ready()).status, "ready");
  assert.equal((await c.openapi()).info.title, "brig");
  await assert.rejects(c.nodes(), (err) => err instanceof Forbidden && err.code === "admin_only");
  await assert.rejects(c.metrics("wrong-token"), Unauthorized);
  assert.ok((await c.metrics(setting("BRIG_METRICS_TOKEN"))).includes("brig_"));
  await assert.rejects(c.generate("print the time"), (err) => err instanceof NotFound && err.code === "not_enabled");
  await assert.rejects(c.generateAndExecute("print the time"), NotFound);
  const hello = await c.mcp({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-03-26", capabilities: {}, clientInfo: { name: "t", version: "1" } } });
  assert.ok(hello.result.serverInfo.name);
  const tools = await c.mcp({ jsonrpc: "2.0", id: 2, method: "tools/list" });
  assert.ok(tools.result.tools.some((t) => t.name === "execute"));
});

test("429s are retried honouring Retry-After, and surface when retries are off", async () => {
  const url = setting("BRIG_LIMITED_URL"), apiKey = setting("BRIG_API_KEY");
  const impatient = new Client({ url, apiKey, retry: { attempts: 1 } });
  await assert.rejects(async () => { for (let i = 0; i < 10; i++) await impatient.sessions(); },
    (err) => err instanceof RateLimited && err.code === "rate_limited" && err.retryAfter > 0);
  const patient = new Client({ url, apiKey });
  const started = Date.now();
  for (let i = 0; i < 4; i++) await patient.sessions();
  assert.ok(Date.now() - started > 500);
});

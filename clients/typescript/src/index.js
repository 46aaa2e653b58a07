// brig's TypeScript/JavaScript client: Node >= 20, ESM, no dependencies
// (fetch and web streams for HTTP, node:net/node:tls for the attachment's
// WebSocket). Types: index.d.ts, written by hand.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import net from "node:net";
import tls from "node:tls";

export const VERSION = "0.1.0"; // follows the API's version (GET /openapi.json: info.version)

// Errors

export class BrigError extends Error {
  constructor(detail, { status = 0, code = "", retryAfter = null, body = null } = {}) {
    super(status ? `${status} ${code}: ${detail}` : detail);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}
export class ConnectionFailed extends BrigError {}
export class Unauthorized extends BrigError {}
export class Forbidden extends BrigError {}
export class CommandNotAllowed extends Forbidden {}
export class NotFound extends BrigError {}
export class Conflict extends BrigError {}
export class Gone extends BrigError {}
export class PayloadTooLarge extends BrigError {}
export class InvalidRequest extends BrigError {}
export class RateLimited extends BrigError {}
export class QuotaExceeded extends BrigError {}
export class Unavailable extends BrigError {}
export class ServerError extends BrigError {}

const QUOTA_CODES = new Set(["session_quota_exceeded", "snapshot_quota_exceeded"]);
const UNAVAILABLE_CODES = new Set([
  "store_unavailable", "engine_unavailable", "capacity_exhausted", "session_busy",
  "sandbox_unavailable", "sandbox_unresponsive", "not_ready", "shutting_down",
]);
const BY_CODE = {
  command_not_allowed: CommandNotAllowed,
  unauthorized: Unauthorized,
  not_found: NotFound,
  rate_limited: RateLimited,
  sandbox_busy: RateLimited,
  unread_responses: RateLimited,
};

function kindOf(status, code) {
  if (QUOTA_CODES.has(code)) return QuotaExceeded;
  if (status === 401) return Unauthorized;
  if (status === 403) return code === "command_not_allowed" ? CommandNotAllowed : Forbidden;
  if (status === 404) return NotFound;
  if (status === 409) return Conflict;
  if (status === 410) return Gone;
  if (status === 413) return PayloadTooLarge;
  if (status === 429) return RateLimited;
  if (status === 503) return Unavailable;
  if (status >= 500) return ServerError;
  return InvalidRequest;
}

/** The error an answer of `status` with `text` stands for. */
export function errorFrom(status, text, retryAfterHeader = null) {
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  const code = body && typeof body === "object" ? String(body.error ?? "") : "";
  const detail = (body && typeof body === "object" && body.detail) || text.slice(0, 500) || `HTTP ${status}`;
  const seconds = retryAfterHeader == null ? NaN : Number(retryAfterHeader);
  const Kind = kindOf(status, code);
  return new Kind(String(detail), { status, code, retryAfter: Number.isFinite(seconds) ? seconds : null, body });
}

/** The error a code stands for where no status came with it (a stream's error event, a failed execution). */
export function errorFor(code, detail, body = null) {
  let Kind = BY_CODE[code] ?? ServerError;
  if (UNAVAILABLE_CODES.has(code)) Kind = Unavailable;
  if (QUOTA_CODES.has(code)) Kind = QuotaExceeded;
  return new Kind(String(detail ?? ""), { code, body });
}

// Helpers

/** argv quoted for the server's POSIX word splitting: it means exactly these arguments. */
export function quote(argv) {
  if (!Array.isArray(argv) || argv.length === 0) throw new TypeError("argv must be a non-empty array of strings");
  return argv
    .map((arg) => {
      const s = String(arg);
      if (/\p{Cc}/u.test(s)) {
        // The server refuses control characters in a command line.
        throw new InvalidRequest(
          `${JSON.stringify(s)}: an argument with a control character (a newline, a tab) cannot be sent; pass such text on stdin, in a file, or as code (runCode)`,
          { code: "invalid_command" },
        );
      }
      if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
      return `'${s.replaceAll("'", `'"'"'`)}'`;
    })
    .join(" ");
}

const commandLine = (command) => (typeof command === "string" ? command : quote(command));
// "." and ".." are refused before sending: URL resolution would send the request to another path.
function seg(value) {
  const s = String(value);
  if (s === "" || s === "." || s === "..") throw new InvalidRequest(`${JSON.stringify(s)} is not an id`, { code: "invalid_request" });
  return encodeURIComponent(s);
}
function filePath(path) {
  const parts = String(path).replace(/^\/+/, "").split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new InvalidRequest(`${JSON.stringify(path)}: paths are relative to /workspace, without empty, . or .. components`, { code: "invalid_path" });
  }
  return parts.map(encodeURIComponent).join("/");
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const dropUndefined = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null));

function toResult(raw) {
  return {
    stdout: raw.stdout ?? "",
    stderr: raw.stderr ?? "",
    exitCode: raw.exit_code ?? -1,
    signal: raw.signal ?? null,
    timedOut: Boolean(raw.timed_out),
    truncated: Boolean(raw.truncated),
    stdoutTruncated: Boolean(raw.stdout_truncated),
    stderrTruncated: Boolean(raw.stderr_truncated),
    reason: raw.reason ?? "",
    duration: raw.execution_time ?? 0,
    startedAt: raw.started_at ?? "",
    finishedAt: raw.finished_at ?? "",
    sessionId: raw.session_id ?? "",
    sessionCreated: Boolean(raw.session_created),
    sessionResumed: Boolean(raw.session_resumed),
    sessionRecreated: toRecreation(raw.session_recreated),
    raw,
  };
}

const toRecreation = (raw) =>
  raw ? { at: raw.at, lostNode: raw.lost_node, snapshotId: raw.snapshot_id } : undefined;

const toEnding = (raw) => ({ exitCode: raw.exit_code, signal: raw.signal ?? null, reason: raw.reason ?? "", raw });

function toStatus(raw) {
  return {
    executionId: raw.execution_id,
    sessionId: raw.session_id ?? "",
    status: raw.status,
    running: raw.status === "running",
    result: "exit_code" in raw ? toResult(raw) : null,
    failure: raw.failure ?? null,
    raw,
  };
}

const toSession = (raw) => ({
  sessionId: raw.session_id,
  status: raw.status,
  createdAt: raw.created_at,
  expiresAt: raw.expires_at,
  ttlSeconds: raw.ttl_seconds,
  image: raw.image,
  runtime: raw.runtime,
  memoryLimit: raw.memory_limit,
  cpuLimit: raw.cpu_limit,
  recreated: toRecreation(raw.recreated),
  raw,
});

const toSnapshot = (raw) => ({
  snapshotId: raw.snapshot_id,
  sessionId: raw.session_id,
  bytes: raw.bytes,
  sha256: raw.sha256,
  createdAt: raw.created_at,
});

const toCode = (raw) => ({
  stdout: raw.stdout ?? "",
  stderr: raw.stderr ?? "",
  result: raw.result ?? null,
  error: raw.error ?? null,
  timedOut: Boolean(raw.timed_out),
});

function parseOffsets(id) {
  const m = /^(\d+):(\d+)$/.exec(id ?? "");
  return m ? { stdout: Number(m[1]), stderr: Number(m[2]) } : null;
}

/** A typed event from an SSE event (an `error` event throws; unknown ones give null). */
export function streamEvent(name, data, id) {
  const at = parseOffsets(id);
  if (name === "error") {
    let body = {};
    try { body = JSON.parse(data); } catch { /* not JSON */ }
    throw errorFor(body.error ?? "", body.detail ?? data, body);
  }
  if (name !== "stdout" && name !== "stderr" && name !== "exit") return null;
  const body = JSON.parse(data);
  if (name !== "exit") return { type: name, data: body.data ?? "", at };
  if ("stdout" in body) {
    const result = toResult(body);
    return { type: "exit", exitCode: result.exitCode, signal: result.signal, reason: result.reason, result, at };
  }
  return { type: "exit", exitCode: body.exit_code, signal: body.signal ?? null, reason: body.reason ?? "", result: null, at };
}

/** Server-sent events from a stream of text lines. */
export async function* sseEvents(lines) {
  let event = "", data = [], id = null;
  for await (const raw of lines) {
    const line = raw.replace(/\r$/, "");
    if (line === "") {
      if (event || data.length) yield [event || "message", data.join("\n"), id];
      event = ""; data = []; id = null;
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
}

/** A body's chunks; a silence of `idle` seconds (the server sends a comment every 15 s) ends it with ConnectionFailed. */
async function* chunksOf(body, idle) {
  const reader = body.getReader();
  try {
    for (;;) {
      let timer;
      const silence = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new ConnectionFailed(`nothing from the server for ${idle} s`)), idle * 1000);
      });
      try {
        const { value, done } = await Promise.race([reader.read(), silence]);
        if (done) return;
        yield value;
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Text lines split at "\n" only (JSON carries U+2028 and friends unescaped). */
async function* textLines(chunks) {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const chunk of chunks) {
    rest += decoder.decode(chunk, { stream: true });
    let at;
    while ((at = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, at);
      rest = rest.slice(at + 1);
    }
  }
  rest += decoder.decode();
  if (rest) yield rest;
}

function bodyOf(data) {
  if (data == null) return { body: undefined, again: true };
  if (typeof data === "string") return { body: new TextEncoder().encode(data), again: true };
  if (data instanceof Uint8Array || data instanceof ArrayBuffer || data instanceof Blob) return { body: data, again: true };
  if (typeof data.getReader === "function") return { body: data, again: false };
  if (typeof data[Symbol.asyncIterator] === "function" || typeof data[Symbol.iterator] === "function") {
    const iterator = data[Symbol.asyncIterator] ? data[Symbol.asyncIterator]() : data[Symbol.iterator]();
    const stream = new ReadableStream({
      async pull(controller) {
        const { value, done } = await iterator.next();
        if (done) controller.close();
        else controller.enqueue(typeof value === "string" ? new TextEncoder().encode(value) : new Uint8Array(value));
      },
    });
    return { body: stream, again: false };
  }
  throw new TypeError("a body is a string, bytes, a Blob, a ReadableStream or an (async) iterable of bytes");
}

// The client

/** Whether an error is worth the same request again (the call itself being safe to repeat). */
function retryable(error) {
  if (error instanceof Unavailable) return true;
  // An authentication budget or a cooldown is not waited out by a client.
  return error instanceof RateLimited && !["auth_rate_limited", "cooldown_active"].includes(error.code);
}

const DEFAULT_RETRY = { attempts: 4, backoff: 0.25, maxBackoff: 4, maxWait: 30 };
// The longest a command may run on a server with default settings (MAX_EXEC_TIMEOUT_SECONDS).
const MAX_COMMAND_SECONDS = 300;
// Node's fetch gives up on an answer whose head takes longer than 300 s: a command that
// may run that long is started in the background and waited for instead.
const LONGEST_ANSWER_SECONDS = 240;

export class Client {
  /**
   * @param {{url?: string, apiKey?: string, token?: string, timeout?: number, retry?: object}} options
   * `timeout` (seconds) bounds each request; a command's own timeout is added while it runs.
   */
  constructor({ url, apiKey, token, timeout = 60, retry } = {}) {
    this.url = (url ?? process.env.BRIG_URL ?? "http://localhost:8000").replace(/\/+$/, "");
    this.timeout = timeout;
    this.retry = { ...DEFAULT_RETRY, ...retry };
    this.headers = { "User-Agent": `brig-sdk-typescript/${VERSION}` };
    token = token ?? process.env.BRIG_TOKEN;
    apiKey = apiKey ?? (token ? undefined : process.env.BRIG_API_KEY);
    if (apiKey) this.headers["X-API-Key"] = apiKey;
    else if (token) this.headers.Authorization = `Bearer ${token}`;
  }

  /** Seconds to wait before attempt `attempt + 1`, or null to give up. */
  _retryDelay(attempt, error) {
    if (attempt + 1 >= this.retry.attempts) return null;
    let wait = Math.min(this.retry.maxBackoff, this.retry.backoff * 2 ** attempt);
    if (error?.retryAfter != null) {
      if (error.retryAfter > this.retry.maxWait) return null;
      wait = Math.max(wait, error.retryAfter);
    }
    return wait;
  }

  /**
   * Sends one request; retries it when that is safe. Returns the Response (ok).
   * `timeout` (seconds) bounds the wait for the answer's head; null: no bound.
   */
  async _send(method, path, { query, json, body, headers = {}, retry = true, timeout } = {}) {
    const url = new URL(this.url + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v != null) url.searchParams.set(k, String(v));
    const all = { ...this.headers, ...headers };
    let payload = body;
    if (json !== undefined) {
      payload = JSON.stringify(json);
      all["Content-Type"] = "application/json";
    }
    // A stream is read once: it cannot be sent again.
    const resendable = !(payload && typeof payload.getReader === "function");
    const seconds = timeout === undefined ? this.timeout : timeout;
    for (let attempt = 0; ; attempt++) {
      const init = { method, headers: all, body: payload };
      if (!resendable) init.duplex = "half";
      const abort = new AbortController();
      init.signal = abort.signal;
      const timer = seconds == null ? null : setTimeout(() => abort.abort(), seconds * 1000);
      let error, response;
      try {
        response = await fetch(url, init);
      } catch (err) {
        const code = err.cause?.code ?? "";
        const why = abort.signal.aborted ? `no answer within ${seconds} s` : code || err.message;
        error = new ConnectionFailed(`${method} ${path}: ${why}`);
        // A connection never made reached nobody. After that, only a read or an
        // idempotent write is sent again: a command whose client went away is
        // cancelled and its Idempotency-Key released, so it would run again.
        const neverSent = code === "ECONNREFUSED" || code === "UND_ERR_CONNECT_TIMEOUT";
        const again = resendable && (neverSent || (retry && ["GET", "PUT", "DELETE"].includes(method)));
        if (!again) throw error;
      } finally {
        clearTimeout(timer);
      }
      if (response) {
        if (response.ok) return response;
        error = errorFrom(response.status, await response.text(), response.headers.get("retry-after"));
        if (!retry || !resendable || !retryable(error)) throw error;
      }
      const delay = this._retryDelay(attempt, error);
      if (delay == null) throw error;
      await sleep(delay * 1000);
    }
  }

  async _json(method, path, options) {
    return (await this._send(method, path, options)).json();
  }

  async *_events(method, path, options) {
    const response = await this._send(method, path, options);
    for await (const [name, data, id] of sseEvents(textLines(chunksOf(response.body, this.timeout)))) {
      const event = streamEvent(name, data, id);
      if (!event) continue;
      yield event;
      if (event.type === "exit") return;
    }
    throw new ConnectionFailed("the stream ended before the command did (a proxy or the server closed it)");
  }

  /** How long to wait for a command's answer: its own timeout (else the server's largest, 300 s by default) plus the request's. */
  _commandTimeout(timeout) {
    return this.timeout + (timeout ?? MAX_COMMAND_SECONDS);
  }

  /**
   * Creates the session (or finds it: same id, same caller) and returns it.
   * `id` may be omitted (a fresh one is made); options: image, memoryLimit, cpuLimit,
   * runtime, ttlSeconds, env, network (patterns), fromSnapshot.
   */
  async session(id, options = {}) {
    if (id && typeof id === "object") [id, options] = [undefined, id];
    const sessionId = id ?? `sdk-${randomUUID().replaceAll("-", "").slice(0, 20)}`;
    const raw = await this._json("POST", "/sessions", {
      json: dropUndefined({
        session_id: sessionId,
        image: options.image,
        memory_limit: options.memoryLimit,
        cpu_limit: options.cpuLimit,
        runtime: options.runtime,
        ttl_seconds: options.ttlSeconds,
        env: options.env,
        network: options.network ? { allow: options.network } : undefined,
        from_snapshot: options.fromSnapshot,
      }),
    });
    return new Session(this, raw.session_id, toSession(raw));
  }

  /** Runs `use(session)` in a new session and deletes it afterwards (unless `keep`). */
  async withSession(options, use) {
    const session = await this.session(options?.id, options ?? {});
    try {
      return await use(session);
    } finally {
      if (!options?.keep) await session.delete({ missingOk: true });
    }
  }

  async sessions() {
    return (await this._json("GET", "/sessions")).sessions.map(toSession);
  }

  execution(id) { return new Execution(this, id, ""); }
  context(id) { return new Context(this, id, "", ""); }

  async snapshots() {
    return (await this._json("GET", "/snapshots")).snapshots.map(toSnapshot);
  }
  async snapshot(id) {
    return toSnapshot(await this._json("GET", `/snapshots/${seg(id)}`));
  }
  async deleteSnapshot(id) {
    await this._send("DELETE", `/snapshots/${seg(id)}`);
  }

  async generate(query, { language } = {}) {
    const raw = await this._json("POST", "/generate", { json: dropUndefined({ query, language }), retry: false });
    return { query: raw.query, language: raw.language, code: raw.generated_code, validationResult: raw.validation_result, explanation: raw.explanation };
  }
  async generateAndExecute(query, { language, sessionId, timeout, memoryLimit, cpuLimit } = {}) {
    const json = dropUndefined({ query, language, session_id: sessionId, timeout, memory_limit: memoryLimit, cpu_limit: cpuLimit });
    return toResult(await this._json("POST", "/generate-and-execute", { json, retry: false, timeout: this._commandTimeout(timeout) }));
  }

  /** The nodes sharing the server's store ({node_id, nodes: [...]}); the admin role only. */
  async nodes() { return this._json("GET", "/nodes"); }
  /** Drains a node (no new sessions; its sessions suspended to resume elsewhere), or lifts it; the admin role only. */
  async drainNode(nodeId, drain = true) { return this._json("PUT", `/nodes/${seg(nodeId)}/drain`, { json: { drain } }); }
  async health() { return this._json("GET", "/health"); }
  async ready() { return this._json("GET", "/ready", { retry: false }); }
  async openapi() { return this._json("GET", "/openapi.json"); }
  async metrics(token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    return (await this._send("GET", "/metrics", { headers })).text();
  }
  /** One Model Context Protocol (JSON-RPC) message; a notification's answer is null. */
  async mcp(message) {
    const response = await this._send("POST", "/mcp", { json: message, headers: { Accept: "application/json, text/event-stream" }, retry: false });
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
}

function executeBody(sessionId, command, { timeout, cwd, stdin, env } = {}) {
  if (stdin instanceof Uint8Array) stdin = new TextDecoder().decode(stdin);
  return dropUndefined({ session_id: sessionId, command: commandLine(command), timeout, working_dir: cwd, stdin, env });
}

const idempotent = (key) => ({ "Idempotency-Key": key ?? randomUUID() });

export class Session {
  constructor(client, id, info) {
    this.client = client;
    this.id = id;
    this.created = info ?? null;
    this.files = new Files(this);
    this._contexts = new Map();
  }

  _path(rest = "") { return `/sessions/${seg(this.id)}${rest}`; }

  async info() { return toSession(await this.client._json("GET", this._path())); }
  async renew({ ttlSeconds } = {}) {
    return toSession(await this.client._json("POST", this._path("/renew"), { json: dropUndefined({ ttl_seconds: ttlSeconds }) }));
  }
  async suspend() { return toSession(await this.client._json("POST", this._path("/suspend"))); }
  async delete({ missingOk = false } = {}) {
    this._contexts.clear();
    try {
      await this.client._send("DELETE", this._path());
    } catch (err) {
      if (!(missingOk && err instanceof NotFound)) throw err;
    }
  }
  async [Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose")]() { await this.delete({ missingOk: true }); }

  async network() { return this.client._json("GET", this._path("/network")); }
  async setNetwork(allow) { return this.client._json("PUT", this._path("/network"), { json: { allow } }); }

  /** Runs a command and waits: a string is a command line, an array is argv. Safe to retry (Idempotency-Key). */
  async run(command, options = {}) {
    if ((options.timeout ?? 0) > LONGEST_ANSWER_SECONDS) {
      const started = await this.start(command, options);
      return started.wait({ timeout: this.client.timeout + options.timeout });
    }
    const raw = await this.client._json("POST", "/execute", {
      json: executeBody(this.id, command, options),
      headers: idempotent(options.idempotencyKey),
      timeout: this.client._commandTimeout(options.timeout),
    });
    return toResult(raw);
  }

  /** Runs a command, yielding stdout/stderr events as it writes, then one exit event with the result. */
  stream(command, options = {}) {
    return this.client._events("POST", "/execute", {
      json: executeBody(this.id, command, options),
      headers: { Accept: "text/event-stream" },
      retry: false,
      timeout: this.client._commandTimeout(options.timeout),
    });
  }

  /** Starts a command in the background; `pipe: true` keeps stdin open, `tty: {rows, cols}` gives it a terminal. */
  async start(command, options = {}) {
    const json = executeBody(this.id, command, options);
    if (options.pipe) {
      if (options.stdin != null) throw new TypeError("stdin data and pipe: true are exclusive");
      json.stdin = "pipe";
    }
    if (options.tty) json.tty = { rows: options.tty.rows, cols: options.tty.cols };
    const raw = await this.client._json("POST", "/executions", { json, headers: idempotent(options.idempotencyKey) });
    return new Execution(this.client, raw.execution_id, this.id);
  }

  async executions() { return (await this.client._json("GET", this._path("/executions"))).map(toStatus); }
  async snapshot() { return toSnapshot(await this.client._json("POST", this._path("/snapshots"), { retry: false })); }

  /** A new interpreter kept alive in the sandbox; its variables persist between runs. */
  async context(language = "python") {
    const raw = await this.client._json("POST", this._path("/contexts"), { json: { language }, retry: false });
    return new Context(this.client, raw.context_id, this.id, language);
  }

  /** Runs code in this session's context for `language` (made at the first call). */
  async runCode(code, { language = "python", timeout } = {}) {
    let context = this._contexts.get(language);
    if (!context) {
      context = this.context(language);
      this._contexts.set(language, context);
      // A context that could not be made is not kept: the next call tries again.
      context.catch(() => this._contexts.get(language) === context && this._contexts.delete(language));
    }
    try {
      return await (await context).run(code, { timeout });
    } catch (err) {
      // A context that ended (deleted, past its deadline, its interpreter gone) is
      // forgotten: the next call starts a new one; this one says so, as its variables are gone.
      if (err instanceof NotFound || err.code === "execution_not_running") this._contexts.delete(language);
      throw err;
    }
  }
}

export class Files {
  constructor(session) {
    this.session = session;
    this.client = session.client;
  }

  /** Writes a file (parents made): a string, bytes, a Blob, or a stream of any size. */
  async write(path, data) {
    const { body, again } = bodyOf(data);
    await this.client._send("PUT", this.session._path(`/files/${filePath(path)}`), {
      body, headers: { "Content-Type": "application/octet-stream" }, retry: again, timeout: null,
    });
  }
  /** The file's bytes. */
  async read(path) {
    return new Uint8Array(await new Response(await this.readStream(path)).arrayBuffer());
  }
  /** The file as a web ReadableStream of bytes, for large ones. */
  async readStream(path) {
    return (await this.client._send("GET", this.session._path(`/files/${filePath(path)}`))).body;
  }
  async list(dir = ".") {
    // "." is the workspace itself, which the server names by no dir at all.
    return this.client._json("GET", this.session._path("/files"), { query: { dir: dir === "." || dir === "" ? undefined : dir } });
  }
  async remove(path) { await this.client._send("DELETE", this.session._path(`/files/${filePath(path)}`)); }
  /** A directory (relative to /workspace; default all of it) as a tar stream. */
  async readArchive({ dir } = {}) {
    return (await this.client._send("GET", this.session._path("/archive"), { query: { path: dir } })).body;
  }
  /** Extracts a tar into a directory (relative to /workspace): all of it, or nothing. */
  async writeArchive(tar, { dir } = {}) {
    const { body, again } = bodyOf(tar);
    await this.client._send("PUT", this.session._path("/archive"), {
      query: { path: dir }, body, headers: { "Content-Type": "application/x-tar" }, retry: again, timeout: null,
    });
  }
}

export class Execution {
  constructor(client, id, sessionId) {
    this.client = client;
    this.id = id;
    this.sessionId = sessionId;
  }

  _path(rest = "") { return `/executions/${seg(this.id)}${rest}`; }

  async status() { return toStatus(await this.client._json("GET", this._path())); }

  /** Waits for the end and returns the result; a failed execution throws its error. */
  async wait({ timeout, poll = 0.05 } = {}) {
    const deadline = timeout == null ? null : Date.now() + timeout * 1000;
    for (;;) {
      const current = await this.status();
      if (current.result) return current.result;
      if (current.failure) throw errorFor(current.failure.error, current.failure.detail);
      if (deadline != null && Date.now() >= deadline) throw new Error(`execution ${this.id} still running after ${timeout} s`);
      await sleep(poll * 1000);
      poll = Math.min(poll * 2, 1);
    }
  }

  async cancel() { return toStatus(await this.client._json("POST", this._path("/cancel"))); }

  /** Up to 1 MiB of output from `since`; `next` is where to go on. */
  async output(since = { stdout: 0, stderr: 0 }) {
    const raw = await this.client._json("GET", this._path("/output"), {
      query: { stdout_offset: since.stdout ?? 0, stderr_offset: since.stderr ?? 0 },
    });
    return {
      stdout: raw.stdout,
      stderr: raw.stderr,
      next: { stdout: raw.stdout_offset, stderr: raw.stderr_offset },
      complete: raw.complete,
      ending: raw.ending ? toEnding(raw.ending) : null,
    };
  }

  /** Output from `since` as it comes, then an exit event; a broken connection resumes where it stopped. */
  async *events(since = { stdout: 0, stderr: 0 }) {
    let at = { stdout: since.stdout ?? 0, stderr: since.stderr ?? 0 };
    for (let failures = 0; ;) {
      try {
        const headers = { Accept: "text/event-stream", "Last-Event-ID": `${at.stdout}:${at.stderr}` };
        for await (const event of this.client._events("GET", this._path("/events"), { headers })) {
          failures = 0;
          if (event.at) at = event.at;
          yield event;
          if (event.type === "exit") return;
        }
      } catch (err) {
        if (err instanceof BrigError && !(err instanceof ConnectionFailed)) throw err;
        const delay = this.client._retryDelay(failures++, null);
        if (delay == null) throw err;
        await sleep(delay * 1000);
      }
    }
  }

  /** Bytes for stdin (started with pipe: true): true once taken, false if queued in the sandbox (never resend). */
  async write(data, { close = false } = {}) {
    const { body } = bodyOf(data);
    const response = await this.client._send("POST", this._path("/stdin"), {
      query: close ? { close: "true" } : undefined, body, headers: { "Content-Type": "application/octet-stream" }, retry: false,
    });
    return response.status === 204;
  }
  async closeStdin() { return this.write(new Uint8Array(), { close: true }); }

  async signal(signal) {
    const name = String(signal).toUpperCase().replace(/^SIG/, "");
    return toStatus(await this.client._json("POST", this._path("/signal"), { json: { signal: name }, retry: false }));
  }
  async resize(rows, cols) { await this.client._send("POST", this._path("/resize"), { json: { rows, cols } }); }

  /** A live, two-way connection (WebSocket) to its terminal or stdin pipe. */
  async attach({ since = { stdout: 0, stderr: 0 } } = {}) {
    const query = `stdout_offset=${since.stdout ?? 0}&stderr_offset=${since.stderr ?? 0}`;
    const attachment = new Attachment(this.client, this._path(`/attach?${query}`));
    await attachment._open();
    return attachment;
  }
}

// The attachment: just enough WebSocket (RFC 6455) over node:net / node:tls.

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TEXT = 1, BINARY = 2, CLOSE = 8, PING = 9;
const MAX_MESSAGE = 4 << 20;
const MAX_SEND = 1 << 20;

/** One final, masked client frame. */
export function wsFrame(opcode, payload) {
  const size = payload.length;
  const head = size < 126 ? Buffer.from([0x80 | opcode, 0x80 | size])
    : size < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, size >> 8, size & 255])
    : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(size)); return b; })()]);
  const mask = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < size; i++) masked[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, masked]);
}

export class Attachment {
  constructor(client, path) {
    this.client = client;
    this.target = path;
    this.exit = null;
    this.buffer = Buffer.alloc(0);
    this.fragments = [];
    this.fragmentOpcode = 0;
    this.pending = [];
    this.waiter = null;
    this.failure = null;
    this.closed = false;
  }

  _open() {
    const url = new URL(this.client.url + this.target);
    const secure = url.protocol === "https:";
    const port = Number(url.port) || (secure ? 443 : 80);
    const key = randomBytes(16).toString("base64");
    const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
    const lines = [
      `GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, "Upgrade: websocket", "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`, "Sec-WebSocket-Version: 13",
      ...Object.entries(this.client.headers).map(([k, v]) => `${k}: ${v}`),
    ];
    return new Promise((resolve, reject) => {
      const socket = secure ? tls.connect({ host: url.hostname, port, servername: url.hostname }) : net.connect({ host: url.hostname, port });
      this.socket = socket;
      let head = Buffer.alloc(0);
      let upgraded = false;
      const timer = setTimeout(() => socket.destroy(new ConnectionFailed("the attachment's handshake timed out")), this.client.timeout * 1000);
      socket.once(secure ? "secureConnect" : "connect", () => socket.write(lines.join("\r\n") + "\r\n\r\n"));
      socket.on("data", (chunk) => {
        if (upgraded) return this._take(chunk);
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        const text = head.subarray(0, end).toString("latin1");
        const status = Number(text.split(" ")[1]);
        if (status !== 101) {
          // An error answer: wait for its body (the connection closes, or the length arrives).
          const length = Number(/content-length:\s*(\d+)/i.exec(text)?.[1] ?? NaN);
          const body = head.subarray(end + 4);
          if (Number.isFinite(length) && body.length < length) return;
          clearTimeout(timer);
          socket.destroy();
          return reject(errorFrom(status, body.toString("utf8"), /retry-after:\s*(\S+)/i.exec(text)?.[1] ?? null));
        }
        if (!text.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) {
          clearTimeout(timer);
          socket.destroy();
          return reject(new ConnectionFailed("the server's WebSocket handshake did not match"));
        }
        upgraded = true;
        clearTimeout(timer);
        resolve(this);
        this._take(head.subarray(end + 4));
      });
      socket.on("error", (err) => {
        clearTimeout(timer);
        this._fail(err instanceof BrigError ? err : new ConnectionFailed(String(err.message)));
        if (!upgraded) reject(this.failure);
      });
      socket.on("close", () => {
        this.closed = true;
        if (!upgraded) reject(this.failure ?? new ConnectionFailed("the server closed the connection"));
        this._wake();
      });
    });
  }

  _fail(error) {
    this.failure ??= error;
    this._wake();
  }

  _wake() {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  _take(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) break;
      const fin = (b[0] & 0x80) !== 0, opcode = b[0] & 0x0f;
      let size = b[1] & 0x7f, at = 2;
      if (size === 126) { if (b.length < 4) break; size = b.readUInt16BE(2); at = 4; }
      else if (size === 127) { if (b.length < 10) break; size = Number(b.readBigUInt64BE(2)); at = 10; }
      if (size > MAX_MESSAGE) { this._fail(new ConnectionFailed("a WebSocket frame past 4 MiB")); this.socket.destroy(); return; }
      if (b.length < at + size) break;
      const payload = b.subarray(at, at + size);
      this.buffer = b.subarray(at + size);
      if (opcode === PING) this.socket.write(wsFrame(0xa, payload));
      else if (opcode === CLOSE) this.socket.end();
      else if (opcode === 0 || !fin) {
        if (opcode !== 0) this.fragmentOpcode = opcode;
        this.fragments.push(Buffer.from(payload));
        if (fin) { this._message(this.fragmentOpcode, Buffer.concat(this.fragments)); this.fragments = []; }
      } else this._message(opcode, Buffer.from(payload));
    }
    this._wake();
  }

  _message(opcode, data) {
    if (opcode === BINARY) this.pending.push(new Uint8Array(data));
    else if (opcode === TEXT) {
      let body = null;
      try { body = JSON.parse(data.toString("utf8")); } catch { return; }
      if (body?.exit) this.exit = toEnding(body.exit);
      else if (body?.error) this._fail(errorFor(body.error.error, body.error.detail, body.error));
    }
  }

  _write(frame) {
    if (this.closed) throw new ConnectionFailed("the attachment is closed");
    return new Promise((resolve, reject) => this.socket.write(frame, (err) => (err ? reject(err) : resolve())));
  }

  /** Bytes for its stdin (under a terminal, "\x03" is Ctrl-C). */
  async send(data) {
    const bytes = Buffer.from(data);
    // The server takes messages of at most 1 MiB.
    for (let at = 0; at < bytes.length; at += MAX_SEND) await this._write(wsFrame(BINARY, bytes.subarray(at, at + MAX_SEND)));
  }
  resize(rows, cols) { return this._write(wsFrame(TEXT, Buffer.from(JSON.stringify({ resize: { rows, cols } })))); }
  signal(signal) { return this._write(wsFrame(TEXT, Buffer.from(JSON.stringify({ signal: String(signal).toUpperCase().replace(/^SIG/, "") })))); }
  /** Ends its stdin (after the bytes sent before). */
  eof() { return this._write(wsFrame(TEXT, Buffer.from(JSON.stringify({ eof: true })))); }

  /** Its next output bytes, or null once it ended. */
  async recv() {
    for (;;) {
      if (this.pending.length) return this.pending.shift();
      if (this.failure) throw this.failure;
      if (this.exit || this.closed) return null;
      await new Promise((resolve) => { this.waiter = resolve; });
    }
  }

  async *[Symbol.asyncIterator]() {
    for (let chunk; (chunk = await this.recv()) !== null;) yield chunk;
  }

  /** Detaches (the command goes on). */
  close() {
    if (!this.closed) {
      this.socket.end(wsFrame(CLOSE, Buffer.alloc(0)));
      this.closed = true;
    }
  }
}

export class Context {
  constructor(client, id, sessionId, language) {
    this.client = client;
    this.id = id;
    this.sessionId = sessionId;
    this.language = language;
  }

  _path(rest = "") { return `/contexts/${seg(this.id)}${rest}`; }

  async run(code, { timeout } = {}) {
    const raw = await this.client._json("POST", this._path("/run"), {
      json: dropUndefined({ code, timeout }), retry: false, timeout: this.client._commandTimeout(timeout),
    });
    return toCode(raw);
  }
  // Not repeated: a second interrupt could stop the next cell.
  async interrupt() { await this.client._send("POST", this._path("/interrupt"), { retry: false }); }
  async delete() { await this.client._send("DELETE", this._path()); }
}

/** Which method is the SDK's form of each OpenAPI operation (checked against the live document by the tests). */
export const OPERATIONS = Object.freeze({
  execute: [Session, "run"],
  startExecution: [Session, "start"],
  getExecution: [Execution, "status"],
  cancelExecution: [Execution, "cancel"],
  getExecutionOutput: [Execution, "output"],
  followExecution: [Execution, "events"],
  writeExecutionStdin: [Execution, "write"],
  signalExecution: [Execution, "signal"],
  resizeExecution: [Execution, "resize"],
  attachExecution: [Execution, "attach"],
  listSessionExecutions: [Session, "executions"],
  createContext: [Session, "context"],
  runInContext: [Context, "run"],
  interruptContext: [Context, "interrupt"],
  deleteContext: [Context, "delete"],
  createSession: [Client, "session"],
  listSessions: [Client, "sessions"],
  getSession: [Session, "info"],
  renewSession: [Session, "renew"],
  suspendSession: [Session, "suspend"],
  deleteSession: [Session, "delete"],
  getSessionNetwork: [Session, "network"],
  setSessionNetwork: [Session, "setNetwork"],
  writeFile: [Files, "write"],
  readFile: [Files, "read"],
  listFiles: [Files, "list"],
  deleteFile: [Files, "remove"],
  readArchive: [Files, "readArchive"],
  writeArchive: [Files, "writeArchive"],
  createSnapshot: [Session, "snapshot"],
  listSnapshots: [Client, "snapshots"],
  getSnapshot: [Client, "snapshot"],
  deleteSnapshot: [Client, "deleteSnapshot"],
  generateCode: [Client, "generate"],
  generateAndExecute: [Client, "generateAndExecute"],
  listNodes: [Client, "nodes"],
  drainNode: [Client, "drainNode"],
  health: [Client, "health"],
  ready: [Client, "ready"],
  openapiDocument: [Client, "openapi"],
  scrapeMetrics: [Client, "metrics"],
  callMcp: [Client, "mcp"],
});

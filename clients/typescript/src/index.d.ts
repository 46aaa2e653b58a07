// Types of brig's client (index.js), written by hand: no build step.

/** The SDK's version; it follows the API's (`GET /openapi.json`: `info.version`). */
export declare const VERSION: string;

// Errors

export interface ErrorOptions {
  status?: number;
  code?: string;
  retryAfter?: number | null;
  body?: unknown;
}

/** Anything brig answered with an error, a call that reached no answer, or one refused before sending (`status` 0). */
export declare class BrigError extends Error {
  constructor(detail: string, options?: ErrorOptions);
  /** The HTTP status; 0 when nothing answered. */
  readonly status: number;
  /** The API's stable error code (`"command_not_allowed"`, ...). */
  readonly code: string;
  readonly detail: string;
  /** Seconds the server asked to wait, if it did. */
  readonly retryAfter: number | null;
  readonly body: unknown;
}
/** No answer: the server could not be reached or the connection broke. */
export declare class ConnectionFailed extends BrigError {}
/** 401: a missing, wrong or expired key or token. */
export declare class Unauthorized extends BrigError {}
/** 403: not allowed for this principal. */
export declare class Forbidden extends BrigError {}
/** 403 `command_not_allowed`: the allowlist or policy refused the command. */
export declare class CommandNotAllowed extends Forbidden {}
/** 404: unknown, or another principal's. */
export declare class NotFound extends BrigError {}
/** 409: exists already, or busy, or no longer running. */
export declare class Conflict extends BrigError {}
/** 410: left the server's keeping (`cursor_expired`, `result_evicted`). */
export declare class Gone extends BrigError {}
/** 413: a body, file or stdin past its limit. */
export declare class PayloadTooLarge extends BrigError {}
/** 400/405/415/422: the request itself is wrong; `detail` says how. */
export declare class InvalidRequest extends BrigError {}
/** 429: too many requests or a busy sandbox; see `retryAfter`. */
export declare class RateLimited extends BrigError {}
/** A quota of the principal is spent (sessions, snapshots). */
export declare class QuotaExceeded extends BrigError {}
/** 503: cannot serve now; retry later. */
export declare class Unavailable extends BrigError {}
/** Any other 5xx. */
export declare class ServerError extends BrigError {}

export declare function errorFrom(status: number, text: string, retryAfterHeader?: string | null): BrigError;
export declare function errorFor(code: string, detail: string, body?: unknown): BrigError;

// Values

/** A command line (split by the server, no shell) or argv (quoted to mean exactly those arguments). */
export type Command = string | readonly string[];
export type Bytes = Uint8Array | ArrayBuffer | Blob;
/** A body: a string, bytes, a web stream, or an (async) iterable of bytes (a Node stream is one). */
export type Body = string | Bytes | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export interface Result {
  stdout: string;
  stderr: string;
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  truncated: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** `exited`, `signalled`, `timed_out`, `cancelled` or `oom_killed`. */
  reason: string;
  /** Seconds. */
  duration: number;
  startedAt: string;
  finishedAt: string;
  sessionId: string;
  sessionCreated: boolean;
  sessionResumed: boolean;
  /** Set once another node recreated the session after its own was lost, as `SessionInfo.recreated` is. */
  sessionRecreated?: Recreation;
  raw: Record<string, unknown>;
}

/** A session's recreation on another node after its own was lost (no `snapshotId`: its workspace started empty). */
export interface Recreation {
  at: string;
  lostNode: string;
  snapshotId?: string;
}

/** Byte offsets into an execution's stdout and stderr. */
export interface Offsets {
  stdout: number;
  stderr: number;
}

export interface Ending {
  exitCode: number;
  signal: number | null;
  reason: string;
  raw: Record<string, unknown>;
}

export interface StdoutEvent {
  type: "stdout";
  data: string;
  /** Where the next byte starts (an execution's events only). */
  at: Offsets | null;
}
export interface StderrEvent {
  type: "stderr";
  data: string;
  at: Offsets | null;
}
export interface ExitEvent {
  type: "exit";
  exitCode: number;
  signal: number | null;
  reason: string;
  /** The whole result (`stream`), or null (an execution's events). */
  result: Result | null;
  at: Offsets | null;
}
export type Event = StdoutEvent | StderrEvent | ExitEvent;

export interface ExecutionStatus {
  executionId: string;
  sessionId: string;
  /** `running`, `completed`, `timed_out`, `cancelled` or `failed`. */
  status: string;
  running: boolean;
  result: Result | null;
  failure: { error: string; detail: string } | null;
  raw: Record<string, unknown>;
}

export interface Output {
  stdout: string;
  stderr: string;
  /** Where to read on from. */
  next: Offsets;
  complete: boolean;
  ending: Ending | null;
}

export interface SessionInfo {
  sessionId: string;
  /** `active`, `suspended` (or `starting`, `suspending`, `resuming`). */
  status: string;
  createdAt: string;
  expiresAt: string;
  ttlSeconds: number;
  image: string;
  runtime: string;
  /** Bytes. */
  memoryLimit: number;
  cpuLimit: number;
  /** Set once another node recreated the session after its own was lost (no `snapshotId`: its workspace started empty). */
  recreated?: Recreation;
  raw: Record<string, unknown>;
}

export interface Network {
  allow: string[];
  default: string[];
  enabled: boolean;
}

export interface Listing {
  dir: string;
  entries: { name: string; type: string; size: number }[];
  truncated: boolean;
}

export interface Snapshot {
  snapshotId: string;
  sessionId: string;
  bytes: number;
  sha256: string;
  createdAt: string;
}

export interface CodeResult {
  stdout: string;
  stderr: string;
  /** The repr of the last expression, like a notebook. */
  result: string | null;
  error: { name: string; message: string; traceback: string } | null;
  timedOut: boolean;
}

export interface Generated {
  query: string;
  language: string;
  code: string;
  validationResult: string;
  explanation: string;
}

// Options

export interface RetryOptions {
  /** Attempts in all (1: never retry). Default 4. */
  attempts?: number;
  /** First wait, seconds, doubling up to `maxBackoff`. Default 0.25. */
  backoff?: number;
  maxBackoff?: number;
  /** A `Retry-After` longer than this (seconds) is not waited for. Default 30. */
  maxWait?: number;
}

export interface ClientOptions {
  /** Default `BRIG_URL`, else http://localhost:8000. */
  url?: string;
  /** Default `BRIG_API_KEY`. */
  apiKey?: string;
  /** A JWT; default `BRIG_TOKEN`. */
  token?: string;
  /** Seconds each request may take; a command's own timeout is added while it runs. Default 60. */
  timeout?: number;
  retry?: RetryOptions;
}

export interface SessionOptions {
  image?: string;
  /** `"512m"`, `"1g"`, ... */
  memoryLimit?: string;
  cpuLimit?: number;
  runtime?: string;
  ttlSeconds?: number;
  env?: Record<string, string>;
  /** Egress patterns (`"pypi.org:443"`). */
  network?: string[];
  fromSnapshot?: string;
}

export interface RunOptions {
  /** Seconds. */
  timeout?: number;
  cwd?: string;
  stdin?: string | Uint8Array;
  env?: Record<string, string>;
}

export interface StartOptions extends RunOptions {
  /** Keep stdin open for `Execution.write` / `attach`. */
  pipe?: boolean;
  /** Run under a terminal of this size. */
  tty?: { rows: number; cols: number };
  idempotencyKey?: string;
}

// The client

export declare class Client {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly timeout: number;
  readonly retry: Required<RetryOptions>;
  readonly headers: Record<string, string>;

  /** Creates the session (or finds it: same id, same caller). A fresh id when none is given. */
  session(id?: string, options?: SessionOptions): Promise<Session>;
  session(options: SessionOptions): Promise<Session>;
  /** Runs `use` in a new session and deletes the session afterwards (unless `keep`). */
  withSession<T>(options: SessionOptions & { id?: string; keep?: boolean }, use: (session: Session) => Promise<T>): Promise<T>;
  sessions(): Promise<SessionInfo[]>;
  /** A handle on an execution started earlier. */
  execution(id: string): Execution;
  /** A handle on a code context made earlier. */
  context(id: string): Context;

  snapshots(): Promise<Snapshot[]>;
  snapshot(id: string): Promise<Snapshot>;
  deleteSnapshot(id: string): Promise<void>;

  generate(query: string, options?: { language?: string }): Promise<Generated>;
  generateAndExecute(
    query: string,
    options?: { language?: string; sessionId?: string; timeout?: number; memoryLimit?: string; cpuLimit?: number },
  ): Promise<Result>;

  /** The nodes sharing the server's store; the admin role only. */
  nodes(): Promise<{ node_id?: string; nodes: Record<string, unknown>[] }>;
  /** Drains a node (no new sessions; its sessions suspended to resume elsewhere), or lifts the drain; the admin role only. */
  drainNode(nodeId: string, drain?: boolean): Promise<{ node_id: string; draining: boolean }>;
  health(): Promise<Record<string, unknown>>;
  ready(): Promise<Record<string, unknown>>;
  openapi(): Promise<Record<string, any>>;
  /** Prometheus text; `token` is the server's METRICS_TOKEN. */
  metrics(token?: string): Promise<string>;
  /** One Model Context Protocol (JSON-RPC) message; a notification's answer is null. */
  mcp(message: Record<string, unknown>): Promise<Record<string, any> | null>;
}

export declare class Session {
  constructor(client: Client, id: string, info?: SessionInfo);
  readonly client: Client;
  readonly id: string;
  /** What the creation answered (null for a handle made with `new Session`). */
  readonly created: SessionInfo | null;
  /** The workspace (`/workspace`). */
  readonly files: Files;

  info(): Promise<SessionInfo>;
  renew(options?: { ttlSeconds?: number }): Promise<SessionInfo>;
  /** Keeps the workspace, removes the container; the next use resumes it. */
  suspend(): Promise<SessionInfo>;
  delete(options?: { missingOk?: boolean }): Promise<void>;
  network(): Promise<Network>;
  setNetwork(allow: string[]): Promise<Network>;

  /**
   * Runs a command and waits; safe to retry (it carries an Idempotency-Key). An argv
   * the server would refuse (`..`, control characters) rejects with InvalidRequest before sending.
   * A `timeout` past 240 s runs it in the background and waits (Node's fetch gives up on an answer after 300 s).
   */
  run(command: Command, options?: RunOptions & { idempotencyKey?: string }): Promise<Result>;
  /** Runs a command: stdout/stderr events as it writes, then one exit event with the result. */
  stream(command: Command, options?: RunOptions): AsyncIterable<Event>;
  /** Starts a command in the background. */
  start(command: Command, options?: StartOptions): Promise<Execution>;
  executions(): Promise<ExecutionStatus[]>;
  snapshot(): Promise<Snapshot>;
  /** A new interpreter kept alive in the sandbox. */
  context(language?: string): Promise<Context>;
  /** Runs code in this session's context for `language` (made at the first call); variables persist. */
  runCode(code: string, options?: { language?: string; timeout?: number }): Promise<CodeResult>;
}

export declare class Files {
  constructor(session: Session);
  /** Writes a file (parents made); a stream is sent as it comes, any size the workspace holds. */
  write(path: string, data: Body): Promise<void>;
  read(path: string): Promise<Uint8Array>;
  readStream(path: string): Promise<ReadableStream<Uint8Array>>;
  list(dir?: string): Promise<Listing>;
  remove(path: string): Promise<void>;
  /** A directory (relative to /workspace; default all of it) as a tar stream. */
  readArchive(options?: { dir?: string }): Promise<ReadableStream<Uint8Array>>;
  /** Extracts a tar into a directory (relative to /workspace): all of it, or nothing. */
  writeArchive(tar: Body, options?: { dir?: string }): Promise<void>;
}

export declare class Execution {
  constructor(client: Client, id: string, sessionId: string);
  readonly id: string;
  readonly sessionId: string;

  status(): Promise<ExecutionStatus>;
  /** Waits for the end; a failed execution rejects with its error. `timeout` in seconds. */
  wait(options?: { timeout?: number; poll?: number }): Promise<Result>;
  cancel(): Promise<ExecutionStatus>;
  /** Up to 1 MiB of output from `since`. */
  output(since?: Offsets): Promise<Output>;
  /** Output from `since` as it comes, then an exit event; resumes after a broken connection. */
  events(since?: Offsets): AsyncIterable<Event>;
  /** Bytes for stdin: true once taken, false if queued in the sandbox (never send them again). */
  write(data: string | Bytes, options?: { close?: boolean }): Promise<boolean>;
  closeStdin(): Promise<boolean>;
  /** `INT`, `TERM`, `KILL` or `HUP`. */
  signal(signal: string): Promise<ExecutionStatus>;
  resize(rows: number, cols: number): Promise<void>;
  /** A live WebSocket to its terminal or stdin pipe; output replayed from `since` (default the start). */
  attach(options?: { since?: Offsets }): Promise<Attachment>;
}

/** Bytes both ways with a running execution; iterate for its output. */
export declare class Attachment implements AsyncIterable<Uint8Array> {
  constructor(client: Client, path: string);
  /** How it ended, once it did. */
  readonly exit: Ending | null;
  /** Bytes for its stdin (under a terminal, "\x03" is Ctrl-C). */
  send(data: string | Uint8Array): Promise<void>;
  resize(rows: number, cols: number): Promise<void>;
  signal(signal: string): Promise<void>;
  /** Ends its stdin, after what was sent before. */
  eof(): Promise<void>;
  /** Its next output bytes, or null once it ended. */
  recv(): Promise<Uint8Array | null>;
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;
  /** Detaches; the command goes on. */
  close(): void;
}

export declare class Context {
  constructor(client: Client, id: string, sessionId: string, language: string);
  readonly id: string;
  readonly sessionId: string;
  readonly language: string;
  run(code: string, options?: { timeout?: number }): Promise<CodeResult>;
  /** A KeyboardInterrupt for the running cell; the context lives on. */
  interrupt(): Promise<void>;
  delete(): Promise<void>;
}

// Lower level

/** argv quoted for the server's POSIX word splitting. */
export declare function quote(argv: readonly string[]): string;
export declare function streamEvent(name: string, data: string, id: string | null): Event | null;
export declare function sseEvents(lines: AsyncIterable<string>): AsyncIterable<[string, string, string | null]>;
export declare function wsFrame(opcode: number, payload: Uint8Array): Buffer;

type Constructor = typeof Client | typeof Session | typeof Files | typeof Execution | typeof Context;
/** The SDK's method for each OpenAPI operation id. */
export declare const OPERATIONS: Readonly<Record<string, readonly [Constructor, string]>>;

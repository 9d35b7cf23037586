/**
 * The one registry of pfgate's coded errors.
 *
 * Every error that reaches a client or an operator carries a stable `code`
 * (`PFG_ERR_<AREA>_<WHAT>`) and, where it answers a request, an HTTP status.
 * Programmer misuse throws plain `TypeError`/`RangeError` instead (no code).
 * `docs/errors.md` lists every code; `test/shared/errors.test.ts` keeps the two in step.
 *
 * @module
 */
import { randomBytes } from 'node:crypto'

/** Every code, with its HTTP status and a one-line meaning (used by docs and tests). */
export const ERROR_CODES = {
  // CONFIG: start-up problems, never sent to clients
  PFG_ERR_CONFIG_INVALID: { status: 500, summary: 'a configuration file or flag is invalid' },

  // GATEWAY: the gateway itself
  PFG_ERR_GATEWAY_INTERNAL: {
    status: 500,
    summary: 'an unexpected error inside the gateway (its log line has the details, by ref)',
  },

  // AUTH
  PFG_ERR_AUTH_MISSING: { status: 401, summary: 'no bearer token was presented' },
  PFG_ERR_AUTH_INVALID: { status: 401, summary: 'the bearer token was rejected' },
  PFG_ERR_AUTH_FORBIDDEN: { status: 403, summary: 'the identity may not do this' },
  PFG_ERR_AUTH_UNAVAILABLE: {
    status: 503,
    summary: 'the API server that reviews tokens or access cannot answer (fail closed)',
  },
  PFG_ERR_AUTH_CSRF: {
    status: 403,
    summary: 'a console call that changes state came from another site or without its CSRF token',
  },
  PFG_ERR_AUTH_IMPERSONATION: {
    status: 403,
    summary: 'the request asked to impersonate someone (not supported)',
  },

  // ROUTE: request shape and resolution
  PFG_ERR_ROUTE_BAD_NAME: { status: 400, summary: 'a namespace, pod or node name is invalid' },
  PFG_ERR_ROUTE_BAD_PORT: { status: 400, summary: 'the port is missing or not 1..65535' },
  PFG_ERR_ROUTE_BAD_QUERY: { status: 400, summary: 'a query parameter is not supported' },
  PFG_ERR_ROUTE_POD_NOT_FOUND: { status: 404, summary: 'no such pod' },
  PFG_ERR_ROUTE_WRONG_NODE: { status: 404, summary: 'the pod is not on the named node' },
  PFG_ERR_ROUTE_NOT_FOUND: { status: 404, summary: 'no such path' },
  PFG_ERR_ROUTE_METHOD_NOT_ALLOWED: { status: 405, summary: 'the method is not allowed here' },
  PFG_ERR_ROUTE_POD_NOT_RUNNING: { status: 400, summary: 'the pod is not running' },
  PFG_ERR_ROUTE_NODE_UNKNOWN: { status: 503, summary: 'the pod’s node has no known agent' },
  PFG_ERR_ROUTE_NOT_READY: { status: 503, summary: 'the pod registry has not synced yet' },
  PFG_ERR_ROUTE_TARGET_NOT_FOUND: { status: 404, summary: 'no such service or workload' },
  PFG_ERR_ROUTE_NO_READY_POD: {
    status: 503,
    summary: 'the service or workload has no ready pod right now',
  },

  // PROTO: wire protocol faults
  PFG_ERR_PROTO_HTTP2_REQUIRED: {
    status: 400,
    summary: 'this endpoint needs HTTP/2 or an upgrade',
  },
  PFG_ERR_PROTO_BAD_HEADER: { status: 400, summary: 'a required header is missing or malformed' },
  PFG_ERR_PROTO_UPGRADE_REQUIRED: { status: 400, summary: 'an upgrade request was required' },
  PFG_ERR_PROTO_UNSUPPORTED: { status: 403, summary: 'no supported stream protocol was offered' },

  // RELAY: the gateway→agent hop
  PFG_ERR_RELAY_AGENT_UNAVAILABLE: { status: 502, summary: 'the node agent cannot be reached' },
  PFG_ERR_RELAY_CONNECT_REFUSED: { status: 502, summary: 'the pod refused the connection' },
  PFG_ERR_RELAY_CONNECT_TIMEOUT: { status: 504, summary: 'connecting to the pod timed out' },
  PFG_ERR_RELAY_DRAINING: { status: 503, summary: 'the gateway is shutting down' },
  PFG_ERR_RELAY_STREAM_RESET: { status: 502, summary: 'a stream was reset after it opened' },
  PFG_ERR_RELAY_CLIENT_LOST: {
    status: 0,
    summary: 'the client stopped answering PINGs (its link is down)',
  },

  // LIMIT
  PFG_ERR_LIMIT_STREAMS_PER_CONNECTION: {
    status: 429,
    summary: 'too many concurrent streams on this client connection',
  },
  PFG_ERR_LIMIT_STREAMS_PER_USER: {
    status: 429,
    summary: 'too many concurrent streams for the user',
  },
  PFG_ERR_LIMIT_OPEN_TIMEOUT: { status: 504, summary: 'the stream did not open in time' },
  PFG_ERR_LIMIT_IDLE: { status: 0, summary: 'the stream was idle for too long' },
  PFG_ERR_LIMIT_LIFETIME: { status: 0, summary: 'the stream reached its maximum lifetime' },
  PFG_ERR_LIMIT_HEADER_TOO_LARGE: { status: 431, summary: 'request headers are too large' },
  PFG_ERR_LIMIT_CONSOLE_BUSY: {
    status: 503,
    summary: 'too many admin console live views or audit searches at once',
  },
  PFG_ERR_LIMIT_BUFFER_BUDGET: {
    status: 0,
    summary: "a stalled stream was reset: the gateway's relay buffers were over budget",
  },

  // AUDIT
  PFG_ERR_AUDIT_UNAVAILABLE: { status: 503, summary: 'the audit sink cannot record (fail closed)' },

  // AGENT: the node agent's answers to the gateway
  PFG_ERR_AGENT_FORBIDDEN: { status: 403, summary: 'the caller is not the gateway' },
  PFG_ERR_AGENT_POD_NOT_FOUND: { status: 404, summary: 'the agent does not know the pod' },
  PFG_ERR_AGENT_CONNECT_REFUSED: { status: 502, summary: 'the pod port refused the connection' },
  PFG_ERR_AGENT_CONNECT_FAILED: { status: 502, summary: 'the pod port could not be reached' },
  PFG_ERR_AGENT_CONNECT_TIMEOUT: { status: 504, summary: 'connecting to the pod port timed out' },
  PFG_ERR_AGENT_NETNS: { status: 502, summary: 'the pod network namespace cannot be entered' },
  PFG_ERR_AGENT_RUNTIME_UNAVAILABLE: {
    status: 503,
    summary: 'the node’s container runtime cannot be asked where the pod is',
  },

  // CLI
  PFG_ERR_CLI_USAGE: { status: 0, summary: 'bad command-line arguments' },
  PFG_ERR_CLI_KUBECONFIG: { status: 0, summary: 'the kubeconfig is missing or invalid' },
  PFG_ERR_CLI_CONNECT: { status: 0, summary: 'the gateway cannot be reached' },
  PFG_ERR_CLI_LISTEN: { status: 0, summary: 'a local port cannot be listened on' },
  PFG_ERR_CLI_CREDENTIALS: {
    status: 0,
    summary: 'a credential (exec plugin, token file, login) cannot be had',
  },
} as const satisfies Record<string, { status: number; summary: string }>

/** A literal union of every code, so `switch (err.code)` narrows. */
export type AppErrorCode = keyof typeof ERROR_CODES

/** Options for {@link AppError}. */
export interface AppErrorOptions {
  /** The HTTP status, when it differs from the code's default. */
  statusCode?: number
  /** The underlying error. */
  cause?: unknown
  /** The ref that ties what the client is told to the gateway's log line ({@link newRef}). */
  ref?: string
}

/**
 * A coded error. `statusCode` is the HTTP status it answers with (0 when it is
 * never sent over HTTP); `message` is safe to show to the client.
 */
export class AppError extends Error {
  readonly code: AppErrorCode
  readonly statusCode: number
  /**
   * The ref the client was told (`… (ref XXXXXXXX)`), when there is one: whoever records or
   * logs the error uses the same ref.
   */
  ref: string | undefined

  constructor(code: AppErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'AppError'
    this.code = code
    this.statusCode = options.statusCode ?? ERROR_CODES[code].status
    this.ref = options.ref
  }
}

/** Type guard for {@link AppError}, by shape (works across duplicate module copies). */
export function isAppError(err: unknown): err is AppError {
  if (!(err instanceof Error)) return false
  const { code, statusCode } = err as Error & { code?: unknown; statusCode?: unknown }
  return typeof code === 'string' && code in ERROR_CODES && typeof statusCode === 'number'
}

/** Shorthand: `throw appError('PFG_ERR_ROUTE_BAD_PORT', 'port "x" is not a number')`. */
export function appError(code: AppErrorCode, message: string, options?: AppErrorOptions): AppError {
  return new AppError(code, message, options)
}

/** A short reference that ties what a client is told to the gateway's log line (8 hex digits). */
export function newRef(): string {
  return randomBytes(4).toString('hex')
}

/**
 * Codes whose messages carry internals (agent addresses, file paths, errno text): a client
 * gets only the message here and a ref; the gateway logs the details with the same ref
 * (and the audit record keeps them). See {@link publicError}.
 */
export const INTERNAL_DETAIL_MESSAGES: Partial<Record<AppErrorCode, string>> = {
  PFG_ERR_GATEWAY_INTERNAL: 'internal error',
  PFG_ERR_RELAY_AGENT_UNAVAILABLE: 'the node agent cannot be reached',
  PFG_ERR_AUDIT_UNAVAILABLE: 'the audit trail cannot record this stream; it is refused',
}

/** True when `err`'s message must not reach a client as it is ({@link publicError}). */
export function hidesDetail(err: unknown): boolean {
  return !isAppError(err) || INTERNAL_DETAIL_MESSAGES[err.code] !== undefined
}

/**
 * What a client is told about `err`, tagged with `ref` (the gateway's log line has the
 * same ref and the details): the error itself when its message is safe to show, else the
 * same code and status with a generic message (Teleport's tagged generic messages).
 * A thrown value that is not an AppError becomes `PFG_ERR_GATEWAY_INTERNAL` ({@link internalError}).
 */
export function publicError(err: unknown, ref: string): AppError {
  if (isAppError(err) && !hidesDetail(err)) return err
  const e = isAppError(err) ? err : internalError(err)
  const text = INTERNAL_DETAIL_MESSAGES[e.code] ?? 'internal error'
  return appError(e.code, `${text} (ref ${ref})`, { statusCode: e.statusCode, ref })
}

/**
 * `err` as an AppError: itself when it is one, else `PFG_ERR_GATEWAY_INTERNAL` with its
 * description (the log and the audit record keep it; a client gets `internal error` and a
 * ref, {@link publicError}).
 */
export function internalError(err: unknown): AppError {
  return isAppError(err)
    ? err
    : appError('PFG_ERR_GATEWAY_INTERNAL', describeError(err), { cause: err })
}

/** Returns the `code` property of any error-like value (Node's and dependencies' too). */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = err.code
    if (typeof code === 'string') return code
  }
  return undefined
}

/** A short one-line description of any thrown value, for logs and audit records. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = errorCode(err)
    return code !== undefined && !err.message.includes(code)
      ? `${code}: ${err.message}`
      : err.message
  }
  return String(err)
}

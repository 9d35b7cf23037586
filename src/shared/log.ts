/**
 * Logging: pino JSON lines (Fastify's logger), with every place a secret could
 * appear redacted. Components receive a `Logger`; only main.ts files create one.
 *
 * @module
 */
import { pino } from 'pino'
import type { Logger as PinoLogger, LoggerOptions } from 'pino'

/** The logger type every component takes. */
export type Logger = PinoLogger

/** Paths that may hold credentials in any log object we write. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers.cookie',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'authorization',
  'token',
  '*.token',
  'bearerToken',
  '*.bearerToken',
  'password',
  '*.password',
  'key',
  '*.key',
  'privateKey',
  '*.privateKey',
]

/** Options for {@link createLogger}. */
export interface LogOptions {
  /** pino level; default `info`. */
  level?: string
  /** Component name, added to every line. */
  name?: string
  /** Write to this fd (default 2: stderr, so stdout stays for program output). */
  fd?: number
}

/** pino options with redaction, for Fastify's `logger` option or {@link createLogger}. */
export function loggerOptions(options: LogOptions = {}): LoggerOptions {
  return {
    level: options.level ?? 'info',
    ...(options.name !== undefined ? { name: options.name } : {}),
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
}

/** Creates a logger writing JSON lines to stderr (or `fd`). */
export function createLogger(options: LogOptions = {}): Logger {
  return pino(loggerOptions(options), pino.destination({ fd: options.fd ?? 2, sync: false }))
}

/** A logger that discards everything (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

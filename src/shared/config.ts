/**
 * Configuration loading shared by every component: YAML files validated against a
 * JSON schema (ajv), every problem listed at once, defaults applied, result frozen.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { Ajv } from 'ajv'
import type { ErrorObject } from 'ajv'
import { appError } from './errors.js'

const ajv = new Ajv({
  allErrors: true,
  useDefaults: true,
  strict: true,
  // oneOf/anyOf branches name properties declared in the parent schema.
  strictRequired: false,
  allowUnionTypes: true,
})

/** Reads and parses a YAML file; throws `PFG_ERR_CONFIG_INVALID` naming the file. */
export function readYamlFile(path: string): unknown {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw appError('PFG_ERR_CONFIG_INVALID', `cannot read ${path}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  try {
    return parseYaml(text) ?? {}
  } catch (err) {
    throw appError('PFG_ERR_CONFIG_INVALID', `${path}: invalid YAML: ${(err as Error).message}`, {
      cause: err,
    })
  }
}

function formatError(e: ErrorObject): string {
  const where = e.instancePath === '' ? '(root)' : e.instancePath.slice(1).replaceAll('/', '.')
  switch (e.keyword) {
    case 'additionalProperties':
      return `${where}: unknown field "${String((e.params as { additionalProperty: string }).additionalProperty)}"`
    case 'required':
      return `${where}: missing required field "${String((e.params as { missingProperty: string }).missingProperty)}"`
    case 'enum':
      return `${where}: must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`
    default:
      return `${where}: ${e.message ?? e.keyword}`
  }
}

/**
 * Validates `value` against `schema` (applying its defaults in place) and returns it
 * deeply frozen. Throws `PFG_ERR_CONFIG_INVALID` listing every problem, one per line.
 */
export function validateConfig<T>(schema: object, value: unknown, source: string): Readonly<T> {
  const validate = ajv.compile<T>(schema)
  const copy: unknown = structuredClone(value)
  if (!validate(copy)) {
    const problems = (validate.errors ?? []).map(formatError)
    throw appError(
      'PFG_ERR_CONFIG_INVALID',
      `${source}: invalid configuration:\n  - ${[...new Set(problems)].join('\n  - ')}`,
    )
  }
  return deepFreeze(copy)
}

/** Freezes an object graph. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/** Parses `30s`, `500ms`, `5m`, `2h` or a number of milliseconds. */
export function parseDuration(value: string | number, what = 'duration'): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return value
  } else {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value.trim())
    if (m !== null) {
      const n = Number(m[1])
      const unit = m[2] as 'ms' | 's' | 'm' | 'h'
      return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit])
    }
  }
  throw appError(
    'PFG_ERR_CONFIG_INVALID',
    `invalid ${what} ${JSON.stringify(value)}: use a number of milliseconds or e.g. "500ms", "30s", "5m", "2h"`,
  )
}

/** Parses `10MiB`, `512KiB`, `1GiB`, `100MB` or a number of bytes. */
export function parseSize(value: string | number, what = 'size'): number {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) return value
  } else {
    const m = /^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/.exec(value.trim())
    if (m !== null) {
      const mult = {
        B: 1,
        KiB: 1024,
        MiB: 1024 ** 2,
        GiB: 1024 ** 3,
        KB: 1000,
        MB: 1000 ** 2,
        GB: 1000 ** 3,
      }[(m[2] ?? 'B') as 'B']
      return Number(m[1]) * mult
    }
  }
  throw appError(
    'PFG_ERR_CONFIG_INVALID',
    `invalid ${what} ${JSON.stringify(value)}: use a number of bytes or e.g. "512KiB", "10MiB"`,
  )
}

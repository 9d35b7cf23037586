import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  assertNamespace,
  assertObjectName,
  isDns1123Label,
  isDns1123Subdomain,
  parsePortHeader,
} from '../../src/protocol/names.js'

const labels: [string, boolean][] = [
  ['default', true],
  ['kube-system', true],
  ['a', true],
  ['0abc', true],
  ['a'.repeat(63), true],
  ['a'.repeat(64), false],
  ['', false],
  ['Default', false],
  ['-a', false],
  ['a-', false],
  ['a.b', false],
  ['a_b', false],
  ['a b', false],
  ['ü', false],
  ['../etc', false],
]
for (const [s, ok] of labels) {
  test(`namespace ${JSON.stringify(s.length > 20 ? s.slice(0, 8) + '…' + s.length : s)} is ${ok ? 'valid' : 'invalid'}`, () => {
    assert.equal(isDns1123Label(s), ok)
    if (ok) assertNamespace(s)
    else
      assert.throws(() => assertNamespace(s), { code: 'PFG_ERR_ROUTE_BAD_NAME', statusCode: 400 })
  })
}

const subdomains: [string, boolean][] = [
  ['echo', true],
  ['web-7d9f8-abcde', true],
  ['node-a.example.com', true],
  ['a'.repeat(253), true],
  ['a'.repeat(254), false],
  ['a..b', false],
  ['.a', false],
  ['a.', false],
  ['A', false],
  ['a/b', false],
  ['%2e%2e', false],
]
for (const [s, ok] of subdomains) {
  test(`pod name ${JSON.stringify(s.length > 20 ? s.slice(0, 8) + '…' + s.length : s)} is ${ok ? 'valid' : 'invalid'}`, () => {
    assert.equal(isDns1123Subdomain(s), ok)
    if (ok) assertObjectName('pod', s)
    else assert.throws(() => assertObjectName('pod', s), { code: 'PFG_ERR_ROUTE_BAD_NAME' })
  })
}

const ports: [string | string[] | undefined, number | undefined][] = [
  ['1', 1],
  ['5000', 5000],
  ['65535', 65535],
  [['8080'], 8080],
  ['0', undefined],
  ['65536', undefined],
  ['05000', undefined],
  ['+80', undefined],
  ['-1', undefined],
  ['80 ', undefined],
  ['8e1', undefined],
  ['0x50', undefined],
  ['', undefined],
  [undefined, undefined],
  [['80', '81'], undefined],
  [[], undefined],
]
for (const [value, want] of ports) {
  test(`port header ${JSON.stringify(value)} → ${want ?? 'PFG_ERR_ROUTE_BAD_PORT'}`, () => {
    if (want !== undefined) assert.equal(parsePortHeader(value), want)
    else
      assert.throws(() => parsePortHeader(value), {
        code: 'PFG_ERR_ROUTE_BAD_PORT',
        statusCode: 400,
      })
  })
}

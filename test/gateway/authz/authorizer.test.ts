/**
 * The authorizer: default deny, and a matrix of users × groups × namespaces × pod
 * patterns × port ranges, plus the admin role — with rules parsed from YAML-shaped config
 * by the real config loader.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Authorizer, globToRegExp } from '../../../src/gateway/authz/authorizer.js'
import { AUTHENTICATED_GROUP } from '../../../src/gateway/auth/authenticator.js'
import type { Identity } from '../../../src/gateway/auth/authenticator.js'
import { parseGatewayConfig } from '../../../src/gateway/config.js'
import { isAppError } from '../../../src/shared/errors.js'

function id(user: string, ...groups: string[]): Identity {
  return { user, groups: [...groups, AUTHENTICATED_GROUP], expiresAt: Date.now() + 60_000 }
}

/** A full gateway config around `authorization`, validated by the real loader. */
function load(authorization: unknown): ReturnType<typeof parseGatewayConfig> {
  return parseGatewayConfig(
    {
      tls: { cert: 'c', key: 'k' },
      agents: { ca: 'a', cert: 'c', key: 'k' },
      registry: { source: 'static', file: 'r.yaml' },
      auth: { issuer: 'i', audience: 'a', jwks: { file: 'j.json' } },
      authorization,
    },
    'test',
    '/tmp',
  )
}

describe('default deny', () => {
  test('no rules: nobody may forward, see a pod, or use the admin API', () => {
    const a = new Authorizer(load({}).authorization)
    for (const who of [id('alice'), id('root', 'system:masters'), id('', AUTHENTICATED_GROUP)]) {
      assert.equal(a.canPortForward(who, 'default', 'web', 80), false)
      assert.equal(a.canAccessPod(who, 'default', 'web'), false)
      assert.equal(a.isAdmin(who), false)
    }
  })
})

describe('the matrix', () => {
  const a = new Authorizer(
    load({
      rules: [
        // alice: only the echo pod's port 5000 in default.
        { users: ['alice'], namespaces: ['default'], pods: ['echo'], ports: [5000] },
        // group dev: web-* pods in dev and staging, ports 8000-8099 and 9090.
        {
          groups: ['dev'],
          namespaces: ['dev', 'staging'],
          pods: ['web-*'],
          ports: ['8000-8099', 9090],
        },
        // group dba: db-? pods anywhere, port 5432; and user carol the same.
        { users: ['carol'], groups: ['dba'], namespaces: ['*'], pods: ['db-?'], ports: ['5432'] },
        // Every authenticated user: the public "status" pod, any port (default ports).
        { groups: [AUTHENTICATED_GROUP], namespaces: ['public'], pods: ['status'] },
      ],
      admins: { users: ['root'], groups: ['pfgate:admins'] },
    }).authorization,
  )
  const alice = id('alice')
  const dave = id('dave', 'dev')
  const dba = id('erin', 'dba')
  const carol = id('carol')
  const nobody = id('mallory')
  const admin = id('bob', 'pfgate:admins')
  const root = id('root')

  const matrix: [string, Identity, string, string, number, boolean][] = [
    ['alice on her pod and port', alice, 'default', 'echo', 5000, true],
    ['alice, another port', alice, 'default', 'echo', 5001, false],
    ['alice, a similar pod name', alice, 'default', 'echo2', 5000, false],
    ['alice, another namespace', alice, 'dev', 'echo', 5000, false],
    ['dev group, web-1:8080 in dev', dave, 'dev', 'web-1', 8080, true],
    ['dev group, range start', dave, 'staging', 'web-a', 8000, true],
    ['dev group, range end', dave, 'staging', 'web-a', 8099, true],
    ['dev group, just past the range', dave, 'staging', 'web-a', 8100, false],
    ['dev group, the single port', dave, 'dev', 'web-x', 9090, true],
    ['dev group, pattern needs the dash', dave, 'dev', 'web', 8080, false],
    ['dev group, prod namespace', dave, 'prod', 'web-1', 8080, false],
    ['dba group, any namespace', dba, 'prod', 'db-0', 5432, true],
    ['dba group, ? is one character', dba, 'prod', 'db-10', 5432, false],
    ['dba group, another port', dba, 'prod', 'db-0', 5433, false],
    ['carol by name in the same rule', carol, 'x', 'db-1', 5432, true],
    ['every authenticated user, public/status any port', nobody, 'public', 'status', 1, true],
    ['every authenticated user, high port', nobody, 'public', 'status', 65535, true],
    ['nobody elsewhere', nobody, 'default', 'echo', 5000, false],
    ['an admin is not a forwarder by being admin', admin, 'default', 'echo', 5000, false],
    ['the admin user neither', root, 'dev', 'web-1', 8080, false],
  ]
  for (const [what, who, ns, pod, port, allowed] of matrix) {
    test(`${allowed ? 'allow' : 'deny '} ${what}`, () => {
      assert.equal(a.canPortForward(who, ns, pod, port), allowed)
      if (allowed) assert.equal(a.canAccessPod(who, ns, pod), true)
    })
  }

  test('canAccessPod: some port of the pod is allowed', () => {
    assert.equal(a.canAccessPod(alice, 'default', 'echo'), true)
    assert.equal(a.canAccessPod(alice, 'default', 'web'), false)
    assert.equal(a.canAccessPod(dave, 'prod', 'web-1'), false)
  })

  test('the admin role, by user or by group, and nobody else', () => {
    assert.equal(a.isAdmin(admin), true)
    assert.equal(a.isAdmin(root), true)
    for (const who of [alice, dave, dba, carol, nobody, id('bob'), id('rooted', 'root')]) {
      assert.equal(a.isAdmin(who), false, who.user)
    }
  })

  test('names are matched exactly: no case folding, no regexp injection', () => {
    assert.equal(a.canPortForward(id('Alice'), 'default', 'echo', 5000), false)
    assert.equal(a.canPortForward(id('dave', 'Dev'), 'dev', 'web-1', 8080), false)
    assert.equal(globToRegExp('web.*').test('webx1'), false)
    assert.equal(globToRegExp('web.*').test('web.1'), true)
    assert.equal(globToRegExp('a+b').test('aab'), false)
  })
})

describe('rules are validated at start-up', () => {
  for (const [what, rule] of [
    ['a rule naming no one', { namespaces: ['default'] }],
    ['a rule without namespaces', { users: ['a'] }],
    ['a reversed port range', { users: ['a'], namespaces: ['x'], ports: ['9000-8000'] }],
    ['port 0', { users: ['a'], namespaces: ['x'], ports: [0] }],
    ['port 65536', { users: ['a'], namespaces: ['x'], ports: ['1-65536'] }],
    ['an unknown field', { users: ['a'], namespaces: ['x'], verbs: ['*'] }],
  ] as const) {
    test(what, () => {
      assert.throws(
        () => load({ rules: [rule] }),
        (e: unknown) => isAppError(e) && e.code === 'PFG_ERR_CONFIG_INVALID',
      )
    })
  }
})

describe('UDP ports are granted apart from TCP ports', () => {
  test('ports grant no UDP; udpPorts grant no TCP; the default is no UDP at all', () => {
    const a = new Authorizer(
      load({
        rules: [
          { users: ['alice'], namespaces: ['default'], ports: ['1-65535'] },
          { users: ['bob'], namespaces: ['default'], ports: [8080], udpPorts: ['53', '5000-5001'] },
        ],
      }).authorization,
    )
    assert.equal(a.canPortForward(id('alice'), 'default', 'dns', 53), true)
    assert.equal(a.canPortForward(id('alice'), 'default', 'dns', 53, 'udp'), false)
    assert.equal(a.canPortForward(id('bob'), 'default', 'dns', 53, 'udp'), true)
    assert.equal(a.canPortForward(id('bob'), 'default', 'dns', 5001, 'udp'), true)
    assert.equal(a.canPortForward(id('bob'), 'default', 'dns', 5002, 'udp'), false)
    assert.equal(a.canPortForward(id('bob'), 'default', 'dns', 53), false)
    assert.equal(a.canPortForward(id('bob'), 'default', 'dns', 8080), true)
    assert.equal(a.canPortForward(id('bob'), 'default', 'dns', 8080, 'udp'), false)
  })

  test('a bad UDP range is a config error naming its path', () => {
    assert.throws(
      () => load({ rules: [{ users: ['a'], namespaces: ['x'], udpPorts: ['9-3'] }] }),
      /authorization\.rules\.0\.udpPorts/,
    )
  })
})

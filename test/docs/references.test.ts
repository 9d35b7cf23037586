/**
 * The repository stands on its own: every file a comment or a doc cites is in it, every
 * `docs/X.md#anchor` names one of X.md's headings, section marks (§) cite only outside
 * standards by name, and no path of one machine appears. The checker itself is tested on
 * samples that must fail.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  checkReferences,
  headingAnchor,
  markdownAnchors,
  repositoryFiles,
  workingTree,
} from '../helpers/doc-references.js'
import type { RepositoryView } from '../helpers/doc-references.js'

/** The repository root (tests run from dist/test/docs). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
/** The checker and this test, which cite bad references on purpose. */
const SAMPLES = ['test/docs/references.test.ts', 'test/helpers/doc-references.ts']

test('every reference in the repository points inside it', () => {
  const repo = workingTree(ROOT)
  const files = repositoryFiles(ROOT)
  assert.ok(files.includes('docs/kubernetes-protocols.md'), 'the walk sees docs/')
  assert.ok(files.includes('src/gateway/forward/forwarder.ts'), 'the walk sees src/')
  const problems = []
  let scanned = 0
  for (const file of files) {
    if (SAMPLES.includes(file)) continue
    const text = readFileSync(join(ROOT, file), 'utf8')
    if (text.includes('\0')) continue // not text
    scanned++
    problems.push(...checkReferences(file, text, repo))
  }
  assert.ok(scanned > 150, `only ${scanned} files scanned`)
  assert.deepEqual(
    problems.map((p) => `${p.file}:${p.line}: ${p.ref} — ${p.why}`),
    [],
  )
})

test('heading anchors are GitHub-style', () => {
  assert.equal(headingAnchor("The kubelet's side"), 'the-kubelets-side')
  assert.equal(headingAnchor('Credentials, TLS and ALPN'), 'credentials-tls-and-alpn')
  assert.equal(
    headingAnchor('Errors before 200: a status and a Kubernetes `Status` body'),
    'errors-before-200-a-status-and-a-kubernetes-status-body',
  )
  assert.equal(headingAnchor('`pfgate audit`'), 'pfgate-audit')
  const anchors = markdownAnchors(
    '# Title\n## Tests\n```sh\n# not a heading\n```\n## Tests\n### client-node and the Python client\n',
  )
  assert.deepEqual([...anchors].sort(), [
    'client-node-and-the-python-client',
    'tests',
    'tests-1',
    'title',
  ])
})

/** A small repository for the samples. */
const sample: RepositoryView = {
  exists: (p) =>
    ['docs/protocol.md', 'docs/spdy.md', 'README.md', 'src/shared/errors.ts', 'docs'].includes(p),
  anchors: (p) => (p === 'docs/protocol.md' ? new Set(['http2-settings']) : new Set()),
}

test('the checker accepts what is in the repository', () => {
  const ok = [
    '// see docs/protocol.md#http2-settings and src/shared/errors.js',
    '/** docs/spdy.md, README.md, RFC 9113 §6.5.2, draft-mbelshe-httpbis-spdy-00 §2.6.10.1 */',
    'https://github.com/kubernetes/kubernetes/blob/master/CHANGELOG.md#v1 is a URL',
    '/etc/pfgate/config/agent.yaml is a path in the container, dist/test/**/*.test.js a glob',
  ]
  for (const text of ok) assert.deepEqual(checkReferences('src/x.ts', text, sample), [], text)
  // Relative markdown links resolve against the citing file.
  assert.deepEqual(
    checkReferences('docs/a.md', 'see [spdy](spdy.md), [up](../README.md)', sample),
    [],
  )
})

test('the checker finds references that point outside the repository', () => {
  const bad: Array<[string, RegExp]> = [
    ['// the wire rules are in PROTOCOLS.md §6.3', /no such file/],
    ['// DESIGN.md says so', /no such file/],
    ['see docs/protocol.md#no-such-heading', /no heading with the anchor #no-such-heading/],
    ['example in config/agent.yaml', /no such file/],
    ['kubectl falls back (§7.4)', /section mark/],
    ['read /root/notes.txt', /one machine/],
    ['or /home/me/pfgate', /one machine/],
  ]
  for (const [text, why] of bad) {
    const found = checkReferences('src/x.ts', text, sample)
    assert.ok(
      found.some((p) => why.test(p.why)),
      `${text}: ${JSON.stringify(found)}`,
    )
  }
  const inDoc = checkReferences('docs/protocol.md', 'line one\n[x](#gone)', sample)
  assert.deepEqual(
    inDoc.map((p) => [p.line, p.ref]),
    [[2, '](#gone)']],
  )
})

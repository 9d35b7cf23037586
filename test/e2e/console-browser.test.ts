/**
 * The admin console in a real browser: Debian's chromium driven by playwright-core,
 * against a dev cluster (gateway, agents, demo pods as processes) and the real CLI.
 * An admin logs in with a pasted token, watches a transfer through `pfgate port-forward`
 * grow on the live page, ends it from the page (the local client sees a reset; the
 * audit record names the admin), searches the audit by user and outcome, opens the
 * stream's timeline and exports the result. A non-admin and an anonymous visitor are
 * refused, a forged cross-site request is refused, the page breaks no CSP rule, and
 * axe-core finds no serious accessibility violation on any page.
 *
 * Screenshots of each page are saved in test-artifacts/console/ (git-ignored).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { dial, eventually } from '../helpers/net.js'
import { tokenFor, trailPath, waitForRecords } from '../helpers/gateway.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'

/** Debian's chromium (scripts/test-setup.mjs installs it; nothing downloads a browser). */
const CHROMIUM = '/usr/bin/chromium'
const ROOT = new URL('../../../', import.meta.url).pathname
const ARTIFACTS = join(ROOT, 'test-artifacts', 'console')
const AXE = readFileSync(join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8')

let cluster: DevCluster & { cleanup(): Promise<void> }
let browser: Browser
let context: BrowserContext
let page: Page
let forwarder: CliProcess
let localPort: number
let adminToken: string
let developerToken: string
let evil: Server | undefined
const sockets: Socket[] = []
/** Every CSP violation the browser reported. */
const cspViolations: string[] = []

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true })
  cluster = await startTestCluster()
  adminToken = await tokenFor(cluster, 'ada', ['pfgate:admins'])
  developerToken = await tokenFor(cluster, 'devon', ['pfgate:developers'])
  forwarder = runCli(['port-forward', '--quiet', 'echo', ':5000'], {
    KUBECONFIG: cluster.kubeconfig,
    HOME: cluster.dir,
  })
  const [fwd] = parseForwarding(await forwarder.waitForLines(2))
  localPort = fwd?.port as number
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  // The dev cluster's certificate is its own CA's; the browser is told to accept it.
  context = await browser.newContext({
    baseURL: cluster.gatewayUrl,
    ignoreHTTPSErrors: true,
    acceptDownloads: true,
    viewport: { width: 1400, height: 900 },
  })
  page = await context.newPage()
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text())
  })
})

after(async () => {
  for (const s of sockets) s.destroy()
  await browser?.close()
  await new Promise<void>((resolve) =>
    evil !== undefined ? evil.close(() => resolve()) : resolve(),
  )
  await forwarder?.stop()
  await cluster?.cleanup()
})

async function screenshot(name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

/** axe-core on the current page: no serious or critical violation. */
async function accessible(what: string): Promise<void> {
  // Evaluated through the debugging protocol, not as a page script: the CSP stays as is.
  await page.evaluate(AXE)
  const violations = await page.evaluate(async () => {
    const axe = (
      globalThis as unknown as {
        axe: { run(): Promise<{ violations: { id: string; impact: string; help: string }[] }> }
      }
    ).axe
    const r = await axe.run()
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help }))
  })
  const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
  assert.deepEqual(serious, [], `${what}: ${JSON.stringify(violations)}`)
}

/** What a fetch from the page gets (same origin, the page's cookies). */
function pageFetch(path: string, init: { method?: string; headers?: Record<string, string> } = {}) {
  return page.evaluate(
    async ({ path, init }) => {
      const res = await fetch(path, init)
      return { status: res.status, body: await res.text() }
    },
    { path, init },
  )
}

async function loginWith(token: string): Promise<void> {
  await page.getByLabel('Bearer token').fill(token)
  await page.getByRole('button', { name: 'Log in' }).click()
}

describe('admin console in chromium', () => {
  test('an anonymous visitor gets the login page and nothing else', async () => {
    const res = await page.goto('/console/')
    assert.equal(res?.status(), 200)
    const csp = (await res?.allHeaders())?.['content-security-policy'] ?? ''
    assert.match(csp, /script-src 'self'/)
    await page.getByLabel('Bearer token').waitFor()
    await screenshot('login')
    await accessible('login page')
    for (const path of ['api/live', 'api/audit', 'api/audit/export?format=csv']) {
      const r = await pageFetch(path)
      assert.equal(r.status, 401, path)
    }
    const kill = await pageFetch('api/streams/x', { method: 'DELETE' })
    assert.equal(kill.status, 401)
  })

  test('a non-admin is refused at login and gets no console', async () => {
    await loginWith(developerToken)
    await page.getByRole('alert').filter({ hasText: 'not an admin' }).waitFor()
    assert.equal(await context.cookies().then((c) => c.length), 0)
    assert.deepEqual(JSON.parse((await pageFetch('api/me')).body), { user: null })
    await screenshot('refused')
    const denial = await waitForRecords(
      trailPath(cluster),
      (rs) =>
        rs.find(
          (r) =>
            r.type === 'request.denied' && r.user === 'devon' && r.path === '/console/api/login',
        ),
      'the refused login',
    )
    assert.equal(denial.status, 403)
  })

  test('an admin logs in; the cookie is HttpOnly, Secure, SameSite=Strict', async () => {
    await loginWith(adminToken)
    await page.getByText('Logged in as').waitFor()
    const [cookie] = await context.cookies()
    assert.equal(cookie?.name, '__Host-pfgate-console')
    assert.deepEqual([cookie?.httpOnly, cookie?.secure, cookie?.sameSite], [true, true, 'Strict'])
    // The page's own script cannot read it.
    assert.equal(await page.evaluate('document.cookie'), '')
  })

  let killedStream = ''
  test('a transfer through pfgate port-forward grows on the live page; ending it resets the client', async () => {
    const sock = await dial(localPort)
    sockets.push(sock)
    let received = 0
    sock.on('data', (c: Buffer) => (received += c.length))
    const ended = new Promise<string>((resolve) => {
      sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
      sock.once('close', () => resolve('close'))
    })
    // A steady transfer: 32 KiB every 100 ms until the stream ends.
    const pump = setInterval(() => {
      if (!sock.destroyed) sock.write(randomBytes(32 * 1024))
    }, 100)
    try {
      await eventually(() => received > 0, 10_000, 'the echo')
      const row = page.locator('#streams tbody tr[data-stream]').first()
      await row.waitFor({ timeout: 15_000 })
      killedStream = (await row.getAttribute('data-stream')) as string
      assert.match(await row.innerText(), /\bdev\b[\s\S]*default\/echo:5000[\s\S]*node-a/)
      // The byte count on the page grows, sample after sample.
      const bytes = async (): Promise<number> =>
        Number(await row.locator('[data-bytes]').getAttribute('data-bytes'))
      const seen = [await bytes()]
      await eventually(
        async () => {
          const b = await bytes()
          if (b > (seen[seen.length - 1] as number)) seen.push(b)
          return seen.length >= 3
        },
        15_000,
        'the byte count to grow on the page',
      )
      await page.getByText('Bytes relayed per second:').waitFor()
      await screenshot('live')
      await accessible('live page')

      // End it from the page, by keyboard: the button, then the dialog's confirm.
      await page.getByRole('button', { name: `End stream ${killedStream}` }).focus()
      await page.keyboard.press('Enter')
      const dialog = page.getByRole('dialog')
      await dialog.waitFor()
      assert.match(
        await dialog.innerText(),
        /Its client sees a reset, and the audit record names you \(\s*ada\)/,
      )
      await screenshot('kill-confirm')
      await dialog.getByRole('button', { name: 'End stream' }).focus()
      await page.keyboard.press('Enter')
      assert.equal(await ended, 'ECONNRESET', 'the local client sees a reset')
      await page
        .getByRole('status')
        .filter({ hasText: `Ended stream ${killedStream}.` })
        .waitFor()
    } finally {
      clearInterval(pump)
    }
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === killedStream),
      'the close record',
    )
    assert.deepEqual(
      [rec.user, rec.endedBy, rec.endedByUser, rec.reason],
      ['dev', 'admin', 'ada', 'admin:stream'],
    )
  })

  test('audit search by user and outcome, the stream timeline, and the exports', async () => {
    await page.getByRole('button', { name: 'Audit', exact: true }).click()
    await page.getByLabel('User', { exact: true }).fill('dev')
    await page.getByLabel('Outcome').selectOption('admin')
    await page.getByRole('button', { name: 'Search' }).click()
    const results = page.locator('#audit-results')
    await results.locator('caption', { hasText: /^1 matching records?/ }).waitFor()
    const rows = await results.locator('tbody tr').allInnerTexts()
    assert.equal(rows.length, 1)
    assert.match(rows[0] ?? '', /stream\.closed\s+admin\s+dev[\s\S]*ended by admin \(ada\)/)
    await screenshot('audit')
    await accessible('audit page')

    // Outcome denied finds the non-admin's refused login.
    await page.getByLabel('User', { exact: true }).fill('devon')
    await page.getByLabel('Outcome').selectOption('denied')
    await page.getByRole('button', { name: 'Search' }).click()
    await results.locator('tbody tr', { hasText: '/console/api/login' }).waitFor()

    // Export of the current result: JSON lines and CSV.
    const [jsonl] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('link', { name: 'JSON lines' }).click(),
    ])
    const lines = readFileSync(await jsonl.path(), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord)
    assert.ok(lines.length >= 1)
    assert.ok(lines.every((r) => r.user === 'devon' && r.type === 'request.denied'))
    const [csv] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('link', { name: 'CSV' }).click(),
    ])
    const csvText = readFileSync(await csv.path(), 'utf8')
    assert.match(csvText, /^time,type,outcome,user,/)
    assert.match(csvText, /,request\.denied,denied,devon,/)

    // The killed stream's timeline, from the admin-outcome search.
    await page.getByLabel('User', { exact: true }).fill('dev')
    await page.getByLabel('Outcome').selectOption('admin')
    await page.getByRole('button', { name: 'Search' }).click()
    await page.getByRole('button', { name: `Timeline of stream ${killedStream}` }).click()
    const timeline = page.locator('.timeline ol')
    await timeline.waitFor()
    const events = await timeline.locator('li').allInnerTexts()
    assert.ok(
      events.some((e) => /stream\.opened/.test(e)),
      events.join('\n'),
    )
    assert.ok(
      events.some((e) => /stream\.closed .*ended by admin \(ada\)/.test(e)),
      events.join('\n'),
    )
    await screenshot('timeline')
    await accessible('timeline')
  })

  test('the same search through the admin API and `pfgate audit query` finds the same records', async () => {
    const qs = 'user=dev&outcome=admin'
    const api = await page.request.get(`/admin/v1/audit?${qs}`, {
      headers: { authorization: `Bearer ${adminToken}` },
    })
    assert.equal(api.status(), 200)
    const fromApi = ((await api.json()) as { items: AuditRecord[] }).items.map((r) => r.id)
    const fromPage = JSON.parse((await pageFetch(`api/audit?${qs}`)).body) as {
      items: AuditRecord[]
    }
    assert.deepEqual(
      fromPage.items.map((r) => r.id),
      fromApi,
    )
    const cli = await runCliToEnd([
      'audit',
      'query',
      '--file',
      trailPath(cluster),
      '--user',
      'dev',
      '--outcome',
      'admin',
      '-o',
      'json',
    ])
    assert.equal(cli.code, 0, cli.stderr)
    const fromCli = cli.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as AuditRecord).id)
    assert.deepEqual(fromCli.reverse(), fromApi)
    assert.ok(fromApi.length >= 1)
    const devon = await page.request.get(`/admin/v1/audit?${qs}`, {
      headers: { authorization: `Bearer ${developerToken}` },
    })
    assert.equal(devon.status(), 403)
  })

  test('a forged cross-site request is refused; a same-site call without the CSRF token too', async () => {
    // Another origin serves a page that posts to the console (the classic CSRF form).
    const target = `${cluster.gatewayUrl}/console/api/logout`
    evil = createServer((_req, res) => {
      res
        .writeHead(200, { 'content-type': 'text/html' })
        .end(
          `<form id="f" method="POST" action="${target}"><input name="x" value="1"></form>` +
            `<script>document.getElementById('f').submit()</script>`,
        )
    })
    await new Promise<void>((resolve) => evil?.listen(0, '127.0.0.1', () => resolve()))
    const port = (evil.address() as { port: number }).port
    const attacker = await context.newPage()
    const answered = attacker.waitForResponse((r) => r.url() === target)
    await attacker.goto(`http://127.0.0.1:${port}/`)
    const res = await answered
    assert.equal(res.status(), 403)
    assert.match(await res.text(), /PFG_ERR_AUTH_CSRF/)
    await attacker.close()
    // The same call from the console's own origin, without the token: refused as well.
    const noToken = await pageFetch('api/logout', { method: 'POST' })
    assert.equal(noToken.status, 403)
    // Still logged in: neither reached the logout.
    assert.equal(JSON.parse((await pageFetch('api/me')).body).user, 'ada')
    const refusals = await waitForRecords(
      trailPath(cluster),
      (rs) => {
        const r = rs.filter((x) => x.type === 'request.denied' && x.path === '/console/api/logout')
        return r.length >= 2 ? r : undefined
      },
      'the refusals',
    )
    assert.ok(
      refusals.every((r) => r.error?.code === 'PFG_ERR_AUTH_CSRF'),
      JSON.stringify(refusals),
    )
  })

  test('ending a whole client session from the page resets its connections', async () => {
    await page.getByRole('button', { name: 'Live', exact: true }).click()
    const sock = await dial(localPort)
    sockets.push(sock)
    const ended = new Promise<string>((resolve) => {
      sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
      sock.once('close', () => resolve('close'))
    })
    sock.write('hello')
    const streamRow = page.locator('#streams tbody tr[data-stream]').first()
    await streamRow.waitFor({ timeout: 15_000 })
    const streamId = (await streamRow.getAttribute('data-stream')) as string
    const sessionRow = page.locator('#sessions tbody tr[data-session]').first()
    const sessionId = (await sessionRow.getAttribute('data-session')) as string
    await page.getByRole('button', { name: `End session ${sessionId}` }).click()
    await page.getByRole('dialog').getByRole('button', { name: 'End session' }).click()
    assert.equal(await ended, 'ECONNRESET')
    await page
      .getByRole('status')
      .filter({ hasText: `Ended session ${sessionId}.` })
      .waitFor()
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === streamId),
      'the close record',
    )
    assert.deepEqual(
      [rec.sessionId, rec.endedBy, rec.endedByUser, rec.reason],
      [sessionId, 'admin', 'ada', 'admin:session'],
    )
  })

  test('the page broke no Content-Security-Policy rule; an injected inline script is blocked', async () => {
    assert.deepEqual(cspViolations, [])
    // The policy is enforced, and a violation would have been seen: an inline script
    // added to the page does not run, and the browser reports it.
    await page.evaluate(
      "const s = document.createElement('script'); s.textContent = 'globalThis.injected = 1'; document.body.append(s)",
    )
    assert.equal(await page.evaluate('globalThis.injected'), undefined)
    await eventually(() => cspViolations.length > 0, 5000, 'the violation report')
    assert.match(cspViolations[0] ?? '', /script-src 'self'/)
  })
})

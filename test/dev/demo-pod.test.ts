/**
 * `pfgate demo-pod`: the kinds it serves, and clear usage errors (exit 2) for the rest, as
 * a child process like the dev cluster and docker-compose run it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { once } from 'node:events'
import { runCli, runCliToEnd } from '../helpers/cli.js'

test('usage errors exit 2 with the reason; nothing listens', async () => {
  for (const [args, reason] of [
    [['--kind', 'udp', '--listen', '127.0.0.1:0'], /--kind udp: must be echo or http/],
    [['--kind', 'echo'], /at least one --listen is required/],
    [['--listen', 'localhost'], /--listen localhost: expected HOST:PORT/],
    [['--listen', '127.0.0.1:70000'], /expected HOST:PORT/],
    [['--bogus'], /bogus/],
  ] as const) {
    const r = await runCliToEnd(['demo-pod', ...args])
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, reason)
    assert.match(r.stderr, /usage: pfgate demo-pod --kind echo\|http/)
    assert.equal(r.stdout, '', 'no {"ports":…} line: nothing was started')
  }
  const help = await runCliToEnd(['demo-pod', '--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /usage: pfgate demo-pod/)
})

test('an echo pod echoes and stops on SIGTERM with exit 0', async () => {
  const pod = runCli(['demo-pod', '--kind', 'echo', '--listen', '127.0.0.1:0'])
  const [line] = await pod.waitForLines(1)
  const { ports } = JSON.parse(line as string) as { ports: number[] }
  const socket = connect(ports[0] as number, '127.0.0.1')
  socket.end('ping')
  let echoed = ''
  socket.on('data', (d: Buffer) => (echoed += d.toString()))
  await once(socket, 'end')
  assert.equal(echoed, 'ping')
  assert.equal(await pod.stop('SIGTERM'), 0)
})

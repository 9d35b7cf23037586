#!/usr/bin/env node
// Container health probe (docker-compose.yml): exits 0 when the target answers, 1 when it
// does not (within 5 s), 2 on bad arguments. No dependencies, so it runs in the image as is.
//
//   healthcheck.js tcp PORT            a TCP connection to 127.0.0.1:PORT is accepted
//   healthcheck.js https URL CA_FILE   GET URL, its certificate verified with CA_FILE, answers 200
import { readFileSync } from 'node:fs'
import { request } from 'node:https'
import { connect } from 'node:net'

const TIMEOUT_MS = 5000
const [kind, target, caFile] = process.argv.slice(2)

function done(ok, why) {
  if (!ok) process.stderr.write(`unhealthy: ${why}\n`)
  process.exit(ok ? 0 : 1)
}

if (kind === 'tcp' && /^\d+$/.test(target ?? '')) {
  const socket = connect({ host: '127.0.0.1', port: Number(target), timeout: TIMEOUT_MS })
  socket.once('connect', () => {
    socket.destroy()
    done(true)
  })
  socket.once('timeout', () => done(false, `127.0.0.1:${target}: timed out`))
  socket.once('error', (err) => done(false, `127.0.0.1:${target}: ${err.message}`))
} else if (kind === 'https' && target !== undefined && caFile !== undefined) {
  let ca
  try {
    ca = readFileSync(caFile)
  } catch (err) {
    done(false, err.message)
  }
  const req = request(target, { ca, timeout: TIMEOUT_MS }, (res) => {
    res.resume()
    done(res.statusCode === 200, `${target}: HTTP ${res.statusCode}`)
  })
  req.once('timeout', () => done(false, `${target}: timed out`))
  req.once('error', (err) => done(false, `${target}: ${err.message}`))
  req.end()
} else {
  process.stderr.write('usage: healthcheck.js tcp PORT | https URL CA_FILE\n')
  process.exit(2)
}

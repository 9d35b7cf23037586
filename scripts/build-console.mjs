#!/usr/bin/env node
// Builds the admin console's page (src/console-ui) into dist/src/console-ui: one
// JavaScript bundle (Preact, uPlot and the page), one stylesheet and index.html. The
// gateway serves these three files (src/gateway/console/plugin.ts); nothing is fetched
// from another origin at run time. Part of `npm run build`.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const src = join(root, 'src/console-ui')
const out = join(root, 'dist/src/console-ui')

mkdirSync(out, { recursive: true })
await build({
  entryPoints: { app: join(src, 'main.tsx') },
  outdir: out,
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['chrome110', 'firefox110'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'eof',
  logLevel: 'warning',
})
copyFileSync(join(src, 'index.html'), join(out, 'index.html'))

/**
 * Finds references in the repository's text that point outside it: a cited file that does
 * not exist, a `docs/X.md#anchor` whose heading is gone, a section mark (§) that is not an
 * outside standard's, a path of one machine. Used by test/docs/references.test.ts, which
 * runs it over every file and over samples that must fail.
 *
 * @module
 */
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, normalize, relative, sep } from 'node:path'

/** One reference that points nowhere. */
export interface ReferenceProblem {
  /** Repository-relative path of the citing file. */
  file: string
  line: number
  /** The reference as written. */
  ref: string
  why: string
}

/** What the checker may ask about the repository. */
export interface RepositoryView {
  /** Does this repository-relative path exist (file or directory)? */
  exists(path: string): boolean
  /** The anchors of a markdown file's headings (repository-relative path). */
  anchors(path: string): ReadonlySet<string>
}

/** Directories that are not the repository's own text. */
const SKIP_DIRS = new Set(['node_modules', 'dist', '.pfgate', '.git', 'bench-results'])
/** Files not written by hand. */
const SKIP_FILES = new Set(['package-lock.json'])
/** Top-level directories whose paths comments and docs cite. */
const TOP_DIRS = ['src', 'test', 'bench', 'scripts', 'config', 'deploy', 'docs', 'bin', '.ci']

/** GitHub's anchor for a heading text: lower case, punctuation dropped, spaces as `-`. */
export function headingAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-')
}

/** The anchors of a markdown document's headings (fenced code skipped; repeats get `-1`, `-2`). */
export function markdownAnchors(text: string): Set<string> {
  const out = new Set<string>()
  const seen = new Map<string, number>()
  let fence: string | undefined
  for (const line of text.split('\n')) {
    const f = /^\s*(```|~~~)/.exec(line)
    if (f !== null) {
      if (fence === undefined) fence = f[1]
      else if (fence === f[1]) fence = undefined
      continue
    }
    if (fence !== undefined) continue
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (h === null) continue
    const base = headingAnchor(h[1] as string)
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  return out
}

/** Replaces URLs with spaces (keeping offsets): what they cite is not in the repository. */
function blankUrls(text: string): string {
  return text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s)>\]'"`]+/gi, (u) => ' '.repeat(u.length))
}

function lineOf(text: string, offset: number): number {
  let n = 1
  for (let i = 0; i < offset; i++) if (text.charCodeAt(i) === 10) n++
  return n
}

/** `a/b/../c` as a repository-relative path, or undefined when it leaves the repository. */
function inRepo(path: string): string | undefined {
  const p = normalize(path).split(sep).join('/')
  return p.startsWith('../') || p === '..' || p.startsWith('/') ? undefined : p
}

/**
 * The problems in one file's text. `file` is its repository-relative path (references
 * resolve against its directory, the root and `docs/`).
 */
export function checkReferences(
  file: string,
  rawText: string,
  repo: RepositoryView,
): ReferenceProblem[] {
  const problems: ReferenceProblem[] = []
  const text = blankUrls(rawText)
  const dir = dirname(file)
  const report = (offset: number, ref: string, why: string): void => {
    problems.push({ file, line: lineOf(text, offset), ref, why })
  }

  // Markdown files by name: `docs/x.md`, `../README.md`, `spdy.md`, each maybe with #anchor.
  const mdRef = /(?<![\w/.-])((?:\.{1,2}\/)*(?:[\w.-]+\/)*[\w.-]*[\w-]\.md)(?:#([\w-]*))?/g
  for (const m of text.matchAll(mdRef)) {
    const ref = m[1] as string
    const candidates = ref.includes('/')
      ? [join(dir, ref), ref]
      : [join(dir, ref), ref, join('docs', ref)]
    const target = candidates.map(inRepo).find((p) => p !== undefined && repo.exists(p))
    if (target === undefined) {
      report(m.index, m[0], 'no such file in the repository (write what it says into docs/)')
      continue
    }
    const anchor = m[2]
    if (anchor !== undefined && anchor !== '' && !repo.anchors(target).has(anchor)) {
      report(m.index, m[0], `${target} has no heading with the anchor #${anchor}`)
    }
  }

  // In a markdown file, links to its own headings: `](#anchor)`.
  if (file.endsWith('.md')) {
    for (const m of text.matchAll(/\]\(#([\w-]+)\)/g)) {
      if (!repo.anchors(file).has(m[1] as string)) {
        report(m.index, m[0], `${file} has no heading with the anchor #${m[1]}`)
      }
    }
  }

  // Repository paths with an extension: `src/shared/errors.ts`, `config/gateway.yaml`.
  const top = TOP_DIRS.map((d) => d.replace('.', '\\.')).join('|')
  const pathRef = new RegExp(
    `(?<![\\w/.*-])((?:${top})/[\\w./-]*\\.(?:ts|js|mjs|cjs|md|ya?ml|json|sh))(?![\\w*])`,
    'g',
  )
  for (const m of text.matchAll(pathRef)) {
    const ref = m[1] as string
    if (ref.endsWith('.md')) continue // checked above
    const twin = ref.replace(/\.js$/, '.ts') // sources cite their compiled names
    if (!repo.exists(ref) && !repo.exists(twin)) {
      report(m.index, ref, 'no such file in the repository')
    }
  }

  // Section marks cite an outside standard by name (RFC 9113 §6.5.2); ours are anchors.
  for (const m of text.matchAll(/§/g)) {
    const before = text.slice(Math.max(0, m.index - 80), m.index)
    if (!/(?:\bRFC \d+|\bdraft-[\w.-]+) $/.test(before)) {
      report(
        m.index,
        text.slice(Math.max(0, m.index - 20), m.index + 8).replace(/\s+/g, ' '),
        'a section mark must follow the RFC or draft it cites; cite our docs as docs/X.md#anchor',
      )
    }
  }

  // Paths of one machine.
  for (const m of text.matchAll(/(?<![\w.-])\/(?:work|home|Users|root)\/[\w./-]*/g)) {
    report(m.index, m[0], 'a path on one machine; the repository must stand on its own')
  }
  return problems
}

/** Every hand-written text file of the repository, repository-relative. */
export function repositoryFiles(root: string): string[] {
  const out: string[] = []
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name)
      if (SKIP_DIRS.has(name)) continue // `.git` is a file in a worktree
      if (statSync(p).isDirectory()) walk(p)
      else if (!SKIP_FILES.has(name)) {
        out.push(relative(root, p).split(sep).join('/'))
      }
    }
  }
  walk(root)
  return out
}

/** A {@link RepositoryView} of the working tree at `root`. */
export function workingTree(root: string): RepositoryView {
  const anchors = new Map<string, Set<string>>()
  return {
    exists(path) {
      try {
        statSync(join(root, path))
        return true
      } catch {
        return false
      }
    },
    anchors(path) {
      let a = anchors.get(path)
      if (a === undefined) {
        a = markdownAnchors(readFileSync(join(root, path), 'utf8'))
        anchors.set(path, a)
      }
      return a
    },
  }
}

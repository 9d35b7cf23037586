import { test } from 'node:test'
import assert from 'node:assert/strict'
import { clip, hasControlChars, isPrintable, plainText, printable } from '../../src/shared/text.js'

test('printable escapes what moves the cursor, recolours, reorders or hides text', () => {
  assert.equal(printable('web-0'), 'web-0')
  assert.equal(printable('zoë 日本語 ✓'), 'zoë 日本語 ✓', 'printable text is kept')
  assert.equal(printable('a\nb\rc\td'), 'a\\x0ab\\x0dc\\x09d')
  assert.equal(printable('x\u001b[8mhidden'), 'x\\x1b[8mhidden')
  assert.equal(printable('\u009b31m'), '\\x9b31m', 'C1 CSI')
  assert.equal(printable('\u007f'), '\\x7f')
  assert.equal(printable('abc\u202edcba'), 'abc\\u202edcba', 'bidi override')
  assert.equal(printable('a\u2028b\u2066c\u200bd\ufeff'), 'a\\u2028b\\u2066c\\u200bd\\ufeff')
  // The backslash itself, so that `\x1b` in the output can only come from an ESC.
  assert.equal(printable('DOMAIN\\user'), 'DOMAIN\\\\user')
  assert.equal(printable('literal \\x1b'), 'literal \\\\x1b')
  assert.equal(isPrintable('a\\b'), false)
  assert.equal(hasControlChars('DOMAIN\\user'), false, 'a backslash is no control')
  assert.equal(hasControlChars('a\u001bb'), true)
  assert.equal(hasControlChars('x\u202ey'), true)
})

test('clip and plainText bound untrusted text and say how much was left out', () => {
  assert.equal(clip('abcdef', 10), 'abcdef')
  assert.equal(clip('abcdef', 3), 'abc…[+3]')
  assert.equal(clip('ab😀cd', 3), 'ab…[+4]', 'a surrogate pair is never split')
  assert.equal(plainText('short', 10), 'short')
  const long = 'a'.repeat(15_000)
  assert.equal(plainText(long, 128), `${'a'.repeat(128)}…[+${15_000 - 128}]`)
  // Escapes count toward the bound and are never cut in half.
  assert.equal(plainText('ab\u001bcd', 5), 'ab…[+3]')
  assert.equal(plainText('ab\u001bcd', 6), 'ab\\x1b…[+2]')
  assert.equal(plainText('\n'.repeat(100), 9), '\\x0a\\x0a…[+98]')
  assert.equal(plainText('😀😀', 3), '😀…[+2]')
})

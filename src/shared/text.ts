/**
 * Text from outside (names in paths, user agents, token claims) made safe to show: in a
 * terminal table, a log line, an audit record. Anyone can put a newline, an ANSI escape
 * (`ESC[8m` hides the rest of a line) or a bidi override into a pod name; printed as is,
 * it forges rows of `pfgate audit query` or hides what follows. {@link printable} escapes
 * every such character, and the backslash itself, so an escape in the output can only
 * have come from the escaping; {@link clip} bounds the length.
 *
 * @module
 */

/**
 * Characters that move the cursor, change colours, reorder or hide text: C0 controls,
 * DEL, C1 controls, the Arabic letter mark, zero-width and directional marks, line and
 * paragraph separators, bidi embeddings/overrides/isolates, word joiner and invisible
 * operators, the BOM.
 */
const CONTROL_CLASS = String.raw`\u0000-\u001f\u007f-\u009f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff`

const CONTROL = new RegExp(`[${CONTROL_CLASS}]`)
/** What {@link printable} escapes: those, and `\` (so that escapes stay unambiguous). */
const UNSAFE = new RegExp(`[${CONTROL_CLASS}\\\\]`)
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'g')

/** True when `text` has a control, invisible or direction-changing character. */
export function hasControlChars(text: string): boolean {
  return CONTROL.test(text)
}

/** `\x1b`, `\u202e`, `\\`: how one unsafe character is shown. */
function escapeChar(ch: string): string {
  if (ch === '\\') return '\\\\'
  const code = ch.charCodeAt(0)
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`
}

/** True when `text` has nothing {@link printable} would change. */
export function isPrintable(text: string): boolean {
  return !UNSAFE.test(text)
}

/** `text` with every control, invisible or direction-changing character escaped (and `\`). */
export function printable(text: string): string {
  return isPrintable(text) ? text : text.replace(UNSAFE_ALL, escapeChar)
}

/**
 * `text` cut to at most `max` characters, marked with how much was cut
 * (`abc…[+1234]`; the mark is beyond `max`). A surrogate pair is never split.
 */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text
  let end = max
  const c = text.charCodeAt(end - 1)
  if (c >= 0xd800 && c <= 0xdbff) end--
  return `${text.slice(0, end)}…[+${text.length - end}]`
}

/**
 * {@link printable} within `max` characters: as many whole characters (or escapes) as fit,
 * then the mark of what was left out, counted in characters of `text` (`a\x1b…[+1234]`).
 */
export function plainText(text: string, max: number): string {
  if (text.length <= max && isPrintable(text)) return text
  let out = ''
  let used = 0
  while (used < text.length) {
    const code = text.charCodeAt(used)
    // A surrogate pair is one character: never split.
    const width = code >= 0xd800 && code <= 0xdbff && used + 1 < text.length ? 2 : 1
    const ch = text.slice(used, used + width)
    const piece = width === 1 && UNSAFE.test(ch) ? escapeChar(ch) : ch
    if (out.length + piece.length > max) break
    out += piece
    used += width
  }
  return used < text.length ? `${out}…[+${text.length - used}]` : out
}

/**
 * The pfgate admin console (served by the gateway under /console/). Bundled with uPlot
 * and Preact by scripts/build-console.mjs; nothing is loaded from another origin.
 */
import 'uplot/dist/uPlot.min.css'
import './console.css'
import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { ApiError, getJson, send } from './api.js'
import type { Me } from './api.js'
import { AuditView } from './audit.js'
import { LiveView } from './live.js'

function Login({ onLogin }: { onLogin: (me: Me) => void }) {
  const [token, setToken] = useState('')
  const [error, setError] = useState<string | undefined>(undefined)
  const [busy, setBusy] = useState(false)
  const submit = async (): Promise<void> => {
    setBusy(true)
    setError(undefined)
    try {
      onLogin(await send<Me>('POST', 'api/login', undefined, { token }))
      setToken('')
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 403
          ? `Refused: ${err.message}. The console is for admins only.`
          : `Refused: ${(err as Error).message}`,
      )
    } finally {
      setBusy(false)
    }
  }
  return (
    <main id="main">
      <h1>pfgate admin console</h1>
      <form
        class="login"
        aria-label="Log in"
        onSubmit={(e) => {
          e.preventDefault()
          void submit()
        }}
      >
        <label for="token">Bearer token (an admin's)</label>
        <textarea
          id="token"
          name="token"
          rows={4}
          autocomplete="off"
          spellcheck={false}
          value={token}
          onInput={(e) => setToken((e.target as HTMLTextAreaElement).value)}
        />
        <p class="hint">
          Pasted once: the gateway verifies it and keeps your login in a cookie this page cannot
          read. The token itself is not stored.
        </p>
        <button type="submit" disabled={busy || token.trim() === ''}>
          Log in
        </button>
        {error !== undefined ? (
          <p role="alert" class="error">
            {error}
          </p>
        ) : null}
      </form>
    </main>
  )
}

function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined)
  const [tab, setTab] = useState<'live' | 'audit'>('live')
  const [timeline, setTimeline] = useState<string | undefined>(undefined)
  const [message, setMessage] = useState('')
  useEffect(() => {
    getJson<Me | { user: null }>('api/me').then(
      (m) => setMe(m.user === null ? null : m),
      () => setMe(null),
    )
  }, [])
  if (me === undefined) return <p>Loading…</p>
  if (me === null) return <Login onLogin={setMe} />
  const logout = async (): Promise<void> => {
    await send('POST', 'api/logout', me.csrf).catch(() => undefined)
    setMe(null)
  }
  const showTimeline = (id: string | undefined): void => {
    setTimeline(id)
    if (id !== undefined) setTab('audit')
  }
  return (
    <>
      <header class="top">
        <h1>pfgate admin console</h1>
        <nav aria-label="Views">
          <button
            type="button"
            aria-current={tab === 'live' ? 'page' : undefined}
            onClick={() => setTab('live')}
          >
            Live
          </button>{' '}
          <button
            type="button"
            aria-current={tab === 'audit' ? 'page' : undefined}
            onClick={() => setTab('audit')}
          >
            Audit
          </button>
        </nav>
        <p class="who">
          Logged in as <strong>{me.user}</strong>{' '}
          <button type="button" onClick={() => void logout()}>
            Log out
          </button>
        </p>
      </header>
      <p class="status" role="status" aria-live="polite">
        {message}
      </p>
      <main id="main">
        {tab === 'live' ? (
          <LiveView me={me} announce={setMessage} onTimeline={showTimeline} />
        ) : (
          <AuditView timeline={timeline} onTimeline={showTimeline} />
        )}
      </main>
    </>
  )
}

render(<App />, document.getElementById('app') as HTMLElement)

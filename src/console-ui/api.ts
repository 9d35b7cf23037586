/** Calls to the console API (same origin, the login cookie; the CSRF token on changes). */

/** The logged-in admin, as the page knows it. */
export interface Me {
  user: string
  csrf: string
  expiresAt: number
}

/** A refusal or failure, with the gateway's message (a Kubernetes Status body). */
export class ApiError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

async function parse<T>(res: Response): Promise<T> {
  const body = (await res.json().catch(() => ({}))) as { message?: string }
  if (!res.ok) throw new ApiError(res.status, body.message ?? `HTTP ${res.status}`)
  return body as T
}

export async function getJson<T>(path: string): Promise<T> {
  return parse<T>(await fetch(path, { headers: { accept: 'application/json' } }))
}

/** A state-changing call: JSON body, the login's CSRF token in its header. */
export async function send<T>(
  method: 'POST' | 'DELETE',
  path: string,
  csrf: string | undefined,
  body?: unknown,
): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (csrf !== undefined) headers['x-pfgate-csrf'] = csrf
  const init: RequestInit = { method, headers }
  if (body !== undefined) {
    headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  return parse<T>(await fetch(path, init))
}

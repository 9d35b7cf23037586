/**
 * One collection's list + watch loop (what client-go's reflector does) and its part of
 * the registry's view.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Dispatcher } from 'undici'
import { Backoff } from '../../../shared/backoff.js'
import type { Logger } from '../../../shared/log.js'
import type { KubeRegistryOptions } from './config.js'
import { rec, str } from './objects.js'
import type { Obj } from './objects.js'
import { LineSplitter } from './line-splitter.js'
import { KubeApiError, RelistNeeded, isGone } from './api-error.js'

export interface Resource<T> {
  /** API path of the collection, e.g. `/api/v1/pods`. */
  path: string
  labelSelector?: string
  map: (obj: unknown) => T | undefined
  key: (item: T) => string
  same: (a: T, b: T) => boolean
  /** An identity beyond the key (pod UID): a change means delete + add, not modify. */
  identity?: (item: T) => string
  emit: (type: 'added' | 'modified' | 'deleted', item: T) => void
}

/** A watch that lasted less than this and brought nothing is treated as a failure (backoff). */
const MIN_HEALTHY_WATCH_MS = 1000
/** How much of an error response body is read for its Status message. */
export const MAX_ERROR_BODY = 64 * 1024

/** Everything a reflector needs from its registry. */
export interface ReflectorHost {
  readonly signal: AbortSignal
  readonly settings: Required<Omit<KubeRegistryOptions, 'credentials' | 'logger' | 'labelSelector'>>
  readonly logger: Logger
  /** GET `path?query`; `watchMs` is the watch's duration for a watch, undefined for a list. */
  request(path: string, query: URLSearchParams, watchMs?: number): Promise<Dispatcher.ResponseData>
  onSynced(): void
  onError(path: string, err: unknown, attempt: number): void
}

/** One collection's list + watch loop and its part of the view. */
export class Reflector<T> {
  readonly items = new Map<string, T>()
  readonly resource: Resource<T>
  resourceVersion = ''
  synced = false
  readonly #host: ReflectorHost
  #lastListAt = 0
  readonly #backoff: Backoff

  constructor(host: ReflectorHost, resource: Resource<T>) {
    this.#host = host
    this.resource = resource
    this.#backoff = new Backoff({ ...host.settings.backoff, random: host.settings.random })
  }

  /** Runs until the registry aborts. Never rejects. */
  async run(): Promise<void> {
    const { signal } = this.#host
    let needList = true
    let goneStreak = 0
    while (!signal.aborted) {
      // Set once the current watch has delivered an event: it was a working watch.
      const watchState = { healthy: false }
      try {
        if (needList) {
          await this.#list()
          needList = false
          this.#backoff.reset()
          if (!this.synced) {
            this.synced = true
            this.#host.onSynced()
          }
        }
        const started = Date.now()
        const result = await this.#watch(watchState)
        if (result === 'expired') {
          this.#host.logger.info({ path: this.resource.path }, 'watch expired (410): relisting')
          needList = true
          // A relist straight after a 410 is the normal recovery; only repeats back off.
          if (goneStreak++ === 0) continue
        } else {
          // The server ended the watch (timeoutSeconds): resume from the last version.
          goneStreak = 0
          const resync = this.#host.settings.resyncPeriodMs
          if (resync > 0 && Date.now() - this.#lastListAt >= resync) needList = true
          if (watchState.healthy || Date.now() - started >= MIN_HEALTHY_WATCH_MS) {
            this.#backoff.reset()
            continue
          }
          // An empty watch closed at once: the server is unwell; do not spin.
        }
      } catch (err) {
        if (signal.aborted) break
        if (watchState.healthy) {
          this.#backoff.reset()
          goneStreak = 0
        }
        this.#host.onError(this.resource.path, err, this.#backoff.attempt + 1)
        if (isGone(err)) {
          // 410 on a list: its continue token expired; start the list over.
          needList = true
          if (goneStreak++ === 0) continue
        } else if (err instanceof RelistNeeded || err instanceof RangeError) {
          needList = true
        }
        // Anything else (network, timeouts, 401/403/429/5xx): retry the same step,
        // a watch resuming from the last resourceVersion seen.
      }
      try {
        await sleep(this.#backoff.next(), undefined, { signal })
      } catch {
        break // aborted
      }
    }
  }

  async #list(): Promise<void> {
    const { path, labelSelector } = this.resource
    const fresh = new Map<string, T>()
    let cont = ''
    let rv: string
    do {
      const q = new URLSearchParams({ limit: String(this.#host.settings.pageSize) })
      if (cont !== '') q.set('continue', cont)
      if (labelSelector !== undefined) q.set('labelSelector', labelSelector)
      const res = await this.#host.request(path, q)
      const body = rec(await res.body.json())
      const meta = rec(body?.metadata)
      const items = body?.items
      if (body === undefined || meta === undefined || !Array.isArray(items)) {
        throw new KubeApiError(502, '', `GET ${path}: the list response is not a List object`)
      }
      for (const obj of items) {
        const item = this.resource.map(obj)
        if (item !== undefined) fresh.set(this.resource.key(item), item)
      }
      rv = str(meta.resourceVersion) ?? ''
      cont = str(meta.continue) ?? ''
    } while (cont !== '')
    this.#replace(fresh)
    this.resourceVersion = rv
    this.#lastListAt = Date.now()
  }

  /** Replaces the view with a fresh list and emits the difference. */
  #replace(fresh: Map<string, T>): void {
    for (const [key, old] of this.items) {
      if (!fresh.has(key)) {
        this.items.delete(key)
        this.resource.emit('deleted', old)
      }
    }
    for (const item of fresh.values()) this.#upsert(item)
  }

  #upsert(item: T): void {
    const key = this.resource.key(item)
    const old = this.items.get(key)
    this.items.set(key, item)
    if (old === undefined) {
      this.resource.emit('added', item)
    } else if (
      this.resource.identity !== undefined &&
      this.resource.identity(old) !== this.resource.identity(item)
    ) {
      // Same name, another object (deleted and re-created while we were not watching).
      this.resource.emit('deleted', old)
      this.resource.emit('added', item)
    } else if (!this.resource.same(old, item)) {
      this.resource.emit('modified', item)
    }
  }

  #remove(item: T): void {
    const key = this.resource.key(item)
    const old = this.items.get(key)
    if (old === undefined) return
    const id = this.resource.identity
    // A late DELETED for an older incarnation must not remove the current one.
    if (id !== undefined && id(item) !== '' && id(old) !== '' && id(old) !== id(item)) return
    this.items.delete(key)
    this.resource.emit('deleted', item)
  }

  async #watch(state: { healthy: boolean }): Promise<'expired' | 'ended'> {
    const { path, labelSelector } = this.resource
    const { watchTimeoutMs, random, maxEventBytes } = this.#host.settings
    const timeoutSeconds = Math.max(1, Math.floor((watchTimeoutMs / 1000) * (1 + random())))
    const q = new URLSearchParams({
      watch: '1',
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
    })
    if (labelSelector !== undefined) q.set('labelSelector', labelSelector)
    let res: Dispatcher.ResponseData
    try {
      res = await this.#host.request(path, q, timeoutSeconds * 1000)
    } catch (err) {
      if (isGone(err)) return 'expired'
      throw err
    }
    const splitter = new LineSplitter(maxEventBytes)
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        for (const line of splitter.push(chunk)) {
          if (this.#onEvent(line) === 'expired') return 'expired'
          state.healthy = true
        }
      }
    } finally {
      // Returning early (410) leaves the body unread: release the connection.
      if (!res.body.destroyed) res.body.destroy()
    }
    if (splitter.pending > 0) {
      throw new Error(`watch ${path} ended inside an event (${splitter.pending} bytes)`)
    }
    return 'ended'
  }

  /** Applies one watch event; 'expired' asks for a relist. */
  #onEvent(line: string): 'expired' | undefined {
    let event: Obj | undefined
    try {
      event = rec(JSON.parse(line))
    } catch {
      event = undefined
    }
    const object = rec(event?.object)
    if (event === undefined || object === undefined) {
      throw new RelistNeeded(`watch ${this.resource.path}: undecodable event`)
    }
    const type = event.type
    const rv = str(rec(object.metadata)?.resourceVersion)
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const item = this.resource.map(object)
        if (item !== undefined) {
          if (type === 'DELETED') this.#remove(item)
          else this.#upsert(item)
        }
        if (rv !== undefined && rv !== '') this.resourceVersion = rv
        return undefined
      }
      case 'BOOKMARK':
        if (rv !== undefined && rv !== '') this.resourceVersion = rv
        return undefined
      case 'ERROR': {
        const code = typeof object.code === 'number' ? object.code : 0
        if (code === 410) return 'expired'
        throw new RelistNeeded(
          `watch ${this.resource.path}: ERROR ${code} ${str(object.reason) ?? ''}: ${str(object.message) ?? ''}`,
        )
      }
      default:
        this.#host.logger.debug({ path: this.resource.path, type }, 'ignoring unknown watch event')
        return undefined
    }
  }
}

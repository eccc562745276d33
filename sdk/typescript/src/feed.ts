// Why: `client.feed.subscribe(...)`, the `/ws` feed as an async iterator that survives
// disconnects: it reconnects and subscribes again with `since` set to the last position it
// yielded, so the caller sees every event once, in order (README "The WebSocket feed").
import { VoidVMError } from './errors.js'
import type { Transport, WebSocketCtor } from './http.js'

export type FeedTopic = 'vm-status' | 'vm-status-all' | 'jobs' | 'images' | 'system-event' | 'system-monitor'

export interface SubscribeOptions {
  topic: FeedTopic
  /** The VM of a `vm-status` subscription. */
  vmId?: string | undefined
  /** Start after this position: the server first replays every later event, then goes live. */
  since?: number | undefined
  /** `system-monitor` only: milliseconds between frames. */
  interval?: number | undefined
  /** Failed connections in a row before the iterator throws (default 20). */
  maxReconnects?: number | undefined
  /** Ends the iteration when aborted. */
  signal?: AbortSignal | undefined
}

/** The data of a frame; frames from the event log carry `position` (schemas/feed/). */
export interface FeedData {
  position?: number
  [key: string]: unknown
}

/** A server frame: `vm-status`, `job-update`, `image-event`, `system-event` or `system-monitor`. */
export interface FeedFrame {
  type: string
  data: FeedData
  id: string | null
  timestamp: string
}

type Item = { kind: 'frame'; frame: FeedFrame } | { kind: 'close'; code: number; reason: string } | { kind: 'abort' }

/** A queue the socket's callbacks fill and the iterator drains. */
class Channel {
  private items: Item[] = []
  private waiter: ((item: Item) => void) | undefined
  push(item: Item): void {
    const w = this.waiter
    if (w) {
      this.waiter = undefined
      w(item)
    } else this.items.push(item)
  }
  next(): Promise<Item> {
    const item = this.items.shift()
    if (item) return Promise.resolve(item)
    return new Promise((resolve) => (this.waiter = resolve))
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export async function webSocketCtor(given: WebSocketCtor | undefined): Promise<WebSocketCtor> {
  if (given) return given
  const global = (globalThis as { WebSocket?: WebSocketCtor }).WebSocket
  if (global) return global
  // Node 20 has no stable global WebSocket: load the `ws` package only then.
  const mod = await import('ws')
  return mod.WebSocket as unknown as WebSocketCtor
}

export class Feed {
  constructor(private readonly t: Transport) {}

  /** The feed's URL with the client's token. */
  url(): string {
    const base = this.t.origin.replace(/^http/, 'ws')
    return `${base}/ws?token=${encodeURIComponent(this.t.token ?? '')}`
  }

  /** Frames of one subscription, resuming after disconnects from the last position seen. */
  async *subscribe(opts: SubscribeOptions): AsyncGenerator<FeedFrame, void, undefined> {
    const Ctor = await webSocketCtor(this.t.options.WebSocket)
    const maxReconnects = opts.maxReconnects ?? 20
    let last = opts.since
    let failures = 0
    let seq = 0
    while (!opts.signal?.aborted) {
      const subId = `sub-${++seq}`
      const ch = new Channel()
      const ws = new Ctor(this.url())
      const onAbort = () => ch.push({ kind: 'abort' })
      opts.signal?.addEventListener('abort', onAbort)
      ws.onopen = () => {
        const data: Record<string, unknown> = { topic: opts.topic }
        if (opts.vmId !== undefined) data.vmId = opts.vmId
        if (last !== undefined) data.since = last
        if (opts.interval !== undefined) data.interval = opts.interval
        ws.send(JSON.stringify({ type: 'subscribe', id: subId, data }))
      }
      ws.onmessage = (ev: MessageEvent) => {
        const text = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data as ArrayBuffer)
        try {
          ch.push({ kind: 'frame', frame: JSON.parse(text) as FeedFrame })
        } catch {
          // Not JSON: not a frame of the contract; ignore it.
        }
      }
      ws.onclose = (ev: CloseEvent) => ch.push({ kind: 'close', code: ev.code, reason: ev.reason })
      ws.onerror = () => {
        // A close event follows every error.
      }
      let closed: { code: number; reason: string } | undefined
      try {
        for (;;) {
          const item = await ch.next()
          if (item.kind === 'abort') return
          if (item.kind === 'close') {
            closed = item
            break
          }
          const frame = item.frame
          if (frame.id === subId && frame.type === 'subscribed') {
            failures = 0
            if (last === undefined && typeof frame.data.position === 'number') last = frame.data.position
            continue
          }
          if (frame.type === 'error') {
            const d = frame.data as { code?: string; message?: string; details?: string; field?: string | null }
            throw new VoidVMError({
              status: 0,
              code: d.code ?? 'FEED_ERROR',
              message: d.message ?? 'The feed refused the subscription',
              details: d.details,
              field: d.field,
            })
          }
          if (frame.type === 'pong' || frame.type === 'authenticated' || frame.type === 'unsubscribed') continue
          const pos = frame.data?.position
          if (typeof pos === 'number') {
            if (last !== undefined && pos <= last) continue // already yielded before a reconnect
            last = pos
          }
          yield frame
        }
      } finally {
        opts.signal?.removeEventListener('abort', onAbort)
        if (ws.readyState === 0 || ws.readyState === 1) ws.close(1000)
      }
      if (closed.code === 1008 && /token/.test(closed.reason)) {
        throw new VoidVMError({ status: 401, code: 'UNAUTHORIZED', message: `The feed was closed: ${closed.reason}` })
      }
      if (++failures > maxReconnects) {
        throw new VoidVMError({
          status: 0,
          code: 'NETWORK_ERROR',
          message: `The feed could not reconnect after ${maxReconnects} tries (last close ${closed.code} ${closed.reason})`,
        })
      }
      await sleep(Math.min(5000, 100 * 2 ** failures))
    }
  }
}

// Why: the one place requests are made. It joins the base URL, sends the token, gives every
// command (POST/PATCH/PUT/DELETE) an Idempotency-Key, retries 429 after Retry-After (bounded),
// unwraps the `{success, data}` envelope and turns error envelopes into VoidVMError.
import { VoidVMError } from './errors.js'

export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocket

export interface ClientOptions {
  /** The API base, e.g. `http://localhost:3000/api/v1` (`/api/v1` is added when missing). */
  baseURL: string
  /** A JWT from `POST /auth/login`. */
  token?: string | undefined
  /** Retries of a 429 answer, each after its `Retry-After` (default 3). */
  maxRetries?: number | undefined
  /** A 429 whose `Retry-After` is longer than this is not retried (default 65,000 ms). */
  maxRetryDelayMs?: number | undefined
  /** Send an `Idempotency-Key` on commands (default true). */
  idempotencyKeys?: boolean | undefined
  /** Called before each 429 retry (e.g. for logging). */
  onRetry?: ((info: { attempt: number; delayMs: number; method: string; path: string }) => void) | undefined
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch | undefined
  /** A WebSocket constructor for the feed; default the global one, else the `ws` package. */
  WebSocket?: WebSocketCtor | undefined
}

export interface RequestOptions {
  query?: Record<string, unknown> | undefined
  body?: unknown
  /** Bytes sent as they are (`application/octet-stream`) instead of a JSON body. */
  rawBody?: Uint8Array | Blob | undefined
  /** Overrides the generated key; `false` sends none. */
  idempotencyKey?: string | false | undefined
  /** `If-Match` with the VM version the command applies to. */
  ifMatch?: number | string | undefined
  signal?: AbortSignal | undefined
}

const COMMANDS = new Set(['POST', 'PATCH', 'PUT', 'DELETE'])
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export class Transport {
  readonly apiBase: string
  token: string | undefined
  readonly options: ClientOptions

  constructor(options: ClientOptions) {
    this.options = options
    const base = options.baseURL.replace(/\/+$/, '')
    this.apiBase = base.endsWith('/api/v1') ? base : `${base}/api/v1`
    this.token = options.token
  }

  /** The server's origin (the base URL without `/api/v1`). */
  get origin(): string {
    return this.apiBase.slice(0, -'/api/v1'.length)
  }

  /** Makes a request and answers the envelope's `data`. `path` is the contract's, `/api/v1/...`. */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const body = await this.requestRaw(method, path, opts)
    return (body as { data: T }).data
  }

  /** Like `request`, but answers the whole envelope. */
  async requestRaw(method: string, path: string, opts: RequestOptions = {}): Promise<unknown> {
    const url = new URL(this.apiBase + path.replace(/^\/api\/v1/, ''))
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v))
    }
    const headers: Record<string, string> = { Accept: 'application/json' }
    if (this.token) headers.Authorization = `Bearer ${this.token}`
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json'
    else if (opts.rawBody !== undefined) headers['Content-Type'] = 'application/octet-stream'
    if (opts.ifMatch !== undefined) headers['If-Match'] = `"${opts.ifMatch}"`
    if (COMMANDS.has(method) && opts.idempotencyKey !== false && this.options.idempotencyKeys !== false) {
      // One key for all retries of this call: a replay answers the first result.
      headers['Idempotency-Key'] = opts.idempotencyKey || crypto.randomUUID()
    }
    const init: RequestInit = { method, headers }
    if (opts.body !== undefined) init.body = JSON.stringify(opts.body)
    else if (opts.rawBody !== undefined) init.body = opts.rawBody as BodyInit
    if (opts.signal) init.signal = opts.signal
    const doFetch = this.options.fetch ?? fetch
    const maxRetries = this.options.maxRetries ?? 3
    const maxDelay = this.options.maxRetryDelayMs ?? 65_000

    let networkTries = 0
    for (let attempt = 0; ; attempt++) {
      let res: Response
      try {
        res = await doFetch(url, init)
      } catch (cause) {
        // A dropped keep-alive connection (e.g. the server restarted) fails at once: try again
        // on a new one. Safe for commands too: they carry the same Idempotency-Key.
        if (networkTries++ < 2 && !opts.signal?.aborted) {
          await sleep(200 * networkTries)
          attempt--
          continue
        }
        throw new VoidVMError({
          status: 0,
          code: 'NETWORK_ERROR',
          message: `${method} ${url.pathname} failed: ${String(cause)}`,
          cause,
        })
      }
      const text = await res.text()
      let parsed: unknown
      try {
        parsed = text ? JSON.parse(text) : undefined
      } catch {
        parsed = undefined
      }
      if (res.ok) return parsed
      if (res.status === 429 && attempt < maxRetries) {
        const delayMs = Math.max(1, Number(res.headers.get('Retry-After') ?? '1')) * 1000
        if (delayMs <= maxDelay) {
          this.options.onRetry?.({ attempt: attempt + 1, delayMs, method, path })
          await sleep(delayMs)
          continue
        }
      }
      const err = (parsed as { error?: Record<string, unknown> } | undefined)?.error
      throw new VoidVMError({
        status: res.status,
        code: typeof err?.code === 'string' ? err.code : `HTTP_${res.status}`,
        message: typeof err?.message === 'string' ? err.message : res.statusText || text,
        details: typeof err?.details === 'string' ? err.details : text,
        field: typeof err?.field === 'string' ? err.field : null,
        requestId: res.headers.get('X-Request-Id'),
      })
    }
  }
}

// Why: how a webhook receiver knows a delivery came from VoidVM and is fresh (the server's
// src/webhooks/signature.rs): `X-VoidVM-Signature: sha256=<hex>` is the HMAC-SHA256, keyed with
// the webhook's secret, of `"<X-VoidVM-Timestamp>.<raw body>"`. Node only (node:crypto); browser
// bundles get signature.browser.ts instead, whose helper throws.
import { createHmac, timingSafeEqual } from 'node:crypto'

export interface VerifyWebhookOptions {
  /** The webhook's secret (shown once, when it was set). */
  secret: string
  /** The `X-VoidVM-Timestamp` header: Unix seconds. */
  timestamp: string | number | string[] | null | undefined
  /** The raw request body, byte for byte as received (not re-serialized JSON). */
  body: string | Uint8Array
  /** The `X-VoidVM-Signature` header: `sha256=<hex>`. */
  signature: string | string[] | null | undefined
  /** Refuse timestamps further than this from `now` (default 300 s): replays keep their old one. */
  toleranceSeconds?: number | undefined
  /** The current time in Unix seconds (default the clock); for tests. */
  now?: number | undefined
}

/**
 * Whether a webhook delivery is signed with `secret` and its timestamp is within
 * `toleranceSeconds` of now. Compares in constant time. Node only (it uses node:crypto).
 */
export function verifyWebhookSignature(options: VerifyWebhookOptions): boolean {
  const { secret, timestamp, body, signature, toleranceSeconds = 300, now = Date.now() / 1000 } = options
  if (typeof signature !== 'string' || (typeof timestamp !== 'string' && typeof timestamp !== 'number')) return false
  const ts = String(timestamp).trim()
  if (!/^\d{1,15}$/.test(ts)) return false
  if (!(Math.abs(now - Number(ts)) <= toleranceSeconds)) return false
  const given = /^sha256=([0-9a-fA-F]{64})$/.exec(signature.trim())?.[1]
  if (!given) return false
  const expected = createHmac('sha256', secret).update(`${ts}.`).update(body).digest()
  return timingSafeEqual(expected, Buffer.from(given, 'hex'))
}

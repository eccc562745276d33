// Why: the browser build's verifyWebhookSignature (package.json's `browser` condition): the real
// one needs node:crypto, and a receiver of webhooks is a server anyway. Same types, so code
// type-checks either way; calling it throws.
import type { VerifyWebhookOptions } from './signature.js'

export type { VerifyWebhookOptions } from './signature.js'

export function verifyWebhookSignature(_options: VerifyWebhookOptions): boolean {
  throw new Error('verifyWebhookSignature needs Node.js (node:crypto); verify webhook deliveries on a server')
}

// Why: `client.webhooks`: the HTTP receivers of the event log (`/webhooks`), and the deliveries
// each one got. A receiver checks a delivery with verifyWebhookSignature (signature.ts).
import type { Transport } from './http.js'
import type { BodyOf, DataOf, DeliveryStatus, QueryOf, Webhook, WebhookDelivery } from './types.js'

const enc = encodeURIComponent

/** `POST /webhooks`: `{ url, events: ['*'] | ['VmStarted', ...], secret?, active? }`. */
export type NewWebhook = BodyOf<'/api/v1/webhooks', 'post'>
/** `PATCH /webhooks/{id}`: the fields to change. */
export type WebhookChange = BodyOf<'/api/v1/webhooks/{id}', 'patch'>
/** `GET /webhooks/{id}/deliveries`: `page`, `limit` and a `status` to keep. */
export type DeliveryQuery = Omit<QueryOf<'/api/v1/webhooks/{id}/deliveries', 'get'>, 'status'> & {
  status?: DeliveryStatus | undefined
}

export class Webhooks {
  constructor(private readonly t: Transport) {}

  private path(id: string, rest = ''): string {
    return `/api/v1/webhooks/${enc(id)}${rest}`
  }

  /** The caller's webhooks (everyone's for a role with scope `all`), oldest first. */
  list(): Promise<Webhook[]> {
    return this.t.request('GET', '/api/v1/webhooks')
  }

  get(id: string): Promise<Webhook> {
    return this.t.request('GET', this.path(id))
  }

  /** Adds a webhook; the answer carries its `secret`, the only time it is shown. */
  create(body: NewWebhook): Promise<Webhook> {
    return this.t.request('POST', '/api/v1/webhooks', { body })
  }

  /** Changes a webhook; a new `secret` is shown once, in this answer. */
  update(id: string, change: WebhookChange): Promise<Webhook> {
    return this.t.request('PATCH', this.path(id), { body: change })
  }

  /** Deletes a webhook with its deliveries. */
  delete(id: string): Promise<DataOf<'/api/v1/webhooks/{id}', 'delete'>> {
    return this.t.request('DELETE', this.path(id))
  }

  /** A page of the webhook's deliveries, newest first. */
  deliveries(id: string, query: DeliveryQuery = {}): Promise<DataOf<'/api/v1/webhooks/{id}/deliveries', 'get'>> {
    return this.t.request('GET', this.path(id, '/deliveries'), { query })
  }

  /**
   * Sends a delivered or failed delivery again: it is pending at once, with its own id and a
   * fresh set of attempts (409 `DELIVERY_PENDING` while it is still pending).
   */
  redeliver(id: string, deliveryId: number): Promise<WebhookDelivery> {
    return this.t.request('POST', this.path(id, `/deliveries/${enc(String(deliveryId))}/redeliver`))
  }
}

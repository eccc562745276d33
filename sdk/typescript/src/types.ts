// Why: names for the request and answer shapes, taken from the generated contract (openapi.ts)
// by path and method, so the SDK's types follow schemas/openapi.json without hand copies.
import type { components, paths } from './openapi.js'

export type Schemas = components['schemas']
type Json<R> = R extends { content: { 'application/json': infer J } } ? J : never
type Success<O> = O extends { responses: infer R }
  ? 200 extends keyof R
    ? Json<R[200]>
    : 201 extends keyof R
      ? Json<R[201]>
      : 202 extends keyof R
        ? Json<R[202]>
        : never
  : never

/** The `data` of an operation's success envelope. */
export type DataOf<P extends keyof paths, M extends keyof paths[P]> =
  Success<paths[P][M]> extends { data: infer D } ? D : never
/** An operation's JSON request body. */
export type BodyOf<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  requestBody?: { content: { 'application/json': infer B } }
}
  ? B
  : never
/** An operation's query parameters. */
export type QueryOf<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  parameters: { query?: infer Q }
}
  ? NonNullable<Q>
  : never

export type Vm = Schemas['VmView']
export type CreatedVm = Schemas['CreatedVm']
export type Accepted = Schemas['Accepted']
export type Job = Schemas['JobView']
export type WaitedJob = Schemas['WaitedJob']
export type AuditEntry = Schemas['AuditEntry']
export type User = Schemas['UserView']
export type Role = Schemas['RoleView']
export type Session = Schemas['Session']
export type Webhook = Schemas['WebhookView']
export type WebhookDelivery = Schemas['DeliveryView']
export type DeliveryStatus = Schemas['DeliveryStatus']
/**
 * The JSON body VoidVM POSTs to a webhook's URL, one event per request
 * (schemas/feed/webhook-delivery.json). `id` is the same on every attempt: drop repeats by it.
 */
export interface WebhookDeliveryBody {
  id: number
  webhookId: string
  /** 1 on the first attempt. */
  attempt: number
  /** The event, as `GET /events` shows it. */
  event: AuditEntry
}

// Why: the package's public surface (`import { VoidVMClient } from '@void-vm/sdk'`) but for
// verifyWebhookSignature, which index.ts (Node) and index.browser.ts (browsers) add.
export { VoidVMClient } from './client.js'
export { VoidVMError } from './errors.js'
export type { ClientOptions, RequestOptions, WebSocketCtor } from './http.js'
export type { CommandOptions, StopOptions } from './vms.js'
export type { WaitOptions } from './jobs.js'
export type { Image, ImportAccepted, ImportBody, ImportOptions, UploadQuery } from './images.js'
export type { EventQuery } from './audit.js'
export type { ConfigChange, ConfigView } from './admin.js'
export type { DeliveryQuery, NewWebhook, WebhookChange } from './webhooks.js'
export type { FeedData, FeedFrame, FeedTopic, SubscribeOptions } from './feed.js'
export type * from './types.js'
export type { components, paths } from './openapi.js'

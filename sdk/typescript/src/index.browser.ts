// Why: the package's entry for browser bundles (package.json `browser`): the same surface
// without node:crypto; verifyWebhookSignature throws there (receivers run on servers).
export * from './common.js'
export { verifyWebhookSignature, type VerifyWebhookOptions } from './signature.browser.js'

// Why: the package's entry for Node (package.json `import`): the whole surface, with the
// webhook signature check on node:crypto.
export * from './common.js'
export { verifyWebhookSignature, type VerifyWebhookOptions } from './signature.js'

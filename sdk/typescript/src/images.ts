// Why: `client.images`: the image catalogue. An import downloads a URL as a job (with
// `progress: {bytesDone, bytesTotal}`, and `ImageImport*` events on the `images` feed topic);
// an upload sends a local file's bytes and answers once the image is installed.
import type { Transport } from './http.js'
import type { Jobs } from './jobs.js'
import type { BodyOf, DataOf, QueryOf } from './types.js'

export type Image = DataOf<'/api/v1/images/{name}', 'get'>
export type ImportBody = BodyOf<'/api/v1/images', 'post'>
export type UploadQuery = QueryOf<'/api/v1/images/{name}/upload', 'put'>
export type ImportAccepted = DataOf<'/api/v1/images', 'post'>

export interface ImportOptions {
  /** Resolve when the import has succeeded (with the image as it is then); throws if it failed. */
  wait?: boolean | undefined
  /** Seconds to wait for the import (default 120). */
  waitTimeout?: number | undefined
  idempotencyKey?: string | undefined
}

export class Images {
  constructor(
    private readonly t: Transport,
    private readonly jobs: Jobs,
  ) {}

  private path(name: string, rest = ''): string {
    return `/api/v1/images/${encodeURIComponent(name)}${rest}`
  }

  list(): Promise<DataOf<'/api/v1/images', 'get'>> {
    return this.t.request('GET', '/api/v1/images')
  }

  get(name: string): Promise<Image> {
    return this.t.request('GET', this.path(name))
  }

  /** Imports an image from a URL: the image (`importing`) and its job at once; with `wait`, the image once ready. */
  async import(body: ImportBody, opts: ImportOptions = {}): Promise<ImportAccepted | Image> {
    const accepted: ImportAccepted = await this.t.request('POST', '/api/v1/images', {
      body,
      idempotencyKey: opts.idempotencyKey,
    })
    if (!opts.wait) return accepted
    await this.jobs.settle(accepted.job.id, { timeout: opts.waitTimeout })
    return this.get(body.name)
  }

  /** Sends a file's bytes as image `name`; answers the installed image. */
  upload(name: string, bytes: Uint8Array | Blob, query: UploadQuery): Promise<Image> {
    return this.t.request('PUT', this.path(name, '/upload'), { query, rawBody: bytes })
  }

  /** Deletes the image and its files (204; 409 `IMAGE_IN_USE` while a VM is made from it). */
  async delete(name: string): Promise<void> {
    await this.t.requestRaw('DELETE', this.path(name))
  }
}

// Why: `client.config` (the live configuration) and `client.system` (the host's figures).
import type { Transport } from './http.js'
import type { BodyOf, DataOf, QueryOf } from './types.js'

export type ConfigView = DataOf<'/api/v1/config', 'get'>
/**
 * Sections with the live fields to change: a number sets one, `null` returns it to the server's
 * setting. Fields that need a restart may be sent only with the value in force, so the sections
 * of `get()` can be sent back with live fields changed.
 */
export type ConfigChange = BodyOf<'/api/v1/config', 'put'>

export class Config {
  constructor(private readonly t: Transport) {}

  get(): Promise<ConfigView> {
    return this.t.request('GET', '/api/v1/config')
  }

  update(change: ConfigChange): Promise<DataOf<'/api/v1/config', 'put'>> {
    return this.t.request('PUT', '/api/v1/config', { body: change })
  }
}

export class System {
  constructor(private readonly t: Transport) {}

  info(): Promise<DataOf<'/api/v1/system/info', 'get'>> {
    return this.t.request('GET', '/api/v1/system/info')
  }

  stats(query: QueryOf<'/api/v1/system/stats', 'get'> = {}): Promise<DataOf<'/api/v1/system/stats', 'get'>> {
    return this.t.request('GET', '/api/v1/system/stats', { query })
  }
}

// Why: `client.config` (the live configuration) and `client.system` (the host's figures).
import type { Transport } from './http.js'
import type { DataOf, QueryOf } from './types.js'

export type ConfigView = DataOf<'/api/v1/config', 'get'>
/** Sections with the live fields to change: a number sets one, `null` returns it to the default. */
export type ConfigChange = { [section: string]: { [field: string]: number | null } }

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

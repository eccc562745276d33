// Why: `client.events` (the global audit log, paged by its `position` cursor) and `client.logs`
// (the log for people).
import type { Transport } from './http.js'
import type { AuditEntry, DataOf, QueryOf } from './types.js'

export type EventQuery = Omit<QueryOf<'/api/v1/events', 'get'>, 'format'>

export class Events {
  constructor(private readonly t: Transport) {}

  /** One page, oldest first; pass the answer's `next` as `after` for the next page. */
  list(query: EventQuery = {}): Promise<DataOf<'/api/v1/events', 'get'>> {
    return this.t.request('GET', '/api/v1/events', { query })
  }

  /** Every event matching the query, following the cursor page by page. */
  async *iterate(query: EventQuery = {}): AsyncGenerator<AuditEntry> {
    let after = query.after
    for (;;) {
      const page = await this.list({ ...query, after })
      yield* page.items
      if (!page.hasMore || page.next == null) return
      after = page.next
    }
  }
}

export class Logs {
  constructor(private readonly t: Transport) {}

  list(query: QueryOf<'/api/v1/logs', 'get'> = {}): Promise<DataOf<'/api/v1/logs', 'get'>> {
    return this.t.request('GET', '/api/v1/logs', { query })
  }
}

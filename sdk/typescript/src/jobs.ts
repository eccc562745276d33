// Why: `client.jobs`: every command answers a job id at once; this lists, reads, cancels and
// waits for jobs (the server's `/jobs/{id}/wait` long-polls; wait loops until the job ends).
import { VoidVMError } from './errors.js'
import type { Transport } from './http.js'
import type { DataOf, Job, QueryOf, WaitedJob } from './types.js'

export interface WaitOptions {
  /** Seconds to wait in all (default 120). The answer then has `finished: false`. */
  timeout?: number | undefined
}

/** Each long poll asks the server for at most this many seconds. */
const POLL_SECS = 30

export class Jobs {
  constructor(private readonly t: Transport) {}

  list(query: QueryOf<'/api/v1/jobs', 'get'> = {}): Promise<DataOf<'/api/v1/jobs', 'get'>> {
    return this.t.request('GET', '/api/v1/jobs', { query })
  }

  get(id: string): Promise<Job> {
    return this.t.request('GET', `/api/v1/jobs/${encodeURIComponent(id)}`)
  }

  cancel(id: string): Promise<DataOf<'/api/v1/jobs/{id}/cancel', 'post'>> {
    return this.t.request('POST', `/api/v1/jobs/${encodeURIComponent(id)}/cancel`)
  }

  /** Waits until the job ends or `timeout` seconds pass; answers the job with `finished`. */
  async wait(id: string, opts: WaitOptions = {}): Promise<WaitedJob> {
    const deadline = Date.now() + (opts.timeout ?? 120) * 1000
    for (;;) {
      const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000))
      const job: WaitedJob = await this.t.request('GET', `/api/v1/jobs/${encodeURIComponent(id)}/wait`, {
        query: { timeout: Math.min(left, POLL_SECS) },
      })
      if (job.finished || Date.now() >= deadline) return job
    }
  }

  /** Waits for the job and throws unless it succeeded (`JOB_FAILED`, `JOB_CANCELLED`, `TIMEOUT`). */
  async settle(id: string, opts: WaitOptions = {}): Promise<WaitedJob> {
    const job = await this.wait(id, opts)
    if (job.status === 'succeeded') return job
    const code = !job.finished ? 'TIMEOUT' : job.status === 'cancelled' ? 'JOB_CANCELLED' : 'JOB_FAILED'
    throw new VoidVMError({
      status: 0,
      code,
      message: `Job ${id} (${job.kind}) ${job.finished ? job.status : 'did not finish in time'}`,
      details: job.error ?? '',
    })
  }
}

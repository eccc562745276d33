// Why: one error type for everything the API (or the way to it) refuses, carrying the contract's
// error envelope (`{code, message, details, field}`) and the HTTP status.

export interface ErrorInit {
  status: number
  code: string
  message: string
  details?: string | undefined
  field?: string | null | undefined
  requestId?: string | null | undefined
  cause?: unknown
}

/** An error answer of the VoidVM API, or a failure to reach it (`status` 0). */
export class VoidVMError extends Error {
  override readonly name = 'VoidVMError'
  /** The HTTP status; 0 when no answer came (network error, feed closed). */
  readonly status: number
  /** The API's error code, e.g. `VM_NOT_FOUND`, `RATE_LIMITED`, `JOB_FAILED`. */
  readonly code: string
  readonly details: string
  /** The request field the error is about (`VALIDATION_ERROR`), else null. */
  readonly field: string | null
  /** The server's `X-Request-Id` for the request, when there was an answer. */
  readonly requestId: string | null

  constructor(init: ErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause })
    this.status = init.status
    this.code = init.code
    this.details = init.details ?? ''
    this.field = init.field ?? null
    this.requestId = init.requestId ?? null
  }
}

// Why: `client.vms`: the VM calls of the contract, with `{ wait: true }` on the commands that
// answer a job (the call then resolves when the job has succeeded, and throws if it did not).
import { openSerialConsole, openVncConsole, type SerialConsole, type VncConsole } from './console.js'
import { VoidVMError } from './errors.js'
import type { Transport } from './http.js'
import type { Jobs } from './jobs.js'
import type { Accepted, BodyOf, CreatedVm, DataOf, QueryOf, Vm, WaitedJob } from './types.js'

export interface CommandOptions {
  /** Resolve when the command's job has succeeded (with the job), not when it is accepted. */
  wait?: boolean | undefined
  /** Seconds to wait for the job (default 120). */
  waitTimeout?: number | undefined
  /** Apply only if the VM is still at this version (`If-Match`). */
  ifMatch?: number | undefined
  /** A key of your own; default a random UUID per call. */
  idempotencyKey?: string | undefined
  /**
   * When the VM is busy with another job (409 `VM_BUSY`, e.g. `start` right after `create`),
   * wait for that job and send the command again, at most this many times (default 3; 0: never).
   */
  busyRetries?: number | undefined
}
type Waited = CommandOptions & { wait: true }
export type StopOptions = CommandOptions & BodyOf<'/api/v1/vms/{id}/stop', 'post'>

const VERBS = ['start', 'restart', 'pause', 'resume', 'reset'] as const

export class Vms {
  constructor(
    private readonly t: Transport,
    private readonly jobs: Jobs,
  ) {}

  private path(id: string, rest = ''): string {
    return `/api/v1/vms/${encodeURIComponent(id)}${rest}`
  }

  list(query: QueryOf<'/api/v1/vms', 'get'> = {}): Promise<DataOf<'/api/v1/vms', 'get'>> {
    return this.t.request('GET', '/api/v1/vms', { query })
  }

  get(id: string): Promise<Vm> {
    return this.t.request('GET', this.path(id))
  }

  /** Creates a VM (status `creating`); with `wait`, resolves once it is provisioned. */
  async create(body: BodyOf<'/api/v1/vms', 'post'>, opts: CommandOptions = {}): Promise<CreatedVm> {
    const vm: CreatedVm = await this.t.request('POST', '/api/v1/vms', {
      body,
      idempotencyKey: opts.idempotencyKey,
    })
    if (!opts.wait) return vm
    await this.jobs.settle(vm.jobId, { timeout: opts.waitTimeout })
    return { ...(await this.get(vm.id)), jobId: vm.jobId }
  }

  update(id: string, body: BodyOf<'/api/v1/vms/{id}', 'patch'>, opts: CommandOptions = {}): Promise<DataOf<'/api/v1/vms/{id}', 'patch'>> {
    return this.t.request('PATCH', this.path(id), { body, ifMatch: opts.ifMatch, idempotencyKey: opts.idempotencyKey })
  }

  delete(id: string, opts: Waited): Promise<WaitedJob>
  delete(id: string, opts?: CommandOptions): Promise<Accepted>
  delete(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.command('DELETE', id, '', undefined, opts)
  }

  start(id: string, opts: Waited): Promise<WaitedJob>
  start(id: string, opts?: CommandOptions): Promise<Accepted>
  start(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.verb('start', id, opts)
  }

  /** Stops the VM: ACPI powerdown, then quit after `timeout` seconds; `force` quits at once. */
  stop(id: string, opts: StopOptions & { wait: true }): Promise<WaitedJob>
  stop(id: string, opts?: StopOptions): Promise<Accepted>
  stop(id: string, opts: StopOptions = {}): Promise<Accepted | WaitedJob> {
    const body: BodyOf<'/api/v1/vms/{id}/stop', 'post'> = {}
    if (opts.force !== undefined) body.force = opts.force
    if (opts.timeout !== undefined) body.timeout = opts.timeout
    return this.command('POST', id, '/stop', body, opts)
  }

  restart(id: string, opts: Waited): Promise<WaitedJob>
  restart(id: string, opts?: CommandOptions): Promise<Accepted>
  restart(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.verb('restart', id, opts)
  }

  pause(id: string, opts: Waited): Promise<WaitedJob>
  pause(id: string, opts?: CommandOptions): Promise<Accepted>
  pause(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.verb('pause', id, opts)
  }

  resume(id: string, opts: Waited): Promise<WaitedJob>
  resume(id: string, opts?: CommandOptions): Promise<Accepted>
  resume(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.verb('resume', id, opts)
  }

  reset(id: string, opts: Waited): Promise<WaitedJob>
  reset(id: string, opts?: CommandOptions): Promise<Accepted>
  reset(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.verb('reset', id, opts)
  }

  /** Puts image `image`'s ISO in the VM's CD-ROM (live on a running VM). */
  attachIso(id: string, image: string, opts: Waited): Promise<WaitedJob>
  attachIso(id: string, image: string, opts?: CommandOptions): Promise<Accepted>
  attachIso(id: string, image: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    const body: BodyOf<'/api/v1/vms/{id}/iso', 'post'> = { image }
    return this.command('POST', id, '/iso', body, opts)
  }

  /** Takes the ISO out of the VM's CD-ROM. */
  detachIso(id: string, opts: Waited): Promise<WaitedJob>
  detachIso(id: string, opts?: CommandOptions): Promise<Accepted>
  detachIso(id: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.command('DELETE', id, '/iso', undefined, opts)
  }

  /** The VM's disk snapshots, oldest first. */
  snapshots(id: string): Promise<DataOf<'/api/v1/vms/{id}/snapshots', 'get'>> {
    return this.t.request('GET', this.path(id, '/snapshots'))
  }

  /** Takes a snapshot `{name, description?, memory?}` (a job; `memory` needs a running VM). */
  takeSnapshot(id: string, body: BodyOf<'/api/v1/vms/{id}/snapshots', 'post'>, opts: Waited): Promise<WaitedJob>
  takeSnapshot(id: string, body: BodyOf<'/api/v1/vms/{id}/snapshots', 'post'>, opts?: CommandOptions): Promise<Accepted>
  takeSnapshot(id: string, body: BodyOf<'/api/v1/vms/{id}/snapshots', 'post'>, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.command('POST', id, '/snapshots', body, opts)
  }

  /** Puts the VM back as snapshot `name` left it (a disk-only one needs a stopped VM). */
  restoreSnapshot(id: string, name: string, opts: Waited): Promise<WaitedJob>
  restoreSnapshot(id: string, name: string, opts?: CommandOptions): Promise<Accepted>
  restoreSnapshot(id: string, name: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.command('POST', id, `/snapshots/${encodeURIComponent(name)}/restore`, undefined, opts)
  }

  /** Deletes snapshot `name` from the VM's disk. */
  deleteSnapshot(id: string, name: string, opts: Waited): Promise<WaitedJob>
  deleteSnapshot(id: string, name: string, opts?: CommandOptions): Promise<Accepted>
  deleteSnapshot(id: string, name: string, opts: CommandOptions = {}): Promise<Accepted | WaitedJob> {
    return this.command('DELETE', id, `/snapshots/${encodeURIComponent(name)}`, undefined, opts)
  }

  /** The VM's own events, oldest first; `after`/`next` are sequence numbers. */
  events(id: string, query: QueryOf<'/api/v1/vms/{id}/events', 'get'> = {}): Promise<DataOf<'/api/v1/vms/{id}/events', 'get'>> {
    return this.t.request('GET', this.path(id, '/events'), { query })
  }

  /** The VM as it was at a sequence number or RFC 3339 time. */
  history(id: string, query: QueryOf<'/api/v1/vms/{id}/history', 'get'> = {}): Promise<DataOf<'/api/v1/vms/{id}/history', 'get'>> {
    return this.t.request('GET', this.path(id, '/history'), { query })
  }

  private verb(verb: (typeof VERBS)[number], id: string, opts: CommandOptions): Promise<Accepted | WaitedJob> {
    return this.command('POST', id, `/${verb}`, undefined, opts)
  }

  private async command(method: string, id: string, rest: string, body: unknown, opts: CommandOptions): Promise<Accepted | WaitedJob> {
    // One key for every try: a refused command records nothing, so a retry is decided again.
    const idempotencyKey = opts.idempotencyKey ?? crypto.randomUUID()
    let accepted: Accepted
    for (let busy = 0; ; busy++) {
      try {
        accepted = await this.t.request(method, this.path(id, rest), { body, ifMatch: opts.ifMatch, idempotencyKey })
        break
      } catch (e) {
        if (!(e instanceof VoidVMError && e.code === 'VM_BUSY') || busy >= (opts.busyRetries ?? 3)) throw e
        const vm = await this.get(id)
        if (vm.pendingJobId) await this.jobs.wait(vm.pendingJobId, { timeout: opts.waitTimeout })
      }
    }
    if (!opts.wait) return accepted
    return this.jobs.settle(accepted.jobId, { timeout: opts.waitTimeout })
  }

  /**
   * Opens a running VM's serial console: `write` types into it, `output()` yields what the guest
   * prints (first the last 64 KiB of it), `close()` leaves the guest running. Needs `vm:console`.
   */
  console(id: string): Promise<SerialConsole> {
    return openSerialConsole(this.t, id)
  }

  /**
   * Opens a running VM's graphical console: RFB bytes both ways with QEMU's VNC server (no VNC
   * password), for an RFB client of your own; a browser's noVNC can use `/vnc` directly. Needs
   * `vm:console`.
   */
  vnc(id: string): Promise<VncConsole> {
    return openVncConsole(this.t, id)
  }

}

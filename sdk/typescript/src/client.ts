// Why: the entry point, `new VoidVMClient({ baseURL, token })` or `VoidVMClient.login(...)`,
// holding one transport and the resources built on it.
import { Auth, Roles, Users } from './accounts.js'
import { Config, System } from './admin.js'
import { Events, Logs } from './audit.js'
import { Feed } from './feed.js'
import { Transport, type ClientOptions } from './http.js'
import { Images } from './images.js'
import { Jobs } from './jobs.js'
import type { Session } from './types.js'
import { Vms } from './vms.js'
import { Webhooks } from './webhooks.js'

export class VoidVMClient {
  readonly transport: Transport
  readonly auth: Auth
  readonly vms: Vms
  readonly jobs: Jobs
  readonly images: Images
  readonly events: Events
  readonly logs: Logs
  readonly users: Users
  readonly roles: Roles
  readonly config: Config
  readonly system: System
  readonly webhooks: Webhooks
  readonly feed: Feed

  constructor(options: ClientOptions) {
    this.transport = new Transport(options)
    this.auth = new Auth(this.transport)
    this.jobs = new Jobs(this.transport)
    this.vms = new Vms(this.transport, this.jobs)
    this.images = new Images(this.transport, this.jobs)
    this.events = new Events(this.transport)
    this.logs = new Logs(this.transport)
    this.users = new Users(this.transport)
    this.roles = new Roles(this.transport)
    this.config = new Config(this.transport)
    this.system = new System(this.transport)
    this.webhooks = new Webhooks(this.transport)
    this.feed = new Feed(this.transport)
  }

  /** Logs in and answers a client carrying the new token. */
  static async login(options: Omit<ClientOptions, 'token'> & { username: string; password: string }): Promise<VoidVMClient> {
    const { username, password, ...rest } = options
    const client = new VoidVMClient(rest)
    const session: Session = await client.transport.request('POST', '/api/v1/auth/login', {
      body: { username, password },
      idempotencyKey: false,
    })
    client.transport.token = session.token
    return client
  }

  /** The token in use. */
  get token(): string | undefined {
    return this.transport.token
  }
}

// Why: `client.auth`, `client.users` and `client.roles`: who may do what (README "Accounts,
// roles and limits").
import type { Transport } from './http.js'
import type { BodyOf, DataOf, QueryOf, Role, User } from './types.js'

const enc = encodeURIComponent

export class Auth {
  constructor(private readonly t: Transport) {}

  /** The caller, with their role's permissions, scope, quota, usage and rate limit. */
  me(): Promise<DataOf<'/api/v1/auth/me', 'get'>> {
    return this.t.request('GET', '/api/v1/auth/me')
  }
}

export class Users {
  constructor(private readonly t: Transport) {}

  list(query: QueryOf<'/api/v1/users', 'get'> = {}): Promise<DataOf<'/api/v1/users', 'get'>> {
    return this.t.request('GET', '/api/v1/users', { query })
  }

  get(id: string): Promise<User> {
    return this.t.request('GET', `/api/v1/users/${enc(id)}`)
  }

  create(body: BodyOf<'/api/v1/users', 'post'>): Promise<User> {
    return this.t.request('POST', '/api/v1/users', { body })
  }

  update(id: string, body: BodyOf<'/api/v1/users/{id}', 'put'>): Promise<User> {
    return this.t.request('PUT', `/api/v1/users/${enc(id)}`, { body })
  }

  /** Deletes a user; one who owns VMs needs `transferTo` (a user id or name) to hand them to. */
  delete(id: string, opts: { transferTo?: string | undefined } = {}): Promise<DataOf<'/api/v1/users/{id}', 'delete'>> {
    return this.t.request('DELETE', `/api/v1/users/${enc(id)}`, { query: { transferTo: opts.transferTo } })
  }
}

export class Roles {
  constructor(private readonly t: Transport) {}

  list(): Promise<Role[]> {
    return this.t.request('GET', '/api/v1/roles')
  }

  create(body: BodyOf<'/api/v1/roles', 'post'>): Promise<Role> {
    return this.t.request('POST', '/api/v1/roles', { body })
  }

  update(id: string, body: BodyOf<'/api/v1/roles/{id}', 'put'>): Promise<Role> {
    return this.t.request('PUT', `/api/v1/roles/${enc(id)}`, { body })
  }

  delete(id: string): Promise<DataOf<'/api/v1/roles/{id}', 'delete'>> {
    return this.t.request('DELETE', `/api/v1/roles/${enc(id)}`)
  }

  /** The permission catalog (`GET /permissions`). */
  permissions(): Promise<DataOf<'/api/v1/permissions', 'get'>> {
    return this.t.request('GET', '/api/v1/permissions')
  }
}

// Why: the seed page's TypeScript snippet (api-index.zh.md, "SDK 和示例") must work as written:
// it runs verbatim below, but for the host (baseURL) and the token. Its VM is removed after.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { API, admin, removeVm, RL_USER, RL_PASSWORD } from './helpers.mjs'

const TOKEN = (await admin()).token
const HOST_API = API

// ---- the seed's snippet, verbatim but for baseURL and token ----
import { VoidVMClient } from '@void-vm/sdk'

const client = new VoidVMClient({
  baseURL: HOST_API,
  token: TOKEN,
})

// 获取虚拟机列表
const vms = await client.vms.list()

// 创建虚拟机
const newVm = await client.vms.create({
  name: 'my-vm',
  cpu: 2,
  memory: 2048,
  disk: 20,
})

// 启动虚拟机
await client.vms.start(newVm.id)
// ---- end of the snippet ----

after(() => removeVm(client, newVm.id))

test('the seed snippet lists, creates and starts a VM', async () => {
  assert.ok(Array.isArray(vms.items))
  assert.equal(typeof vms.pagination.total, 'number')
  assert.match(newVm.id, /^vm-/)
  assert.equal(newVm.name, 'my-vm')
  assert.equal(newVm.status, 'creating')
  const vm = await client.vms.get(newVm.id)
  assert.equal(vm.os, 'ubuntu20.04')
  // The start was accepted: the VM is starting, running, or its start job is pending.
  const jobs = await client.jobs.list({ vmId: newVm.id })
  assert.ok(jobs.items.some((j) => j.kind === 'start'), 'a start job exists')
})

test('opens the rate-limit user window early (see z-rate-limit)', async () => {
  const a = await admin()
  const user = await a.users.create({ username: RL_USER, password: RL_PASSWORD, role: 'viewer' })
  assert.equal(user.username, RL_USER)
  const rl = await VoidVMClient.login({ baseURL: API, username: RL_USER, password: RL_PASSWORD })
  assert.equal((await rl.auth.me()).username ?? (await rl.auth.me()).user?.username, RL_USER)
})

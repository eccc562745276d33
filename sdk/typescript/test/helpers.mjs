// Why: what the live tests share: the server under test (SDK_TEST_API, set by
// scripts/test-sdks.sh), an admin client, restarting that server, and VM clean-up.
import { execSync } from 'node:child_process'
import { VoidVMClient, VoidVMError } from '@void-vm/sdk'

export const API = process.env.SDK_TEST_API ?? 'http://127.0.0.1:3000/api/v1'

export function admin(options = {}) {
  return VoidVMClient.login({ baseURL: API, username: 'admin', password: 'admin123', ...options })
}

/** Kills the server and starts it again on the same database and port. */
export function restartServer() {
  if (!process.env.SDK_TEST_RESTART) throw new Error('SDK_TEST_RESTART is not set')
  execSync(process.env.SDK_TEST_RESTART, { stdio: 'inherit' })
}

/** Stops (forced) and deletes a VM, whatever state it is in; a VM already gone is fine. */
export async function removeVm(client, id) {
  try {
    const vm = await client.vms.get(id)
    if (vm.pendingJobId) await client.jobs.wait(vm.pendingJobId, { timeout: 60 })
    const now = await client.vms.get(id)
    if (!['stopped', 'error', 'crashed', 'deleted', 'deleting'].includes(now.status)) {
      await client.vms.stop(id, { force: true, wait: true, waitTimeout: 60 })
    }
    if (now.status !== 'deleted' && now.status !== 'deleting') await client.vms.delete(id, { wait: true, waitTimeout: 60 })
  } catch (e) {
    if (!(e instanceof VoidVMError && e.code === 'VM_NOT_FOUND')) throw e
  }
}

/** A unique name for this run. */
export const unique = (prefix) => `${prefix}-${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`

/** Opens the rate-limit window of user `ratelimited` early, so the 429 test waits less. */
export const RL_USER = 'ratelimited'
export const RL_PASSWORD = 'ratelimited-pass-1'

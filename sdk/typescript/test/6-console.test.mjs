// Why: vms.console against the live server and the real test guest: a stopped VM's console is
// refused with the API's own error; a running one's shell answers what is typed into it (an answer
// the guest computes, so the echo of the typed line never counts); close leaves the guest running.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { VoidVMError } from '@void-vm/sdk'
import { admin, removeVm, unique } from './helpers.mjs'

const a = await admin()
const cleanups = []
after(async () => {
  for (const c of cleanups.reverse()) await c()
})

test('vms.console: refused while stopped; types into a running guest and reads its answer', async () => {
  const vm = await a.vms.create({ name: unique('ts-console'), cpu: 1, memory: 128, disk: 1, os: 'busybox' })
  cleanups.push(() => removeVm(a, vm.id))
  await a.jobs.wait(vm.jobId, { timeout: 60 })

  await assert.rejects(a.vms.console(vm.id), (e) => {
    assert.ok(e instanceof VoidVMError)
    assert.equal(e.status, 409)
    assert.equal(e.code, 'VM_NOT_RUNNING')
    return true
  })

  await a.vms.start(vm.id, { wait: true })
  const console = await a.vms.console(vm.id)
  const output = console.output()
  let seen = ''
  const deadline = Date.now() + 180_000
  const line = 'echo "TS""-CONSOLE-$((6*7))"\n'
  let typedAt = 0
  // One read in flight at a time: a read that lost the race to the timer is still the next one.
  let pending = output.next()
  while (!seen.includes('TS-CONSOLE-42')) {
    assert.ok(Date.now() < deadline, `the guest never answered; the console showed:\n${seen}`)
    // Typed again every few seconds: the shell may not be up yet.
    if (Date.now() - typedAt > 3000) {
      console.write(line)
      typedAt = Date.now()
    }
    const chunk = await Promise.race([pending, new Promise((resolve) => setTimeout(() => resolve(null), 500))])
    if (chunk === null) continue
    assert.equal(chunk.done, false, `the console closed; it showed:\n${seen}`)
    seen += new TextDecoder().decode(chunk.value)
    pending = output.next()
  }
  console.close()
  const closed = await console.closed
  assert.equal(closed.code, 1000)
  assert.throws(() => console.write('too late\n'), (e) => e instanceof VoidVMError && e.code === 'CONSOLE_CLOSED')
  assert.equal((await a.vms.get(vm.id)).status, 'running')
})

// Why: vms.console and vms.vnc against the live server and the real test guest: a stopped VM's
// console is refused with the API's own error; a running one's shell answers what is typed into it
// (an answer the guest computes, so the echo of the typed line never counts); its graphical
// console speaks RFB through to a framebuffer of the VM's own size; close leaves the guest running.
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

  // The graphical console: an RFB 3.8 handshake with QEMU's VNC server through the SDK.
  const vnc = await a.vms.vnc(vm.id)
  const rfb = reader(vnc.output())
  assert.equal(new TextDecoder().decode(await rfb.take(12)), 'RFB 003.008\n')
  vnc.write('RFB 003.008\n')
  const [count] = await rfb.take(1)
  const types = [...(await rfb.take(count))]
  assert.ok(types.includes(1), `the server offers no "None" security type: ${types}`)
  vnc.write(new Uint8Array([1]))
  assert.deepEqual([...(await rfb.take(4))], [0, 0, 0, 0], 'the security handshake failed')
  vnc.write(new Uint8Array([1])) // ClientInit, shared
  const init = new DataView((await rfb.take(24)).buffer)
  const [width, height] = [init.getUint16(0), init.getUint16(2)]
  assert.ok(width >= 320 && height >= 200, `a framebuffer of ${width}x${height}`)
  const name = new TextDecoder().decode(await rfb.take(init.getUint32(20)))
  assert.ok(name.length > 0, 'the desktop has no name')
  vnc.close()
  assert.equal((await vnc.closed).code, 1000)
  assert.equal((await a.vms.get(vm.id)).status, 'running')
})

test('vms.vnc: refused for a VM that is not running, with the API\'s error', async () => {
  const vm = await a.vms.create({ name: unique('ts-vnc'), cpu: 1, memory: 128, disk: 1, os: 'busybox' })
  cleanups.push(() => removeVm(a, vm.id))
  await a.jobs.wait(vm.jobId, { timeout: 60 })
  await assert.rejects(a.vms.vnc(vm.id), (e) => {
    assert.ok(e instanceof VoidVMError)
    assert.equal(e.status, 409)
    assert.equal(e.code, 'VM_NOT_RUNNING')
    return true
  })
})

/** Reads exact byte counts from a console's output, whatever the frames' boundaries. */
function reader(output) {
  let buffered = new Uint8Array(0)
  return {
    async take(n) {
      while (buffered.length < n) {
        let timer
        const late = new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`waited 30 s for ${n} bytes`)), 30_000)
        })
        const next = await Promise.race([output.next(), late]).finally(() => clearTimeout(timer))
        assert.equal(next.done, false, 'the console closed mid-handshake')
        const joined = new Uint8Array(buffered.length + next.value.length)
        joined.set(buffered)
        joined.set(next.value, buffered.length)
        buffered = joined
      }
      const taken = buffered.slice(0, n)
      buffered = buffered.slice(n)
      return taken
    },
  }
}

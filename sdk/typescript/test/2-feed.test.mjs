// Why: client.feed.subscribe resumes after the server is killed and started again: the frames it
// yields have strictly rising positions, none repeated and none missing compared with
// GET /events?streamType=vm over the same range.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { admin, removeVm, restartServer, unique } from './helpers.mjs'

test('the feed iterator resumes across a server restart without a gap or a duplicate', { timeout: 120_000 }, async () => {
  const a = await admin()
  // Start after everything so far: the replay and the live feed from here on.
  let since = 0
  for await (const e of a.events.iterate({ streamType: 'vm', limit: 100 })) since = e.position
  const vm = await a.vms.create({ name: unique('ts-feed'), cpu: 1, memory: 128, disk: 1, os: 'busybox' }, { wait: true })
  const feed = a.feed.subscribe({ topic: 'vm-status-all', since })
  try {
    const seen = []
    const readUntil = async (position) => {
      while (seen.length === 0 || seen[seen.length - 1] < position) {
        const { value, done } = await feed.next()
        assert.ok(!done, 'the feed ended')
        if (process.env.FEED_DEBUG) console.log(value.type, value.data.position, position)
        if (typeof value.data.position === 'number') seen.push(value.data.position)
      }
    }
    const latest = async () => (await a.vms.events(vm.id, { limit: 100 })).items.at(-1)
    await readUntil((await latest()).position) // VmCreated, VmProvisioned: replayed
    await a.vms.update(vm.id, { description: 'before the restart' })
    await readUntil((await latest()).position) // live

    restartServer() // the socket drops; the iterator reconnects with since = its last position
    // Written before the iterator is back: it gets them from the replay.
    await a.vms.update(vm.id, { description: 'after the restart 1' })
    await a.vms.update(vm.id, { description: 'after the restart 2' })
    await readUntil((await latest()).position)
    await a.vms.update(vm.id, { description: 'after the restart 3' })
    await readUntil((await latest()).position)

    const logged = []
    for await (const e of a.events.iterate({ streamType: 'vm', after: since, limit: 100 })) {
      if (e.position <= seen.at(-1)) logged.push(e.position)
    }
    assert.ok(seen.every((p, i) => i === 0 || p > seen[i - 1]), `positions rise: ${seen}`)
    assert.deepEqual(seen, logged)
    assert.ok(seen.length >= 6)
  } finally {
    await feed.return() // closes the socket, or the process would not end
    await removeVm(a, vm.id)
  }
})

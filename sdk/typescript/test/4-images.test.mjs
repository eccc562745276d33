// Why: client.images (import with progress, upload, list, get, delete) and vms.attachIso /
// detachIso against the live server, with the import's events on the `images` feed topic.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { VoidVMError } from '@void-vm/sdk'
import { admin, removeVm, unique } from './helpers.mjs'

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

/** An HTTP server on a free loopback port answering every GET with `bytes`. */
async function fileServer(bytes) {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes.length })
    res.end(bytes)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}/image.iso`, close: () => server.close() }
}

test('images: import with progress on the feed, upload, list, attach as an ISO, delete', { timeout: 180_000 }, async () => {
  const a = await admin()
  // Random, but an ISO as the server reads one (an ISO 9660 volume descriptor at sector 16).
  const bytes = randomBytes(300 * 1024)
  bytes.write('CD001', 32769, 'latin1')
  const files = await fileServer(bytes)
  const imported = unique('ts-iso')
  const uploaded = unique('ts-up')
  let since = 0
  for await (const e of a.events.iterate({ limit: 100 })) since = e.position
  const feed = a.feed.subscribe({ topic: 'images', since })
  let vm
  try {
    const accepted = await a.images.import({ name: imported, url: files.url, kind: 'iso', sha256: sha256(bytes) })
    assert.equal(accepted.status, 'importing')
    assert.equal(accepted.job.kind, 'import_image')
    const job = await a.jobs.wait(accepted.job.id, { timeout: 60 })
    assert.equal(job.status, 'succeeded', JSON.stringify(job))
    assert.equal(job.image, imported)
    assert.equal(job.progress.bytesDone, bytes.length)
    const ready = await a.images.get(imported)
    assert.equal(ready.status, 'ready')
    assert.equal(ready.kind, 'iso')
    assert.equal(ready.sha256, sha256(bytes))

    // The same import on the feed: requested, progress with the size, imported.
    const types = []
    for (;;) {
      const { value, done } = await feed.next()
      assert.ok(!done, 'the feed ended')
      if (value.type !== 'image-event' || value.data.streamId !== imported) continue
      types.push(value.data.type)
      if (value.data.type === 'ImageImportProgressed' && value.data.data.bytesDone === bytes.length) {
        assert.equal(value.data.data.bytesTotal, bytes.length)
      }
      if (value.data.type === 'ImageImported') break
    }
    assert.equal(types[0], 'ImageImportRequested')
    assert.ok(types.includes('ImageImportProgressed'), types.join())

    const up = await a.images.upload(uploaded, new Uint8Array(bytes), { kind: 'iso', sha256: sha256(bytes) })
    assert.equal(up.status, 'ready')
    assert.equal(up.source, 'upload')
    const names = (await a.images.list()).map((i) => i.name)
    for (const name of ['busybox', imported, uploaded]) assert.ok(names.includes(name), names.join())

    vm = await a.vms.create({ name: unique('ts-iso-vm'), cpu: 1, memory: 128, disk: 1, os: 'busybox' }, { wait: true })
    const attached = await a.vms.attachIso(vm.id, imported, { wait: true })
    assert.equal(attached.status, 'succeeded')
    assert.equal((await a.vms.get(vm.id)).iso, imported)
    await a.vms.detachIso(vm.id, { wait: true })
    assert.equal((await a.vms.get(vm.id)).iso ?? null, null)

    await a.images.delete(imported)
    await a.images.delete(uploaded)
    await assert.rejects(a.images.get(imported), (e) => {
      assert.ok(e instanceof VoidVMError)
      assert.equal(e.status, 404)
      return true
    })
  } finally {
    await feed.return()
    files.close()
    if (vm) await removeVm(a, vm.id)
  }
})

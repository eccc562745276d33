// Why: the issue asks that noVNC's own RFB client can use /vms/{id}/vnc directly. This opens a
// page in Debian's chromium that connects `@novnc/novnc` to a running busybox VM through the API,
// and checks that the client connected (RFB handshake, ServerInit with a desktop name) and drew
// the framebuffer, and that the session is in the VM's log with its end.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { extname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const API = process.env.SDK_TEST_API ?? 'http://127.0.0.1:3000/api/v1'
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const here = fileURLToPath(new URL('.', import.meta.url))

async function call(token, method, path, body) {
  const res = await fetch(API + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const answer = await res.json()
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(answer)}`)
  return answer.data
}

async function settled(token, jobId) {
  const job = await call(token, 'GET', `/jobs/${jobId}/wait?timeout=60`)
  assert.equal(job.status, 'succeeded', JSON.stringify(job))
}

/** Serves page.html at / and the noVNC package at /novnc/. */
async function pageServer() {
  const novnc = join(here, 'node_modules/@novnc/novnc')
  const types = { '.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json' }
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname
    const file = path === '/' ? join(here, 'page.html') : path.startsWith('/novnc/') ? normalize(join(novnc, path.slice(7))) : null
    if (!file || !file.startsWith(here)) return res.writeHead(404).end()
    try {
      const body = await readFile(file)
      res.writeHead(200, { 'Content-Type': types[extname(file)] ?? 'application/octet-stream' }).end(body)
    } catch {
      res.writeHead(404).end()
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => server.close() }
}

test('noVNC connects to a running VM through /vnc and draws its screen', { timeout: 180_000 }, async () => {
  const login = await fetch(`${API}/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: 'admin123' }),
  })
  const { token } = (await login.json()).data
  const vm = await call(token, 'POST', '/vms', { name: `novnc-${Date.now().toString(36)}`, cpu: 1, memory: 128, disk: 1, os: 'busybox' })
  const pages = await pageServer()
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--headless=new'] })
  try {
    await settled(token, vm.jobId)
    await settled(token, (await call(token, 'POST', `/vms/${vm.id}/start`)).jobId)

    const ws = `${API.replace(/^http/, 'ws')}/vms/${vm.id}/vnc?token=${encodeURIComponent(token)}`
    const page = await browser.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(`${pages.base}/?url=${encodeURIComponent(ws)}`)
    await page.waitForFunction(() => window.result.connected || window.result.failure || window.result.disconnected, null, { timeout: 60_000 })
    const result = await page.evaluate(() => window.result)
    assert.deepEqual([result.connected, result.failure, result.disconnected], [true, null, null], JSON.stringify(result))
    assert.ok(result.desktop, `a desktop name in ServerInit: ${JSON.stringify(result)}`)
    // A full framebuffer update reaches the canvas: every pixel painted.
    await page.waitForFunction(() => {
      const p = window.painted()
      return p !== null && p.opaque === p.width * p.height
    }, null, { timeout: 60_000 })
    const painted = await page.evaluate(() => window.painted())
    assert.ok(painted.width >= 320 && painted.height >= 200, JSON.stringify(painted))
    if (process.env.NOVNC_DEBUG) console.log(JSON.stringify({ result, painted }))
    assert.deepEqual(errors, [])
    await page.close()

    // The session is in the VM's log, opened and (once the page is gone) closed, by admin.
    let consoles = []
    for (let i = 0; i < 100; i++) {
      const events = await call(token, 'GET', `/vms/${vm.id}/events?limit=100`)
      consoles = events.items.filter((e) => e.type === 'ConsoleOpened' || e.type === 'ConsoleClosed')
      if (consoles.some((e) => e.type === 'ConsoleClosed')) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.deepEqual(consoles.map((e) => [e.type, e.data.console, e.actor.name]), [
      ['ConsoleOpened', 'vnc', 'admin'],
      ['ConsoleClosed', 'vnc', 'admin'],
    ])
  } finally {
    await browser.close()
    pages.close()
    const now = await call(token, 'GET', `/vms/${vm.id}`)
    if (now.status === 'running') await settled(token, (await call(token, 'POST', `/vms/${vm.id}/stop`, { force: true })).jobId)
    await settled(token, (await call(token, 'DELETE', `/vms/${vm.id}`)).jobId)
  }
})

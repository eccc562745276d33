// Why: `client.vms.console(id)` and `client.vms.vnc(id)`: a running VM's serial console and its
// graphical console (README "Consoles") as objects that write bytes to the VM and yield what it
// sends, over the console's WebSocket of binary frames: the guest's serial port, or QEMU's VNC
// server (RFB bytes, for an RFB client of your own). A refused upgrade (not running, not yours,
// no `vm:console`) throws the API's own error.
import { VoidVMError } from './errors.js'
import type { Transport, WebSocketCtor } from './http.js'
import { webSocketCtor } from './feed.js'

/** How a console ended: the WebSocket close code and reason (1000 when the machine stopped). */
export interface ConsoleClose {
  code: number
  reason: string
}

type Item = { kind: 'data'; bytes: Uint8Array } | { kind: 'close'; close: ConsoleClose }

/** An open console: bytes to the VM with `write`, bytes from it with `output()`. */
class ByteConsole {
  private readonly items: Item[] = []
  private waiter: ((item: Item) => void) | undefined
  private ended: ConsoleClose | undefined
  /** Resolves when the console closes, however it closes. */
  readonly closed: Promise<ConsoleClose>

  /** @internal */
  constructor(private readonly ws: WebSocket) {
    let resolveClosed: (c: ConsoleClose) => void = () => undefined
    this.closed = new Promise((resolve) => (resolveClosed = resolve))
    ws.onmessage = (ev: MessageEvent) => {
      const data = ev.data as ArrayBuffer | string
      const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : new Uint8Array(data)
      this.push({ kind: 'data', bytes })
    }
    ws.onclose = (ev: CloseEvent) => {
      const close = { code: ev.code, reason: ev.reason }
      this.ended = close
      resolveClosed(close)
      this.push({ kind: 'close', close })
    }
  }

  private push(item: Item): void {
    const w = this.waiter
    if (w) {
      this.waiter = undefined
      w(item)
    } else this.items.push(item)
  }

  private next(): Promise<Item> {
    const item = this.items.shift()
    if (item) return Promise.resolve(item)
    if (this.ended) return Promise.resolve({ kind: 'close', close: this.ended })
    return new Promise((resolve) => (this.waiter = resolve))
  }

  /** Sends bytes to the VM (a string as its UTF-8 bytes). */
  write(data: string | Uint8Array): void {
    if (this.ended) throw new VoidVMError({ status: 0, code: 'CONSOLE_CLOSED', message: 'The console is closed' })
    this.ws.send(typeof data === 'string' ? new TextEncoder().encode(data) : data)
  }

  /** What the VM sends, as it arrives; ends when the console closes. */
  async *output(): AsyncGenerator<Uint8Array, ConsoleClose, undefined> {
    for (;;) {
      const item = await this.next()
      if (item.kind === 'close') return item.close
      yield item.bytes
    }
  }

  /** Closes the console (1000); the guest keeps running. */
  close(): void {
    if (!this.ended) this.ws.close(1000)
  }
}

/**
 * An open serial console: `write` types into the guest's serial port, `output()` yields what the
 * guest prints, first the last 64 KiB of it.
 */
export class SerialConsole extends ByteConsole {}

/**
 * An open graphical console: the RFB protocol (RFC 6143) both ways, byte for byte, with QEMU's
 * VNC server, which asks for no password (the API decided who connects). `output()` starts with
 * the server's `RFB 003.008` version line.
 */
export class VncConsole extends ByteConsole {}

/** The subset of the `ws` package's socket used to read a refused upgrade's error envelope. */
interface NodeSocket {
  on(event: 'unexpected-response', cb: (req: unknown, res: NodeResponse) => void): void
  terminate(): void
}
interface NodeResponse {
  statusCode?: number
  on(event: 'data', cb: (chunk: Uint8Array) => void): void
  on(event: 'end', cb: () => void): void
}

/** The error an upgrade refused with `status` and `body` (the API's envelope) stands for. */
function refused(status: number, body: string): VoidVMError {
  try {
    const e = (JSON.parse(body) as { error?: { code?: string; message?: string; details?: string; field?: string | null } })
      .error
    if (e?.code)
      return new VoidVMError({ status, code: e.code, message: e.message ?? e.code, details: e.details, field: e.field })
  } catch {
    // Not the envelope: say what came.
  }
  return new VoidVMError({ status, code: 'CONSOLE_REFUSED', message: `The console was refused (HTTP ${status})` })
}

/** Opens VM `vmId`'s serial console; resolves once it is open. */
export function openSerialConsole(t: Transport, vmId: string, ctor?: WebSocketCtor): Promise<SerialConsole> {
  return openConsole(t, vmId, 'console', (ws) => new SerialConsole(ws), ctor)
}

/** Opens VM `vmId`'s graphical console; resolves once it is open. */
export function openVncConsole(t: Transport, vmId: string, ctor?: WebSocketCtor): Promise<VncConsole> {
  return openConsole(t, vmId, 'vnc', (ws) => new VncConsole(ws), ctor)
}

async function openConsole<C extends ByteConsole>(
  t: Transport,
  vmId: string,
  path: 'console' | 'vnc',
  make: (ws: WebSocket) => C,
  ctor?: WebSocketCtor,
): Promise<C> {
  const Ctor = await webSocketCtor(ctor ?? t.options.WebSocket)
  const base = t.origin.replace(/^http/, 'ws')
  const url = `${base}/api/v1/vms/${encodeURIComponent(vmId)}/${path}?token=${encodeURIComponent(t.token ?? '')}`
  const ws = new Ctor(url)
  ws.binaryType = 'arraybuffer'
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (e: VoidVMError) => {
      if (settled) return
      settled = true
      reject(e)
    }
    const node = ws as unknown as Partial<NodeSocket>
    if (typeof node.on === 'function') {
      node.on('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (chunk) => (body += new TextDecoder().decode(chunk)))
        res.on('end', () => {
          fail(refused(res.statusCode ?? 0, body))
          node.terminate?.()
        })
      })
    }
    ws.onopen = () => {
      if (settled) return
      settled = true
      resolve(make(ws))
    }
    ws.onerror = () => {
      // A close event follows; an `unexpected-response` (Node) has said why already.
    }
    ws.onclose = (ev: CloseEvent) =>
      fail(
        new VoidVMError({
          status: 0,
          code: 'CONSOLE_REFUSED',
          message: `The console could not be opened (close ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`,
        }),
      )
  })
}

// Why: the seed page's TypeScript snippet must also type-check under strict TypeScript against
// the built package (tsconfig.snippet.json; test/0-seed.test.mjs runs it). Verbatim but for the
// host and the token.
import { VoidVMClient } from '@void-vm/sdk'

const client = new VoidVMClient({
  baseURL: process.env.SDK_TEST_API ?? 'http://localhost:3000/api/v1',
  token: process.env.SDK_TEST_TOKEN ?? 'your-jwt-token',
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

// The answers are typed: a page of VMs, a created VM with its job.
const total: number = vms.pagination.total
const job: string = newVm.jobId
export { total, job }

import { multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import { ModelIdSchema } from '../../protocols/infer.ts'

const multiaddrString = z.string().trim().refine((value) => {
  try {
    multiaddr(value)
    return true
  } catch {
    return false
  }
}, { message: 'not a valid multiaddr (e.g. /ip4/127.0.0.1/tcp/4001)' })

const hostPort = z.string().trim().refine(
  (value) => /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(value) && Number(value.slice(value.lastIndexOf(':') + 1)) <= 65535,
  { message: 'expected HOST:PORT with a port 0-65535, e.g. 127.0.0.1:7070' })

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** Every setting of `bkg start`; file, environment and flags are merged, then validated here. */
export const NodeConfig = z.object({
  name: z.string().min(1).max(64).optional(),
  listen: z.array(multiaddrString).min(1).default(['/ip4/0.0.0.0/tcp/4001']),
  /** addresses to advertise instead of the listen addresses (e.g. behind a port forward) */
  announce: z.array(multiaddrString).default([]),
  api: hostPort.default('127.0.0.1:7070'),
  /** HTTPS for the API (node/api/tls.ts): on by default beyond loopback, where plain HTTP needs `insecure` */
  apiTls: z.object({
    /** 'auto' = TLS unless bound to loopback; true = always (`--api-tls`); false = never (`--no-api-tls`) */
    enabled: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    /** serve plain HTTP beyond loopback anyway (`--api-insecure`), e.g. behind a TLS-terminating proxy */
    insecure: z.boolean().default(false),
    /** admin routes also need an operator-CA client certificate with the admin role (`--api-admin-mtls`) */
    adminMtls: z.boolean().default(false)
  }).strict().prefault({}),
  bootstrap: z.array(multiaddrString).default([]),
  bootstrapFile: z.string().optional(),
  upnp: z.boolean().default(false),
  autonat: z.boolean().default(true),
  logLevel: z.enum(LOG_LEVELS).default('info'),
  admission: z.object({
    timeoutMs: z.number().int().min(100).max(60_000).default(5000),
    rejectCooldownMs: z.number().int().min(0).default(60_000),
    /** how often admitted peers are re-checked for expiry */
    recheckIntervalMs: z.number().int().min(1000).default(60_000)
  }).strict().prefault({}),
  connections: z.object({
    max: z.number().int().min(1).default(300),
    maxPendingInbound: z.number().int().min(1).default(64),
    /** new inbound connections per second accepted from one host */
    inboundPerSecondPerHost: z.number().int().min(1).default(50),
    maxStreamsPerProtocol: z.number().int().min(1).default(64)
  }).strict().prefault({}),
  relay: z.object({
    /** run a circuit relay v2 server; `auto` = when the certificate has the `relay` role */
    server: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    /** hold a reservation on a relay so peers can reach this node through it (for nodes behind NAT) */
    reserve: z.boolean().default(false),
    maxReservations: z.number().int().min(1).default(128),
    /** per relayed connection; 0 = unlimited. Defaults carry a model transfer. */
    durationLimitMs: z.number().int().min(0).default(0),
    dataLimitBytes: z.number().int().min(0).default(0)
  }).strict().prefault({}),
  sandbox: z.object({
    /** warm workers kept per language for quick runs (each QuickJS worker ~15 MiB) */
    pool: z.object({
      js: z.number().int().min(0).max(16).default(1),
      wasm: z.number().int().min(0).max(16).default(1),
      /** a warm Pyodide costs ~100-160 MiB: none until the first Python run, then at least one */
      python: z.number().int().min(0).max(8).default(0)
    }).strict().prefault({}),
    /** sandbox workers at most (warm, running, persistent); more runs are refused with 429 */
    maxWorkers: z.number().int().min(1).max(256).default(32),
    /** fill the JS and WASI pools when the node starts; otherwise a language is kept warm once it has been used */
    warmAtStart: z.boolean().default(false)
  }).strict().prefault({}),
  /** local inference (node/llm): node-llama-cpp on held GGUF models, peers as fallback */
  llm: z.object({
    /** 'auto': a GPU build when one is installed and a GPU is present; false: CPU only */
    gpu: z.union([z.literal('auto'), z.literal(false)]).default('auto'),
    /** CPU threads per context; default half the cores (1 on a 2-core machine), at most 4 */
    threads: z.number().int().min(1).max(256).optional(),
    /** requests generating at once per model (sequences batched together) */
    parallel: z.number().int().min(1).max(64).default(4),
    /** tokens per sequence, capped at the model's training context */
    contextSize: z.number().int().min(64).max(1_048_576).default(2048),
    /** requests waiting per model; one more is answered 429 */
    maxQueued: z.number().int().min(0).max(4096).default(16),
    /** a request for a held model that is not loaded loads it */
    autoLoad: z.boolean().default(true),
    maxLoaded: z.number().int().min(1).max(64).default(2),
    /** how often the node tells peers which models it serves and how busy it is (also at every change); every node of a mesh should use the same */
    announceIntervalMs: z.number().int().min(500).max(600_000).default(5000),
    /** NAME@VERSION of held models loaded when the node starts */
    load: z.array(ModelIdSchema).max(64).default([]),
    /** the model of requests that name none (else the first one loaded) */
    defaultModel: ModelIdSchema.optional()
  }).strict().prefault({}),
  storage: z.object({
    /** where object bytes go: plain files, a content-addressed blockstore, or an external S3-compatible service */
    backend: z.enum(['disk', 'blocks', 's3']).default('disk'),
    s3: z.object({
      endpoint: z.string().url(),
      region: z.string().min(1).default('us-east-1'),
      bucket: z.string().min(3).max(63),
      accessKeyId: z.string().min(1),
      secretAccessKey: z.string().min(1),
      prefix: z.string().max(256).default(''),
      forcePathStyle: z.boolean().default(true)
    }).strict().optional()
  }).strict().prefault({}).refine((storage) => storage.backend !== 's3' || storage.s3 != null, { message: 'storage.backend "s3" needs storage.s3 {endpoint, bucket, accessKeyId, secretAccessKey}' }),
  /** optional central PostgreSQL the node's events are copied to (`--sync postgres://…`) */
  sync: z.object({
    url: z.string().regex(/^postgres(ql)?:\/\//, 'a postgres:// or postgresql:// URL').optional(),
    /** also take in events inserted centrally (logical replication; the URL's user needs REPLICATION) */
    changes: z.boolean().default(false)
  }).strict().prefault({}),
  /** serve the embedded database to psql on a Unix socket in <data>/psql (only the node's OS user can connect) */
  psql: z.boolean().default(false),
  http: z.object({
    /** requests per minute per client address */
    rateLimit: z.number().int().min(1).default(1200)
  }).strict().prefault({})
}).strict()

export type NodeConfig = z.infer<typeof NodeConfig>
export type NodeConfigInput = z.input<typeof NodeConfig>

import { readFile } from 'node:fs/promises'
import { NodeConfig, type NodeConfigInput } from './schema.ts'
import { BkgError } from '../../lib/bkg-error.ts'

export class ConfigError extends BkgError {
  constructor (message: string, options?: ErrorOptions) {
    super('config_invalid', 400, message, options)
  }
}

/** Environment variables `bkg start` reads; lists are comma-separated. */
export const ENV_VARS = {
  BKG_NAME: 'name',
  BKG_LISTEN: 'listen',
  BKG_ANNOUNCE: 'announce',
  BKG_API: 'api',
  BKG_BOOTSTRAP: 'bootstrap',
  BKG_BOOTSTRAP_FILE: 'bootstrapFile',
  BKG_UPNP: 'upnp',
  BKG_LOG_LEVEL: 'logLevel'
} as const

const LIST_KEYS = new Set(['listen', 'announce', 'bootstrap'])
const BOOLEAN_KEYS = new Set(['upnp'])

export function configFromEnv (env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [variable, key] of Object.entries(ENV_VARS)) {
    const raw = env[variable]
    if (raw == null || raw === '') continue
    if (LIST_KEYS.has(key)) out[key] = splitList(raw)
    else if (BOOLEAN_KEYS.has(key)) out[key] = parseBoolean(raw, variable)
    else out[key] = raw
  }
  return out
}

export function splitList (raw: string): string[] {
  return raw.split(',').map((part) => part.trim()).filter((part) => part.length > 0)
}

function parseBoolean (raw: string, variable: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true
  if (/^(0|false|no|off)$/i.test(raw)) return false
  throw new ConfigError(`${variable}=${raw}: expected true or false`)
}

export async function readConfigFile (path: string, required: boolean): Promise<Record<string, unknown>> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`)
  }
  try {
    const value: unknown = JSON.parse(text)
    if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object')
    return value as Record<string, unknown>
  } catch (err) {
    throw new ConfigError(`config file ${path} is not a JSON object: ${(err as Error).message}`)
  }
}

/** Later sources win: defaults < file < environment < flags. Nested objects merge one level deep. */
export function resolveConfig (...sources: Array<Record<string, unknown>>): NodeConfig {
  const merged: Record<string, unknown> = {}
  for (const source of sources) {
    for (const [key, value] of Object.entries(source)) {
      if (value === undefined) continue
      const previous = merged[key]
      merged[key] = isPlainObject(previous) && isPlainObject(value) ? { ...previous, ...value } : value
    }
  }
  const parsed = NodeConfig.safeParse(merged satisfies NodeConfigInput | Record<string, unknown>)
  if (!parsed.success) {
    // one line, as every CLI failure: `bkg: invalid configuration: expected HOST:PORT … (at api); …`
    throw new ConfigError(`invalid configuration: ${parsed.error.issues.map((issue) => `${issue.message} (at ${fieldPath(issue.path)})`).join('; ')}`)
  }
  return parsed.data
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return value != null && typeof value === 'object' && !Array.isArray(value)
}

/** `listen[0]`, `http.rateLimit`: where a setting is, as a config file names it */
function fieldPath (path: PropertyKey[]): string {
  if (path.length === 0) return 'the top level'
  return path.map((key, i) => typeof key === 'number' ? `[${key}]` : `${i === 0 ? '' : '.'}${String(key)}`).join('')
}

import type { SignedEvent } from '../../protocols/events.ts'
import { BkgError } from '../../lib/bkg-error.ts'

export const FILTER_OPERATORS = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in'] as const
export type FilterOperator = typeof FILTER_OPERATORS[number]

/** One condition on a payload field, as Supabase's postgres_changes filters: `field=op.value`. */
export interface PayloadFilter {
  /** dotted path into the payload, e.g. `sensor.id` */
  field: string
  op: FilterOperator
  value: string | string[]
}

export class FilterError extends BkgError {
  constructor (message: string) {
    super('invalid_filter', 400, message)
  }
}

const FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}$/
const MAX_IN = 100

/** Parses `field=op.value` (`in` takes `(a,b,c)`); throws FilterError with what is wrong. */
export function parseFilter (text: string): PayloadFilter {
  const match = /^([^=]+)=([a-z]+)\.(.*)$/s.exec(text)
  if (match == null) throw new FilterError(`filter "${text.slice(0, 80)}" is not field=op.value (ops: ${FILTER_OPERATORS.join(', ')})`)
  const [, field, op, raw] = match
  if (!FIELD.test(field)) throw new FilterError(`filter field "${field.slice(0, 80)}" is not a payload field name (letters, digits, _; dots for nesting)`)
  if (!(FILTER_OPERATORS as readonly string[]).includes(op)) throw new FilterError(`filter operator "${op}" is not one of ${FILTER_OPERATORS.join(', ')}`)
  if (op === 'in') {
    const list = /^\((.*)\)$/s.exec(raw)
    if (list == null) throw new FilterError('an `in` filter takes a list: field=in.(a,b,c)')
    const values = list[1] === '' ? [] : list[1].split(',')
    if (values.length > MAX_IN) throw new FilterError(`an \`in\` filter takes at most ${MAX_IN} values`)
    return { field, op, value: values }
  }
  return { field, op: op as FilterOperator, value: raw }
}

/** What a subscriber wants: a namespace, optionally one type and payload conditions (all must hold). */
export interface EventSelector {
  namespace: string
  type?: string
  filters: PayloadFilter[]
}

export function matches (selector: EventSelector, event: Pick<SignedEvent, 'namespace' | 'type' | 'payload'>): boolean {
  if (event.namespace !== selector.namespace) return false
  if (selector.type != null && event.type !== selector.type) return false
  return selector.filters.every((filter) => holds(filter, fieldOf(event.payload, filter.field)))
}

function fieldOf (payload: unknown, path: string): unknown {
  let value = payload
  for (const part of path.split('.')) {
    if (value == null || typeof value !== 'object' || Array.isArray(value)) return undefined
    value = (value as Record<string, unknown>)[part]
  }
  return value
}

/** Compares as numbers when both sides are numbers, else as text (as a filter string is untyped). */
function holds (filter: PayloadFilter, actual: unknown): boolean {
  if (actual === undefined || (actual !== null && typeof actual === 'object')) return filter.op === 'neq'
  const text = actual === null ? 'null' : String(actual)
  if (filter.op === 'in') return (filter.value as string[]).includes(text)
  const expected = filter.value as string
  if (filter.op === 'eq') return text === expected
  if (filter.op === 'neq') return text !== expected
  const numeric = typeof actual === 'number' && expected.trim() !== '' && Number.isFinite(Number(expected))
  const order = numeric ? Math.sign((actual as number) - Number(expected)) : text < expected ? -1 : text > expected ? 1 : 0
  if (filter.op === 'gt') return order > 0
  if (filter.op === 'gte') return order >= 0
  if (filter.op === 'lt') return order < 0
  return order <= 0
}

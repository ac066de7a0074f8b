/**
 * Roles and namespaces carried by node certificates.
 */
import { CaError } from './errors.ts'

export const ROLES = ['bootstrap', 'relay', 'publisher', 'admin', 'member'] as const
export type Role = typeof ROLES[number]

export const NAMESPACE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/

export function isRole (value: string): value is Role {
  return (ROLES as readonly string[]).includes(value)
}

/** Splits `"a,b, c"` or `['a', 'b,c']` into trimmed, non-empty items. */
function splitList (list: readonly string[] | string): string[] {
  const items = typeof list === 'string' ? [list] : list
  const out: string[] = []
  for (const item of items) {
    if (typeof item !== 'string') {
      throw new TypeError(`expected a string, got ${typeof item}`)
    }
    for (const part of item.split(',')) {
      const trimmed = part.trim()
      if (trimmed !== '') out.push(trimmed)
    }
  }
  return out
}

/**
 * Validates a list of roles (array, or a comma-separated string).
 * Returns them de-duplicated, in the order given.
 */
export function parseRoles (list: readonly string[] | string): Role[] {
  const out: Role[] = []
  for (const item of splitList(list)) {
    if (!isRole(item)) {
      throw new CaError('invalid_role',
        `invalid role ${JSON.stringify(item)}: allowed roles are ${ROLES.join(', ')}`)
    }
    if (!out.includes(item)) out.push(item)
  }
  return out
}

/**
 * Validates a list of namespaces (array, or a comma-separated string).
 * Each must match /^[a-z0-9][a-z0-9._-]{0,62}$/. Returns them de-duplicated.
 */
export function parseNamespaces (list: readonly string[] | string): string[] {
  const out: string[] = []
  for (const item of splitList(list)) {
    if (!NAMESPACE_PATTERN.test(item)) {
      throw new CaError('invalid_namespace',
        `invalid namespace ${JSON.stringify(item)}: a namespace is 1-63 characters of ` +
        'lowercase letters, digits, ".", "_" or "-", starting with a letter or digit')
    }
    if (!out.includes(item)) out.push(item)
  }
  return out
}

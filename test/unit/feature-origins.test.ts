import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { checkFeatureOrigins, REQUIRED_FIELDS } from '../../scripts/check-feature-origins.ts'

const DOC = fileURLToPath(new URL('../../docs/FEATURE_ORIGINS.md', import.meta.url))
const SCRIPT = fileURLToPath(new URL('../../scripts/check-feature-origins.ts', import.meta.url))

function entry (title: string, omit: string[] = [], override: Record<string, string> = {}, noCopy = true): string {
  const lines = [`## ${title}`, '']
  for (const field of REQUIRED_FIELDS) {
    if (omit.includes(field)) continue
    const value = override[field] ?? (field === 'No-copy statement'
      ? (noCopy ? 'No source copying — implementation written from scratch. X was used only as an inspiration for Y.' : 'We wrote it ourselves.')
      : `some ${field.toLowerCase()} text`)
    lines.push(`- **${field}:** ${value}`)
  }
  return lines.join('\n') + '\n\n'
}

const TEMPLATE = '# Feature origins\n\nIntro.\n\n## Template\n\n- **Feature:** name\n\n'

describe('checkFeatureOrigins', () => {
  it('accepts the real docs/FEATURE_ORIGINS.md', () => {
    const { entries, problems } = checkFeatureOrigins(readFileSync(DOC, 'utf8'))
    expect(problems).toEqual([])
    expect(entries).toBeGreaterThanOrEqual(1)
  })

  it('accepts a complete entry and skips the template section', () => {
    const { entries, problems } = checkFeatureOrigins(TEMPLATE + entry('Good one') + entry('Good two'))
    expect(problems).toEqual([])
    expect(entries).toBe(2)
  })

  it('names every missing field of every entry', () => {
    const { problems } = checkFeatureOrigins(TEMPLATE + entry('Good') + entry('Half done', ['Tests', 'Risks / Licence']))
    expect(problems).toEqual([
      { entry: 'Half done', problem: 'missing field "Tests"' },
      { entry: 'Half done', problem: 'missing field "Risks / Licence"' }
    ])
  })

  it('flags an empty field', () => {
    const { problems } = checkFeatureOrigins(TEMPLATE + entry('Empty design', [], { Design: ' ' }))
    expect(problems).toEqual([{ entry: 'Empty design', problem: 'field "Design" is empty' }])
  })

  it('requires the no-copy statement wording', () => {
    const { problems } = checkFeatureOrigins(TEMPLATE + entry('Copied?', [], {}, false))
    expect(problems).toHaveLength(1)
    expect(problems[0].entry).toBe('Copied?')
    expect(problems[0].problem).toMatch(/no-copy statement/)
  })

  it('accepts the statement with a plain hyphen', () => {
    const text = entry('Hyphen', [], { 'No-copy statement': 'No source copying - implementation written from scratch.' })
    expect(checkFeatureOrigins(TEMPLATE + text).problems).toEqual([])
  })

  it('fails a file without entries', () => {
    const { entries, problems } = checkFeatureOrigins(TEMPLATE)
    expect(entries).toBe(0)
    expect(problems).toEqual([{ entry: '(file)', problem: 'no entries found' }])
  })

  it('as a CLI, exits 0 on the real file and 1 naming the problem on a bad one', () => {
    const ok = spawnSync(process.execPath, [SCRIPT, DOC], { encoding: 'utf8' })
    expect(ok.status, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/entries/)
    const dir = mkdtempSync(join(tmpdir(), 'bkg-origins-test-'))
    try {
      const bad = join(dir, 'BAD.md')
      writeFileSync(bad, TEMPLATE + entry('Broken entry', ['Commits']))
      const failed = spawnSync(process.execPath, [SCRIPT, bad], { encoding: 'utf8' })
      expect(failed.status).toBe(1)
      expect(failed.stderr).toContain('Broken entry: missing field "Commits"')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

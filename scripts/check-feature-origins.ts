/**
 * CI check for docs/FEATURE_ORIGINS.md: every entry (a `## ` heading) must fill every template
 * field and carry the no-copy statement. Exits non-zero and names what is missing.
 */
import { readFileSync } from 'node:fs'

export const REQUIRED_FIELDS = [
  'Feature',
  'Inspiration',
  'Rationale',
  'Design',
  'API/Contracts',
  'Tests',
  'Risks / Licence',
  'Commits',
  'No-copy statement'
] as const

export const NO_COPY = /No source copying\s*[—-]+\s*implementation written from scratch/i

export interface EntryProblem {
  entry: string
  problem: string
}

export function checkFeatureOrigins (markdown: string): { entries: number, problems: EntryProblem[] } {
  const sections = markdown.split(/^## /m).slice(1)
  const problems: EntryProblem[] = []
  for (const section of sections) {
    const title = section.split('\n', 1)[0].trim()
    if (/^(template|how to)/i.test(title)) continue
    for (const field of REQUIRED_FIELDS) {
      const match = new RegExp(`^- \\*\\*${escape(field)}:\\*\\*(.*)$`, 'm').exec(section)
      if (match == null) problems.push({ entry: title, problem: `missing field "${field}"` })
      else if (match[1].trim().length < 3) problems.push({ entry: title, problem: `field "${field}" is empty` })
    }
    if (!NO_COPY.test(section)) problems.push({ entry: title, problem: 'missing the no-copy statement ("No source copying — implementation written from scratch")' })
  }
  const entries = sections.filter((s) => !/^(template|how to)/i.test(s.split('\n', 1)[0].trim())).length
  if (entries === 0) problems.push({ entry: '(file)', problem: 'no entries found' })
  return { entries, problems }
}

function escape (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const path = process.argv[2] ?? 'docs/FEATURE_ORIGINS.md'
  const { entries, problems } = checkFeatureOrigins(readFileSync(path, 'utf8'))
  if (problems.length > 0) {
    for (const { entry, problem } of problems) console.error(`${path}: ${entry}: ${problem}`)
    process.exit(1)
  }
  console.log(`${path}: ${entries} entries, every template field and no-copy statement present`)
}

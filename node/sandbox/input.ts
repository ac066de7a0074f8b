import { BkgError } from '../../lib/bkg-error.ts'
import { MAX_ARGS, MAX_CODE_BYTES, MAX_INPUT_FILE_BYTES, MAX_INPUT_FILES, MAX_MODULE_BYTES, MAX_STDIN_BYTES } from './constants.ts'
import type { Language } from './runtime/types.ts'
import type { ExecInput, SandboxPolicy } from './types.ts'

const invalid = (message: string): BkgError => new BkgError('invalid_input', 400, message)

/**
 * A guest file's path: absolute, `/`-separated, no `.` or `..` segment, no NUL. The guest's
 * filesystem is in memory; the path names a file there, never one of the host.
 */
export function checkGuestPath (path: string): void {
  if (!path.startsWith('/') || path.length > 1024) throw invalid(`file path ${JSON.stringify(path.slice(0, 64))}: an absolute path of at most 1024 characters`)
  if (path.includes('\0')) throw invalid('file paths may not contain NUL')
  const segments = path.slice(1).split('/')
  if (segments.some((segment) => segment === '' || segment === '.' || segment === '..')) throw invalid(`file path ${JSON.stringify(path)}: no empty, . or .. segments`)
}

/** What one run is given, checked before a worker sees it (400 invalid_input). */
export function checkRunInput (language: Language, input: ExecInput, policy: SandboxPolicy): void {
  if (language === 'wasm') {
    if (input.module == null) throw invalid('a wasm run needs `module`: a WASI preview1 module')
    if (input.code != null) throw invalid('a wasm run takes `module`, not `code`')
    if (input.module.byteLength > MAX_MODULE_BYTES) throw invalid(`the module is ${input.module.byteLength} bytes; at most ${MAX_MODULE_BYTES}`)
  } else {
    if (input.code == null) throw invalid(`a ${language} run needs \`code\``)
    if (input.module != null) throw invalid(`a ${language} run takes \`code\`, not \`module\``)
    if (Buffer.byteLength(input.code) > MAX_CODE_BYTES) throw invalid(`the code is over ${MAX_CODE_BYTES} bytes`)
  }
  if (input.stdin != null && input.stdin.byteLength > MAX_STDIN_BYTES) throw invalid(`stdin is over ${MAX_STDIN_BYTES} bytes`)
  if (input.timeoutMs != null && (!Number.isInteger(input.timeoutMs) || input.timeoutMs < 1)) throw invalid('timeoutMs: a positive integer')
  if (input.timeoutMs != null && input.timeoutMs > policy.timeoutMs) throw invalid(`timeoutMs: ${input.timeoutMs} is above the sandbox policy's ${policy.timeoutMs}`)
  if (input.args != null) {
    if (input.args.length > MAX_ARGS) throw invalid(`at most ${MAX_ARGS} args`)
    if (input.args.some((arg) => arg.includes('\0') || arg.length > 4096)) throw invalid('args: at most 4096 characters each, no NUL')
  }
  const files = Object.entries(input.files ?? {})
  if (files.length > MAX_INPUT_FILES) throw invalid(`at most ${MAX_INPUT_FILES} files per run`)
  let total = 0
  for (const [path, bytes] of files) {
    checkGuestPath(path)
    total += bytes.byteLength
  }
  if (total > MAX_INPUT_FILE_BYTES) throw invalid(`the files are ${total} bytes together; at most ${MAX_INPUT_FILE_BYTES}`)
}

/**
 * The guest side of the JavaScript sandbox: JavaScript that QuickJS evaluates once, at setup,
 * before the memory image is taken. Everything it defines (console, process, fs, timers, the
 * files) lives in the guest heap, so a memory image holds the whole guest, files included.
 *
 * It reads the host functions from `globalThis.__bkgHost` (js-runner.ts puts them there), keeps
 * them in closures, deletes the global, and evaluates to a control object for the host (begin a
 * run, put and list files, drive timers). Nothing of the host is reachable from the guest except
 * through console, process, fs and the stdin functions.
 *
 * The guest API:
 * - console.log/info/debug (stdout), console.error/warn (stderr), process.stdout/stderr.write
 * - process.argv (['quickjs', '/main.js', ...args]), process.env, process.exit(code), process.exitCode
 * - readStdin(): string (all of stdin, blocking on a live one), readStdinChunk(): Uint8Array | null
 * - fs: readFile(path, 'utf8'?), writeFile, appendFile, readdir, mkdir, unlink, rmdir, rename,
 *   exists, stat; the same under fs.promises. Paths are absolute (relative ones start at /),
 *   parent directories are created on write, and '/dev/stdin' reads stdin
 * - setTimeout/clearTimeout/setInterval/clearInterval/queueMicrotask, TextEncoder/TextDecoder (UTF-8)
 */
export const JS_GUEST_PRELUDE = String.raw`
(function (host) {
  'use strict'
  delete globalThis.__bkgHost
  const hostWrite = host.write
  const hostReadStdin = host.readStdin
  const hostExit = host.exit
  const encodeUtf8 = host.encodeUtf8
  const decodeUtf8 = host.decodeUtf8
  const STDOUT = 1
  const STDERR = 2

  // ---- text ----
  function toBytes (data) {
    if (typeof data === 'string') return new Uint8Array(encodeUtf8(data))
    if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0))
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength))
    return new Uint8Array(encodeUtf8(String(data)))
  }
  function bytesToString (bytes) {
    return decodeUtf8(bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes.buffer : bytes.slice().buffer)
  }
  class TextEncoder {
    get encoding () { return 'utf-8' }
    encode (text = '') { return new Uint8Array(encodeUtf8(String(text))) }
  }
  class TextDecoder {
    get encoding () { return 'utf-8' }
    decode (data) { return data === undefined ? '' : bytesToString(toBytes(data)) }
  }

  // ---- console ----
  const IDENTIFIER = /^[A-Za-z_$][\w$]*$/
  function inspect (value, depth, seen) {
    switch (typeof value) {
      case 'string': return depth === 0 ? value : JSON.stringify(value)
      case 'bigint': return value + 'n'
      case 'symbol': return value.toString()
      case 'function': return '[Function: ' + (value.name || '(anonymous)') + ']'
      case 'object': break
      default: return String(value)
    }
    if (value === null) return 'null'
    if (value instanceof Error) {
      const head = value.name + ': ' + value.message
      return value.stack ? head + '\n' + String(value.stack).replace(/\n$/, '') : head
    }
    if (seen.includes(value)) return '[Circular]'
    if (value instanceof Date) return isNaN(value) ? 'Invalid Date' : value.toISOString()
    if (value instanceof RegExp) return String(value)
    if (depth > 3) return Array.isArray(value) ? '[Array]' : '[Object]'
    seen.push(value)
    try {
      const inner = (v) => inspect(v, depth + 1, seen)
      if (Array.isArray(value)) return value.length === 0 ? '[]' : '[ ' + value.map(inner).join(', ') + ' ]'
      if (ArrayBuffer.isView(value)) return value.constructor.name + '(' + value.length + ') [ ' + Array.prototype.slice.call(value, 0, 50).join(', ') + (value.length > 50 ? ', ...' : '') + ' ]'
      if (value instanceof Map) return 'Map(' + value.size + ') { ' + [...value].map(([k, v]) => inner(k) + ' => ' + inner(v)).join(', ') + ' }'
      if (value instanceof Set) return 'Set(' + value.size + ') { ' + [...value].map(inner).join(', ') + ' }'
      if (value instanceof Promise) return 'Promise {}'
      const keys = Object.keys(value)
      if (keys.length === 0) return '{}'
      return '{ ' + keys.map(k => (IDENTIFIER.test(k) ? k : JSON.stringify(k)) + ': ' + inner(value[k])).join(', ') + ' }'
    } finally {
      seen.pop()
    }
  }
  function format (args) {
    let out = ''
    for (let i = 0; i < args.length; i++) out += (i > 0 ? ' ' : '') + inspect(args[i], 0, [])
    return out + '\n'
  }
  const console = {
    log (...args) { hostWrite(STDOUT, format(args)) },
    info (...args) { hostWrite(STDOUT, format(args)) },
    debug (...args) { hostWrite(STDOUT, format(args)) },
    warn (...args) { hostWrite(STDERR, format(args)) },
    error (...args) { hostWrite(STDERR, format(args)) }
  }

  // ---- stdin ----
  let stdinEnded = false
  function readStdinChunk () {
    if (stdinEnded) return null
    const chunk = hostReadStdin()
    if (chunk === undefined) {
      stdinEnded = true
      return null
    }
    return new Uint8Array(chunk)
  }
  function readStdinBytes () {
    const chunks = []
    let total = 0
    for (let chunk = readStdinChunk(); chunk !== null; chunk = readStdinChunk()) {
      chunks.push(chunk)
      total += chunk.length
    }
    const all = new Uint8Array(total)
    let offset = 0
    for (const chunk of chunks) {
      all.set(chunk, offset)
      offset += chunk.length
    }
    return all
  }
  function readStdin () { return bytesToString(readStdinBytes()) }

  // ---- process ----
  class ExitRequest {
    constructor (code) { this.code = code }
    toString () { return 'process.exit(' + this.code + ')' }
  }
  const process = {
    argv: [],
    env: {},
    exitCode: undefined,
    exit (code) {
      const status = code === undefined ? (process.exitCode ?? 0) : code
      hostExit(Number(status) | 0)
      // unwinds the guest; the host stops it at its next interrupt check even if this is caught
      throw new ExitRequest(Number(status) | 0)
    },
    stdout: { write (data) { hostWrite(STDOUT, typeof data === 'string' ? data : toBytes(data).buffer); return true } },
    stderr: { write (data) { hostWrite(STDERR, typeof data === 'string' ? data : toBytes(data).buffer); return true } }
  }

  // ---- files ----
  const files = new Map()
  const dirs = new Set(['/'])
  let changed = new Set()
  const MESSAGES = { ENOENT: 'no such file or directory', EISDIR: 'illegal operation on a directory', ENOTDIR: 'not a directory', ENOTEMPTY: 'directory not empty', EEXIST: 'file already exists' }
  function fsError (code, syscall, path) {
    const error = new Error(code + ': ' + MESSAGES[code] + ', ' + syscall + " '" + path + "'")
    error.code = code
    error.syscall = syscall
    error.path = path
    return error
  }
  function normalize (path) {
    if (typeof path !== 'string') throw new TypeError('a path must be a string')
    const parts = []
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue
      if (part === '..') parts.pop()
      else parts.push(part)
    }
    return '/' + parts.join('/')
  }
  function parentOf (path) {
    const slash = path.lastIndexOf('/')
    return slash <= 0 ? '/' : path.slice(0, slash)
  }
  function makeParents (path) {
    for (let dir = parentOf(path); !dirs.has(dir); dir = parentOf(dir)) {
      if (files.has(dir)) throw fsError('ENOTDIR', 'open', path)
      dirs.add(dir)
    }
  }
  function putFile (path, bytes, markChanged) {
    if (dirs.has(path)) throw fsError('EISDIR', 'open', path)
    makeParents(path)
    files.set(path, bytes)
    if (markChanged) changed.add(path)
  }
  function decodeAs (bytes, options) {
    const encoding = typeof options === 'string' ? options : options?.encoding
    if (encoding === undefined || encoding === null) return bytes
    if (encoding === 'utf8' || encoding === 'utf-8') return bytesToString(bytes)
    throw new TypeError('unsupported encoding ' + encoding + ' (utf8 only)')
  }
  const fs = {
    readFile (path, options) {
      const name = normalize(path)
      if (name === '/dev/stdin') return decodeAs(readStdinBytes(), options)
      const bytes = files.get(name)
      if (bytes === undefined) throw fsError(dirs.has(name) ? 'EISDIR' : 'ENOENT', 'open', path)
      return decodeAs(bytes.slice(), options)
    },
    writeFile (path, data) { putFile(normalize(path), toBytes(data), true) },
    appendFile (path, data) {
      const name = normalize(path)
      const before = files.get(name) ?? new Uint8Array(0)
      const added = toBytes(data)
      const after = new Uint8Array(before.length + added.length)
      after.set(before)
      after.set(added, before.length)
      putFile(name, after, true)
    },
    exists (path) {
      const name = normalize(path)
      return files.has(name) || dirs.has(name)
    },
    stat (path) {
      const name = normalize(path)
      const bytes = files.get(name)
      if (bytes === undefined && !dirs.has(name)) throw fsError('ENOENT', 'stat', path)
      const isFile = bytes !== undefined
      return { size: isFile ? bytes.length : 0, isFile: () => isFile, isDirectory: () => !isFile }
    },
    readdir (path = '/') {
      const name = normalize(path)
      if (!dirs.has(name)) throw fsError(files.has(name) ? 'ENOTDIR' : 'ENOENT', 'scandir', path)
      const prefix = name === '/' ? '/' : name + '/'
      const names = new Set()
      for (const entry of [...files.keys(), ...dirs]) {
        if (entry !== name && entry.startsWith(prefix)) names.add(entry.slice(prefix.length).split('/')[0])
      }
      return [...names].sort()
    },
    mkdir (path, options) {
      const name = normalize(path)
      if (files.has(name)) throw fsError('EEXIST', 'mkdir', path)
      if (dirs.has(name)) {
        if (options?.recursive) return
        throw fsError('EEXIST', 'mkdir', path)
      }
      if (!options?.recursive && !dirs.has(parentOf(name))) throw fsError('ENOENT', 'mkdir', path)
      makeParents(name)
      dirs.add(name)
    },
    unlink (path) {
      const name = normalize(path)
      if (!files.has(name)) throw fsError(dirs.has(name) ? 'EISDIR' : 'ENOENT', 'unlink', path)
      files.delete(name)
      changed.delete(name)
    },
    rmdir (path) {
      const name = normalize(path)
      if (!dirs.has(name) || name === '/') throw fsError('ENOENT', 'rmdir', path)
      if (fs.readdir(name).length > 0) throw fsError('ENOTEMPTY', 'rmdir', path)
      dirs.delete(name)
    },
    rename (from, to) {
      const source = normalize(from)
      const bytes = files.get(source)
      if (bytes === undefined) throw fsError('ENOENT', 'rename', from)
      fs.unlink(source)
      putFile(normalize(to), bytes, true)
    }
  }
  fs.promises = {}
  for (const key of Object.keys(fs)) {
    if (key !== 'promises') fs.promises[key] = (...args) => new Promise(resolve => resolve(fs[key](...args)))
  }
  fs.readFileSync = fs.readFile
  fs.writeFileSync = fs.writeFile
  fs.existsSync = fs.exists
  fs.readdirSync = fs.readdir

  // ---- timers: run by the host after the script and its promise jobs, in order of due time ----
  let timers = []
  let nextTimerId = 1
  function addTimer (callback, delay, args, repeat) {
    if (typeof callback !== 'function') throw new TypeError('the callback must be a function')
    const id = nextTimerId++
    const ms = Math.max(0, Number(delay) || 0)
    timers.push({ id, due: Date.now() + ms, ms, callback, args, repeat })
    return id
  }
  function clearTimer (id) { timers = timers.filter(timer => timer.id !== id) }

  const globals = {
    console,
    process,
    fs,
    readStdin,
    readStdinChunk,
    TextEncoder,
    TextDecoder,
    setTimeout: (callback, delay, ...args) => addTimer(callback, delay, args, false),
    setInterval: (callback, delay, ...args) => addTimer(callback, delay, args, true),
    clearTimeout: clearTimer,
    clearInterval: clearTimer,
    queueMicrotask: (callback) => { Promise.resolve().then(callback) }
  }
  for (const [name, value] of Object.entries(globals)) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false })
  }

  return {
    begin (argvJson, envJson) {
      process.argv = JSON.parse(argvJson)
      process.env = JSON.parse(envJson)
      process.exitCode = undefined
      changed = new Set()
      stdinEnded = false
      timers = []
    },
    putFile (path, buffer) { putFile(normalize(path), new Uint8Array(buffer), false) },
    changedFiles () { return [...changed] },
    allFiles () { return [...files.keys()] },
    fileBytes (path) {
      const bytes = files.get(path)
      return bytes === undefined ? undefined : bytes.slice().buffer
    },
    exitCode () { return process.exitCode },
    /** ms until the next timer is due, or -1 when none is left */
    nextTimerDelay () {
      if (timers.length === 0) return -1
      let due = Infinity
      for (const timer of timers) due = Math.min(due, timer.due)
      return Math.max(0, due - Date.now())
    },
    /** runs the first due timer; its exception (if any) escapes to the host as uncaught */
    runDueTimer () {
      const now = Date.now()
      let first
      for (const timer of timers) if (timer.due <= now && (first === undefined || timer.due < first.due)) first = timer
      if (first === undefined) return
      if (first.repeat) first.due = now + Math.max(1, first.ms)
      else clearTimer(first.id)
      first.callback(...first.args)
    }
  }
})(globalThis.__bkgHost)
`

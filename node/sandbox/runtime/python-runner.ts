import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { loadPyodide } from 'pyodide'
import { BkgError } from '../../../lib/bkg-error.ts'
import { MIN_PYTHON_MEMORY_BYTES, MiB, PYTHON_SCRIPT_NAME, WASM_PAGE_BYTES } from './constants.ts'
import { STREAM_STDERR, STREAM_STDOUT } from './worker-protocol.ts'
import type { GuestIO } from './guest-io.ts'
import type { CreateRunner, GuestRunner, RunnerInit, RunnerOutcome } from './runner.ts'
import type { RunJob, RunOutcome, WorkerImage } from './worker-protocol.ts'

type Pyodide = Awaited<ReturnType<typeof loadPyodide>>
type GuestError = NonNullable<RunOutcome['error']>

interface FsStat { mode: number, size: number, mtime: Date }
interface FsNode { usedBytes?: number }
interface FsStream { node: FsNode, path?: string }
/** the part of Emscripten's FS the runner uses (pyodide's FS lives in JS: MEMFS, one Uint8Array per file) */
interface EmscriptenFs {
  readdir: (path: string) => string[]
  lstat: (path: string) => FsStat
  isDir: (mode: number) => boolean
  isFile: (mode: number) => boolean
  readFile: (path: string) => Uint8Array
  writeFile: (path: string, data: Uint8Array) => void
  mkdirTree: (path: string) => void
  unlink: (path: string) => void
  rmdir: (path: string) => void
  mount: (...args: unknown[]) => unknown
  filesystems: Record<string, { stream_ops?: Record<string, (...args: any[]) => any> } | undefined>
  ErrnoError: new (errno: number) => Error
}
interface PyCallable { (...args: unknown[]): unknown, destroy: () => void }

/** Emscripten's errno values (WASI numbering) */
const ERRNO_ACCES = 2
const ERRNO_NOSPC = 51
/** musl's EAI_FAIL: name resolution failed */
const EAI_FAIL = -4
/** the signal the interrupt buffer raises as KeyboardInterrupt */
const SIGINT = 2
/** a guest that catches KeyboardInterrupt gets another this long after */
const INTERRUPT_REPEAT_MS = 50

/**
 * Imports of pyodide's wasm module that reach the host, replaced before it is instantiated: in
 * Node, Emscripten's `system()` runs a shell through child_process (os.system ran `ls` on the
 * host in a probe here), its sockets are WebSockets through the `ws` package, and dlopen loads
 * wasm side modules from the FS (a guest could write one and reach every JS library function).
 * A guest gets EACCES and failed lookups instead.
 */
const DENIED_IMPORTS: Record<string, (...args: unknown[]) => number> = {
  _emscripten_system: () => -1,
  __syscall_socket: () => -ERRNO_ACCES,
  __syscall_connect: () => -ERRNO_ACCES,
  __syscall_bind: () => -ERRNO_ACCES,
  __syscall_listen: () => -ERRNO_ACCES,
  __syscall_accept4: () => -ERRNO_ACCES,
  __syscall_sendto: () => -ERRNO_ACCES,
  __syscall_recvfrom: () => -ERRNO_ACCES,
  getaddrinfo: () => EAI_FAIL,
  getnameinfo: () => EAI_FAIL,
  _dlopen_js: () => 0,
  _dlsym_js: () => 0,
  _emscripten_dlopen_js: () => { throw new Error('dlopen is not available in a sandbox') }
}

/**
 * Python modules a guest may not import. `js` and `pyodide_js` are JavaScript objects, and any
 * JavaScript object handed to Python leads to the worker's globals (through `constructor`
 * chains); `pyodide`, `_pyodide` and `_pyodide_core` make such objects (`to_js`, `run_js`,
 * `create_proxy`); ctypes reads and writes the wasm memory and calls any function in it.
 */
const BLOCKED_MODULES = ['js', 'pyodide_js', 'pyodide', '_pyodide', '_pyodide_core', 'ctypes', '_ctypes', 'micropip', '_remote_debugging']

/**
 * Run before the start snapshot: what most programs import, so their first run need not load it
 * from the stdlib zip, and every builtin C module that is allowed (once the lockdown removes
 * `_imp.create_builtin`, no builtin module can be created any more).
 */
const WARM_UP = `
import sys, os, io, json, re, math, random, time, traceback, collections, itertools, functools, datetime, string, textwrap, gc
for _name in sys.builtin_module_names:
    if _name not in ${JSON.stringify(BLOCKED_MODULES)}:
        try:
            __import__(_name)
        except Exception:
            pass
del _name
`

/**
 * Python's side of the lockdown, after every load (the start snapshot is made before it): the
 * blocked modules go from sys.modules, pyodide's finder of JS modules from sys.meta_path, a
 * finder that refuses them goes first, no builtin module can be created again (so
 * `_pyodide_core` and `_ctypes` cannot come back through importlib), gc's object walkers are
 * gone (they found live JsProxy objects), and os.system / os.fork and friends raise.
 * Then it defines the run function the host calls (json in, json out: no JS object crosses).
 */
const LOCKDOWN = `
def _bkg_lockdown(blocked):
    import sys, os, gc, _imp, json, traceback, linecache
    blocked = frozenset(blocked)
    def top(name):
        return name.partition('.')[0]
    class BlockedModules:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if top(name) in blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (not available in this sandbox)", name=name)
            return None
    def is_js(value):
        return type(value).__module__ in ('pyodide.ffi', '_pyodide_core', 'pyodide_js', 'js') or type(value).__name__.startswith('Js')
    # what lock() took away, to put back for a memory snapshot (pyodide's loader imports its own
    # modules and finds its JS modules when it starts from one); held only by lock and unlock,
    # which only the host holds
    hidden = {'modules': {}, 'finders': [], 'values': [], 'asyncio': None}
    import asyncio, asyncio.selector_events, time

    class SandboxLoop(asyncio.selector_events.BaseSelectorEventLoop):
        # the self-pipe wakes a loop from other threads and signal handlers; there are neither
        # here, and sockets (socketpair) are denied
        def _make_self_pipe(self):
            self._ssock = self._csock = None
        def _close_self_pipe(self):
            pass
        def _write_to_self(self):
            pass
        def _process_self_data(self, data):
            pass

    class SandboxPolicy(asyncio.events._BaseDefaultEventLoopPolicy):
        _loop_factory = SandboxLoop

    def lock():
        if hidden['modules']:
            return
        for name in list(sys.modules):
            if top(name) in blocked:
                hidden['modules'][name] = sys.modules.pop(name)
        hidden['finders'] = [(i, f) for i, f in enumerate(sys.meta_path) if type(f).__name__ == 'JsFinder']
        sys.meta_path[:] = [BlockedModules] + [f for f in sys.meta_path if type(f).__name__ != 'JsFinder' and f is not BlockedModules]
        # every JS object in a module (js, pyodide_js and its _api in pyodide's; jsnull in json's)
        # leaves Python's reach, but stays alive: pyodide's table of JS objects must stay as a
        # snapshot expects it
        for module in list(hidden['modules'].values()) + list(sys.modules.values()):
            space = getattr(module, '__dict__', None)
            if not isinstance(space, dict):
                continue
            for key, value in list(space.items()):
                if is_js(value):
                    hidden['values'].append((space, key, space.pop(key)))
                elif key == 'jsfinder' and isinstance(getattr(value, 'jsproxies', None), dict):
                    hidden['values'].append((value.jsproxies, None, dict(value.jsproxies)))
                    value.jsproxies.clear()
        # pyodide's event loop (WebLoop) runs on JS timers and its asyncio.run reads pyodide_js:
        # the stdlib's asyncio.run and loop instead; time.sleep in slices, so that the interrupt
        # ends a sleeping guest at its deadline (Emscripten's sleep is a busy wait that never looks)
        webloop = hidden['modules'].get('pyodide.webloop')
        hidden['asyncio'] = (asyncio.run, time.sleep, asyncio.events._get_running_loop(), asyncio.events._event_loop_policy)
        asyncio.run = getattr(webloop, '_orig_run', asyncio.run)
        asyncio._set_running_loop(None)
        asyncio.events._event_loop_policy = SandboxPolicy()
        sleep = getattr(webloop, '_orig_sleep', time.sleep)
        monotonic = time.monotonic
        slice_seconds = 0.02
        def sliced_sleep(seconds):
            end = monotonic() + seconds
            sleep(min(seconds, slice_seconds))
            while (left := end - monotonic()) > 0:
                sleep(min(left, slice_seconds))
        sliced_sleep.__doc__ = sleep.__doc__
        time.sleep = sliced_sleep

    def unlock():
        for space, key, value in reversed(hidden['values']):
            if key is None:
                space.update(value)
            else:
                space[key] = value
        hidden['values'] = []
        sys.meta_path[:] = [f for f in sys.meta_path if f is not BlockedModules]
        for index, finder in hidden['finders']:
            sys.meta_path.insert(index, finder)
        hidden['finders'] = []
        sys.modules.update(hidden['modules'])
        hidden['modules'] = {}
        if hidden['asyncio'] is not None:
            asyncio.run, time.sleep, loop, asyncio.events._event_loop_policy = hidden['asyncio']
            asyncio._set_running_loop(loop)
            hidden['asyncio'] = None

    lock()
    def no_builtin(spec):
        raise ImportError(f"builtin module {spec.name!r} is not available in this sandbox", name=spec.name)
    _imp.create_builtin = no_builtin
    def refused(*args, **kwargs):
        raise PermissionError('not available in this sandbox')
    for name in ('get_objects', 'get_referrers', 'get_referents'):
        setattr(gc, name, refused)
    for name in ('system', 'popen', 'fork', 'forkpty', 'execv', 'execve', 'spawnv', 'spawnve', 'posix_spawn', 'posix_spawnp', 'kill', 'killpg'):
        if hasattr(os, name):
            setattr(os, name, refused)
    sys.executable = '/usr/bin/python3'
    sys.stdout.reconfigure(line_buffering=True, errors='backslashreplace')
    sys.stderr.reconfigure(line_buffering=True, errors='backslashreplace')
    main = sys.modules['__main__'].__dict__

    def run(code, argv_json, env_json):
        sys.argv = json.loads(argv_json)
        linecache.cache[${JSON.stringify(PYTHON_SCRIPT_NAME)}] = (len(code), None, code.splitlines(True), ${JSON.stringify(PYTHON_SCRIPT_NAME)})
        os.environ.clear()
        os.environ.update(json.loads(env_json))
        status = {'kind': 'ok', 'code': 0}
        try:
            exec(compile(code, ${JSON.stringify(PYTHON_SCRIPT_NAME)}, 'exec'), main)
        except SystemExit as exit:
            value = exit.code
            if value is None:
                status['code'] = 0
            elif isinstance(value, int):
                status['code'] = value if -2**31 <= value < 2**31 else 1
            else:
                print(value, file=sys.stderr)
                status['code'] = 1
            status['kind'] = 'exit'
        except BaseException as error:
            tb = error.__traceback__
            # the first frame is this function's
            error = error.with_traceback(tb.tb_next if tb is not None else None)
            text = ''.join(traceback.format_exception(error))
            status = {'kind': 'error', 'code': 1, 'name': type(error).__name__, 'message': str(error), 'stack': text}
            sys.stderr.write(text)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                pass
        return json.dumps(status)
    return run, lock, unlock
_bkg_run, _bkg_lock, _bkg_unlock = _bkg_lockdown(${JSON.stringify(BLOCKED_MODULES)})
del _bkg_lockdown
`

/** JavaScript's function constructors: every JS function leads to one through `constructor` */
function blockFunctionConstructors (): void {
  const prototypes = [
    Function.prototype,
    Object.getPrototypeOf(async function () {}),
    Object.getPrototypeOf(function * () {}),
    Object.getPrototypeOf(async function * () {})
  ] as object[]
  for (const prototype of prototypes) {
    const descriptor = Object.getOwnPropertyDescriptor(prototype, 'constructor')
    if (descriptor?.configurable === true) Object.defineProperty(prototype, 'constructor', { value: undefined, writable: false, configurable: false })
  }
}

/** replaces host-reaching imports of pyodide's wasm module while `load` runs */
async function withDeniedImports<T> (load: () => Promise<T>): Promise<T> {
  const wasm = (globalThis as unknown as { WebAssembly: Record<string, (...args: any[]) => any> }).WebAssembly
  const { instantiate, instantiateStreaming } = wasm
  let denied = 0
  const deny = (imports: unknown): void => {
    const env = (imports as { env?: Record<string, unknown> } | undefined)?.env
    if (env === undefined || typeof env !== 'object') return
    for (const [name, stub] of Object.entries(DENIED_IMPORTS)) {
      if (name in env) {
        env[name] = stub
        denied++
      }
    }
  }
  wasm.instantiate = async (source: unknown, imports?: unknown) => {
    deny(imports)
    return await instantiate.call(wasm, source, imports)
  }
  wasm.instantiateStreaming = async (source: unknown, imports?: unknown) => {
    deny(imports)
    return await instantiateStreaming.call(wasm, source, imports)
  }
  try {
    const result = await load()
    if (denied < 5) throw new Error('pyodide was instantiated without its host imports denied')
    return result
  } finally {
    wasm.instantiate = instantiate
    wasm.instantiateStreaming = instantiateStreaming
  }
}

/**
 * What the runner keeps of a loaded pyodide. Everything else of its JS API object is deleted:
 * that object is what Python's `pyodide_js` module is (mountNodeFS, loadPackage, useNodeSockFS,
 * `_api` with loadBinaryFile, `_module` with the FS and its NODEFS all reach the host).
 */
interface Guest {
  fs: EmscriptenFs
  heap: () => number
  makeSnapshot: () => Uint8Array
  run: PyCallable
  /** Python's lockdown, undone only while a memory snapshot is taken (no guest code runs then) */
  lock: PyCallable
  unlock: PyCallable
}

/** Emscripten module functions that reach the host (a shell, WebSockets, loading code): refused */
const DENIED_MODULE_FUNCTIONS = /system|run_script|websocket|dlopen|loadDynamicLibrary|loadWebAssemblyModule/i

/**
 * Host-reaching parts of pyodide's FS, of its Emscripten module and of the worker's globals
 * removed. Python cannot reach these objects (no JS object is left within its reach); this is for
 * a guest that corrupts CPython's memory and forges a reference into pyodide's table of JS objects.
 */
function lockFs (fs: EmscriptenFs, module: Record<string, unknown>): void {
  const refuse = (): never => { throw new Error('not available in a sandbox') }
  for (const name of Object.keys(fs.filesystems)) if (name !== 'MEMFS') delete fs.filesystems[name]
  fs.mount = refuse
  for (const name of Object.keys(module)) {
    if (typeof module[name] === 'function' && DENIED_MODULE_FUNCTIONS.test(name)) module[name] = refuse
  }
  delete (globalThis as Record<string, unknown>).require
  delete (globalThis as Record<string, unknown>).fetch
}

/** deletes every property of pyodide's API object (what `pyodide_js` would be) */
function wipeApi (py: Pyodide): void {
  const api = py as unknown as Record<PropertyKey, unknown>
  for (const key of Reflect.ownKeys(api)) {
    if (!Reflect.deleteProperty(api, key)) {
      try {
        api[key] = undefined
      } catch {
        // neither configurable nor writable (length, name of a function): harmless
      }
    }
  }
}

function errorOf (error: unknown): GuestError {
  const type = (error as { type?: unknown }).type
  const message = error instanceof Error ? error.message : String(error)
  return { name: typeof type === 'string' ? type : (error instanceof Error ? error.name : 'Error'), message: message.split('\n').filter(Boolean).pop() ?? message }
}

type Tree = Map<string, { size: number, mtime: number }>

/** paths that are pyodide's, not the guest's: never listed as files in or out */
const SYSTEM_PATHS = new Set(['/dev', '/proc', '/lib/python314.zip'])

/**
 * A Python guest: pyodide (CPython 3.14 in wasm) in the worker, loaded from a start snapshot
 * into a wasm module whose memory maximum is the cap (python-assets.ts). Quick guests are never
 * reset (pyodide's FS and fd tables live in JS, so a memory copy leaves them out of step): the
 * worker is replaced after every run. Persistent guests keep `__main__`'s globals and the FS
 * between runs; their image is pyodide's memory snapshot plus the FS tree.
 */
class PythonRunner implements GuestRunner {
  private guest!: Guest
  private io: GuestIO | undefined
  /** bytes written to files during the run, counted against the memory cap (MEMFS files live outside the wasm memory) */
  private fileBytes = 0
  private readonly written = new Set<FsNode>()
  /** when the guest was last interrupted in this run: one KeyboardInterrupt at a time, again if it is caught */
  private interruptedAt = 0
  private readonly init: RunnerInit
  private readonly persistent: boolean

  private constructor (init: RunnerInit) {
    this.init = init
    this.persistent = init.mode === 'persistent'
  }

  static async create (init: RunnerInit): Promise<PythonRunner> {
    if (init.memoryBytes < MIN_PYTHON_MEMORY_BYTES) {
      throw new BkgError('invalid_limits', 400, `a Python guest needs a memory cap of at least ${MIN_PYTHON_MEMORY_BYTES / MiB} MiB`)
    }
    const python = init.python
    if (python === undefined) throw new Error('a Python worker needs its pyodide directory')
    const runner = new PythonRunner(init)
    try {
      runner.guest = await runner.load(await startSnapshot(python.indexURL, python.snapshotPath))
    } catch {
      // a start snapshot that does not load (damaged, or from another build) is made again
      rmSync(python.snapshotPath, { force: true })
      runner.guest = await runner.load(await startSnapshot(python.indexURL, python.snapshotPath))
    }
    runner.warmUp()
    return runner
  }

  /** a pyodide from a snapshot, locked down, with this runner's stdio, interrupt and file meter */
  private async load (snapshot: Uint8Array): Promise<Guest> {
    const py = await loadLockedPyodide(this.init.python?.indexURL ?? '', {
      checkAPIVersion: true,
      _loadSnapshot: snapshot,
      // persistent guests are imaged with pyodide's memory snapshot, which must be asked for at load
      ...(this.persistent ? { _makeSnapshot: true } : {})
    })
    blockFunctionConstructors()
    py.runPython(LOCKDOWN, { filename: '<sandbox>' })
    const run = py.globals.get('_bkg_run') as PyCallable
    const lock = py.globals.get('_bkg_lock') as PyCallable
    const unlock = py.globals.get('_bkg_unlock') as PyCallable
    py.runPython('del _bkg_run, _bkg_lock, _bkg_unlock')
    this.attach(py)
    const fs = py.FS as unknown as EmscriptenFs
    const module = (py as unknown as { _module: { HEAPU8: Uint8Array } })._module
    lockFs(fs, module as unknown as Record<string, unknown>)
    const api = py as unknown as { makeMemorySnapshot: () => Uint8Array }
    const makeSnapshot = api.makeMemorySnapshot.bind(py)
    wipeApi(py)
    return { fs, heap: () => module.HEAPU8.byteLength, makeSnapshot, run, lock, unlock }
  }

  /** stdout, stderr, stdin and the interrupt, all reading the current run */
  private attach (py: Pyodide): void {
    py.setStdout({ write: (bytes: Uint8Array) => this.output(STREAM_STDOUT, bytes), isatty: false })
    py.setStderr({ write: (bytes: Uint8Array) => this.output(STREAM_STDERR, bytes), isatty: false })
    let pending: Uint8Array = new Uint8Array(0)
    py.setStdin({
      read: (buffer: Uint8Array) => {
        if (pending.length === 0) pending = this.io?.readStdin() ?? new Uint8Array(0)
        const take = Math.min(pending.length, buffer.length)
        buffer.set(pending.subarray(0, take))
        pending = pending.subarray(take)
        return take
      },
      isatty: false
    })
    // pyodide reads [0] every few bytecodes (and resets it): SIGINT raises KeyboardInterrupt
    const interrupt = Object.defineProperty({}, 0, {
      get: () => this.interruptNow() ? SIGINT : 0,
      set: () => {}
    })
    py.setInterruptBuffer(interrupt as unknown as Uint8Array)
    this.meterFiles(py.FS as unknown as EmscriptenFs)
  }

  /**
   * One run of nothing (its output goes nowhere): V8 compiles pyodide's glue lazily, so a
   * worker's first run paid 10-30 ms more than later ones here. It leaves `__main__` as it was.
   */
  private warmUp (): void {
    this.guest.run('import sys\nprint(end="")\nsys.stderr.write("")', JSON.stringify([PYTHON_SCRIPT_NAME]), '{}')
    this.changedFiles(this.tree())
  }

  private interruptNow (): boolean {
    if (this.io?.shouldStop() !== true) return false
    const now = Date.now()
    if (now - this.interruptedAt < INTERRUPT_REPEAT_MS) return false
    this.interruptedAt = now
    return true
  }

  /**
   * MEMFS keeps each file in a Uint8Array of the worker, outside the capped wasm memory (and
   * outside V8's heap limit), so the bytes a run adds to files count against the memory cap:
   * past it a write fails with ENOSPC and the run ends with reason 'memory'. Growing a file by
   * truncate counts the same. Nodes share their ops through MEMFS's ops table, patched in place.
   */
  private meterFiles (fs: EmscriptenFs): void {
    const memfs = fs.filesystems.MEMFS as unknown as { ops_table?: { file: { stream: Record<string, (...args: any[]) => any>, node: Record<string, (...args: any[]) => any> } } } | undefined
    const table = memfs?.ops_table?.file
    if (table === undefined) throw new Error('pyodide has no MEMFS file operations')
    const grow = (node: FsNode, from: number): void => {
      this.fileBytes += Math.max(0, (node.usedBytes ?? 0) - from)
      this.written.add(node)
    }
    const refuse = (bytes: number): void => {
      if (this.io !== undefined && this.fileBytes + bytes > this.init.memoryBytes) {
        this.io.breach('memory')
        throw new fs.ErrnoError(ERRNO_NOSPC)
      }
    }
    const write = table.stream.write
    table.stream.write = (stream: FsStream, buffer: Uint8Array, offset: number, length: number, position: number, canOwn?: boolean) => {
      refuse(length)
      const before = stream.node.usedBytes ?? 0
      const result = write(stream, buffer, offset, length, position, canOwn) as number
      grow(stream.node, before)
      return result
    }
    const setattr = table.node.setattr
    table.node.setattr = (node: FsNode, attr: { size?: number }) => {
      const before = node.usedBytes ?? 0
      if (typeof attr.size === 'number') refuse(attr.size - before)
      const result: unknown = setattr(node, attr)
      grow(node, before)
      return result
    }
  }

  private output (stream: typeof STREAM_STDOUT | typeof STREAM_STDERR, bytes: Uint8Array): number {
    // a write past the limit marks the run to stop; the interrupt ends it at the next check
    this.io?.write(stream, bytes.slice())
    return bytes.length
  }

  private get fs (): EmscriptenFs {
    return this.guest.fs
  }

  private heapBytes (): number {
    return this.guest.heap()
  }

  async run (job: RunJob, io: GuestIO): Promise<RunnerOutcome> {
    if (typeof job.code !== 'string') throw new BkgError('invalid_input', 400, 'a python run needs code')
    for (const path of Object.keys(job.files)) cleanPath(path)
    this.io = io
    this.fileBytes = 0
    this.interruptedAt = 0
    this.written.clear()
    // a quick guest is never reused: pyodide cannot be put back to a clean state in place
    const common = (): Pick<RunnerOutcome, 'cpuMs' | 'memoryBytes' | 'recycle'> => ({
      cpuMs: 0, memoryBytes: this.heapBytes(), recycle: !this.persistent
    })
    try {
      for (const [path, content] of Object.entries(job.files)) this.putFile(cleanPath(path), content)
      // the files given are not the guest's writes
      this.written.clear()
      this.fileBytes = 0
      const before = this.tree()
      let answer: string
      try {
        answer = this.guest.run(job.code, JSON.stringify([PYTHON_SCRIPT_NAME, ...job.args]), JSON.stringify(job.env)) as string
      } catch (error) {
        // the run function raised (an interrupt or MemoryError while it reported), or pyodide itself failed (a trap, a stack overflow)
        const fatal = typeof (error as { type?: unknown }).type !== 'string'
        const atCap = this.heapBytes() + WASM_PAGE_BYTES > this.init.memoryBytes
        const guestError = errorOf(error)
        const reason = io.stopReason ?? (guestError.name === 'MemoryError' || (fatal && atCap) ? 'memory' : undefined)
        return {
          ...common(),
          exitCode: null,
          ...(reason !== undefined ? { reason } : { error: fatal ? { name: 'InternalError', message: `the Python runtime failed: ${guestError.message}` } : guestError }),
          files: {},
          recycle: !this.persistent || fatal || guestError.name === 'MemoryError'
        }
      }
      const status = JSON.parse(answer) as { kind: 'ok' | 'exit' | 'error', code: number, name?: string, message?: string, stack?: string }
      if (io.stopReason !== undefined && status.kind !== 'exit') return { ...common(), exitCode: null, reason: io.stopReason, files: {} }
      if (status.kind === 'error' && status.name === 'MemoryError') return { ...common(), exitCode: null, reason: 'memory', files: {}, recycle: true }
      const files = io.filesWithinLimit(this.changedFiles(before))
      const error = status.kind === 'error' ? { name: status.name ?? 'Exception', message: status.message ?? '', ...(status.stack !== undefined ? { stack: status.stack } : {}) } : undefined
      return { ...common(), exitCode: status.code, ...(error !== undefined ? { error } : {}), ...files }
    } finally {
      this.io = undefined
    }
  }

  reset (): boolean {
    // pyodide is never reset in place: its FS and fd tables live in JS, out of step with a copied memory
    return false
  }

  image (): WorkerImage {
    this.guest.unlock()
    let memory: Uint8Array
    try {
      memory = this.guest.makeSnapshot()
    } finally {
      this.guest.lock()
    }
    const files: Record<string, Uint8Array> = {}
    for (const path of this.tree().keys()) files[path] = this.fs.readFile(path)
    return { memory, files }
  }

  /** a fresh pyodide loaded from the image's memory (the old one is dropped), then its files written */
  async restore (image: WorkerImage): Promise<void> {
    const memory = image.memory
    if (memory === null) throw new BkgError('invalid_image', 422, 'a Python image must hold a memory snapshot')
    if (memory.byteLength > this.init.memoryBytes) {
      throw new BkgError('invalid_image', 422, `the image (${memory.byteLength} bytes) is larger than this guest's memory cap (${this.init.memoryBytes})`)
    }
    const files = Object.entries(image.files).map(([path, content]) => [cleanPath(path), content] as const)
    let loaded
    try {
      loaded = await this.load(memory)
    } catch (error) {
      throw new BkgError('invalid_image', 422, `the image could not be loaded: ${errorOf(error).message}`)
    }
    this.guest = loaded
    for (const [path, content] of files) this.putFile(path, content)
  }

  private putFile (path: string, content: Uint8Array): void {
    const dir = path.slice(0, path.lastIndexOf('/'))
    if (dir !== '') this.fs.mkdirTree(dir)
    this.fs.writeFile(path, content)
  }

  /** every file of the guest, with its size and time of change */
  private tree (): Tree {
    const tree: Tree = new Map()
    const fs = this.fs
    const pending = ['/']
    while (pending.length > 0) {
      const dir = pending.pop() as string
      for (const name of fs.readdir(dir)) {
        if (name === '.' || name === '..') continue
        const path = dir === '/' ? `/${name}` : `${dir}/${name}`
        if (SYSTEM_PATHS.has(path)) continue
        const stat = fs.lstat(path)
        if (fs.isDir(stat.mode)) pending.push(path)
        else if (fs.isFile(stat.mode)) tree.set(path, { size: stat.size, mtime: stat.mtime.getTime() })
      }
    }
    return tree
  }

  private changedFiles (before: Tree): Array<[string, Uint8Array]> {
    const changed: Array<[string, Uint8Array]> = []
    const written = this.written
    for (const [path, now] of this.tree()) {
      const was = before.get(path)
      const node = (this.fs as unknown as { lookupPath: (p: string) => { node: FsNode } }).lookupPath(path).node
      if (was === undefined || was.size !== now.size || was.mtime !== now.mtime || written.has(node)) {
        changed.push([path, this.fs.readFile(path)])
      }
    }
    return changed
  }
}

/** an absolute `/`-separated path without `.`/`..` parts, or a refusal */
function cleanPath (path: string): string {
  const parts = path.split('/').filter(part => part !== '' && part !== '.')
  if (parts.includes('..') || parts.length === 0) throw new BkgError('invalid_input', 400, `not a file path: ${JSON.stringify(path)}`)
  const clean = '/' + parts.join('/')
  if ([...SYSTEM_PATHS].some(system => clean === system || clean.startsWith(system + '/'))) {
    throw new BkgError('invalid_input', 400, `${clean} is the sandbox's own path`)
  }
  return clean
}

/**
 * A pyodide from `indexURL` (our capped build) that sees no JavaScript global, no host home and
 * prints nothing by itself; `extra` are the load options of the caller (snapshots).
 */
async function loadLockedPyodide (indexURL: string, extra: Record<string, unknown>): Promise<Awaited<ReturnType<typeof loadPyodide>>> {
  return await withDeniedImports(async () => await loadPyodide({
    indexURL: indexURL.endsWith('/') ? indexURL : indexURL + '/',
    jsglobals: Object.create(null) as object,
    env: { HOME: '/home/pyodide' },
    stdout: () => {},
    stderr: () => {},
    ...extra
  }))
}

/**
 * The start snapshot: read from the cache, or made here (a cold load, 3-5 s) and written there
 * atomically for the next workers. A snapshot that does not load is made again.
 */
async function startSnapshot (indexURL: string, path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(readFileSync(path))
  } catch {
    // none yet
  }
  const py = await loadLockedPyodide(indexURL, { _makeSnapshot: true })
  py.runPython(WARM_UP)
  const snapshot = (py as unknown as { makeMemorySnapshot: () => Uint8Array }).makeMemorySnapshot()
  const temp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}`
  try {
    writeFileSync(temp, snapshot)
    renameSync(temp, path)
  } catch {
    rmSync(temp, { force: true })
  }
  return snapshot
}

export const createRunner: CreateRunner = async (init) => await PythonRunner.create(init)

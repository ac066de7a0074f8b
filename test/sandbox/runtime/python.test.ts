import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo, Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RunRequest, SandboxRuntime } from '../../../node/sandbox/runtime/index.ts'
import { decode, limits, MiB, recorder, startRuntime, text } from './runtime-helpers.ts'

/*
 * Real pyodide. A worker loads in 0.5-1.5 s from the start snapshot (the first one ever makes it:
 * a 3-5 s cold load), and a quick run always replaces its worker, so the tests share one runtime
 * and wait for the warm worker between runs.
 */
let runtime: SandboxRuntime

beforeAll(async () => { runtime = await startRuntime({ poolSize: { js: 0, wasm: 0, python: 1 } }) }, 60_000)
afterAll(async () => { await runtime.stop() })

const py = (code: string, extra: Partial<RunRequest> = {}): RunRequest => ({ code, limits, ...extra })

async function warm (timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (runtime.stats().idle.python < 1) {
    if (Date.now() > until) throw new Error(`no warm python worker: ${JSON.stringify(runtime.stats())}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

describe('python quick runs', () => {
  it('says hello from a warm worker, and the worker is replaced after the run', async () => {
    await warm()
    const before = runtime.stats().idle.python
    expect(before).toBe(1)
    const result = await runtime.runOnce('python', py('import sys\nprint("hello", 6 * 7, sys.version_info[:2] >= (3, 14))'))
    expect(result).toMatchObject({ exitCode: 0, stdout: 'hello 42 True\n', stderr: '', files: {} })
    expect(result.memoryBytes).toBeGreaterThanOrEqual(30 * MiB)
    await warm()
  }, 30_000)

  it('reports an uncaught exception: exit 1, its type, message and traceback', async () => {
    const result = await runtime.runOnce('python', py('def f(x):\n    raise ValueError(f"bad {x}")\nprint("before")\nf(7)'))
    expect(result).toMatchObject({ exitCode: 1, stdout: 'before\n', error: { name: 'ValueError', message: 'bad 7' } })
    expect(result.error?.stack).toContain('File "/main.py", line 4, in <module>')
    expect(result.error?.stack).toContain('File "/main.py", line 2, in f')
    expect(result.error?.stack).not.toContain('_bkg')
    expect(result.stderr).toBe(result.error?.stack)
    const syntax = await runtime.runOnce('python', py('def ('))
    expect(syntax).toMatchObject({ exitCode: 1, error: { name: 'SyntaxError' } })
  }, 30_000)

  it('takes the code of sys.exit', async () => {
    expect(await runtime.runOnce('python', py('import sys\nprint("out")\nsys.exit(3)\nprint("not here")'))).toMatchObject({ exitCode: 3, stdout: 'out\n' })
    expect(await runtime.runOnce('python', py('raise SystemExit'))).toMatchObject({ exitCode: 0 })
    expect(await runtime.runOnce('python', py('import sys; sys.exit("bye")'))).toMatchObject({ exitCode: 1, stderr: 'bye\n' })
  }, 30_000)

  it('runs asyncio on the stdlib event loop', async () => {
    const code = 'import asyncio\nasync def main():\n    await asyncio.sleep(0.02)\n    return await asyncio.gather(*(asyncio.sleep(0.01, result=i) for i in range(3)))\nprint(asyncio.run(main()))'
    expect(await runtime.runOnce('python', py(code))).toMatchObject({ exitCode: 0, stdout: '[0, 1, 2]\n' })
  }, 30_000)

  it('reads a live stdin as it comes', async () => {
    async function * typing (): AsyncGenerator<Uint8Array> {
      yield text('first\n')
      await new Promise(resolve => setTimeout(resolve, 100))
      yield text('second\n')
    }
    const { chunks, onOutput } = recorder()
    const code = 'print("got", input(), flush=True)\nprint("got", input())\ntry:\n    input()\nexcept EOFError:\n    print("eof")'
    const result = await runtime.runOnce('python', py(code), { stdin: typing(), onOutput })
    expect(result.stdout).toBe('got first\ngot second\neof\n')
    expect(chunks[0].text).toBe('got first\n')
  }, 30_000)

  it('reads stdin, and gets argv and the environment', async () => {
    const code = 'import sys, os\nname = input()\nrest = sys.stdin.read()\nprint(name.upper(), repr(rest), sys.argv, os.environ.get("GREETING"), "HOME" in os.environ)'
    const result = await runtime.runOnce('python', py(code, { stdin: text('ada\nline 2\nline 3\n'), args: ['-v', 'x y'], env: { GREETING: 'hi' } }))
    expect(result.stdout).toBe("ADA 'line 2\\nline 3\\n' ['/main.py', '-v', 'x y'] hi False\n")
    const eof = await runtime.runOnce('python', py('input()'))
    expect(eof.error?.name).toBe('EOFError')
  }, 30_000)

  it('takes files in and gives created and changed files out', async () => {
    const code = [
      'import os',
      'print(open("/data/in.txt").read(), open("/data/same.txt").read())',
      'open("/data/in.txt", "a").write("+more")',
      'os.makedirs("/out/deep", exist_ok=True)',
      'open("/out/deep/result.bin", "wb").write(bytes(range(4)))',
      'open("/tmp/empty", "w").close()'
    ].join('\n')
    const result = await runtime.runOnce('python', py(code, { files: { '/data/in.txt': text('input'), '/data/same.txt': text('same') } }))
    expect(result).toMatchObject({ exitCode: 0, stdout: 'input same\n' })
    expect(Object.keys(result.files).sort()).toEqual(['/data/in.txt', '/out/deep/result.bin', '/tmp/empty'])
    expect(decode(result.files['/data/in.txt'])).toBe('input+more')
    expect([...result.files['/out/deep/result.bin']]).toEqual([0, 1, 2, 3])
    await expect(runtime.runOnce('python', py('1', { files: { '/lib/python314.zip': text('x') } }))).rejects.toMatchObject({ code: 'invalid_input' })
    await expect(runtime.runOnce('python', py('1', { files: { '/a/../../etc/x': text('x') } }))).rejects.toMatchObject({ code: 'invalid_input' })
  }, 30_000)

  it('streams stdout and stderr in the order they are written', async () => {
    const { chunks, onOutput } = recorder()
    const code = 'import sys, time\nprint("one")\nprint("two", file=sys.stderr)\nsys.stdout.write("three\\n")\ntime.sleep(0.2)\nprint("four")'
    const result = await runtime.runOnce('python', py(code), { onOutput })
    expect(result.stdout).toBe('one\nthree\nfour\n')
    expect(result.stderr).toBe('two\n')
    expect(chunks.map(chunk => `${chunk.stream}:${chunk.text}`).join('')).toBe('stdout:one\nstderr:two\nstdout:three\nstdout:four\n')
    // "three" came before the sleep, "four" after it: output is streamed, not sent at the end
    expect(chunks[3].at - chunks[2].at).toBeGreaterThan(150)
  }, 30_000)

  it('ends a run at the output limit', async () => {
    const result = await runtime.runOnce('python', py('while True:\n    print("x" * 99)', { limits: { ...limits, outputBytes: 1000 } }))
    expect(result).toMatchObject({ exitCode: null, reason: 'output' })
    expect(result.stdout.length).toBe(1000)
  }, 30_000)
})

describe('python limits', () => {
  it('interrupts `while True: pass` at its deadline', async () => {
    await warm()
    const result = await runtime.runOnce('python', py('print("start", flush=True)\nwhile True:\n    pass', { limits: { ...limits, timeoutMs: 400 } }))
    expect(result).toMatchObject({ exitCode: null, reason: 'timeout', stdout: 'start\n' })
    expect(result.wallMs).toBeGreaterThanOrEqual(400)
  }, 30_000)

  it('a KeyboardInterrupt caught by the guest does not keep it alive; time.sleep(60) and asyncio end at the deadline', async () => {
    await warm()
    const stubborn = 'while True:\n    try:\n        while True: pass\n    except KeyboardInterrupt:\n        pass'
    expect(await runtime.runOnce('python', py(stubborn, { limits: { ...limits, timeoutMs: 300 } }))).toMatchObject({ exitCode: null, reason: 'timeout' })
    // Emscripten's sleep is a busy wait that never looks at the interrupt: time.sleep sleeps in slices
    const slept = await runtime.runOnce('python', py('import time\ntime.sleep(60)', { limits: { ...limits, timeoutMs: 300 } }))
    expect(slept).toMatchObject({ exitCode: null, reason: 'timeout' })
    expect(slept.wallMs).toBeLessThan(5000)
    const looped = await runtime.runOnce('python', py('import asyncio\nasync def tick():\n    while True: await asyncio.sleep(0.01)\nasyncio.run(tick())', { limits: { ...limits, timeoutMs: 300 } }))
    expect(looped).toMatchObject({ exitCode: null, reason: 'timeout' })
  }, 40_000)

  it('ends a C loop that never checks for signals by terminating the worker', async () => {
    await warm()
    const replaced = runtime.stats().replaced
    const stuck = await runtime.runOnce('python', py('import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)', { limits: { ...limits, timeoutMs: 300 } }))
    expect(stuck).toMatchObject({ exitCode: null, reason: 'timeout' })
    expect(stuck.wallMs).toBeLessThan(5000)
    expect(runtime.stats().replaced).toBeGreaterThan(replaced)
  }, 30_000)

  it('a cancelled run ends with reason cancelled', async () => {
    await warm()
    const controller = new AbortController()
    const { chunks, onOutput } = recorder()
    const running = runtime.runOnce('python', py('print("go", flush=True)\nwhile True: pass', { limits: { ...limits, timeoutMs: 10_000 } }), {
      onOutput: (chunk) => { onOutput(chunk); controller.abort() },
      signal: controller.signal
    })
    expect(await running).toMatchObject({ exitCode: null, reason: 'cancelled' })
    expect(chunks.length).toBe(1)
  }, 30_000)

  it('contains memory bombs at the cap (MemoryError → memory) with the node\'s RSS bounded', async () => {
    const capped = { ...limits, memoryBytes: 96 * MiB, timeoutMs: 20_000 }
    await warm()
    const rssBefore = process.memoryUsage().rss
    let rssPeak = rssBefore
    const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, process.memoryUsage().rss) }, 20)
    try {
      // each would take 1-4 GiB without the cap
      const bombs = [
        'b = bytearray(1024 ** 3)',
        'acc = []\nwhile True:\n    acc.append(bytearray(1024 * 1024))',
        's = "x" * (1024 ** 3)'
      ]
      for (const bomb of bombs) {
        const result = await runtime.runOnce('python', py(bomb, { limits: capped }))
        expect(result, bomb).toMatchObject({ exitCode: null, reason: 'memory' })
        expect(result.memoryBytes).toBeLessThanOrEqual(96 * MiB)
      }
      // files live in JS memory, outside the wasm heap: their bytes count against the cap too
      const files = await runtime.runOnce('python', py('chunk = b"x" * (1024 * 1024)\nwith open("/tmp/big", "wb") as f:\n    while True: f.write(chunk)', { limits: capped }))
      expect(files).toMatchObject({ exitCode: null, reason: 'memory' })
      const truncated = await runtime.runOnce('python', py('open("/tmp/t", "w").truncate(10 ** 10)', { limits: capped }))
      expect(truncated).toMatchObject({ exitCode: null, reason: 'memory' })
    } finally {
      clearInterval(sampler)
    }
    // one worker at a time, each within its cap (plus pyodide's own ~100 MiB)
    console.log(`python memory bombs: node RSS peak +${((rssPeak - rssBefore) / MiB).toFixed(0)} MiB`)
    expect(rssPeak - rssBefore).toBeLessThan(640 * MiB)
  }, 90_000)
})

describe('python guests cannot reach the host', () => {
  let server: Server
  let connections = 0
  beforeAll(async () => {
    server = createServer((socket) => { connections++; socket.destroy() })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  })
  afterAll(async () => { await new Promise(resolve => server.close(resolve)) })

  /** runs attempts, each a line of Python in a try: each prints BLOCKED with the exception type, or ESCAPED */
  async function attempts (lines: Record<string, string>): Promise<Record<string, string>> {
    const code = [
      'import sys, os',
      'results = {}',
      ...Object.entries(lines).map(([name, line]) => [
        'try:',
        `    exec(${JSON.stringify(line)}, {})`,
        `    results[${JSON.stringify(name)}] = "ESCAPED"`,
        'except BaseException as e:',
        `    results[${JSON.stringify(name)}] = "BLOCKED " + type(e).__name__`
      ].join('\n')),
      'import json',
      'print(json.dumps(results))'
    ].join('\n')
    const result = await runtime.runOnce('python', py(code, { limits: { ...limits, timeoutMs: 5000 } }))
    expect(result.exitCode, result.stderr).toBe(0)
    return JSON.parse(result.stdout) as Record<string, string>
  }

  it('has no JS bridge: js, pyodide_js, pyodide, _pyodide_core, ctypes', async () => {
    await warm()
    const results = await attempts({
      'import js': 'import js',
      'js.process': 'import js; js.process',
      'from js import process': 'from js import process',
      'from js import require': 'from js import require',
      'import pyodide_js': 'import pyodide_js',
      'pyodide_js.mountNodeFS': 'import pyodide_js; pyodide_js.mountNodeFS("/host", "/")',
      'pyodide.ffi': 'import pyodide.ffi',
      'pyodide.code.run_js': 'from pyodide.code import run_js; run_js("process")',
      _pyodide_core: 'import _pyodide_core',
      ctypes: 'import ctypes',
      _ctypes: 'import _ctypes',
      'importlib ctypes': 'import importlib; importlib.import_module("ctypes")',
      'meta_path removed': 'import sys; sys.meta_path[:] = [f for f in sys.meta_path if "Blocked" not in repr(f)]; import _pyodide_core',
      'pyodide.ffi without the finder': 'import sys; sys.meta_path[:] = [f for f in sys.meta_path if "Blocked" not in repr(f)]; import pyodide.ffi; pyodide.ffi.to_js([1]).constructor',
      'js without the finder': 'import sys; sys.meta_path[:] = [f for f in sys.meta_path if "Blocked" not in repr(f)]; import js',
      'builtin importer': 'import importlib.machinery, importlib.util; importlib.machinery.BuiltinImporter.create_module(importlib.util.spec_from_loader("_ctypes", importlib.machinery.BuiltinImporter))',
      'pyodide from the zip': 'import zipimport; zipimport.zipimporter("/lib/python314.zip").load_module("pyodide.ffi").to_js([1]).constructor',
      jsfinder: 'import sys; [c for c in object.__subclasses__() if c.__name__ == "MetaPathFinder"]; import _frozen_importlib_external as f; next(v for c in f.PathFinder.__subclasses__() + [t for t in type.__subclasses__(object) if t.__name__ == "JsFinder"] for v in [c.find_spec.__globals__.get("jsfinder")] if v).jsproxies["pyodide_js"]',
      frames: 'import sys; f = sys._getframe(); [f := f.f_back for _ in range(3)]; f.f_globals',
      'gc reloaded': 'import gc, importlib; importlib.reload(gc); gc.get_objects()',
      '_imp reloaded': 'import _imp, importlib; importlib.reload(_imp); _imp.create_builtin(importlib.util.spec_from_loader("_ctypes", importlib.machinery.BuiltinImporter))',
      'gc anew': 'import sys; del sys.modules["gc"]; import gc; gc.get_objects()',
      'gc walk': 'import gc; [o for o in gc.get_objects() if "Js" in type(o).__name__][0].constructor'
    })
    expect(Object.entries(results).filter(([, outcome]) => !outcome.startsWith('BLOCKED'))).toEqual([])
  }, 30_000)

  it('finds no JS object through the subclasses of object or the globals of their methods', async () => {
    const code = [
      'import types, warnings',
      'warnings.simplefilter("ignore")',
      'found = []',
      'def js_like(value):',
      '    return type(value).__name__.startswith("Js") or type(value).__module__ in ("pyodide.ffi", "_pyodide_core", "js", "pyodide_js")',
      'def look(where, value):',
      '    if js_like(value): found.append(where)',
      '    if isinstance(value, dict):',
      '        for key, item in list(value.items()):',
      '            if js_like(item): found.append(f"{where}[{key!r}]")',
      'seen = set()',
      'pending = [object]',
      'while pending:',
      '    cls = pending.pop()',
      '    try: subs = type.__subclasses__(cls)',
      '    except BaseException: continue',
      '    for sub in subs:',
      '        if sub in seen: continue',
      '        seen.add(sub)',
      '        pending.append(sub)',
      '        for name, attr in list(vars(sub).items()):',
      '            fn = getattr(attr, "__func__", attr)',
      '            if isinstance(fn, types.FunctionType):',
      '                for key, value in list(fn.__globals__.items()):',
      '                    look(f"{sub.__name__}.{name} globals {key}", value)',
      '                    look(f"{sub.__name__}.{name} globals {key} attrs", getattr(value, "__dict__", None))',
      'print(len(seen) > 100, sorted(set(found))[:10])'
    ].join('\n')
    const result = await runtime.runOnce('python', py(code, { limits: { ...limits, timeoutMs: 10_000 } }))
    expect(result.stderr).toBe('')
    expect(result.stdout).toBe('True []\n')
  }, 30_000)

  it('has no processes, host files or network', async () => {
    const marker = join(tmpdir(), `bkg-python-escape-${process.pid}-${Date.now()}`)
    const port = (server.address() as AddressInfo).port
    const results = await attempts({
      'os.system': `import os; os.system("touch ${marker}")`,
      'posix.system': `import posix; assert posix.system("touch ${marker}") == 0`,
      subprocess: `import subprocess; subprocess.run(["touch", "${marker}"])`,
      'os.popen': `import os; os.popen("touch ${marker}")`,
      '/etc/passwd': 'open("/etc/passwd").read()',
      'the repo': `open(${JSON.stringify(join(process.cwd(), 'package.json'))}).read()`,
      'socket connect': `import socket; socket.create_connection(("127.0.0.1", ${port}), timeout=2)`,
      dns: 'import socket; socket.getaddrinfo("example.com", 80)',
      urllib: 'import urllib.request; urllib.request.urlopen("http://example.com", timeout=2)'
    })
    expect(Object.entries(results).filter(([, outcome]) => !outcome.startsWith('BLOCKED'))).toEqual([])
    expect(existsSync(marker)).toBe(false)
    expect(connections).toBe(0)
    const fs = await runtime.runOnce('python', py('import os, sys\nprint(sorted(os.listdir("/")), sys.executable)'))
    expect(fs.stdout).toBe("['dev', 'home', 'lib', 'proc', 'tmp'] /usr/bin/python3\n")
  }, 30_000)
})

describe('persistent python guests', () => {
  it('keep globals and files between runs; image and restore bring back an earlier state', async () => {
    const guest = await runtime.openPersistent('python', { memoryBytes: limits.memoryBytes })
    await guest.run(py('n = 41\ndef twice(x):\n    return 2 * x\nopen("/home/notes.txt", "w").write("first")'))
    const kept = await guest.run(py('n += 1\nprint(n, twice(n), open("/home/notes.txt").read())'))
    expect(kept.stdout).toBe('42 84 first\n')

    let started = performance.now()
    const image = await guest.image()
    const imageMs = performance.now() - started
    expect(image.language).toBe('python')
    expect(image.memory?.byteLength).toBeGreaterThanOrEqual(30 * MiB)
    expect(Object.keys(image.files)).toEqual(['/home/notes.txt'])

    await guest.run(py('n = 1000\nadded = True\nopen("/home/notes.txt", "w").write("second")\nopen("/home/new.txt", "w").write("new")'))
    started = performance.now()
    await guest.restore(image)
    const restoreMs = performance.now() - started
    const restored = await guest.run(py('import os\nprint(n, "added" in globals(), open("/home/notes.txt").read(), os.path.exists("/home/new.txt"), twice(1))'))
    expect(restored.stdout).toBe('42 False first False 2\n')
    // the lockdown holds after a restore
    expect((await guest.run(py('import js'))).error?.name).toBe('ModuleNotFoundError')

    // a fork: the image in a fresh guest, going its own way
    const fork = await runtime.openPersistent('python', { memoryBytes: limits.memoryBytes, image })
    await fork.run(py('n = -1'))
    expect((await fork.run(py('print(n, open("/home/notes.txt").read())'))).stdout).toBe('-1 first\n')
    expect((await guest.run(py('print(n)'))).stdout).toBe('42\n')
    console.log(`python image: ${(image.memory?.byteLength ?? 0) / MiB} MiB in ${imageMs.toFixed(0)} ms, restore in ${restoreMs.toFixed(0)} ms`)
    // images that are not pyodide snapshots, or too large for the cap, are refused and change nothing
    await expect(guest.restore({ language: 'python', memory: new Uint8Array(64 * 1024).fill(7), files: {} })).rejects.toMatchObject({ code: 'invalid_image' })
    await expect(guest.restore({ language: 'python', memory: null, files: {} })).rejects.toMatchObject({ code: 'invalid_image' })
    await expect(guest.restore({ language: 'python', memory: new Uint8Array(limits.memoryBytes + 65536), files: {} })).rejects.toMatchObject({ code: 'invalid_image' })
    expect((await guest.run(py('print(n)'))).stdout).toBe('42\n')
    await Promise.all([guest.close(), fork.close()])
  }, 60_000)

  it('keep state after an interrupted loop or sleep; a terminated one says stateLost', async () => {
    const guest = await runtime.openPersistent('python', { memoryBytes: limits.memoryBytes })
    await guest.run(py('kept = "yes"'))
    const looped = await guest.run(py('while True: pass', { limits: { ...limits, timeoutMs: 300 } }))
    expect(looped).toMatchObject({ reason: 'timeout' })
    expect(looped.stateLost).toBeUndefined()
    expect((await guest.run(py('print(kept)'))).stdout).toBe('yes\n')
    const slept = await guest.run(py('import time; time.sleep(30)', { limits: { ...limits, timeoutMs: 300 } }))
    expect(slept).toMatchObject({ reason: 'timeout' })
    expect(slept.stateLost).toBeUndefined()
    expect((await guest.run(py('print(kept)'))).stdout).toBe('yes\n')
    const stuck = await guest.run(py('import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)', { limits: { ...limits, timeoutMs: 300 } }))
    expect(stuck).toMatchObject({ reason: 'timeout', stateLost: true })
    expect((await guest.run(py('print("kept" in globals())'))).stdout).toBe('False\n')
    await guest.close()
  }, 60_000)
})

describe('python latency', () => {
  it('measures start-to-first-output of quick runs from a warm pool', async () => {
    // just ready: V8 still tiers up pyodide's wasm in the background, on the same 2 cores;
    // settled: the warm worker has waited a second, as in a pool that is not saturated
    for (const [label, settleMs] of [['just ready', 0], ['settled', 1000]] as const) {
      const samples: number[] = []
      for (let i = 0; i < 6; i++) {
        await warm()
        await new Promise(resolve => setTimeout(resolve, settleMs))
        const started = performance.now()
        let first: number | undefined
        await runtime.runOnce('python', py('print(1)'), { onOutput: () => { first ??= performance.now() - started } })
        samples.push(first ?? Number.NaN)
      }
      samples.sort((a, b) => a - b)
      const p50 = samples[Math.floor(samples.length / 2)]
      console.log(`python quick run, start to first output, warm worker ${label} (n=${samples.length}): p50 ${p50.toFixed(1)} ms, max ${samples[samples.length - 1].toFixed(1)} ms`)
      expect(samples.every(Number.isFinite)).toBe(true)
    }
  }, 60_000)
})

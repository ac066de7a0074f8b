/*
 * The sandbox service's defaults: options of `sandboxService(init)` (`init.x ?? DEFAULT_X`).
 * A policy may ask for less than a ceiling, never more.
 */

const MiB = 1024 * 1024

/** a run's wall time unless the policy or the request says less */
export const DEFAULT_TIMEOUT_MS = 10_000
/** the guest's linear memory cap (QuickJS heap, WASI module memory) */
export const DEFAULT_MEMORY_BYTES = 64 * MiB
/** stdout + stderr + returned files of one run */
export const DEFAULT_OUTPUT_BYTES = 1 * MiB

export const MAX_TIMEOUT_MS = 5 * 60_000
export const MAX_MEMORY_BYTES = 512 * MiB
export const MAX_OUTPUT_BYTES = 16 * MiB
/** below this a JavaScript guest cannot work (QuickJS starts with 16 MiB; the runtime's MIN_JS_MEMORY_BYTES) */
export const MIN_MEMORY_BYTES = 20 * MiB

/** per namespace: sandboxes that exist (quick and persistent) */
export const DEFAULT_QUOTA_SANDBOXES = 32
/** per namespace: the memory caps of its running persistent guests together */
export const DEFAULT_QUOTA_MEMORY_BYTES = 1024 * MiB
/** per namespace: runs at once (quick and persistent) */
export const DEFAULT_QUOTA_CONCURRENT_RUNS = 4

/** forks made by one call */
export const MAX_FORKS = 16
/** snapshots kept per sandbox; the oldest not referenced by a fork goes first */
export const DEFAULT_MAX_SNAPSHOTS = 64
/** how long stopping the node may spend saving running persistent sandboxes */
export const DEFAULT_SHUTDOWN_SAVE_MS = 10_000

/** source code of one run */
export const MAX_CODE_BYTES = 1024 * 1024
/** a WASI module of one run */
export const MAX_MODULE_BYTES = 32 * MiB
/** files handed in to one run: how many, and their bytes together */
export const MAX_INPUT_FILES = 256
export const MAX_INPUT_FILE_BYTES = 32 * MiB
export const MAX_STDIN_BYTES = 16 * MiB
export const MAX_ARGS = 256
/** how long changed run metrics may wait before the registry is written */
export const METRICS_SAVE_MS = 1000

import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // integration suites start real node processes: two cores cannot run many at once
    maxWorkers: 2,
    fileParallelism: true
  }
})

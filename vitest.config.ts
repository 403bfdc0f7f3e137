import { defineConfig } from 'vitest/config'

/**
 * The end-to-end suites: they run over plain HTTP with everything else, and again against
 * xapi-sim over HTTPS with a self-signed certificate, trusted by its pinned fingerprint and by
 * a CA file (test/helpers/tls.ts), as real pools serve the XenAPI.
 */
const endToEnd = [
  'test/backup/backup.test.ts',
  'test/backup/faults.test.ts',
  'test/restore/restore.test.ts',
  'test/restore/workflows.test.ts',
  'test/dp/sessions.test.ts',
  'test/reliability/matrix.test.ts',
  'test/live/contract.test.ts',
  'test/transport.test.ts',
  'test/backup/incremental.test.ts',
  'test/reliability/incremental-faults.test.ts',
  'test/reliability/matrix3.test.ts',
  'test/package.test.ts',
]

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    restoreMocks: true,
    projects: [
      { extends: true as const, test: { name: 'http', include: ['test/**/*.test.ts'] } },
      ...(['pin', 'ca'] as const).map((tls) => ({
        extends: true as const,
        test: { name: `https-${tls}`, include: endToEnd, env: { DPXEN_TEST_TLS: tls } },
      })),
    ],
  },
})

import { availableParallelism } from 'node:os'
import { defineConfig } from 'vitest/config'

/**
 * Every suite runs against a pool of three hosts (test/helpers/sim.ts), each with its own
 * certificate: VMs on members' local storage, so transfers are redirected to members over
 * https whatever the master's url. The end-to-end suites run over plain HTTP with everything
 * else, and again with the master over HTTPS trusted by its pinned fingerprint. A CA file trusts
 * the master the same way a pin does past the handshake, so only the suites that prove the
 * handshake itself run once more with one (test/helpers/tls.ts).
 */
const endToEnd = [
  'test/backup/backup.test.ts',
  'test/backup/faults.test.ts',
  'test/backup/pool.test.ts',
  'test/restore/restore.test.ts',
  'test/restore/workflows.test.ts',
  'test/dp/sessions.test.ts',
  'test/dp/scale-out.test.ts',
  'test/reliability/matrix.test.ts',
  'test/live/contract.test.ts',
  'test/transport.test.ts',
  'test/backup/incremental.test.ts',
  'test/backup/cbt.test.ts',
  'test/reliability/incremental-faults.test.ts',
  'test/reliability/matrix3.test.ts',
  'test/restore/health.test.ts',
  'test/package.test.ts',
]
/** Suites that run over HTTPS only: long scenarios whose HTTP run would prove nothing more. */
const httpsOnly = ['test/dp/three-weeks.test.ts']
const handshake = [
  'test/transport.test.ts',
  'test/package.test.ts',
  'test/dp/sessions.test.ts',
  'test/backup/pool.test.ts',
]

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // vitest's default leaves a core free (one worker on these 2-core machines), but the suite
    // waits on sockets and child processes as much as it computes: two workers took the full run
    // from 1169 s to 819 s on 2 cores, every test passing.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    minWorkers: 1,
    restoreMocks: true,
    projects: [
      {
        extends: true as const,
        test: { name: 'http', include: ['test/**/*.test.ts'], exclude: [...httpsOnly, 'node_modules/**'] },
      },
      ...(['pin', 'ca'] as const).map((tls) => ({
        extends: true as const,
        test: {
          name: `https-${tls}`,
          include: tls === 'pin' ? [...endToEnd, ...httpsOnly] : handshake,
          env: { DPXEN_TEST_TLS: tls },
        },
      })),
    ],
  },
})

// Prints vitest's JSON results as the closing line CI reads: `N passed, N failed, N skipped`,
// summed over every results file given (one per Node line .ci/run tests under). A missing or
// unreadable file counts as one failure.
import { readFileSync } from 'node:fs'

const files = process.argv.length > 2 ? process.argv.slice(2) : ['.vitest-results.json']
let passed = 0
let failed = 0
let skipped = 0
for (const file of files) {
  let results
  try {
    results = JSON.parse(readFileSync(file, 'utf8'))
  } catch {
    failed++
    continue
  }
  // A test file that failed to load has no failed test of its own: count it as one failure.
  const brokenFiles = (results.testResults ?? []).filter(
    (f) => f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed'),
  ).length
  passed += results.numPassedTests
  failed += results.numFailedTests + brokenFiles
  skipped += results.numPendingTests + results.numTodoTests
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(failed > 0 ? 1 : 0)

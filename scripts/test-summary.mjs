// Prints vitest's JSON results as the closing line CI reads: `N passed, N failed, N skipped`.
import { readFileSync } from 'node:fs'

const file = process.argv[2] ?? '.vitest-results.json'
let results
try {
  results = JSON.parse(readFileSync(file, 'utf8'))
} catch {
  console.log('0 passed, 1 failed')
  process.exit(1)
}
// A test file that failed to load has no failed test of its own: count it as one failure.
const brokenFiles = (results.testResults ?? []).filter(
  (f) => f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed'),
).length
const skipped = results.numPendingTests + results.numTodoTests
console.log(
  `${results.numPassedTests} passed, ${results.numFailedTests + brokenFiles} failed, ${skipped} skipped`,
)

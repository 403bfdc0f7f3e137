// What the project's own untyped scripts use of dpxen (config-doc.mjs, sink-bench.mjs), bundled
// by scripts/build.mjs into build/dev.js.
export { fillKeyTables } from '../src/config/doc.js'
export { newXxh64 } from '../src/core/xxh64.js'
export { FileSink } from '../src/xva/file-sink.js'
export { CheckedIntake } from '../src/xva/intake.js'
export { XvaVerifier } from '../src/xva/verify.js'

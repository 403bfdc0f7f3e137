#!/usr/bin/env node
// Operator command: dpxen check | list | recover | restore | setup | verify (src/cli/dpxen.ts)
import { runDpxen } from '../src/cli/dpxen.js'
import { main } from '../src/hook/main.js'

main(runDpxen)

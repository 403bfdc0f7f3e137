#!/usr/bin/env node
// Operator command: dpxen check [CONFIG] | dpxen verify FILE.xva
import { runDpxen } from '../src/cli/dpxen.js'
import { main } from '../src/hook/main.js'

main(runDpxen)

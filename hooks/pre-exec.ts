#!/usr/bin/env node
// Data Protector backup specification, Pre-exec: dpxen-pre-exec [CONFIG]
import { runPreExec } from '../src/backup/run.js'
import { main } from '../src/hook/main.js'

main(runPreExec)

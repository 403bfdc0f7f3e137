#!/usr/bin/env node
// Data Protector restore, Options > Post-exec: dpxen-restore-post-exec [CONFIG]
import { main } from '../src/hook/main.js'
import { runRestorePostExec } from '../src/restore/run.js'

main(runRestorePostExec)

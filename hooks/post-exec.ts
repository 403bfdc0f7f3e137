#!/usr/bin/env node
// Data Protector backup specification, Post-exec: dpxen-post-exec [CONFIG]
import { runPostExec } from '../src/backup/post.js'
import { main } from '../src/hook/main.js'

main(runPostExec)

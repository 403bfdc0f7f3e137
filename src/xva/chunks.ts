// Reads a stream chunk by chunk, as the chunks arrive (pipeXva: verifying a file before a
// restore, `dpxen verify`). A Readable's own async iterator calls read(), which joins whatever
// is buffered into one new Buffer: a copy of every byte and a large allocation each time.
// Here the chunks stay as the stream delivered them; the stream is paused while `highWater`
// bytes wait, so backpressure holds.
import { finished, type Readable } from 'node:stream'

export async function* chunksOf(stream: Readable, highWater = 4 * 1024 * 1024): AsyncGenerator<Buffer> {
  const queue: Buffer[] = []
  let head = 0
  let queued = 0
  let ended = false
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const notify = (): void => {
    const resolve = wake
    wake = undefined
    resolve?.()
  }
  const onData = (chunk: Buffer): void => {
    queue.push(chunk)
    queued += chunk.length
    if (queued >= highWater) stream.pause()
    notify()
  }
  stream.on('data', onData)
  const stopWatching = finished(stream, (error) => {
    if (error) failure = error
    else ended = true
    notify()
  })
  try {
    for (;;) {
      if (head < queue.length) {
        const chunk = queue[head]!
        queue[head++] = undefined as unknown as Buffer
        if (head > 1024) {
          queue.splice(0, head)
          head = 0
        }
        queued -= chunk.length
        if (queued < highWater / 2 && stream.isPaused() && !ended) stream.resume()
        yield chunk
        continue
      }
      if (failure) throw failure
      if (ended) return
      await new Promise<void>((resolve) => (wake = resolve))
    }
  } finally {
    stream.off('data', onData)
    stopWatching()
    if (!ended) stream.destroy()
  }
}

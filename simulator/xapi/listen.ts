// Listening and closing, for the hosts' HTTP ports (server.ts) and their NBD ports (nbd.ts).
import type { Server as NetServer } from 'node:net'

/** Listens on `host`:`port` (0: any free port); rejects when the address is taken. */
export function listenOn(server: NetServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

/** Stops accepting; resolves once the server is closed. */
export function closeServer(server: NetServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

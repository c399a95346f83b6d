// A third-party tus 1.0 server (@tus/server with a file store) for the interop tests.
// Usage: node server.js PORT DIR   (listens on 127.0.0.1; prints "listening PORT" when ready)
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const port = Number(process.argv[2] || 1080)
const directory = process.argv[3] || './files'
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) })
const http = server.listen({ host: '127.0.0.1', port }, () => {
  console.log(`listening ${http.address().port}`)
})
process.on('SIGTERM', () => http.close(() => process.exit(0)))

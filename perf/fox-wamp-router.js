// Minimal fox-wamp launcher used as a reference router for fennec-load.
//
//   NODE_PATH=/work/foxwamp/node_modules node perf/fox-wamp-router.js [PORT]
//
// Listens on ws://127.0.0.1:PORT/ws (fox-wamp accepts any path), realm
// "realm1" (fox-wamp creates realms on first use). fox-wamp only speaks the
// wamp.2.json subprotocol.
'use strict'

const FoxRouter = require('fox-wamp')

const port = parseInt(process.argv[2] || '9000', 10)
const router = new FoxRouter()
router.getRealm('realm1', () => {
  const server = router.listenWAMP({ port, host: '127.0.0.1' })
  server.on('listening', () => {
    console.log(`fox-wamp listening on ws://127.0.0.1:${port}/ws`)
  })
})

process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))

// Minimal fox-wamp launcher used as a reference router for fennec-load and
// retain-bench.
//
//   NODE_PATH=/work/foxwamp/node_modules [FOX_MQTT_NODELAY=1] \
//     node perf/fox-wamp-router.js [PORT [MQTT_PORT]]
//
// Listens on ws://127.0.0.1:PORT/ws (default 9000; fox-wamp accepts any
// path), realm "realm1" (fox-wamp creates realms on first use). fox-wamp only
// speaks the wamp.2.json subprotocol.
//
// With MQTT_PORT it also listens for MQTT 3.1.1 on tcp://127.0.0.1:MQTT_PORT
// (fox-wamp's `listenMQTT`; MQTT 5 is not supported). The realm comes from
// the username `user@realm`; without a username it is "default_realm".
// Retained values are kept in memory (FoxRouter's default store), and a QoS 1
// PUBACK is sent after the retained write. A retained payload that is not
// valid JSON is not stored (a key that had a value keeps it), so give
// retain-bench `--json`. Values are deep-merged, not replaced: a second
// number on a key leaves `{}`, a second string an object keyed "0", "1", ...
// fox-wamp leaves Nagle's algorithm on for MQTT sockets (its WebSocket ones
// get TCP_NODELAY from `ws`); FOX_MQTT_NODELAY=1 turns it off for them, which
// is not fox-wamp as shipped.
'use strict'

const net = require('net')
const FoxRouter = require('fox-wamp')

const port = parseInt(process.argv[2] || '9000', 10)
const mqttPort = process.argv[3] ? parseInt(process.argv[3], 10) : null
const router = new FoxRouter()
router.getRealm('realm1', () => {
  const server = router.listenWAMP({ port, host: '127.0.0.1' })
  server.on('listening', () => {
    console.log(`fox-wamp listening on ws://127.0.0.1:${port}/ws`)
  })
})

if (mqttPort !== null) {
  const Server = net.Server
  if (process.env.FOX_MQTT_NODELAY === '1') {
    // fox-wamp's MQTT transport calls net.Server(listener) inside listenMQTT.
    net.Server = (a, b) => (typeof a === 'function' ? new Server({ noDelay: true }, a) : new Server(a, b))
  }
  try {
    router.listenMQTT({ port: mqttPort, host: '127.0.0.1' })
  } finally {
    net.Server = Server
  }
  // listenMQTT does not hand back its net.Server, so "listening" is found by
  // connecting to the port.
  const probe = () => {
    const s = net.connect(mqttPort, '127.0.0.1')
    s.on('connect', () => {
      s.destroy()
      const nd = process.env.FOX_MQTT_NODELAY === '1' ? ' (TCP_NODELAY)' : ''
      console.log(`fox-wamp listening on mqtt://127.0.0.1:${mqttPort}${nd}`)
    })
    s.on('error', () => setTimeout(probe, 50))
  }
  probe()
}

process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))

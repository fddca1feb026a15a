// A local IPFS node for tests and development: js-ipfs (ipfs-core, from npm) serving the Kubo-style
// HTTP RPC API, offline (no swarm, no bootstrap peers), its repository in the folder given (made
// on first start). Prints the API's URL on stdout once it serves, then runs until SIGINT/SIGTERM.
// Point `[store] ipfs` in autonomy.toml at that URL.
//
//   node scripts/ipfs-node.mjs <repo-dir> [port]
import { create } from 'ipfs-core'
import { HttpApi } from 'ipfs-http-server'

const [repo, port = '0'] = process.argv.slice(2)
if (!repo) {
  console.error('usage: node scripts/ipfs-node.mjs <repo-dir> [port]')
  process.exit(2)
}
const ipfs = await create({
  repo,
  offline: true,
  silent: true,
  config: {
    Addresses: { API: `/ip4/127.0.0.1/tcp/${port}`, Swarm: [], Gateway: '' },
    Bootstrap: [],
    Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } }
  }
})
const api = new HttpApi(ipfs)
await api.start()
const [, , host, , apiPort] = api.apiAddr.toString().split('/')
console.log(`http://${host}:${apiPort}`)
const stop = async () => {
  await api.stop()
  await ipfs.stop()
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)

// A claims producer and decisions consumer for the username registry, in
// JavaScript with KafkaJS, written from docs/events.md and
// docs/usernames.md only. The canonical form and key of a username come
// from the registry's policy: lookup asks the registry's HTTP lookup. The
// decision for a claim is the first on registrations with its request_id,
// user_id and username in the partition the produce result names.
'use strict'

const crypto = require('node:crypto')
const { Kafka, Partitioners, logLevel } = require('kafkajs')

const CLAIMS = 'claims'
const REGISTRATIONS = 'registrations'

// murmur2 is Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2)
// of a Buffer, as an unsigned 32-bit number.
function murmur2 (data) {
  const m = 0x5bd1e995
  const r = 24
  let h = (0x9747b28c ^ data.length) >>> 0
  const n4 = data.length >> 2
  for (let i = 0; i < n4; i++) {
    let k = data.readUInt32LE(4 * i)
    k = Math.imul(k, m) >>> 0
    k = (k ^ (k >>> r)) >>> 0
    k = Math.imul(k, m) >>> 0
    h = Math.imul(h, m) >>> 0
    h = (h ^ k) >>> 0
  }
  const tail = data.length & 3
  const off = 4 * n4
  if (tail === 3) h = (h ^ (data[off + 2] << 16)) >>> 0
  if (tail >= 2) h = (h ^ (data[off + 1] << 8)) >>> 0
  if (tail >= 1) {
    h = (h ^ data[off]) >>> 0
    h = Math.imul(h, m) >>> 0
  }
  h = (h ^ (h >>> 13)) >>> 0
  h = Math.imul(h, m) >>> 0
  h = (h ^ (h >>> 15)) >>> 0
  return h
}

// partition is the partition of a claim with this key among n.
function partition (key, n) {
  return (murmur2(Buffer.from(key, 'utf8')) & 0x7fffffff) % n
}

function kafka (brokers) {
  return new Kafka({ clientId: 'registry-client-js', brokers: brokers.split(','), logLevel: logLevel.NOTHING })
}

// producer uses KafkaJS's default partitioner (murmur2, as Java's; the
// LegacyPartitioner is not), and an idempotent producer, which KafkaJS
// allows only with one request in flight.
function producer (k) {
  return k.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent: true,
    maxInFlightRequests: 1
  })
}

function claimValue ({ requestId, userId, username, canonical, key, policyVersion }) {
  // The version the lookup gives (policy_version): a claim made under
  // another version than its partition's is not decided on its merits.
  if (!Number.isInteger(policyVersion)) throw new TypeError('policyVersion is required: take policy_version from GET /v1/usernames/{name}')
  return JSON.stringify({
    request_id: requestId,
    user_id: userId,
    username,
    canonical,
    key,
    policy_version: policyVersion,
    submitted_at: new Date().toISOString()
  })
}

// produceClaim writes a ClaimSubmitted keyed by its key with acks from all
// in-sync replicas, and returns its request_id and the partition it was
// written to, from the produce result (KafkaJS's RecordMetadata): the
// decision to wait for is that partition's (docs/events.md, "Consuming
// decisions"). claim.partition, for tests only, overrides the partitioner.
async function produceClaim (p, claim) {
  const requestId = claim.requestId || crypto.randomUUID()
  const [meta] = await p.send({
    topic: CLAIMS,
    acks: -1,
    messages: [{
      key: claim.key,
      partition: claim.partition,
      value: claimValue({ ...claim, requestId }),
      headers: { 'event-type': 'ClaimSubmitted', 'schema-version': '1' }
    }]
  })
  return { requestId, partition: meta.partition }
}

// canonicalId is a hyphenated UUID in lowercase, as decisions carry it
// (write ids in that form, as docs/events.md asks); anything else as written.
function canonicalId (id) {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id) ? id.toLowerCase() : id
}

// isDecisionFor reports whether decision d answers the claim with this
// payload written to partition (docs/events.md, "Consuming decisions"):
// the same request_id and user_id in lowercase canonical form, the same
// username as typed (exact), decided in that partition, and a claim's
// decision (no command). A request_conflict for another payload, or the
// decision for a copy written to another partition (invalid there), is not.
function isDecisionFor (d, claim, partition) {
  return d.request_id === canonicalId(claim.requestId) && d.user_id === canonicalId(claim.userId) &&
    d.username === claim.username && d.claim_partition === partition && d.command === undefined
}

// Decisions reads registrations and hands each claim made through it its
// decision. Make one with decisions() and keep it for many claims.
class Decisions {
  #consumer
  #waits = new Set()
  #failure = null

  constructor (consumer) { this.#consumer = consumer }

  // claim produces the claim with p and resolves to its decision: the
  // first decision read that isDecisionFor the claim in the partition the
  // produce result names; later ones are copies. It rejects after
  // timeoutMs, or when the reader fails.
  async claim (p, claim, timeoutMs = 30000) {
    claim = { ...claim, requestId: claim.requestId || crypto.randomUUID() }
    // Watch before producing: the decision can be read before send returns.
    const w = { claim, partition: null, seen: [] }
    const decided = new Promise((resolve, reject) => { Object.assign(w, { resolve, reject }) })
    decided.catch(() => {}) // it may be rejected while send is still under way: awaited below
    const timer = setTimeout(() => w.reject(new Error(`no decision for ${claim.requestId} within ${timeoutMs} ms`)), timeoutMs)
    this.#waits.add(w)
    try {
      if (this.#failure) throw this.#failure
      const { partition } = await produceClaim(p, claim)
      w.partition = partition
      const d = w.seen.find(d => isDecisionFor(d, claim, partition))
      if (d) return d
      return await decided
    } finally {
      clearTimeout(timer)
      this.#waits.delete(w)
    }
  }

  // record takes one registrations record.
  record (message) {
    const header = name => message.headers[name] === undefined ? undefined : message.headers[name].toString()
    const type = header('event-type')
    if (type !== 'UsernameRegistered' && type !== 'ClaimRejected') return // another command's, or unknown
    const version = header('schema-version') || '1'
    if (version !== '1') {
      this.fail(new Error(`decision with schema-version ${version}; this client reads 1`))
      return
    }
    const d = JSON.parse(message.value.toString('utf8'))
    for (const w of this.#waits) {
      if (w.partition === null) {
        if (d.request_id === canonicalId(w.claim.requestId)) w.seen.push(d)
      } else if (isDecisionFor(d, w.claim, w.partition)) {
        w.resolve(d)
      }
    }
  }

  fail (err) {
    this.#failure = err
    for (const w of this.#waits) w.reject(err)
  }

  async close () { await this.#consumer.disconnect() }
}

// decisions starts reading registrations: from the current end offsets (a
// decision is always written after its claim, so none for a claim made
// afterwards is missed), or from the beginning. Its consumer is in a group
// of its own.
async function decisions (k, { fromBeginning = false } = {}) {
  let ends = []
  if (!fromBeginning) {
    const admin = k.admin()
    await admin.connect()
    try {
      ends = await admin.fetchTopicOffsets(REGISTRATIONS)
    } finally {
      await admin.disconnect()
    }
  }
  const consumer = k.consumer({ groupId: 'registry-client-js-' + crypto.randomUUID() })
  const r = new Decisions(consumer)
  consumer.on(consumer.events.CRASH, e => r.fail(e.payload.error))
  await consumer.connect()
  await consumer.subscribe({ topic: REGISTRATIONS, fromBeginning: true })
  const running = consumer.run({ eachMessage: async ({ message }) => r.record(message) })
  // run has made the group but not fetched yet: the seeks apply to the first fetch.
  for (const { partition, offset } of ends) consumer.seek({ topic: REGISTRATIONS, partition, offset })
  await running
  return r
}

// lookup asks the registry's HTTP lookup (GET /v1/usernames/{username} at
// url, the API's base URL) for the name's canonical, key, partition,
// policy_version and status: the values a claim must carry. Every status
// below 500 (404 available among them) has a JSON body.
async function lookup (url, username) {
  const r = await fetch(url.replace(/\/+$/, '') + '/v1/usernames/' + encodeURIComponent(username), { signal: AbortSignal.timeout(30000) })
  if (r.status >= 500) throw new Error(`lookup of ${username}: HTTP ${r.status}`)
  return r.json()
}

module.exports = { CLAIMS, REGISTRATIONS, murmur2, partition, kafka, producer, produceClaim, canonicalId, isDecisionFor, decisions, lookup }

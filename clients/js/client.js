// A claims producer and decisions consumer for the username registry, in
// JavaScript with KafkaJS, written from docs/events.md and
// docs/usernames.md only. The canonical form and key of a username come
// from the registry's policy; this client takes them as given.
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
  return JSON.stringify({
    request_id: requestId,
    user_id: userId,
    username,
    canonical,
    key,
    policy_version: policyVersion || 1,
    submitted_at: new Date().toISOString()
  })
}

// produceClaim writes a ClaimSubmitted keyed by its key with acks from all
// in-sync replicas, and returns its request_id.
async function produceClaim (p, claim) {
  const requestId = claim.requestId || crypto.randomUUID()
  await p.send({
    topic: CLAIMS,
    acks: -1,
    messages: [{
      key: claim.key,
      value: claimValue({ ...claim, requestId }),
      headers: { 'event-type': 'ClaimSubmitted', 'schema-version': '1' }
    }]
  })
  return requestId
}

module.exports = { CLAIMS, REGISTRATIONS, murmur2, partition, kafka, producer, produceClaim }

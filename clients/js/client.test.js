'use strict'
// Checks the KafkaJS client against the shared test vectors, and, given a
// running registry (REGISTRY_KAFKA_BROKERS), produces claims and reads the
// registry's own records on registrations (gzip) with a plain consumer.
// Under CI=true a missing registry fails instead of skipping.

const test = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { Partitioners } = require('kafkajs')
const rc = require('./client')

const vectorFile = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'testvectors.json'), 'utf8'))
const vectors = vectorFile.vectors

function kafkajsPartition (createPartitioner, key, n) {
  const partitionMetadata = Array.from({ length: n }, (_, i) => ({ partitionId: i, leader: 0 }))
  return createPartitioner()({ topic: rc.CLAIMS, partitionMetadata, message: { key } })
}

test('murmur2 and partitions match the vectors', () => {
  for (const v of vectors) {
    const key = Buffer.from(v.key, 'utf8')
    assert.strictEqual(key.toString('hex'), v.key_hex, v.typed)
    assert.strictEqual(rc.murmur2(key), v.murmur2, v.typed)
    for (const [n, want] of Object.entries(v.partitions)) {
      assert.strictEqual(rc.partition(v.key, Number(n)), want, `${v.typed} among ${n}`)
      assert.strictEqual(kafkajsPartition(Partitioners.DefaultPartitioner, v.key, Number(n)), want, `KafkaJS DefaultPartitioner: ${v.typed} among ${n}`)
    }
  }
})

test('KafkaJS LegacyPartitioner puts keys elsewhere (docs/events.md)', () => {
  const wrong = vectors.filter(v => kafkajsPartition(Partitioners.LegacyPartitioner, v.key, 12) !== v.partitions['12'])
  assert.ok(wrong.length > 0, 'the LegacyPartitioner agreed on every vector')
})

test('claims are decided in their partition, and the registry\'s records are readable', async (t) => {
  const brokers = process.env.REGISTRY_KAFKA_BROKERS || ''
  if (!brokers) {
    if (process.env.CI === 'true') assert.fail('CI=true and REGISTRY_KAFKA_BROKERS is not set: no registry to talk to')
    t.skip('REGISTRY_KAFKA_BROKERS not set (source the data directory\'s registry.env of a running `registry dev`)')
    return
  }
  const k = rc.kafka(brokers)
  const consumer = k.consumer({ groupId: 'js-' + crypto.randomUUID() })
  const p = rc.producer(k)
  await consumer.connect()
  await p.connect()
  try {
    const sent = new Map()
    const decided = new Map()
    let done
    const all = new Promise(resolve => { done = resolve })
    // From the beginning: every record the registry ever wrote must decode.
    await consumer.subscribe({ topic: rc.REGISTRATIONS, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const type = message.headers['event-type'] && message.headers['event-type'].toString()
        assert.ok(type === 'UsernameRegistered' || type === 'ClaimRejected', `event-type ${type}`)
        const d = JSON.parse(message.value.toString('utf8'))
        const s = sent.get(d.request_id)
        if (s && d.user_id === s.userId && d.username === s.username && !decided.has(d.request_id)) {
          decided.set(d.request_id, { ...d, partition })
          if (decided.size === sent.size) done()
        }
      }
    })
    for (const v of vectors.slice(8, 14)) {
      const claim = { userId: crypto.randomUUID(), username: v.typed, canonical: v.canonical, key: v.key, policyVersion: vectorFile.policy_version }
      claim.requestId = crypto.randomUUID()
      sent.set(claim.requestId, claim)
      await rc.produceClaim(p, claim)
    }
    await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error(`decided ${decided.size} of ${sent.size} within 60s`)), 60000))])
    for (const [id, d] of decided) {
      assert.notStrictEqual(d.reason, 'invalid', `${id}: ${JSON.stringify(d)}`)
      assert.strictEqual(d.canonical, sent.get(id).canonical)
      assert.strictEqual(d.partition, d.claim_partition, 'a decision is in its claim\'s partition')
    }
  } finally {
    await consumer.disconnect()
    await p.disconnect()
  }
})

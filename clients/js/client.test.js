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

test('isDecisionFor matches all four fields, and no command', () => {
  const claim = { requestId: '0B6F2A51-8C3E-4D7A-9E21-5F4C3B2A1D01', userId: '7D3F2B0E-5A61-4C1E-9F5B-2B8C1D4E6A01', username: 'Alice' }
  const mine = { request_id: claim.requestId.toLowerCase(), user_id: claim.userId.toLowerCase(), username: 'Alice', outcome: 'registered', claim_partition: 9 }
  assert.ok(rc.isDecisionFor(mine, claim, 9))
  assert.ok(!rc.isDecisionFor(mine, claim, 0), 'decided in another partition')
  assert.ok(!rc.isDecisionFor(mine, { ...claim, username: 'alice' }, 9), 'username as typed, exact')
  assert.ok(!rc.isDecisionFor({ ...mine, user_id: 'c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502', reason: 'request_conflict' }, claim, 9), 'another payload\'s request_conflict')
  assert.ok(!rc.isDecisionFor({ ...mine, command: 'release' }, claim, 9), 'another command\'s decision')
})

// brokers is REGISTRY_KAFKA_BROKERS of a running registry; under CI=true a
// missing one fails, else the test is skipped (undefined).
function brokers (t) {
  const b = process.env.REGISTRY_KAFKA_BROKERS || ''
  if (!b) {
    if (process.env.CI === 'true') assert.fail('CI=true and REGISTRY_KAFKA_BROKERS is not set: no registry to talk to')
    t.skip('REGISTRY_KAFKA_BROKERS not set (source the data directory\'s registry.env of a running `registry dev`)')
  }
  return b
}

// registryURL is the API of that registry, for the lookup; `registry dev`
// listens on 127.0.0.1:8080 unless told otherwise.
const registryURL = () => process.env.REGISTRY_URL || 'http://127.0.0.1:8080'

async function claimsPartitions (k) {
  const admin = k.admin()
  await admin.connect()
  try {
    return (await admin.fetchTopicMetadata({ topics: [rc.CLAIMS] })).topics[0].partitions.length
  } finally {
    await admin.disconnect()
  }
}

test('claims are decided in their partition, and the registry\'s records are readable', async (t) => {
  const b = brokers(t)
  if (!b) return
  const k = rc.kafka(b)
  const count = await claimsPartitions(k)
  // From the beginning: every record the registry ever wrote must decode
  // (a batch KafkaJS cannot read crashes the consumer, and fails the reader).
  const reader = await rc.decisions(k, { fromBeginning: true })
  const p = rc.producer(k)
  await p.connect()
  try {
    const claims = vectors.slice(8, 14).map(v => ({ requestId: crypto.randomUUID(), userId: crypto.randomUUID(), username: v.typed, canonical: v.canonical, key: v.key, policyVersion: vectorFile.policy_version }))
    const decided = await Promise.all(claims.map(c => reader.claim(p, c, 60000)))
    for (const [i, d] of decided.entries()) {
      const c = claims[i]
      assert.notStrictEqual(d.reason, 'invalid', JSON.stringify(d))
      assert.strictEqual(d.request_id, c.requestId)
      assert.strictEqual(d.canonical, c.canonical)
      assert.strictEqual(d.claim_partition, rc.partition(c.key, count), JSON.stringify(d))
    }
  } finally {
    await reader.close()
    await p.disconnect()
  }
})

test('a copy in a wrong partition does not answer the claim', async (t) => {
  const b = brokers(t)
  if (!b) return
  const name = 'js-' + crypto.randomUUID().slice(0, 8)
  const n = await rc.lookup(registryURL(), name)
  assert.strictEqual(n.status, 'available', JSON.stringify(n))
  const k = rc.kafka(b)
  const count = await claimsPartitions(k)
  if (count < 2) assert.fail('claims has one partition: run `registry dev --partitions 12` so that a partition can be wrong')
  assert.strictEqual(rc.partition(n.key, count), n.partition, JSON.stringify(n))
  const wrong = (n.partition + 1) % count
  const p = rc.producer(k)
  await p.connect()
  const watcher = await rc.decisions(k) // from the end
  let reader
  try {
    const claim = { requestId: crypto.randomUUID(), userId: crypto.randomUUID(), username: name, canonical: n.canonical, key: n.key, policyVersion: n.policy_version }
    const copy = await watcher.claim(p, { ...claim, partition: wrong }, 60000)
    assert.deepStrictEqual([copy.outcome, copy.reason, copy.claim_partition], ['rejected', 'invalid', wrong], JSON.stringify(copy))
    // The client's reader reads from the beginning, so it reads the
    // copy's decision while it waits for the claim's.
    reader = await rc.decisions(k, { fromBeginning: true })
    const d = await reader.claim(p, claim, 60000)
    assert.deepStrictEqual([d.outcome, d.reason, d.claim_partition], ['registered', undefined, n.partition], JSON.stringify(d))
    assert.strictEqual(d.holder_request_id, claim.requestId)
  } finally {
    await watcher.close()
    if (reader) await reader.close()
    await p.disconnect()
  }
})

// Segment's Node SDK (@segment/analytics-node, from npm, unmodified but for its host and
// write key) sends through its own batching and retries; prints the message ids it sent,
// valid and invalid, as JSON for check_segment_node.py.
//
// usage: node segment_node.mjs HOST WRITE_KEY
import { Analytics } from '@segment/analytics-node'

const [host, writeKey] = process.argv.slice(2)
const errors = []
const analytics = new Analytics({ writeKey, host, maxEventsInBatch: 100, flushInterval: 200, maxRetries: 5 })
analytics.on('error', (e) => errors.push(String(e && (e.reason || e.message || e.code) || e)))
const classes = ['warrior', 'mage', 'rogue']
const sent = { level_up: [], guild_joins: [], invalid: {} }
const track = (params) => new Promise((resolve) => analytics.track(params, (err, ctx) => resolve({ err, id: ctx && ctx.event && ctx.event.messageId })))
const waits = []
for (let i = 0; i < 1500; i++) {
  const userId = `player-${i % 97}`
  if (i % 3 === 0) {
    waits.push(track({ userId, event: 'Join Guild', properties: { guild_id: i % 40, name: `guild ${i % 40}` } }).then((r) => sent.guild_joins.push(r)))
  } else {
    waits.push(track({ anonymousId: userId, event: 'Level Up', properties: { level: (i % 100) + 1, class: classes[i % 3] } }).then((r) => sent.level_up.push(r)))
  }
}
for (let i = 0; i < 10; i++) {
  waits.push(track({ userId: 'p', event: 'Level Up', properties: { level: 'high', class: 'mage' } }).then((r) => { sent.invalid[r.id] = 'wrong_type' }))
  waits.push(track({ userId: 'p', event: 'Summon Dragon', properties: { size: 3 } }).then((r) => { sent.invalid[r.id] = 'unknown_event_type' }))
}
analytics.identify({ userId: 'player-1', traits: { plan: 'free' } })
await Promise.all(waits)
await analytics.closeAndFlush({ timeout: 30000 })
const failed = [...sent.level_up, ...sent.guild_joins].filter((r) => r.err)
console.log(JSON.stringify({
  level_up: sent.level_up.map((r) => r.id),
  guild_joins: sent.guild_joins.map((r) => r.id),
  invalid: sent.invalid,
  errors: errors.concat(failed.map((r) => String(r.err && (r.err.message || r.err)))),
}))

// Package bench is the registry's load generator. It drives the HTTP
// claim API (POST /v1/claims), measures throughput and latency, and checks
// every answer for the two promises the API makes: a name has one holder,
// and a request_id has one decision. It speaks only HTTP, so it measures
// the registry and the classic baseline (internal/tools/baseline) alike.
//
// Two loops:
//
//   - Closed: N clients, each sending its next claim when the previous one
//     is answered. It finds the throughput a given concurrency reaches.
//     Its latencies are optimistic under overload: a stalled server also
//     stalls the clients, so the claims that would have queued are never
//     sent ("coordinated omission").
//   - Open: claims are due at a fixed rate whatever the server does, and
//     each latency counts from when the claim was due. Queueing shows in
//     the percentiles, as it would for signups arriving on their own.
//
// Latencies go into an HDR histogram (1µs to 60s, 3 significant digits),
// so percentiles are exact to 0.1% with constant memory. The check keeps a
// few dozen bytes per request_id; see Checker.
package bench

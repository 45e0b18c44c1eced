package stack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/internal/httpwire"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// reply is an HTTP answer from the API.
type reply struct {
	Code int
	httpwire.Answer
	Location   string
	RetryAfter string
}

var httpClient = &http.Client{
	Timeout:   60 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 1000, MaxConnsPerHost: 0},
}

func do(t testing.TB, method, url, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return reply{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Code: resp.StatusCode, Location: resp.Header.Get("Location"), RetryAfter: resp.Header.Get("Retry-After")}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Errorf("%s %s: answer %d is not JSON: %q", method, url, resp.StatusCode, raw)
	}
	return r
}

func claimBody(requestID, userID, username string) string {
	b, _ := json.Marshal(map[string]string{"request_id": requestID, "user_id": userID, "username": username})
	return string(b)
}

func post(t testing.TB, api *stacktest.APINode, requestID, userID, username string) reply {
	t.Helper()
	return do(t, "POST", api.URL+"/v1/claims?wait=30s", claimBody(requestID, userID, username))
}

func newID() string { return uuid.NewString() }

// waitSettled waits until every claim in the log is decided and every
// decision published: each partition's stored next offset has reached the
// claims log end and the outbox is empty.
func waitSettled(t testing.TB, r *stacktest.Registry) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		behind, err := unsettled(r)
		if err == nil && behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("claims not all decided after 60s: %s %v", behind, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func unsettled(r *stacktest.Registry) (string, error) {
	ctx := context.Background()
	ends := listEnds(r, events.TopicClaims)
	var outbox int
	if err := r.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&outbox); err != nil {
		return "", err
	}
	if outbox > 0 {
		return fmt.Sprintf("%d decisions unpublished", outbox), nil
	}
	stored := map[int32]int64{}
	rows, _ := r.Pool.Query(ctx, `SELECT partition, next_offset FROM claim_partitions`)
	var p int32
	var next int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &next}, func() error { stored[p] = next; return nil }); err != nil {
		return "", err
	}
	for part, end := range ends {
		if end > 0 && stored[part] != end {
			return fmt.Sprintf("partition %d at %d of %d", part, stored[part], end), nil
		}
	}
	return "", nil
}

func listEnds(r *stacktest.Registry, topic string) map[int32]int64 {
	cl, err := kgo.NewClient(r.Kafka...)
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	out := map[int32]int64{}
	if err != nil {
		return out
	}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// readTopic reads every record of topic from the beginning to its current end.
func readTopic(t testing.TB, r *stacktest.Registry, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafka.ReadToEnd(ctx, topic, r.Kafka...)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// ledgerRow is one row of the request ledger.
type ledgerRow struct {
	userID, username, outcome string
	decision                  []byte
}

// ledgerKey is the ledger's primary key: a request_id within a partition.
type ledgerKey struct {
	requestID string
	partition int32
}

func ledger(t testing.TB, r *stacktest.Registry) map[ledgerKey]ledgerRow {
	t.Helper()
	rows, err := r.Pool.Query(context.Background(), `SELECT request_id::text, claim_partition, user_id, username, outcome, decision FROM requests`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[ledgerKey]ledgerRow{}
	var k ledgerKey
	var row ledgerRow
	_, err = pgx.ForEachRow(rows, []any{&k.requestID, &k.partition, &row.userID, &row.username, &row.outcome, &row.decision}, func() error {
		out[k] = row
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// holders maps canonical name to the holder's ledger key.
func holders(t testing.TB, r *stacktest.Registry) map[string]ledgerKey {
	t.Helper()
	rows, err := r.Pool.Query(context.Background(), `SELECT canonical, request_id::text, claim_partition FROM usernames`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ledgerKey{}
	var c string
	var k ledgerKey
	if _, err := pgx.ForEachRow(rows, []any{&c, &k.requestID, &k.partition}, func() error { out[c] = k; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAgreement checks, after waitSettled, that the topics and the
// database tell one story: every claim record is decided in the ledger,
// every registrations copy of a ledger decision is byte-identical to it,
// and every holder won with a registered ledger decision. It returns the
// ledger.
func checkAgreement(t testing.TB, r *stacktest.Registry) map[ledgerKey]ledgerRow {
	t.Helper()
	led := ledger(t, r)
	winners := map[string]int64{} // key → offset of the claim that won it
	for _, rec := range readTopic(t, r, events.TopicClaims) {
		c, err := events.DecodeClaim(rec)
		if err != nil || uuid.Validate(c.RequestID) != nil {
			continue // poison: decided under a position-derived id, checked by its own test
		}
		row, ok := led[ledgerKey{c.RequestID, rec.Partition}]
		if !ok {
			t.Errorf("claim %s at %d/%d has no ledger row", c.RequestID, rec.Partition, rec.Offset)
			continue
		}
		checkLogOrder(t, winners, rec, row)
	}
	published := map[ledgerKey]bool{}
	for _, rec := range readTopic(t, r, events.TopicRegistrations) {
		d, err := events.DecodeDecision(rec)
		if err != nil {
			t.Errorf("unreadable registrations record at %d/%d: %v", rec.Partition, rec.Offset, err)
			continue
		}
		if d.Reason == events.ReasonRequestConflict {
			continue // decides a conflicting reuse, not the request_id's own claim
		}
		k := ledgerKey{d.RequestID, rec.Partition}
		row, ok := led[k]
		if !ok {
			t.Errorf("registrations has a decision for %s that the ledger lacks", d.RequestID)
		} else if !bytes.Equal(row.decision, rec.Value) {
			t.Errorf("decision copies differ for %s:\nledger:        %s\nregistrations: %s", d.RequestID, row.decision, rec.Value)
		}
		published[k] = true
	}
	for id := range led {
		if !published[id] {
			t.Errorf("ledger decision for %v was never published", id)
		}
	}
	for canonical, k := range holders(t, r) {
		if led[k].outcome != events.OutcomeRegistered {
			t.Errorf("%s is held by %v whose ledger outcome is %q", canonical, k, led[k].outcome)
		}
	}
	return led
}

// checkLogOrder checks that the first claim for a key in log order is the
// one that won it, and that every taken or confusable answer comes after a
// winner. Records arrive in offset order within each partition, and a key
// lives in one partition.
func checkLogOrder(t testing.TB, winners map[string]int64, rec *kgo.Record, row ledgerRow) {
	t.Helper()
	var d events.Decision
	if err := json.Unmarshal(row.decision, &d); err != nil {
		t.Fatal(err)
	}
	if d.ClaimOffset != rec.Offset || d.ClaimPartition != rec.Partition {
		return // a retry of a request decided at its first record
	}
	key := string(rec.Key)
	won, held := winners[key]
	switch {
	case d.Outcome == events.OutcomeRegistered && d.HolderRequestID == d.RequestID:
		if held {
			t.Errorf("key %q won twice: at offset %d and again at %d", key, won, rec.Offset)
		}
		winners[key] = rec.Offset
	case d.Reason == events.ReasonTaken || d.Reason == events.ReasonConfusable:
		if !held {
			t.Errorf("claim at %d/%d rejected %s with no earlier winner of %q", rec.Partition, rec.Offset, d.Reason, key)
		}
	}
}

func unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

package claims_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/registrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A signup service embeds the client: it needs a producer for claims and
// a reader of registrations, and nothing else of the registry.
func ExampleClient() {
	// A registry to claim from: an embedded broker, PostgreSQL and a
	// projector. A signup service has a real one and needs only its brokers.
	env := &testenv.Background{}
	defer env.Close()
	registry := stacktest.Start(env, stacktest.Options{Projectors: 1})

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	kafka := []kgo.Opt{kgo.SeedBrokers(registry.Brokers...)}

	decisions, err := registrations.NewReader(registrations.ReaderConfig{Kafka: kafka})
	if err != nil {
		panic(err)
	}
	go decisions.Run(ctx)
	<-decisions.Positioned() // decisions published from here on reach the client

	producer, err := kgo.NewClient(append(kafka, kgo.DefaultProduceTopic(events.TopicClaims), kgo.ProducerLinger(0))...)
	if err != nil {
		panic(err)
	}
	defer producer.Close()
	// Caller is the name this service's claims carry (decisions and
	// `registry rejections` show it). Writing to the claims topic is as
	// powerful as the API's claim scope: the Kafka credentials in kafka
	// are this client's token (docs/deployment.md).
	client, err := claims.NewClient(claims.ClientConfig{Producer: producer, Decisions: decisions, Caller: "signup-eu"})
	if err != nil {
		panic(err)
	}

	for _, req := range []claims.Request{
		{UserID: "6f1c1a43-54b5-4a4e-8d8e-2c9d7b6f0a11", Username: "Alice"},
		{UserID: "0d9f5b5e-1f42-4c57-a5a4-8f1f0e7a9c22", Username: "alice"},
		{UserID: "0d9f5b5e-1f42-4c57-a5a4-8f1f0e7a9c22", Username: "a1ice"}, // digit one
		{UserID: "0d9f5b5e-1f42-4c57-a5a4-8f1f0e7a9c22", Username: "аlice"}, // Cyrillic а
	} {
		wait, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := client.Claim(wait, req)
		cancel()
		switch {
		case err != nil:
			fmt.Println("error:", err)
		case res.Decision == nil:
			fmt.Println("pending: ask again later with request_id", res.RequestID)
		case res.Decision.Outcome == events.OutcomeRegistered:
			fmt.Println(req.Username, "registered as", res.Decision.Canonical, "won:", res.Won, "by", res.Decision.Caller)
		default:
			fmt.Println(req.Username, "rejected:", res.Decision.Reason, "held as", res.Decision.Conflicts)
		}
	}
	// Output:
	// Alice registered as alice won: true by signup-eu
	// alice rejected: taken held as alice
	// a1ice rejected: confusable held as alice
	// error: username mixes the Cyrillic and Latin scripts ('а', U+0430, is Cyrillic); a name is written in one script, or mixes Latin only with Han, Hiragana, Katakana, Hangul and Bopomofo, or with one other script that is not Cyrillic or Greek
}

package kafkalaunch

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const pollInterval = 200 * time.Millisecond

// awaitReady polls the node until its metadata lists it and at least
// brokers brokers in all, and fails if the JVM exits first, or after
// readyTimeout.
func (n *Node) awaitReady(ctx context.Context, brokers int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.Addr()))
	if err != nil {
		return fmt.Errorf("kafkalaunch: client for node %d: %w", n.id, err)
	}
	defer cl.Close()
	_, done := n.process()
	if done == nil {
		return fmt.Errorf("kafkalaunch: node %d is not running", n.id)
	}
	var last error
	for {
		if last = n.probe(ctx, cl, brokers); last == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("kafkalaunch: node %d exited while starting; %s ends with:\n%s", n.id, n.LogPath(), n.logTail())
		case <-ctx.Done():
			return fmt.Errorf("kafkalaunch: node %d not ready (%v): %w; %s ends with:\n%s", n.id, last, ctx.Err(), n.LogPath(), n.logTail())
		case <-time.After(pollInterval):
		}
	}
}

// probe asks the node itself (not whichever broker the client prefers)
// for the cluster's brokers.
func (n *Node) probe(ctx context.Context, cl *kgo.Client, brokers int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cl.SeedBrokers()[0].Request(ctx, kmsg.NewPtrMetadataRequest())
	if err != nil {
		return err
	}
	md := resp.(*kmsg.MetadataResponse)
	self := false
	for _, b := range md.Brokers {
		self = self || b.NodeID == n.id
	}
	if !self || len(md.Brokers) < brokers {
		return fmt.Errorf("metadata lists %d brokers, itself %v; want %d", len(md.Brokers), self, brokers)
	}
	return nil
}

// logTail returns the end of the node's server log, for errors.
func (n *Node) logTail() string {
	b, err := os.ReadFile(n.LogPath())
	if err != nil {
		return err.Error()
	}
	return tail(b, 4<<10)
}

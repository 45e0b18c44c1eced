package kafka

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded starts franz-go's in-process Kafka-protocol broker on
// 127.0.0.1:port (0 picks a free port). With a dir it persists there and
// fsyncs every produced batch, so an acknowledged claim survives a crash;
// an empty dir keeps everything in memory (tests). extra options come
// last, so they can override these.
func Embedded(dir string, port int, extra ...kfake.Opt) (*kfake.Cluster, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.ClusterID("registry")}
	if dir != "" {
		opts = append(opts, kfake.DataDir(dir), kfake.SyncWrites())
	}
	opts = append(opts, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker: %w", err)
	}
	return c, nil
}

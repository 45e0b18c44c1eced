package chaos

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/usernameregistry/registry/internal/kafka"
)

// RunBroker runs the broker process of a chaos run until ctx ends: the
// registry's embedded kfake, persisted in dir with an fsync per produced
// batch, listening on 127.0.0.1:port and advertising advertise (the proxy),
// so that clients reach it only through the proxy. Killed with SIGKILL and
// started again on the same dir and port, it must have lost nothing it
// acknowledged.
func RunBroker(ctx context.Context, dir string, port int, advertise string) error {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return fmt.Errorf("advertised address %q: %w", advertise, err)
	}
	c, err := kafka.Embedded(dir, port,
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return advertised{ln, adv}, nil
		}),
		// Projectors in a chaos run use a short session timeout, so that
		// a paused one loses its partitions within the run.
		kfake.GroupMinSessionTimeout(time.Second),
	)
	if err != nil {
		return err
	}
	<-ctx.Done()
	c.Close()
	return nil
}

// advertised is a listener that reports another address, which kfake
// hands to clients in its metadata.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

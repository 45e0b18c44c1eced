package main

import (
	"context"
	"io"

	"github.com/usernameregistry/registry/internal/pprofsrv"
)

// servePprof serves Go's profiles on --pprof until ctx ends.
func servePprof(ctx context.Context, c *config, stdout io.Writer) error {
	return pprofsrv.Serve(ctx, c.pprofAddr, stdout)
}

package rebuild

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// copyBatch is how many rows travel together from the reader to a COPY.
const copyBatch = 2048

// copyQueue is how many batches may wait for each COPY: with copyBatch it
// bounds the rows held in memory per table whatever the topic's size.
const copyQueue = 8

// copyStream feeds one table through one COPY FROM STDIN running on its
// own connection, so the reader decodes while PostgreSQL loads. Rows are
// handed over in batches through a bounded channel: memory stays constant.
type copyStream struct {
	table    pgx.Identifier
	batch    [][]any
	ch       chan [][]any
	finished chan struct{} // closed when the COPY returned; err is then set
	err      error
	rows     int64
	cancel   context.CancelFunc
}

// startCopy starts COPY into table (columns cols) on a connection of pool.
func startCopy(ctx context.Context, pool *pgxpool.Pool, table pgx.Identifier, cols []string) *copyStream {
	ctx, cancel := context.WithCancel(ctx)
	s := &copyStream{table: table, ch: make(chan [][]any, copyQueue), finished: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.finished)
		_, s.err = pool.CopyFrom(ctx, table, cols, &chanSource{ctx: ctx, ch: s.ch})
	}()
	return s
}

// add queues one row. It fails once the COPY has failed.
func (s *copyStream) add(ctx context.Context, row ...any) error {
	s.batch = append(s.batch, row)
	s.rows++
	if len(s.batch) < copyBatch {
		return nil
	}
	return s.flush(ctx)
}

func (s *copyStream) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	select {
	case s.ch <- s.batch:
		s.batch = make([][]any, 0, copyBatch)
		return nil
	case <-s.finished:
		return s.failure()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *copyStream) failure() error {
	if s.err == nil {
		return fmt.Errorf("copying into %s: ended early", s.table.Sanitize())
	}
	return fmt.Errorf("copying into %s: %w", s.table.Sanitize(), s.err)
}

// close sends the last rows and waits for the COPY to finish.
func (s *copyStream) close(ctx context.Context) error {
	defer s.cancel()
	if err := s.flush(ctx); err != nil {
		s.abort()
		return err
	}
	close(s.ch)
	<-s.finished
	if s.err != nil {
		return s.failure()
	}
	return nil
}

// abort stops the COPY; its rows are rolled back. Safe after close.
func (s *copyStream) abort() {
	s.cancel()
	<-s.finished
}

// chanSource is a pgx.CopyFromSource over batches from a channel. A
// cancelled ctx ends it with an error, so the COPY is rolled back.
type chanSource struct {
	ctx   context.Context
	ch    chan [][]any
	batch [][]any
	i     int
	err   error
}

func (c *chanSource) Next() bool {
	c.i++
	for c.i >= len(c.batch) {
		select {
		case b, ok := <-c.ch:
			if !ok {
				return false
			}
			c.batch, c.i = b, 0
		case <-c.ctx.Done():
			c.err = c.ctx.Err()
			return false
		}
	}
	return true
}

func (c *chanSource) Values() ([]any, error) { return c.batch[c.i], nil }
func (c *chanSource) Err() error             { return c.err }

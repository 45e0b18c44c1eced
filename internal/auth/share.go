package auth

import "sync"

// shares counts each caller's requests holding a waiter.
type shares struct {
	mu   sync.Mutex
	held map[string]int
}

func newShares() *shares { return &shares{held: map[string]int{}} }

// acquire takes one of name's limit slots; false when all are taken.
func (s *shares) acquire(name string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[name] >= limit {
		return false
	}
	s.held[name]++
	return true
}

func (s *shares) release(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[name]--; s.held[name] <= 0 {
		delete(s.held, name)
	}
}

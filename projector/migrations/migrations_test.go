package migrations

import "testing"

// TestMigrationsRead: the embedded files are numbered from 1 without gaps,
// so a misnamed or duplicated file fails here rather than at a deploy.
func TestMigrationsRead(t *testing.T) {
	ms := All()
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	for i, m := range ms {
		if m.Version != i+1 || m.SQL == "" {
			t.Errorf("migration %d is %03d_%s (%d bytes); want version %d with a body", i, m.Version, m.Name, len(m.SQL), i+1)
		}
	}
}

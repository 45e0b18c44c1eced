package pglaunch

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// serverUser is the account PostgreSQL runs as when we are root. Debian and
// RHEL packages both create it.
const serverUser = "postgres"

// fallbackUser is the account used as root when serverUser does not exist:
// every Linux and macOS system has it, so a bare machine (a fresh container
// with Go and nothing else) can start the private cluster without anyone
// creating an account first. It owns only the private cluster's data
// directory, which is what PostgreSQL needs.
const fallbackUser = "nobody"

// account is the unprivileged OS user that initdb and postgres run as when
// the caller is root. A nil *account means "run as the current user", which
// keeps the non-root path free of special cases.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
}

// serverAccount returns the account to run the server as, or nil when the
// current user can run it directly.
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	return pickAccount(user.Lookup)
}

// pickAccount returns serverUser's account, or fallbackUser's when the
// machine has no serverUser; lookup is user.Lookup outside tests.
func pickAccount(lookup func(string) (*user.User, error)) (*account, error) {
	u, err := lookup(serverUser)
	if err != nil {
		var errFallback error
		if u, errFallback = lookup(fallbackUser); errFallback != nil {
			return nil, fmt.Errorf("pglaunch: running as root, and PostgreSQL refuses to, so it runs as the %q account, or else %q; looking them up: %w, %w "+
				"(create one with `useradd --system %s`, run as an ordinary user, or set DATABASE_URL to use an existing server)",
				serverUser, fallbackUser, err, errFallback, serverUser)
		}
	}
	return newAccount(u)
}

func newAccount(u *user.User) (*account, error) {
	uid, err := parseID(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("pglaunch: parsing uid of user %q: %w", u.Username, err)
	}
	gid, err := parseID(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("pglaunch: parsing gid of user %q: %w", u.Username, err)
	}
	a := &account{name: u.Username, uid: uid, gid: gid, groups: []uint32{gid}}
	// Supplementary groups matter on Debian, where postgres reads the
	// snakeoil key through ssl-cert; missing them is not fatal for us.
	ids, _ := u.GroupIds()
	for _, id := range ids {
		if g, err := parseID(id); err == nil && !slices.Contains(a.groups, g) {
			a.groups = append(a.groups, g)
		}
	}
	return a, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// sysProcAttr returns the process attributes for a child that must run as
// this account. Credential is only set when switching users: setting it to
// our own ids as non-root would still call setgroups and fail.
func (a *account) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
	}
	return attr
}

// chown gives path to the account; a no-op for the current user.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	if err := os.Lchown(path, int(a.uid), int(a.gid)); err != nil {
		return fmt.Errorf("pglaunch: giving %s to user %q: %w", path, a.name, err)
	}
	return nil
}

// chownTree gives every file under root to the account, so a cluster created
// by another user (or restored by root) can still be opened. Files that
// already have the right owner are left alone to avoid touching their ctime.
func (a *account) chownTree(root string) error {
	if a == nil {
		return nil
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pglaunch: walking %s to fix ownership: %w", root, err)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("pglaunch: walking %s to fix ownership: %w", root, err)
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == a.uid && st.Gid == a.gid {
			return nil
		}
		return a.chown(path)
	})
}

// checkTraversable verifies that the account can reach dir, by checking
// every directory from dir up to /. Without this the failure shows up later
// as an opaque "permission denied" from initdb or from chdir in the child.
// what names dir in the advice ("the data directory").
func (a *account) checkTraversable(dir, what string) error {
	if a == nil {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pglaunch: checking that user %q can reach %s: %w", a.name, dir, err)
		}
		if !a.canSearch(fi) {
			return fmt.Errorf("pglaunch: user %q (which PostgreSQL runs as, because we are root) cannot traverse %s (mode %s); "+
				"make every parent of %s searchable, e.g. `chmod o+x %s`, or use a directory elsewhere",
				a.name, d, fi.Mode().Perm(), what, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// canSearch applies the owner/group/other execute-bit rules for directory
// search permission as the kernel would for this account.
func (a *account) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true // cannot tell; let the real operation report it
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == a.uid:
		return perm&0o100 != 0
	case slices.Contains(a.groups, st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

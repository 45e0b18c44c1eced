package pglaunch

import (
	"errors"
	"os/user"
	"strings"
	"testing"
)

func TestPickAccountFallsBackToNobody(t *testing.T) {
	t.Parallel()
	users := map[string]*user.User{
		"nobody": {Username: "nobody", Uid: "65534", Gid: "65534"},
	}
	lookup := func(name string) (*user.User, error) {
		if u, ok := users[name]; ok {
			return u, nil
		}
		return nil, user.UnknownUserError(name)
	}
	a, err := pickAccount(lookup)
	if err != nil {
		t.Fatalf("pickAccount without a postgres account: %v", err)
	}
	if a.name != "nobody" || a.uid != 65534 {
		t.Fatalf("account = %+v, want nobody (65534)", a)
	}

	users["postgres"] = &user.User{Username: "postgres", Uid: "101", Gid: "104"}
	if a, err = pickAccount(lookup); err != nil || a.name != "postgres" {
		t.Fatalf("pickAccount with a postgres account = %+v, %v; want postgres", a, err)
	}

	_, err = pickAccount(func(name string) (*user.User, error) { return nil, user.UnknownUserError(name) })
	var unknown user.UnknownUserError
	if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "useradd --system postgres") {
		t.Fatalf("pickAccount with neither account: %v; want an UnknownUserError naming the way out", err)
	}
}

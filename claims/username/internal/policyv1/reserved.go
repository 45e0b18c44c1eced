package policyv1

// reservedNames are kept from registration because people trust them to
// speak for the service. They are listed in docs/usernames.md. Frozen:
// version 2 has its own list.
var reservedNames = []string{
	"abuse", "admin", "administrator", "api", "contact",
	"help", "hostmaster", "info", "mail", "moderator",
	"no-reply", "nobody", "noreply", "null", "official",
	"postmaster", "registry", "root", "security", "staff",
	"support", "system", "undefined", "webmaster", "www",
}

// reservedKeys holds the Key of every reserved name, so that Reserved also
// catches confusable spellings such as "аdmin" with a Cyrillic а.
var reservedKeys = buildReservedKeys(reservedNames)

// buildReservedKeys panics on a name the policy rejects: that is a bug in
// the list, and a silently skipped entry would leave a name unreserved.
func buildReservedKeys(names []string) map[string]string {
	keys := make(map[string]string, len(names))
	for _, name := range names {
		u, err := Normalize(name)
		if err != nil {
			panic("policyv1: reserved name " + name + ": " + err.Error())
		}
		keys[u.Key] = name
	}
	return keys
}

// ReservedNames returns a copy of the reserved list.
func ReservedNames() []string { return append([]string(nil), reservedNames...) }

// Reserved reports whether u is on the built-in reserved list, compared by
// Key (so confusable spellings of "admin" are reserved too).
func Reserved(u Username) bool {
	_, ok := reservedKeys[u.Key]
	return ok
}

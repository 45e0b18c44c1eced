package claims

// reservedNames are kept from registration because people trust them to
// speak for the service. They are listed in docs/usernames.md; keep the
// two in step and bump PolicyVersion when this list changes.
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
			panic("claims: reserved name " + name + ": " + err.Error())
		}
		keys[u.Key] = name
	}
	return keys
}

// Reserved reports whether u is on the built-in reserved list, compared by
// Key (so confusable spellings of "admin" are reserved too).
func Reserved(u Username) bool {
	_, ok := reservedKeys[u.Key]
	return ok
}

package events

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderProof carries an administrative command's proof of origin:
// "KEYID:HEX", HEX being the lowercase hex HMAC-SHA256 of the record (see
// AdminKeys.Sign) under the key named KEYID. Anything that can write to the
// claims topic can write an administrative command; only one whose proof
// verifies under a key the projectors hold is obeyed, and the check uses
// only the record and the keys, so a replay decides alike.
const HeaderProof = "admin-proof"

// Errors of AdminKeys.Verify.
var (
	ErrNoProof  = errors.New("administrative command carries no admin-proof header")
	ErrBadProof = errors.New("administrative command's admin-proof does not verify")
)

// minAdminKeyBytes is the shortest key accepted: 256 bits, the HMAC's own size.
const minAdminKeyBytes = 32

// AdminKeys is the key ring that signs and verifies administrative
// commands. The first key signs; every key verifies, so a key can be
// rotated by adding the new one first and keeping the old one for as long
// as commands it signed are in the log (replay verifies them again).
type AdminKeys struct {
	ids     []string
	secrets [][]byte
}

// ParseAdminKeys reads a key file: one key a line, "KEYID HEX", KEYID
// being [A-Za-z0-9._-]{1,32} and HEX at least 64 hex digits (32 bytes,
// e.g. `openssl rand -hex 32`). '#' starts a comment; blank lines are
// ignored. Errors name the line and never echo a key.
func ParseAdminKeys(r io.Reader) (*AdminKeys, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading admin key file: %w", err)
	}
	k := &AdminKeys{}
	for i, line := range bytes.Split(raw, []byte("\n")) {
		if j := bytes.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 || !validKeyID(f[0]) {
			return nil, fmt.Errorf("admin key file line %d: want KEYID HEX, KEYID of 1 to 32 letters, digits, '.', '_' or '-'", i+1)
		}
		secret, err := hex.DecodeString(f[1])
		if err != nil || len(secret) < minAdminKeyBytes {
			return nil, fmt.Errorf("admin key file line %d: the key must be at least %d hex digits", i+1, 2*minAdminKeyBytes)
		}
		for _, id := range k.ids {
			if id == f[0] {
				return nil, fmt.Errorf("admin key file line %d: key id %s is listed twice", i+1, id)
			}
		}
		k.ids, k.secrets = append(k.ids, f[0]), append(k.secrets, secret)
	}
	if len(k.ids) == 0 {
		return nil, errors.New("admin key file holds no key")
	}
	return k, nil
}

func validKeyID(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Sign sets rec's HeaderProof with the first key, replacing any proof it
// had. Sign the record as it will be produced: topic, event type header,
// key and value are covered.
func (k *AdminKeys) Sign(rec *kgo.Record) {
	proof := k.ids[0] + ":" + hex.EncodeToString(mac(k.secrets[0], rec))
	hs := rec.Headers[:0:0]
	for _, h := range rec.Headers {
		if h.Key != HeaderProof {
			hs = append(hs, h)
		}
	}
	rec.Headers = append(hs, kgo.RecordHeader{Key: HeaderProof, Value: []byte(proof)})
}

// Verify checks rec's HeaderProof: nil when it verifies under the key it
// names, ErrNoProof when there is none (or several), ErrBadProof otherwise.
// It depends only on rec and the keys, never on time or state.
func (k *AdminKeys) Verify(rec *kgo.Record) error {
	var proofs []string
	for _, h := range rec.Headers {
		if h.Key == HeaderProof {
			proofs = append(proofs, string(h.Value))
		}
	}
	if len(proofs) != 1 {
		return ErrNoProof
	}
	id, sum, ok := strings.Cut(proofs[0], ":")
	got, err := hex.DecodeString(sum)
	if !ok || err != nil {
		return ErrBadProof
	}
	for i, kid := range k.ids {
		if kid == id {
			if hmac.Equal(got, mac(k.secrets[i], rec)) {
				return nil
			}
			return ErrBadProof
		}
	}
	return ErrBadProof
}

// mac is HMAC-SHA256 over a domain tag and the record's topic, event type,
// key and value, each length-prefixed so no two records share an input.
func mac(secret []byte, rec *kgo.Record) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("registry admin-proof v1\x00")) //nolint:errcheck // hash writes never fail
	for _, part := range [][]byte{[]byte(rec.Topic), []byte(header(rec, HeaderType)), rec.Key, rec.Value} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:]) //nolint:errcheck
		h.Write(part) //nolint:errcheck
	}
	return h.Sum(nil)
}

package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// reach creates the topics through a client with sec, which is how every
// registry process first talks to the brokers.
func reach(t *testing.T, addrs []string, sec Security) error {
	t.Helper()
	opts, err := sec.Options()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = EnsureTopics(ctx, kadm.NewClient(cl), 3, -1)
	return err
}

func TestSASL(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "registry", "s3cret"), kfake.Superuser("PLAIN", "plainuser", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := reach(t, c.ListenAddrs(), Security{SASLMechanism: "SCRAM-SHA-256", SASLUser: "registry", SASLPassword: "s3cret"}); err != nil {
		t.Fatalf("right SCRAM credentials: %v", err)
	}
	if err := reach(t, c.ListenAddrs(), Security{SASLMechanism: "plain", SASLUser: "plainuser", SASLPassword: "pw"}); err != nil {
		t.Fatalf("right PLAIN credentials: %v", err)
	}
	if err := reach(t, c.ListenAddrs(), Security{SASLMechanism: "SCRAM-SHA-256", SASLUser: "registry", SASLPassword: "wrong"}); err == nil {
		t.Fatal("wrong password was accepted")
	}
}

func TestSecurityRejectsBadSettings(t *testing.T) {
	t.Parallel()
	for name, s := range map[string]Security{
		"unknown mechanism": {SASLMechanism: "GSSAPI", SASLUser: "u"},
		"no user":           {SASLMechanism: "PLAIN"},
		"missing CA file":   {CAFile: "/nonexistent/ca.pem"},
	} {
		if _, err := s.Options(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	cert, caFile := selfSigned(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := reach(t, c.ListenAddrs(), Security{CAFile: caFile}); err != nil {
		t.Fatalf("TLS with the broker's CA: %v", err)
	}
	if err := reach(t, c.ListenAddrs(), Security{TLS: true}); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
}

// selfSigned makes a certificate for 127.0.0.1 and writes it as a CA file.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

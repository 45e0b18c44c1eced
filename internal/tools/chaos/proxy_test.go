package chaos

import (
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestProxyFaultsOnlyProjectorConnections: the proxy finds which process
// owns a client connection through /proc, and cuts only those it was told
// to; others pass.
func TestProxyFaultsOnlyProjectorConnections(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the proxy tells processes apart through /proc (Linux)")
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c) //nolint:errcheck // echo until closed
		}
	}()
	me := os.Getpid()
	mine := func(port int) bool { return pidOwningPort(port, []int{me}) == me }
	other := func(port int) bool { return pidOwningPort(port, []int{1}) != 0 }
	for _, tc := range []struct {
		name   string
		faulty func(int) bool
		cut    bool
	}{{"projector's connection", mine, true}, {"another process's connection", other, false}} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProxy("127.0.0.1:0", echo.Addr().String(), tc.faulty)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip := func() error {
				c.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck // test
				if _, err := c.Write([]byte("ping")); err != nil {
					return err
				}
				_, err := io.ReadFull(c, make([]byte, 4))
				return err
			}
			if err := roundTrip(); err != nil {
				t.Fatalf("before the fault: %v", err)
			}
			p.Drop()
			err = roundTrip()
			if cut := err != nil; cut != tc.cut {
				t.Fatalf("after Drop: err %v, want cut=%v", err, tc.cut)
			}
		})
	}
}

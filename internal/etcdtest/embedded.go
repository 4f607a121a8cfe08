package etcdtest

import (
	"testing"

	"github.com/baton-go/baton/internal/embedded"
)

// Embedded starts a single-node etcd server in this process, with its data in
// t.TempDir() and fsync turned off, and returns its client endpoints. It
// listens on loopback TCP, so other processes can use it too. It is closed
// when t ends.
func Embedded(t testing.TB, opts ...embedded.Option) []string {
	t.Helper()
	opts = append([]embedded.Option{embedded.WithUnsafeNoFsync()}, opts...)
	srv, err := embedded.Start(t.TempDir(), opts...)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv.Endpoints()
}

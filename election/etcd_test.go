package election_test

import (
	"os"

	"github.com/baton-go/baton/internal/embedded"
)

// startEtcd runs an etcd for the examples, which cannot use a testing.T.
func startEtcd() (endpoints []string, stop func()) {
	dir, err := os.MkdirTemp("", "election-example")
	if err != nil {
		panic(err)
	}
	srv, err := embedded.Start(dir, embedded.WithUnsafeNoFsync())
	if err != nil {
		panic(err)
	}
	return srv.Endpoints(), func() {
		srv.Close()
		os.RemoveAll(dir)
	}
}

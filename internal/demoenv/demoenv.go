// Package demoenv holds what the example programs share: an etcd to talk to
// (an embedded one unless endpoints are given), quiet clients, and fresh
// group names so that a run never meets an earlier run's keys.
package demoenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-go/baton/internal/embedded"
)

// Etcd returns the endpoints to use: the comma-separated endpoints given,
// or those of an embedded etcd (fsync off, data in a temporary directory)
// when endpoints is empty. stop closes what Etcd started.
func Etcd(endpoints string) (eps []string, embeddedEtcd bool, stop func(), err error) {
	if endpoints != "" {
		return strings.Split(endpoints, ","), false, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "baton-example-")
	if err != nil {
		return nil, false, nil, err
	}
	srv, err := embedded.Start(dir, embedded.WithUnsafeNoFsync())
	if err != nil {
		os.RemoveAll(dir)
		return nil, false, nil, err
	}
	return srv.Endpoints(), true, func() { srv.Close(); os.RemoveAll(dir) }, nil
}

// Client returns a client to eps. clientv3 logs every retried request; the
// examples' own lines say what happens, so its logger is off.
func Client(eps []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Group returns prefix followed by a random suffix.
func Group(prefix string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

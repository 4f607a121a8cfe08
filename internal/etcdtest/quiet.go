package etcdtest

import (
	"os"
	"testing"
)

// quietTB drops the test logging of etcd's integration framework, which
// writes several lines per member per second, unless BATON_ETCD_LOG is set.
type quietTB struct {
	testing.TB
}

func quiet(t testing.TB) testing.TB {
	if os.Getenv("BATON_ETCD_LOG") != "" {
		return t
	}
	if q, ok := t.(quietTB); ok {
		return q
	}
	return quietTB{t}
}

func (quietTB) Log(...any)          {}
func (quietTB) Logf(string, ...any) {}

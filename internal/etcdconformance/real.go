package etcdconformance

import (
	"testing"
	"time"

	"github.com/baton-go/baton/internal/etcdtest"
)

// RealEtcd returns a Backend on a fresh 3-member in-process cluster per run
// (go.etcd.io/etcd/tests/v3/framework/integration, through etcdtest). The
// client talks to member 0 only; LoseLeader stops members 1 and 2, so member
// 0 loses its leader, and its restore restarts them and waits for a leader.
// Runs must not be parallel (see etcdtest's package doc).
func RealEtcd() Backend {
	return Backend{Name: "etcd", Run: runReal}
}

func runReal(t *testing.T, f func(t *testing.T, e Env)) {
	c := etcdtest.NewCluster(t, 3)
	cli := c.ClientTo(t, 0)
	lose := func() func() {
		c.Stop(1)
		c.Stop(2)
		// Member 0 has no leader once it stepped down (check quorum) or its
		// election timed out.
		waitFor(t, "member 0 to lose its leader", func() bool {
			return c.Member(0).Server.Leader() == 0
		})
		return func() {
			c.Restart(1)
			c.Restart(2)
			c.WaitLeader()
		}
	}
	start := time.Now()
	f(t, Env{Client: cli, LoseLeader: lose})
	t.Logf("scenario ran %v", time.Since(start).Round(time.Millisecond))
}

package chaos_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/etcdtest"
)

// TestEtcdMemberLossMovesNothing holds DESIGN.md's "etcd leader change /
// member loss with quorum: nothing reassigned needlessly" for members whose
// clients know every etcd member: one etcd member cut off from its clients
// (its follower or leader), or stopped, for longer than the TTL, must not cost any
// member its lease or move any sync.
func TestEtcdMemberLossMovesNothing(t *testing.T) {
	cfg := chaosConfig
	cl := etcdtest.NewCluster(t, 3)
	g := newGroup(t, cl, cfg, "etcdloss")
	defer func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("timeline:\n%s", joinLines(g.timelineLines()))
			t.Logf("last log lines:\n%s", joinLines(g.log.tail(300)))
		}
	}()
	members := []*slot{g.slots[0], g.slots[3], g.slots[4]}
	for _, s := range members {
		s.endpoints = cl.Endpoints()
	}
	ctx := context.Background()
	for _, s := range members {
		if err := s.start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, why := g.waitConverged(time.Now(), 30*time.Second); why != "" {
		t.Fatalf("not settled: %s", why)
	}
	faults := []struct {
		name   string
		inject func() int // returns the etcd member it took away
		heal   func(int)
	}{
		{"blackhole a follower", func() int { i := (cl.WaitLeader() + 1) % 3; cl.Blackhole(i); return i }, cl.Unblackhole},
		{"blackhole the leader", func() int { i := cl.WaitLeader(); cl.Blackhole(i); return i }, cl.Unblackhole},
		{"stop the leader", func() int { i := cl.WaitLeader(); cl.Stop(i); return i }, func(i int) { cl.Restart(i); cl.WaitLeader() }},
		{"stop a follower", func() int { i := (cl.WaitLeader() + 2) % 3; cl.Stop(i); return i }, func(i int) { cl.Restart(i); cl.WaitLeader() }},
	}
	for _, f := range faults {
		before := g.rec.Owners()
		intervals := len(g.rec.Intervals())
		i := f.inject()
		g.note("%s: etcd%d", f.name, i)
		time.Sleep(cfg.ttl + time.Second)
		f.heal(i)
		g.note("%s: healed", f.name)
		after := g.rec.Owners()
		if n := len(g.rec.Intervals()); n != intervals || !maps.Equal(before, after) {
			t.Errorf("%s: syncs moved or restarted (%d intervals before, %d after): before %v, after %v", f.name, intervals, n, before, after)
		}
		g.mu.Lock()
		lost := g.revokes["lease-lost"]
		g.mu.Unlock()
		if lost > 0 {
			t.Fatalf("%s: %d syncs revoked with lease-lost", f.name, lost)
		}
	}
	if err := g.rec.Check(); err != nil {
		t.Error(err)
	}
}

func joinLines(lines []string) string {
	out := ""
	for _, l := range lines {
		out += fmt.Sprintln(l)
	}
	return out
}

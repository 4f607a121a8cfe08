package coordinator_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/simetcd"
)

// simGroup is group "g" on simetcd, for tests inside a synctest bubble:
// members join on connections of their own, and every OnAssign is logged.
type simGroup struct {
	t     *testing.T
	srv   *simetcd.Server
	admin *clientv3.Client

	mu      sync.Mutex
	owner   map[string]string // sync → member running it
	assigns []simAssign
	events  map[string][]simEvent // by sync
}

type simAssign struct {
	sync, member string
	at           time.Time
}

func newSimGroup(t *testing.T, syncs int) *simGroup {
	t.Helper()
	srv, err := simetcd.New(simetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	g := &simGroup{t: t, srv: srv, admin: srv.Connect().Client(), owner: map[string]string{}}
	t.Cleanup(func() { _ = g.admin.Close() })
	store := coordinator.NewSyncStore(g.admin, "g")
	for i := range syncs {
		if err := store.Put(context.Background(), assignment.Sync{ID: fmt.Sprintf("s%02d", i), Spec: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// join starts member id on a client of its own (closed at the test's end)
// and returns it once Join returned.
func (g *simGroup) join(id string, opts ...coordinator.Option) (*coordinator.Coordinator, *clientv3.Client) {
	g.t.Helper()
	return g.joinWith(id, nil, opts...)
}

// simEvent is one callback of a member for a sync, at a virtual instant.
type simEvent struct {
	kind, member string
	at           time.Time
}

// preparing is a Handler that is also a Preparer.
type preparing struct {
	coordinator.HandlerFuncs
	prepare func(ctx context.Context, s assignment.Sync) error
}

func (p preparing) OnPrepare(ctx context.Context, s assignment.Sync) error { return p.prepare(ctx, s) }

// event logs a callback of member for sync.
func (g *simGroup) event(sync, kind, member string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.events == nil {
		g.events = map[string][]simEvent{}
	}
	g.events[sync] = append(g.events[sync], simEvent{kind, member, time.Now()})
}

// eventsOf are the callbacks logged for sync.
func (g *simGroup) eventsOf(sync string) []simEvent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.events[sync])
}

// joinWith is join with a Handler that is a Preparer when prepare is set
// (it logs "prepare" before and "prepared" after calling it).
func (g *simGroup) joinWith(id string, prepare func(ctx context.Context, s assignment.Sync) error, opts ...coordinator.Option) (*coordinator.Coordinator, *clientv3.Client) {
	g.t.Helper()
	cli := g.srv.Connect().Client()
	h := coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			if o, ok := g.owner[c.Sync().ID]; ok {
				g.t.Errorf("%s assigned to %s while %s runs it", c.Sync().ID, id, o)
			}
			g.owner[c.Sync().ID] = id
			g.assigns = append(g.assigns, simAssign{c.Sync().ID, id, time.Now()})
			if g.events == nil {
				g.events = map[string][]simEvent{}
			}
			g.events[c.Sync().ID] = append(g.events[c.Sync().ID], simEvent{"assign", id, time.Now()})
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			g.mu.Lock()
			defer g.mu.Unlock()
			delete(g.owner, c.Sync().ID)
			g.events[c.Sync().ID] = append(g.events[c.Sync().ID], simEvent{"revoke", id, time.Now()})
		},
	}
	var handler coordinator.Handler = h
	if prepare != nil {
		handler = preparing{h, func(ctx context.Context, s assignment.Sync) error {
			g.event(s.ID, "prepare", id)
			err := prepare(ctx, s)
			g.event(s.ID, "prepared", id)
			return err
		}}
	}
	base := []coordinator.Option{coordinator.WithMemberID(id), coordinator.WithTTL(2 * time.Second), coordinator.WithSettle(2 * time.Second)}
	co, err := coordinator.New(cli, "g", handler, append(base, opts...)...)
	if err != nil {
		g.t.Fatal(err)
	}
	// Every goroutine of the bubble must be gone when the test ends.
	g.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = co.Leave(ctx)
		_ = cli.Close()
		<-co.Done()
	})
	if err := co.Join(context.Background()); err != nil {
		g.t.Fatal(err)
	}
	return co, cli
}

// loads is how many syncs each member runs.
func (g *simGroup) loads() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := map[string]int{}
	for _, m := range g.owner {
		n[m]++
	}
	return n
}

// waitLoads waits (in virtual time) until the members run want.
func (g *simGroup) waitLoads(want map[string]int, when string) {
	g.t.Helper()
	if !etcdtest.WaitUntil(time.Minute, func() bool { return fmt.Sprint(g.loads()) == fmt.Sprint(want) }) {
		g.t.Fatalf("%s: loads %v, want %v", when, g.loads(), want)
	}
}

// assignsSince are the OnAssign calls from t on.
func (g *simGroup) assignsSince(t time.Time) []simAssign {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []simAssign
	for _, a := range g.assigns {
		if !a.at.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// quiet lets the group stay unchanged for longer than any Settle here.
func quiet() { time.Sleep(5 * time.Second) }

// TestLeadingEdgeJoinIsPlannedAtOnce: after quiet, a join is planned at
// once, not after Settle (2s here); with WithLeadingEdge(false) it waits
// Settle, as before.
func TestLeadingEdgeJoinIsPlannedAtOnce(t *testing.T) {
	for _, leading := range []bool{true, false} {
		t.Run(fmt.Sprintf("leading=%v", leading), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newSimGroup(t, 10)
				opt := coordinator.WithLeadingEdge(leading)
				m1, _ := g.join("m1", opt)
				if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
					t.Fatal("m1 does not lead")
				}
				g.waitLoads(map[string]int{"m1": 10}, "m1 alone")
				quiet()
				start := time.Now()
				g.join("m2", opt)
				g.waitLoads(map[string]int{"m1": 5, "m2": 5}, "after m2 joined")
				took := time.Since(start)
				t.Logf("join → balanced in %v (virtual), settle 2s", took)
				if leading && took >= time.Second {
					t.Errorf("with the leading edge, the join took %v to plan; want well under Settle (2s)", took)
				}
				if !leading && took < 2*time.Second {
					t.Errorf("without the leading edge, the join took %v; want at least Settle (2s)", took)
				}
			})
		})
	}
}

// TestLeadingEdgeCoalescesFollowers: changes that follow a leading round
// within Settle are planned together in one more round: three joins 100ms
// apart after quiet cost two plans, the first at once.
func TestLeadingEdgeCoalescesFollowers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 12)
		m1, _ := g.join("m1")
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		g.waitLoads(map[string]int{"m1": 12}, "m1 alone")
		quiet()
		start := time.Now()
		g.join("m2")
		time.Sleep(100 * time.Millisecond)
		g.join("m3")
		time.Sleep(100 * time.Millisecond)
		g.join("m4")
		g.waitLoads(map[string]int{"m1": 3, "m2": 3, "m3": 3, "m4": 3}, "after the joins")
		// The leading round gave m2 its share of two members at once;
		// m3 and m4 got theirs from one coalesced round, Settle after m4.
		byMember := map[string][]time.Duration{}
		for _, a := range g.assignsSince(start) {
			byMember[a.member] = append(byMember[a.member], a.at.Sub(start))
		}
		t.Logf("assigns by member (since the first join): %v", byMember)
		if first := byMember["m2"]; len(first) == 0 || first[0] >= time.Second {
			t.Errorf("m2's first sync ran at %v; the leading round should plan it at once", first)
		}
		for _, m := range []string{"m3", "m4"} {
			for _, d := range byMember[m] {
				if d < 2*time.Second {
					t.Errorf("%s ran a sync %v after the first join: before Settle of quiet after the burst", m, d)
				}
			}
		}
		if n := len(byMember["m2"]); n != 6 {
			t.Errorf("m2 was assigned %d syncs; want 6 (its share of two, then 3 of them moved on)", n)
		}
	})
}

// TestRestartWithinTTLMovesNothing: a member that crashes and restarts
// with its member ID within the TTL gets its syncs back with no move,
// leading edge or not: its registration waits for the old session, and
// the leader, told a successor waits, coalesces the departure with it.
// Without the successor marker, the leading edge planned the departure
// at once and moved the member's syncs away and back.
func TestRestartWithinTTLMovesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 10)
		m1, _ := g.join("m1")
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		_, cli2 := g.join("m2")
		g.waitLoads(map[string]int{"m1": 5, "m2": 5}, "two members")
		quiet()
		// Crash: the client goes, the lease lives on until the TTL.
		_ = cli2.Close()
		g.waitLoads(map[string]int{"m1": 5}, "m2's process gone")
		restart := time.Now()
		joined := make(chan struct{})
		go func() {
			defer close(joined)
			g.join("m2") // waits for the old session's lease to expire
		}()
		<-joined
		g.waitLoads(map[string]int{"m1": 5, "m2": 5}, "m2 back")
		time.Sleep(5 * time.Second) // any move would have happened by now
		for _, a := range g.assignsSince(restart) {
			if a.member != "m2" {
				t.Errorf("%s moved to %s during m2's restart", a.sync, a.member)
			}
		}
	})
}

// TestLeadingEdgeCrashIsPlannedAtOnce: a crashed member's syncs are
// planned as soon as its lease expires, not Settle later.
func TestLeadingEdgeCrashIsPlannedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 10)
		m1, _ := g.join("m1")
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		_, cli2 := g.join("m2")
		g.waitLoads(map[string]int{"m1": 5, "m2": 5}, "two members")
		quiet()
		_ = cli2.Close()
		crash := time.Now()
		g.waitLoads(map[string]int{"m1": 10}, "after m2's crash")
		took := time.Since(crash)
		t.Logf("crash → all on m1 in %v (virtual), TTL 2s, settle 2s", took)
		// The lease lasts up to TTL after the last renewal, plus the
		// simulated server's expiry tick; the Settle (2s) must not be
		// paid on top.
		if took >= 2*time.Second+time.Second {
			t.Errorf("failover took %v: TTL (2s) + Settle (2s) paid, not TTL alone", took)
		}
	})
}

package coordinator_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
)

// sleepPrepare prepares for d, or until ctx ends.
func sleepPrepare(d time.Duration) func(ctx context.Context, s assignment.Sync) error {
	return func(ctx context.Context, _ assignment.Sync) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// movedTo lists the syncs whose last assign was on member.
func (g *simGroup) movedTo(member string, ids int) []string {
	var out []string
	for i := range ids {
		id := fmt.Sprintf("s%02d", i)
		evs := g.eventsOf(id)
		for j := len(evs) - 1; j >= 0; j-- {
			if evs[j].kind == "assign" {
				if evs[j].member == member {
					out = append(out, id)
				}
				break
			}
		}
	}
	return out
}

// TestPreparedHandoff: a sync that moves to a Preparer keeps running on
// its owner while the new member prepares it (1s here); the owner lets go
// once OnPrepare has returned, so the sync's gap is the plain handoff's,
// not the start-up; OnPrepare comes before OnAssign.
func TestPreparedHandoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 10)
		m1, _ := g.join("m1")
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		g.waitLoads(map[string]int{"m1": 10}, "m1 alone")
		quiet()
		g.joinWith("m2", sleepPrepare(time.Second))
		g.waitLoads(map[string]int{"m1": 5, "m2": 5}, "after m2 joined")
		moved := g.movedTo("m2", 10)
		if len(moved) != 5 {
			t.Fatalf("moved to m2: %v", moved)
		}
		for _, id := range moved {
			evs := g.eventsOf(id)
			var kinds []string
			for _, e := range evs {
				kinds = append(kinds, e.kind+"@"+e.member)
			}
			// assign@m1, prepare@m2, prepared@m2, revoke@m1, assign@m2
			want := []string{"assign@m1", "prepare@m2", "prepared@m2", "revoke@m1", "assign@m2"}
			if fmt.Sprint(kinds) != fmt.Sprint(want) {
				t.Errorf("%s: callbacks %v, want %v", id, kinds, want)
				continue
			}
			if d := evs[2].at.Sub(evs[1].at); d < time.Second {
				t.Errorf("%s: prepared in %v, the handler takes 1s", id, d)
			}
			if gap := evs[4].at.Sub(evs[3].at); gap > 100*time.Millisecond {
				t.Errorf("%s: gap %v between m1's revoke and m2's assign", id, gap)
			}
		}
	})
}

// TestPrepareThatHangsIsCutAtTheTimeout: an OnPrepare that never finishes
// (but honours ctx) holds the move up for the prepare timeout only; the
// owner then lets go and the sync runs on the new member.
func TestPrepareThatHangsIsCutAtTheTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 4)
		timeout := coordinator.WithPrepareTimeout(3 * time.Second)
		m1, _ := g.join("m1", timeout)
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		g.waitLoads(map[string]int{"m1": 4}, "m1 alone")
		quiet()
		start := time.Now()
		g.joinWith("m2", sleepPrepare(time.Hour), timeout)
		g.waitLoads(map[string]int{"m1": 2, "m2": 2}, "after m2 joined")
		took := time.Since(start)
		if took < 3*time.Second || took > 4*time.Second {
			t.Errorf("the move took %v; the prepare timeout is 3s", took)
		}
		for _, id := range g.movedTo("m2", 4) {
			evs := g.eventsOf(id)
			// The prepare was cut: "prepared" logged once its ctx ended,
			// before m2's assign.
			seen := map[string]bool{}
			for _, e := range evs {
				if e.kind == "assign" && e.member == "m2" && !seen["prepared"] {
					t.Errorf("%s: assigned on m2 before its OnPrepare returned: %v", id, evs)
				}
				seen[e.kind] = true
			}
		}
	})
}

// TestNewOwnerDiesWhilePreparing: the member a sync moves to dies while
// it prepares; the sync stays on its owner, never stopped.
func TestNewOwnerDiesWhilePreparing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 4)
		m1, _ := g.join("m1")
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		g.waitLoads(map[string]int{"m1": 4}, "m1 alone")
		quiet()
		started := make(chan struct{}, 4)
		_, cli2 := g.joinWith("m2", func(ctx context.Context, s assignment.Sync) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		})
		<-started
		_ = cli2.Close() // m2's process dies; its lease expires a TTL later
		time.Sleep(30 * time.Second)
		g.waitLoads(map[string]int{"m1": 4}, "after m2 died")
		for i := range 4 {
			id := fmt.Sprintf("s%02d", i)
			for _, e := range g.eventsOf(id) {
				if e.kind == "revoke" || e.kind == "assign" && e.member != "m1" {
					t.Errorf("%s: %s on %s: the sync should never have stopped on m1", id, e.kind, e.member)
				}
			}
		}
	})
}

// TestPlanChangesMidPrepare: the member a sync moves to drains while it
// prepares; the plan puts the sync back on its owner, which never
// stopped it, and the abandoned OnPrepare's ctx is cancelled.
func TestPlanChangesMidPrepare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSimGroup(t, 4)
		m1, _ := g.join("m1")
		if !etcdtest.WaitUntil(time.Minute, m1.IsLeader) {
			t.Fatal("m1 does not lead")
		}
		g.waitLoads(map[string]int{"m1": 4}, "m1 alone")
		quiet()
		started := make(chan struct{}, 4)
		cancelled := make(chan struct{}, 4)
		m2, _ := g.joinWith("m2", func(ctx context.Context, s assignment.Sync) error {
			started <- struct{}{}
			<-ctx.Done()
			cancelled <- struct{}{}
			return ctx.Err()
		})
		<-started
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m2.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("an abandoned OnPrepare's ctx was not cancelled")
			}
		}
		time.Sleep(5 * time.Second)
		g.waitLoads(map[string]int{"m1": 4}, "after m2 drained")
		for i := range 4 {
			id := fmt.Sprintf("s%02d", i)
			for _, e := range g.eventsOf(id) {
				if e.kind == "revoke" || e.kind == "assign" && e.member != "m1" {
					t.Errorf("%s: %s on %s: the sync should never have stopped on m1", id, e.kind, e.member)
				}
			}
		}
	})
}

// preparingHandler is the world's recording handler with an OnPrepare that
// logs "prepare" and "prepared" events around prepare.
type preparingHandler struct {
	coordinator.HandlerFuncs
	w       *world
	id      string
	prepare func(ctx context.Context, s assignment.Sync) error
}

func (h preparingHandler) OnPrepare(ctx context.Context, s assignment.Sync) error {
	h.w.log(event{member: h.id, sync: s.ID, kind: "prepare"})
	err := h.prepare(ctx, s)
	h.w.log(event{member: h.id, sync: s.ID, kind: "prepared"})
	return err
}

// TestPreparedHandoffOnEtcd: on a real etcd cluster, the syncs that move
// to a joining Preparer are prepared there while their owners run them,
// and are revoked only after; the single-owner recorder checks the rest.
func TestPreparedHandoffOnEtcd(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(30)
	w.putSyncs(ids...)
	for _, id := range []string{"m1", "m2"} {
		w.join(id, nil, nil)
	}
	w.settle(ids, "m1", "m2")
	before := w.owners()
	h := preparingHandler{HandlerFuncs: w.handler("m3"), w: w, id: "m3", prepare: sleepPrepare(300 * time.Millisecond)}
	w.join("m3", nil, h)
	w.settle(ids, "m1", "m2", "m3")
	prepared := map[string]time.Time{}
	for _, e := range w.eventsOf("prepared") {
		prepared[e.sync] = e.at
	}
	moved := 0
	for id, m := range w.owners() {
		if m != "m3" || before[id] == "m3" {
			continue
		}
		moved++
		at, ok := prepared[id]
		require.True(t, ok, "%s moved to m3 unprepared", id)
		for _, e := range w.eventsOf("revoke") {
			if e.sync == id && e.member == before[id] {
				require.False(t, e.at.Before(at), "%s revoked on %s before m3 had prepared it", id, e.member)
			}
		}
	}
	require.Equal(t, 10, moved)
}

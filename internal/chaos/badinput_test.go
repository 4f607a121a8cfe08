package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/rebalance"
)

// Bad input from outside: keys and values written into a group's prefix by
// hand, not through SyncStore. Each must give a clear error or report
// (Describe, the leader's log), never a crash, a lost or a doubled sync.

// TestBadSpecsAndKeys writes broken specs and keys with invalid IDs under
// syncs/, next to good syncs.
func TestBadSpecsAndKeys(t *testing.T) {
	cl := etcdtest.NewCluster(t, 3)
	cfg := chaosConfig
	cfg.syncs = 10
	g := newGroup(t, cl, cfg, "badspecs")
	defer g.dumpOnFailure()
	defer func() {
		if testing.Verbose() {
			g.t.Logf("%s", joinLines(g.log.tail(400)))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	huge := `{"spec":"` + strings.Repeat("x", 1200<<10) + `"}` // 1.2 MiB: more than SyncStore.Put takes, less than etcd does
	badSpecs := map[string]string{
		"notjson":      `{not json`,
		"trailing":     `{"spec":{"v":1}} and more`,
		"unknownfield": `{"spek":{"v":1}}`,
		"negweight":    `{"weight":-3}`,
		"wrongtype":    `{"weight":"heavy"}`,
		"array":        `[1,2,3]`,
	}
	badKeys := []string{
		"a/b", "..", ".", "nested/deeper/key", "ctl\x01char", "tab\there", "white space", "üñí",
		strings.Repeat("k", 10<<10), // 10 KB
		"",                          // the syncs/ prefix itself
	}
	for id, v := range badSpecs {
		mustPut(t, g, g.syncKey(id), v)
	}
	for _, k := range badKeys {
		mustPut(t, g, g.syncKey(k), specJSON(1))
	}
	mustPut(t, g, g.syncKey("huge"), huge)
	// Too big for etcd: refused there, so Baton never sees it.
	if _, err := g.admin.Put(ctx, g.syncKey("toohuge"), `{"spec":"`+strings.Repeat("x", 2<<20)+`"}`); err == nil {
		t.Fatal("etcd took a 2 MiB value")
	}

	for _, s := range g.slots[1:3] {
		if err := s.start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	good := []string{"huge"}
	for i := range cfg.syncs {
		good = append(good, baseSync(i))
	}
	slices.Sort(good)
	g.waitRunning(t, good, "m1", "m2")

	// Every bad key is reported by Describe with its reason, and by the
	// leader's log.
	st, err := coordinator.Describe(ctx, g.reader(), g.name)
	if err != nil {
		t.Fatal(err)
	}
	reported := map[string]string{}
	for _, inv := range st.Invalid {
		reported[inv.Key] = inv.Error
	}
	for id, v := range badSpecs {
		if e := reported[id]; !strings.Contains(e, "invalid sync spec") {
			t.Errorf("Describe: spec of %q (%q) reported as %q", id, v, e)
		}
	}
	for _, k := range badKeys {
		if e := reported[g.syncKey(k)]; !strings.Contains(e, "not <prefix>/<group>/syncs/<valid ID>") {
			t.Errorf("Describe: key %.60q reported as %q", g.syncKey(k), e)
		}
	}
	if len(st.Invalid) != len(badSpecs)+len(badKeys) {
		t.Errorf("Describe: %d invalid entries, want %d", len(st.Invalid), len(badSpecs)+len(badKeys))
	}
	if len(st.Syncs) != len(good) || st.Pending != 0 {
		t.Errorf("Describe: %d syncs (%d pending), want %d, none pending", len(st.Syncs), st.Pending, len(good))
	}
	logged := strings.Join(g.log.tail(3000), "\n")
	for id := range badSpecs {
		if !strings.Contains(logged, `msg="invalid sync spec; left unassigned"`) || !strings.Contains(logged, "sync="+id) {
			t.Errorf("the leader did not log the invalid spec of %q", id)
		}
	}
	syncs, err := coordinator.NewSyncStore(g.reader(), g.name).List(ctx)
	if !errors.Is(err, coordinator.ErrInvalidSpec) || len(syncs) != len(good) {
		t.Errorf("List: %d syncs, error %v; want %d and ErrInvalidSpec", len(syncs), err, len(good))
	}
	for _, s := range g.slots[1:3] {
		for _, c := range s.coordinator().Owned() {
			if c.ID() == "huge" && len(c.Sync().Spec) != len(huge)-len(`{"spec":}`) {
				t.Errorf("huge spec arrived with %d bytes", len(c.Sync().Spec))
			}
		}
	}

	// Repaired specs run; removed keys are no longer reported.
	for id := range badSpecs {
		mustPut(t, g, g.syncKey(id), specJSON(2))
		good = append(good, id)
	}
	for _, k := range badKeys {
		if _, err := g.admin.Delete(ctx, g.syncKey(k)); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(good)
	g.waitRunning(t, good, "m1", "m2")
	if st, err := coordinator.Describe(ctx, g.reader(), g.name); err != nil || len(st.Invalid) != 0 {
		t.Errorf("Describe after the repair: %v, invalid %v", err, st.Invalid)
	}
	g.checkAlive(t)
	g.stopAll()
	if err := g.rec.Check(); err != nil {
		t.Error(err)
	}
}

// TestForeignTargetsAndOwners writes targets/ and owners/ keys that no
// leader or member wrote.
func TestForeignTargetsAndOwners(t *testing.T) {
	cl := etcdtest.NewCluster(t, 3)
	cfg := chaosConfig
	cfg.syncs = 12
	g := newGroup(t, cl, cfg, "foreign")
	defer g.dumpOnFailure()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Counting the leader's rounds tells when it has gone quiet.
	var rounds atomic.Int64
	counting := rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		rounds.Add(1)
		return rebalance.Sticky().Balance(ctx, in)
	})
	for _, s := range g.slots[1:3] {
		s.options = []coordinator.Option{coordinator.WithBalancer(counting)}
		if err := s.start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	all := make([]string, cfg.syncs)
	for i := range all {
		all[i] = baseSync(i)
	}
	g.waitRunning(t, all, "m1", "m2")
	prefix := coordinator.DefaultPrefix + "/" + g.name + "/"
	bound := recoveryBound(cfg) + slack

	steps := []struct {
		name string
		key  string
		val  string
	}{
		{"unreadable target of a member", "targets/m1", "garbage"},
		{"a target that gives another member's syncs away", "targets/m2", `{"generation":999,"syncs":["s00","s01","s02","s03","s04","s05","s06","s07","s08","s09","s10","s11"]}`},
		{"a target naming syncs that do not exist", "targets/m1", `{"generation":1000,"syncs":["nope","../x",""]}`},
		{"the target of no member", "targets/ghost", `{"generation":1,"syncs":["s00"]}`},
		{"a target key with an invalid ID", "targets/a/b", `{"generation":1,"syncs":["s00"]}`},
		{"an owner key with an invalid ID", "owners/..", "m1"},
	}
	for i, st := range steps {
		// First a round that changes nothing (a spec change moves no
		// sync), so that the leader waits for a change of members or
		// syncs, not for owners to settle after a plan of its own.
		before := rounds.Load()
		mustPut(t, g, g.syncKey(baseSync(0)), specJSON(int64(100+i)))
		if _, _, why := g.waitConverged(time.Now(), 30*time.Second); why != "" {
			t.Fatalf("before %s: %s", st.name, why)
		}
		deadline := time.Now().Add(30 * time.Second)
		for rounds.Load() == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		g.note("writing %s: %s", st.name, st.key)
		mustPut(t, g, prefix+st.key, st.val)
		start := time.Now()
		if _, _, why := g.waitConverged(start, bound); why != "" {
			t.Errorf("%s: not converged within %v: %s", st.name, bound, why)
			if _, _, why = g.waitConverged(start, 10*time.Second); why != "" {
				t.Fatalf("%s: 10s later: %s", st.name, why)
			}
		}
	}
	// targets/ghost belongs to no member: the leader deletes it.
	if resp, err := g.reader().Get(ctx, prefix+"targets/ghost"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("targets/ghost still there: %v", err)
	}

	// An owner key written by someone else, with no lease, on a sync
	// before any member claims it: nobody may run the sync while it is
	// there; Describe names its holder; deleting it frees the sync.
	if _, err := g.admin.Txn(ctx).Then(
		clientv3.OpPut(prefix+"owners/intruded", "intruder"),
		clientv3.OpPut(g.syncKey("intruded"), specJSON(1)),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if _, ok := g.rec.Owners()["intruded"]; ok {
			t.Fatalf("a member runs a sync whose owner key someone else holds")
		}
	}
	st, err := coordinator.Describe(ctx, g.reader(), g.name)
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range st.Syncs {
		if ss.ID == "intruded" && (ss.Owner != "intruder" || !ss.Pending) {
			t.Errorf("Describe shows %+v for a sync held by an outsider", ss)
		}
	}
	if _, err := g.admin.Delete(ctx, prefix+"owners/intruded"); err != nil {
		t.Fatal(err)
	}
	if _, _, why := g.waitConverged(time.Now(), bound); why != "" {
		t.Errorf("the sync was not taken once the outsider's owner key went: %s", why)
	}
	g.checkAlive(t)
	g.stopAll()
	if err := g.rec.Check(); err != nil {
		t.Error(err)
	}
}

func mustPut(t *testing.T, g *group, key, val string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.admin.Put(ctx, key, val); err != nil {
		t.Fatalf("put %.60q: %v", key, err)
	}
}

// waitRunning waits until exactly ids run, each once, on the members
// given, and Describe has nothing pending.
func (g *group) waitRunning(t *testing.T, ids []string, members ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var why string
	for time.Now().Before(deadline) {
		why = ""
		owners := g.rec.Owners()
		var got []string
		for id, m := range owners {
			got = append(got, id)
			if !slices.Contains(members, m) {
				why = fmt.Sprintf("%s runs on %s", id, m)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			why = fmt.Sprintf("running %v, want %v", got, ids)
		}
		if why == "" {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			st, err := coordinator.Describe(ctx, g.reader(), g.name)
			cancel()
			if err != nil || st.Pending != 0 {
				why = fmt.Sprintf("describe: %v, pending %v", err, st)
			} else {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not running as expected after 30s: %s", why)
}

// checkAlive fails if a running member's coordinator stopped on its own.
func (g *group) checkAlive(t *testing.T) {
	t.Helper()
	for _, s := range g.slots {
		if co := s.coordinator(); co != nil {
			select {
			case <-co.Done():
				t.Errorf("%s stopped: %v", s.id, co.Err())
			default:
			}
		}
	}
}

func (g *group) dumpOnFailure() {
	if g.t.Failed() {
		g.t.Logf("timeline:\n%s", joinLines(g.timelineLines()))
		g.t.Logf("last log lines:\n%s", joinLines(g.log.tail(400)))
	}
}

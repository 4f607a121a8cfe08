package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/keys"
)

// chaosConfig is the size of every in-process run: a 2s TTL keeps a loaded
// 2-core machine from losing leases by accident, and still makes every
// fault that outlasts it cost members their leases.
var chaosConfig = config{ttl: 2 * time.Second, settle: 100 * time.Millisecond, syncs: 24}

// shortSeeds run with every go test ./...: each schedule has every fault
// once, in its own order, with its own timing.
var shortSeeds = []uint64{1, 2, 3}

// Slack on top of DESIGN.md's TTL + Settle + 1s, for a 2-core machine
// shared with other test runs, under the race detector.
const slack = 4 * time.Second

func recoveryBound(cfg config) time.Duration { return cfg.ttl + cfg.settle + time.Second }

// TestChaos runs the fixed-seed schedules (or only BATON_CHAOS_SEED).
func TestChaos(t *testing.T) {
	seeds, extra := shortSeeds, 0
	if s := os.Getenv("BATON_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BATON_CHAOS_SEED=%q: %v", s, err)
		}
		seeds = []uint64{n}
	}
	if s := os.Getenv("BATON_CHAOS_EXTRA"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("BATON_CHAOS_EXTRA=%q: want a count of extra faults per lane", s)
		}
		extra = n
	}
	var worst result
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("Seed%d", seed), func(t *testing.T) {
			r := runSchedule(t, newSchedule(seed, chaosConfig, extra), chaosConfig)
			worst = worst.merge(r)
		})
	}
	t.Logf("%d schedules: %v", len(seeds), worst)
}

// soakExtra is how many random faults each lane of a soak schedule adds to
// the one of each kind.
const soakExtra = 3

// TestSoak runs random seeds, with extra faults per schedule, until
// BATON_SOAK (a duration) has passed:
//
//	BATON_SOAK=30m go test -run Soak -timeout 0 ./internal/chaos/
func TestSoak(t *testing.T) {
	s := os.Getenv("BATON_SOAK")
	if s == "" {
		t.Skip("set BATON_SOAK=<duration> to soak")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("BATON_SOAK=%q: %v", s, err)
	}
	end := time.Now().Add(d)
	var worst result
	n := 0
	for time.Now().Before(end) && !t.Failed() {
		seed := rand.Uint64() % 1_000_000_000
		n++
		t.Run(fmt.Sprintf("Seed%d", seed), func(t *testing.T) {
			r := runSchedule(t, newSchedule(seed, chaosConfig, soakExtra), chaosConfig)
			worst = worst.merge(r)
		})
	}
	t.Logf("soak: %d schedules in %v: %v", n, d, worst)
}

// result is what one run measured.
type result struct {
	runs         int
	owned        time.Duration // last fault stopped -> every valid sync owned
	converged    time.Duration // members restored -> owned, balanced, specs current, nothing pending
	failover     time.Duration // worst recovery from one fault while the other lane was quiet
	failoverKind kind
	failovers    int
	intervals    int
}

func (r result) merge(o result) result {
	out := result{
		runs:         r.runs + o.runs,
		owned:        max(r.owned, o.owned),
		converged:    max(r.converged, o.converged),
		failover:     r.failover,
		failoverKind: r.failoverKind,
		failovers:    r.failovers + o.failovers,
		intervals:    r.intervals + o.intervals,
	}
	if o.failover > out.failover {
		out.failover, out.failoverKind = o.failover, o.failoverKind
	}
	return out
}

func (r result) String() string {
	return fmt.Sprintf("runs=%d worst: owned again %v after the last fault, converged %v after restore, single-fault recovery %v (%s; %d measured); %d ownership intervals checked",
		r.runs, r.owned.Round(time.Millisecond), r.converged.Round(time.Millisecond), r.failover.Round(time.Millisecond), r.failoverKind, r.failovers, r.intervals)
}

// runSchedule runs sc against a fresh 3-member etcd cluster and checks the
// failure model; it returns what it measured.
func runSchedule(t *testing.T, sc schedule, cfg config) result {
	t.Logf("seed %d; to run it again: %s", sc.Seed, sc.rerun())
	cl := etcdtest.NewCluster(t, 3)
	g := newGroup(t, cl, cfg, fmt.Sprintf("chaos%d", sc.Seed))
	defer func() {
		if testing.Verbose() && !t.Failed() {
			t.Logf("timeline:\n%s", strings.Join(g.timelineLines(), "\n"))
		}
		if os.Getenv("BATON_CHAOS_LOG") != "" {
			t.Logf("log:\n%s", strings.Join(g.log.tail(3000), "\n"))
		}
		if t.Failed() {
			t.Logf("FAILED: seed %d; run it again with %s\n%v", sc.Seed, sc.rerun(), sc)
			t.Logf("timeline:\n%s", strings.Join(g.timelineLines(), "\n"))
			t.Logf("last log lines:\n%s", strings.Join(g.log.tail(400), "\n"))
		}
	}()
	start := time.Now()
	ctx := context.Background()
	for _, s := range g.slots[:baseSlots] {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := s.startRetry(sctx)
		cancel()
		if err != nil {
			t.Fatalf("start %s: %v", s.id, err)
		}
	}
	if _, _, why := g.waitConverged(time.Now(), 30*time.Second); why != "" {
		t.Fatalf("the group did not settle before the faults: %s", why)
	}
	g.note("settled; faults start\n%v", sc)

	// The member lane runs on its own goroutine; the etcd lane here, since
	// the cluster's methods must be called from the test's goroutine.
	laneCtx, stopLane := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var memberEnd time.Time
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, st := range sc.Members {
			if !sleepCtx(laneCtx, st.Gap) {
				return
			}
			memberEnd = g.runMember(laneCtx, st)
		}
	}()
	defer func() { stopLane(); wg.Wait() }()
	var etcdEnd time.Time
	for _, st := range sc.Etcd {
		time.Sleep(st.Gap)
		etcdEnd = g.runEtcd(st)
	}
	wg.Wait()
	lastFault := etcdEnd
	if memberEnd.After(lastFault) {
		lastFault = memberEnd
	}
	g.note("lanes over (etcd lane at %.3fs, member lane at %.3fs)", etcdEnd.Sub(g.log.start).Seconds(), memberEnd.Sub(g.log.start).Seconds())
	for _, solo := range sc.Solo {
		lastFault = g.runSolo(solo)
	}
	g.note("faults over; restoring")

	// Restore the membership the faults left changed: base members up,
	// spare down, callbacks well behaved.
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, s := range g.slots {
		s.mode.Store(nil)
	}
	if err := g.slots[spareSlot].leave(rctx); err != nil {
		g.problem("spare leave: %v", err)
	}
	var owned time.Duration
	ownedCh := make(chan time.Duration, 1)
	go func() { ownedCh <- g.waitOwned(lastFault, 60*time.Second) }()
	for _, s := range g.slots[:baseSlots] {
		if err := s.startRetry(rctx); err != nil {
			t.Errorf("restore %s after the faults: %v", s.id, err)
		}
	}
	restored := time.Now()
	g.note("restored")
	owned = <-ownedCh
	_, converged, why := g.waitConverged(restored, 60*time.Second)
	if why != "" {
		t.Errorf("not converged 60s after the faults stopped: %s", why)
	}
	bound := recoveryBound(cfg)
	if owned < 0 {
		t.Errorf("valid syncs not all owned 60s after the last fault")
	} else if owned > bound+slack {
		t.Errorf("valid syncs owned again %v after the last fault; bound %v + %v slack", owned, bound, slack)
	}
	if converged > bound+slack {
		t.Errorf("group converged %v after the members were restored; bound %v + %v slack", converged, bound, slack)
	}

	// Recoveries from single faults, measured while the other lane was
	// quiet, are held to the same bound.
	g.mu.Lock()
	recoveries := slices.Clone(g.recoveries)
	g.mu.Unlock()
	for _, rc := range recoveries {
		switch {
		case !rc.quiet:
		case rc.d < 0:
			t.Errorf("no recovery from %s within 30s", rc.kind)
		case rc.d > bound+slack:
			t.Errorf("recovery from %s took %v; bound %v + %v slack", rc.kind, rc.d, bound, slack)
		}
	}

	// Stop everything, then check the whole record.
	for _, s := range g.slots {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := s.leave(sctx); err != nil {
			t.Errorf("leave: %v", err)
		}
		cancel()
	}
	if err := g.rec.Check(); err != nil {
		t.Errorf("single-owner invariant: %v", err)
	}
	if open := g.rec.Owners(); len(open) > 0 {
		t.Errorf("intervals still open after every member left: %v", open)
	}
	g.mu.Lock()
	for _, p := range g.problems {
		t.Errorf("%s", p)
	}
	g.mu.Unlock()

	r := result{runs: 1, owned: owned, converged: converged, intervals: len(g.rec.Intervals())}
	for _, rc := range recoveries {
		if rc.quiet && rc.d > r.failover {
			r.failover, r.failoverKind = rc.d, rc.kind
		}
		if rc.quiet {
			r.failovers++
		}
	}
	t.Logf("seed %d: %v in %v; owned again %v after the last fault, converged %v after restore (bound %v); recoveries %v (* = other lane busy); %s",
		sc.Seed, sc.kinds(), time.Since(start).Round(time.Second), owned.Round(time.Millisecond), converged.Round(time.Millisecond), bound,
		recoveries, g.stats())
	return r
}

func (sc schedule) kinds() string {
	return fmt.Sprintf("%d etcd + %d member faults", len(sc.Etcd), len(sc.Members))
}

func (g *group) timelineLines() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.timeline)
}

// Each lane counts the faults it has started, and says whether one is in
// progress, so that a recovery measured on one lane can tell whether the
// other lane disturbed it.
type laneState struct {
	started atomic.Int64
	active  atomic.Int32
}

func (l *laneState) begin() { l.started.Add(1); l.active.Add(1) }
func (l *laneState) end()   { l.active.Add(-1) }

// quietSince returns a function reporting whether the lane has been quiet
// (no fault in progress, none started) since quietSince was called.
func (l *laneState) quietSince() func() bool {
	n, busy := l.started.Load(), l.active.Load() > 0
	return func() bool { return !busy && l.active.Load() == 0 && l.started.Load() == n }
}

// recovery is one measured time to recover from a fault.
type recovery struct {
	kind  kind
	d     time.Duration // -1: not within the limit
	quiet bool          // the other lane injected nothing meanwhile
}

func (r recovery) String() string {
	q := ""
	if !r.quiet {
		q = "*"
	}
	return fmt.Sprintf("%s:%v%s", r.kind, r.d.Round(time.Millisecond), q)
}

// runEtcd injects one etcd fault and undoes it; it returns when it ended.
func (g *group) runEtcd(st step) time.Time {
	g.etcdLane.begin()
	defer g.etcdLane.end()
	quiet := g.memberLane.quietSince()
	cl := g.cl
	i := st.Target
	g.note("etcd lane: %v", st)
	switch st.Kind {
	case kCutOff:
		cut := time.Now()
		g.setAway(i, true)
		cl.Blackhole(i)
		// The member behind i must give up its syncs by its deadline,
		// and the others take them over while the cut lasts.
		if d := g.waitCutOver(cut, g.slots[i].id, st.Dur); d >= 0 {
			g.addRecovery(recovery{kind: "cut-off failover", d: d, quiet: quiet()})
		}
		if rest := st.Dur - time.Since(cut); rest > 0 {
			time.Sleep(rest)
		}
		cl.Unblackhole(i)
		g.setAway(i, false)
	case kPauseDrop:
		g.setAway(i, true)
		cl.PauseConnections(i)
		cl.DropConnections(i)
		time.Sleep(st.Dur)
		cl.UnpauseConnections(i)
		g.setAway(i, false)
	case kDrop:
		for range st.N {
			cl.DropConnections(i)
			time.Sleep(st.Dur / time.Duration(st.N))
		}
	case kLeaderKill:
		l := cl.WaitLeader()
		g.note("stopping etcd%d, the raft leader", l)
		g.setAway(l, true)
		cl.Stop(l)
		time.Sleep(st.Dur)
		cl.Restart(l)
		g.setAway(l, false)
		g.note("etcd%d restarted; new leader etcd%d", l, cl.WaitLeader())
	case kMemberRestart:
		l := cl.WaitLeader()
		j := (l + 1 + i%2) % 3
		g.note("stopping etcd%d, a follower", j)
		g.setAway(j, true)
		cl.Stop(j)
		time.Sleep(st.Dur)
		cl.Restart(j)
		g.setAway(j, false)
		cl.WaitLeader()
	case kQuorumLoss:
		a, b := i, (i+1)%3
		g.setAway(a, true)
		g.setAway(b, true)
		cl.Stop(a)
		cl.Stop(b)
		time.Sleep(st.Dur)
		cl.Restart(a)
		cl.Restart(b)
		g.setAway(a, false)
		g.setAway(b, false)
		g.note("quorum back; leader etcd%d", cl.WaitLeader())
	case kCompaction:
		// Members reaching etcd through member i miss the spec changes
		// while it is stalled; when it comes back, their watches resume
		// from a compacted revision and must reload.
		j := (i + 1) % 3
		g.setAway(i, true)
		cl.Blackhole(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, k := range st.Order {
			v := g.specSeq.Add(1)
			if _, err := g.adminTo[j].Put(ctx, g.syncKey(baseSync(k)), specJSON(v)); err != nil {
				g.problem("compaction: put spec: %v", err)
			}
		}
		resp, err := g.adminTo[j].Get(ctx, "compact")
		if err == nil {
			_, err = g.adminTo[j].Compact(ctx, resp.Header.Revision)
		}
		if err != nil {
			g.problem("compaction: %v", err)
		} else {
			g.note("compacted at revision %d", resp.Header.Revision)
		}
		cancel()
		time.Sleep(st.Dur)
		cl.Unblackhole(i)
		g.setAway(i, false)
	}
	end := time.Now()
	g.note("etcd lane: %s over", st.Kind)
	if st.Kind != kCutOff {
		d := g.waitOwnedFor(end, 30*time.Second)
		g.addRecovery(recovery{kind: st.Kind, d: d, quiet: quiet()})
	}
	return end
}

func (g *group) addRecovery(r recovery) {
	g.note("recovery %v", r)
	g.mu.Lock()
	g.recoveries = append(g.recoveries, r)
	g.mu.Unlock()
}

// waitCutOver returns how long after from member had ended all its
// intervals and every valid sync was owned again, or -1 if that did not
// happen within limit.
func (g *group) waitCutOver(from time.Time, member string, limit time.Duration) time.Duration {
	deadline := from.Add(limit)
	for {
		mine := false
		for _, m := range g.rec.Owners() {
			mine = mine || m == member
		}
		if !mine && g.look().owned {
			return time.Since(from)
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runSolo restores the group, waits for it to settle, injects one fault
// and measures the failover; it returns when the fault ended.
func (g *group) runSolo(solo string) time.Time {
	g.restoreSettled(solo)
	leader := g.leaderSlot()
	if leader == nil {
		g.t.Fatalf("solo %s: no Baton leader in a settled group", solo)
	}
	var victim *slot
	var name kind
	switch solo {
	case soloCrash:
		for _, s := range g.slots[:baseSlots] {
			if s != leader {
				victim = s
				break
			}
		}
		name = "crash failover"
	case soloCrashLeader:
		victim = leader
		name = "leader crash failover"
	default:
		// m0 is the only member behind etcd member 0: cutting that
		// bridge cuts m0 off and nothing else.
		victim = g.slots[0]
		leader = g.arrangeLeader(victim, solo == soloCutOffLeader)
		name = "cut-off failover"
		if victim == leader {
			name = "leader cut-off failover"
		}
	}
	g.note("solo %s: %s (leader %s)", solo, victim.id, leader.id)
	start := time.Now()
	var d time.Duration
	if solo == soloCutOff || solo == soloCutOffLeader {
		g.setAway(0, true)
		g.cl.Blackhole(0)
		d = g.waitCutOver(start, victim.id, 30*time.Second)
		g.cl.Unblackhole(0)
		g.setAway(0, false)
	} else {
		if err := victim.crash(); err != nil {
			g.problem("%v", err)
		}
		d = g.waitOwnedFor(start, 30*time.Second)
	}
	g.addRecovery(recovery{kind: name, d: d, quiet: true})
	return time.Now()
}

// restoreSettled brings the base members up and the spare down, makes the
// callbacks behave, and waits for the group to settle.
func (g *group) restoreSettled(what string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, s := range g.slots {
		s.mode.Store(nil)
	}
	if err := g.slots[spareSlot].leave(ctx); err != nil {
		g.problem("spare leave: %v", err)
	}
	for _, s := range g.slots[:baseSlots] {
		if err := s.startRetry(ctx); err != nil {
			g.t.Fatalf("%s: start %s: %v", what, s.id, err)
		}
	}
	if _, _, why := g.waitConverged(time.Now(), 60*time.Second); why != "" {
		g.t.Fatalf("%s: the group did not settle: %s", what, why)
	}
}

// arrangeLeader makes victim the Baton leader (lead) or not, by having the
// leader leave and join again (its candidacy goes to the back of the line);
// it returns the leader it ends up with.
func (g *group) arrangeLeader(victim *slot, lead bool) *slot {
	for range 6 {
		l := g.leaderSlot()
		if l != nil && (l == victim) == lead {
			return l
		}
		if l == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := l.leave(ctx); err != nil {
			g.problem("arrange leader: %v", err)
		}
		cancel()
		g.restoreSettled("arrange leader")
	}
	return g.leaderSlot()
}

// runMember injects one member fault and undoes it; it returns when the
// fault ended.
func (g *group) runMember(ctx context.Context, st step) time.Time {
	g.note("member lane: %v", st)
	if st.Kind != kSpecs {
		g.memberLane.begin()
		defer g.memberLane.end()
	}
	switch st.Kind {
	case kCrash:
		s := g.slots[st.Target]
		if st.Alt {
			if l := g.leaderSlot(); l != nil && l.idx < baseSlots {
				s = l
			}
		}
		if !s.isUp() {
			g.note("%s is down already", s.id)
			break
		}
		quiet := g.etcdLane.quietSince()
		crashed := time.Now()
		if err := s.crash(); err != nil {
			g.problem("%v", err)
		}
		end := time.Now()
		// Measure the failover while the member is down.
		if d := g.waitOwnedFor(crashed, st.Dur); d >= 0 {
			g.addRecovery(recovery{kind: "crash failover", d: d, quiet: quiet()})
		}
		if rest := st.Dur - time.Since(end); rest > 0 {
			sleepCtx(ctx, rest)
		}
		if err := s.startRetry(ctx); err != nil {
			g.note("restart of %s failed: %v (restored at the end)", s.id, err)
		}
		return end
	case kRolling:
		for _, i := range st.Order {
			s := g.slots[i]
			if !s.isUp() {
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := s.leave(lctx); err != nil {
				g.problem("rolling restart: %v", err)
			}
			cancel()
			if err := s.startRetry(ctx); err != nil {
				g.note("rolling restart of %s failed: %v (restored at the end)", s.id, err)
			}
			sleepCtx(ctx, st.Dur)
		}
	case kJoinLeave:
		s := g.slots[st.Target]
		if st.Alt {
			s = g.slots[spareSlot]
			if err := s.startRetry(ctx); err != nil {
				g.note("spare join failed: %v", err)
			}
			sleepCtx(ctx, st.Dur)
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := s.leave(lctx); err != nil {
				g.problem("spare leave: %v", err)
			}
			cancel()
			break
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := s.leave(lctx); err != nil {
			g.problem("leave: %v", err)
		}
		cancel()
		sleepCtx(ctx, st.Dur)
		if err := s.startRetry(ctx); err != nil {
			g.note("rejoin of %s failed: %v (restored at the end)", s.id, err)
		}
	case kFlood:
		g.flood(ctx, st)
	case kCallbacks:
		var names []string
		for k := range st.N {
			s := g.slots[(st.Target+k)%baseSlots]
			m := modes[st.Mode]
			s.mode.Store(&m)
			names = append(names, s.id)
		}
		sleepCtx(ctx, st.Dur)
		for k := range st.N {
			g.slots[(st.Target+k)%baseSlots].mode.Store(nil)
		}
		g.note("callbacks of %v behave again", names)
	case kSpecs:
		for _, k := range st.Order {
			v := g.specSeq.Add(1)
			g.retry(ctx, "spec change", func(ctx context.Context) error {
				_, err := g.admin.Put(ctx, g.syncKey(baseSync(k)), specJSON(v))
				return err
			})
		}
	}
	end := time.Now()
	g.note("member lane: %s over", st.Kind)
	return end
}

// flood adds st.N syncs at once (a few Txns), waits, and removes them all
// with one range delete.
func (g *group) flood(ctx context.Context, st step) {
	prefix := fmt.Sprintf("flood%d-", g.specSeq.Add(1))
	ops := make([]clientv3.Op, 0, st.N)
	for k := range st.N {
		ops = append(ops, clientv3.OpPut(g.syncKey(fmt.Sprintf("%s%03d", prefix, k)), specJSON(0)))
	}
	for chunk := range slices.Chunk(ops, 100) {
		g.retry(ctx, "flood put", func(ctx context.Context) error {
			_, err := g.admin.Txn(ctx).Then(chunk...).Commit()
			return err
		})
	}
	g.note("flood: %d syncs added", st.N)
	sleepCtx(ctx, st.Dur)
	g.retry(ctx, "flood delete", func(ctx context.Context) error {
		_, err := g.admin.Delete(ctx, g.syncKey(prefix), clientv3.WithPrefix())
		return err
	})
	g.note("flood: %d syncs removed", st.N)
}

// retry runs an admin write until it succeeds (etcd may be without quorum
// for a while); giving up after a minute is a problem.
func (g *group) retry(ctx context.Context, what string, f func(context.Context) error) {
	deadline := time.Now().Add(time.Minute)
	for {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			g.problem("%s: %v", what, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// view is one look at the group, for the convergence checks.
type view struct {
	owned     bool   // every valid sync runs on a live member, no other sync runs
	converged bool   // and balanced, nothing pending, every owner runs the newest spec
	why       string // what is missing
}

func (g *group) look() view {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	rd := g.reader()
	resp, err := rd.Get(ctx, g.syncKey(""), clientv3.WithPrefix())
	if err != nil {
		return view{why: fmt.Sprintf("list syncs: %v", err)}
	}
	valid := map[string]int64{}
	for _, kv := range resp.Kvs {
		valid[strings.TrimPrefix(string(kv.Key), g.syncKey(""))] = kv.ModRevision
	}
	live := map[string]bool{}
	for _, id := range g.liveIDs() {
		live[id] = true
	}
	owners := g.rec.Owners()
	for _, id := range slices.Sorted(maps.Keys(valid)) {
		m, ok := owners[id]
		switch {
		case !ok:
			return view{why: fmt.Sprintf("sync %s unowned (%d of %d owned)", id, len(owners), len(valid))}
		case !live[m]:
			return view{why: fmt.Sprintf("sync %s owned by %s, which is not running", id, m)}
		}
	}
	for id, m := range owners {
		if _, ok := valid[id]; !ok {
			return view{why: fmt.Sprintf("deleted sync %s still owned by %s", id, m)}
		}
	}
	v := view{owned: true}
	loads := map[string]int{}
	for m := range live {
		loads[m] = 0
	}
	for _, m := range owners {
		loads[m]++
	}
	lo, hi := len(valid), 0
	for _, n := range loads {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 {
		v.why = fmt.Sprintf("unbalanced: %v", loads)
		return v
	}
	st, err := coordinator.Describe(ctx, rd, g.name)
	switch {
	case err != nil:
		v.why = fmt.Sprintf("describe: %v", err)
		return v
	case st.Pending != 0:
		v.why = fmt.Sprintf("describe: %d pending", st.Pending)
		return v
	case len(st.Members) != len(live):
		v.why = fmt.Sprintf("describe: %d members, %d live", len(st.Members), len(live))
		return v
	case len(st.Invalid) != 0:
		v.why = fmt.Sprintf("describe: invalid specs %v", st.Invalid)
		return v
	}
	for _, ss := range st.Syncs {
		if ss.Owner != owners[ss.ID] {
			v.why = fmt.Sprintf("describe: %s owned by %q in etcd, running on %q", ss.ID, ss.Owner, owners[ss.ID])
			return v
		}
	}
	// Every live member's target is what it runs; no one else has one.
	tresp, err := rd.Get(ctx, g.targetKey(""), clientv3.WithPrefix())
	if err != nil {
		v.why = fmt.Sprintf("targets: %v", err)
		return v
	}
	targets := map[string][]string{}
	for _, kv := range tresp.Kvs {
		m, ok := keys.ID(g.targetKey(""), string(kv.Key))
		if !ok {
			continue // written by hand under an invalid ID: ignored by Baton
		}
		var rec struct{ Syncs []string }
		if err := json.Unmarshal(kv.Value, &rec); err != nil || !live[m] {
			v.why = fmt.Sprintf("target of %s: %q", m, kv.Value)
			return v
		}
		targets[m] = rec.Syncs
	}
	runs := map[string][]string{}
	for id, m := range owners {
		runs[m] = append(runs[m], id)
	}
	for m := range live {
		slices.Sort(runs[m])
		if !slices.Equal(targets[m], runs[m]) {
			v.why = fmt.Sprintf("%s runs %v, its target is %v", m, runs[m], targets[m])
			return v
		}
	}
	for _, s := range g.slots {
		co := s.coordinator()
		if co == nil {
			continue
		}
		for _, c := range co.Owned() {
			if rev := c.Sync().Revision; rev != valid[c.ID()] {
				v.why = fmt.Sprintf("%s runs %s at spec revision %d, newest is %d", s.id, c.ID(), rev, valid[c.ID()])
				return v
			}
			if owners[c.ID()] != s.id {
				v.why = fmt.Sprintf("%s holds a claim on %s, which runs on %q", s.id, c.ID(), owners[c.ID()])
				return v
			}
		}
	}
	v.converged = true
	return v
}

// waitConverged polls until the group converges; it returns how long after
// from it was all owned and all converged, or why it did not converge.
func (g *group) waitConverged(from time.Time, limit time.Duration) (owned, converged time.Duration, why string) {
	owned = -1
	deadline := time.Now().Add(limit)
	for {
		v := g.look()
		if v.owned && owned < 0 {
			owned = time.Since(from)
		}
		if v.converged {
			return owned, time.Since(from), ""
		}
		if time.Now().After(deadline) {
			return owned, -1, v.why
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitOwned returns how long after from every valid sync was owned by a
// live member, or -1 if that did not happen within limit.
func (g *group) waitOwned(from time.Time, limit time.Duration) time.Duration {
	return g.waitOwnedFor(from, limit-time.Since(from))
}

func (g *group) waitOwnedFor(from time.Time, limit time.Duration) time.Duration {
	deadline := time.Now().Add(limit)
	for {
		if g.look().owned {
			return time.Since(from)
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/baton-go/baton/internal/wait"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/election"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/rebalance"
)

// maxTxnOps keeps every leader Txn within etcd's default --max-txn-ops.
const maxTxnOps = 128

var errNotLeader = errors.New("coordinator: leadership lost (election guard failed)")

// campaign runs for leadership for as long as the session lives, and leads
// whenever it wins.
func (c *Coordinator) campaign(ectx context.Context, sess *session) {
	retry := wait.Backoff{Min: retryMin, Max: retryMax}
	// An abandoned Balancer call outlives terms and sessions: until it
	// returns, no term calls the Balancer again, so a Balancer that hangs
	// cannot run concurrently with itself nor leak a goroutine per term.
	calls := &c.balancerCalls
	for ectx.Err() == nil && !sess.isAtRisk() {
		el := election.New(sess.electionSession(), c.keys.Election(), election.WithRequestTimeout(c.o.ttl/2))
		lctx, err := el.Campaign(ectx, c.o.memberID)
		if err != nil {
			if ectx.Err() != nil || sess.isAtRisk() {
				return
			}
			c.log.Warn("campaign failed, retrying", "error", err)
			retry.Wait(ectx)
			continue
		}
		retry.Reset()
		c.leader.Store(true)
		c.m.setLeader(true)
		c.log.Info("became leader")
		err = c.lead(lctx, el, calls)
		c.leader.Store(false)
		c.m.setLeader(false)
		c.log.Info("leadership ended", "error", err)
		if !sess.isAtRisk() {
			// Step down explicitly so a successor need not wait for the key
			// to vanish with the lease.
			rctx, cancel := context.WithTimeout(context.Background(), c.o.revokeTimeout)
			if err := el.Resign(rctx); err != nil {
				c.log.Warn("resign failed", "error", err)
			}
			cancel()
		}
	}
}

// Test hooks, nil in production: a test sets them (before the coordinator
// starts, and clears them after it stopped) to reach the leader loop's
// retry paths.
var (
	testHookLeaderLoad   func() error        // before each load; an error fails it
	testHookLeaderFollow func() error        // as each follow starts; an error is a watch broken at once
	testHookLeaderWait   func(time.Duration) // each wait of the leader loop before it loads again
)

// leaderLoad is loadView, or the test hook's failure.
func (c *Coordinator) leaderLoad(ctx context.Context) (*view, int64, error) {
	if testHookLeaderLoad != nil {
		if err := testHookLeaderLoad(); err != nil {
			return nil, 0, err
		}
	}
	lctx, done := c.leaderRequest(ctx)
	start := time.Now()
	v, rev, err := loadView(lctx, c.cli, c.keys)
	if err == nil {
		// A big group's view takes a while to read, and its target
		// writes are large: the bound follows the last load.
		c.requestBound.Store(int64(max(3*c.o.ttl, 4*time.Since(start))))
	}
	done()
	return v, rev, err
}

// leaderRequest bounds one of the leader's big requests (the view's load,
// a Txn of target writes), so that one whose answer never comes cannot
// hold the leader for good. The bound starts at 3 TTLs and settles at 4
// times the last successful load; each request that runs out of it
// doubles it (up to maxRequestBound), for a group bigger than it looked.
// done must be called once the request has returned.
func (c *Coordinator) leaderRequest(ctx context.Context) (rctx context.Context, done func()) {
	bound := time.Duration(c.requestBound.Load())
	if bound == 0 {
		bound = 3 * c.o.ttl
	}
	rctx, cancel := context.WithTimeout(ctx, bound)
	return rctx, func() {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			c.requestBound.Store(int64(min(2*bound, maxRequestBound)))
		}
		cancel()
	}
}

// maxRequestBound caps leaderRequest's bound.
const maxRequestBound = 5 * time.Minute

// lead runs the leader loop until leadership ends: it loads the view of
// the group, follows the group's watches to keep it current, and
// rebalances (term) after changes; it loads again when a watch breaks.
func (c *Coordinator) lead(lctx context.Context, el *election.Election, calls *balancerCalls) error {
	t := newTerm(c, lctx, el.Guard(), calls)
	defer t.stop()
	var v *view
	var rev int64
	load := func() error {
		var err error
		if v, rev, err = c.leaderLoad(t.ctx); err != nil {
			c.m.etcdError("leader-load")
			c.log.Warn("leader could not load the group, retrying", "error", err)
		}
		return err
	}
	follow := func() bool {
		if testHookLeaderFollow != nil && testHookLeaderFollow() != nil {
			return false
		}
		return t.follow(v, rev)
	}
	reload := wait.Backoff{Min: retryMin, Max: retryMax, OnWait: func(d time.Duration) {
		if testHookLeaderWait != nil {
			testHookLeaderWait(d)
		}
	}}
	_ = wait.LoadAndFollow(t.ctx, &reload, load, follow)
	return context.Cause(t.ctx)
}

// term is one leadership term's rebalance schedule. Only the leader loop's
// goroutine uses it.
type term struct {
	c     *Coordinator
	ctx   context.Context // ends with leadership, or once a write finds it lost
	end   context.CancelCauseFunc
	guard clientv3.Cmp // the election key: every write of the term is guarded by it
	calls *balancerCalls

	timer    *time.Timer // fires for the next round
	pace     pacer
	failures wait.Backoff // delays the round after a failed one
	// again: owners differ from targets, so owner events trigger rounds
	// (Throttle goes on once the moves land).
	again bool
}

func newTerm(c *Coordinator, lctx context.Context, guard clientv3.Cmp, calls *balancerCalls) *term {
	ctx, end := context.WithCancelCause(lctx)
	t := &term{
		c: c, ctx: ctx, end: end, guard: guard, calls: calls,
		timer: time.NewTimer(time.Hour),
		pace: pacer{
			settle:  c.o.settle,
			maxWait: max(10*c.o.settle, time.Second),
			leading: !c.o.noLeadingEdge,
		},
		failures: wait.Backoff{Min: time.Second, Max: 30 * time.Second},
	}
	t.timer.Stop()
	return t
}

func (t *term) stop() {
	t.timer.Stop()
	t.end(nil)
}

// changed schedules the round that plans a change (see pacer).
func (t *term) changed(coalesce bool) {
	t.timer.Reset(t.pace.change(time.Now(), coalesce))
}

// follow keeps v current from rev+1 with watches on members, syncs,
// targets and owners, and runs the rounds the changes call for, until a
// watch breaks or the term ends. It reports whether any watch delivered.
func (t *term) follow(v *view, rev int64) (progress bool) {
	c := t.c
	c.reportInvalid(v)
	t.timer.Reset(t.pace.after(time.Now(), t.pace.settle))
	t.again = false
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(t.ctx))
	defer cancel()
	from := clientv3.WithRev(rev + 1)
	mch := c.cli.Watch(wctx, c.keys.Members(), clientv3.WithPrefix(), from)
	sch := c.cli.Watch(wctx, c.keys.Syncs(), clientv3.WithPrefix(), from)
	tch := c.cli.Watch(wctx, c.keys.Targets(), clientv3.WithPrefix(), from)
	och := c.cli.Watch(wctx, c.keys.Owners(), clientv3.WithPrefix(), from)
	for {
		var wr clientv3.WatchResponse
		var ok bool
		var apply func(keys.Layout, *mvccpb.KeyValue, mvccpb.Event_EventType)
		trigger, coalesce := true, false
		select {
		case <-t.ctx.Done():
			return progress
		case <-t.timer.C:
			if !t.round(v) {
				return progress
			}
			continue
		case wr, ok = <-mch:
			// A member's successor marker changes no plan; the departure
			// of a member whose successor waits is coalesced with the
			// registration that follows it.
			trigger = false
			apply = func(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
				member, awaited := v.applyMember(k, kv, ev)
				trigger = trigger || member
				coalesce = coalesce || awaited
			}
		case wr, ok = <-sch:
			apply = v.applySync
		case wr, ok = <-tch:
			// The leader's own writes are in the view already; a target
			// written or deleted by anyone else is put right.
			trigger = false
			apply = func(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
				trigger = trigger || !v.holdsTarget(k, kv, ev)
				v.applyTarget(k, kv, ev)
			}
		case wr, ok = <-och:
			apply, trigger = v.applyOwner, t.again
		}
		if !ok || wr.Err() != nil {
			if t.ctx.Err() == nil {
				c.log.Info("leader watch interrupted, reloading", "error", wr.Err())
			}
			return progress
		}
		progress = true
		for _, ev := range wr.Events {
			apply(c.keys, ev.Kv, ev.Type)
		}
		if trigger {
			t.changed(coalesce)
		}
	}
}

// round runs one rebalance round on v. A failed round is reported in
// status/leader and tried again after a backoff; one that finds
// leadership lost ends the term, and round returns false.
func (t *term) round(v *view) bool {
	c := t.c
	changed, err := c.rebalance(t.ctx, t.guard, v, t.calls)
	t.pace.roundDone(time.Now())
	switch {
	case errors.Is(err, errNotLeader):
		t.end(err)
		return false
	case err != nil && t.ctx.Err() != nil:
	case err != nil:
		d := t.failures.Next()
		c.log.Warn("rebalance failed; previous targets stand", "error", err, "retry_in", d)
		c.reportPlanError(t.ctx, t.guard, v, err)
		t.timer.Reset(t.pace.after(time.Now(), d))
	default:
		t.failures.Reset()
		c.clearPlanError(t.ctx, t.guard, v)
		// Owner events trigger the next round while any sync is not yet
		// where its target wants it, also after a round that wrote nothing
		// because moves were in flight (Throttle goes on once they land).
		t.again = changed || v.movesInFlight()
	}
	return true
}

// rebalance runs the Balancer on the view and writes the targets that
// changed; it reports whether it wrote anything. Every Txn is guarded by
// guard, the election key: a deposed leader's late writes fail instead of
// overwriting its successor's plan.
func (c *Coordinator) rebalance(ctx context.Context, guard clientv3.Cmp, v *view, calls *balancerCalls) (bool, error) {
	start := time.Now()
	c.reportInvalid(v)
	in := v.input()
	plan, err := c.balance(ctx, in, calls)
	if err != nil {
		return false, err
	}
	if err := rebalance.Validate(in, plan); err != nil {
		c.m.balancerError("invalid-plan")
		return false, fmt.Errorf("coordinator: balancer returned an invalid plan: %w", err)
	}
	c.reportUnassignable(v, in, plan)

	gen := v.gen + 1
	ws, written, dropped := targetWrites(c.keys, v, in, plan, gen)
	if len(ws) > 0 {
		// The generation goes into status/leader with the last Txn, so
		// that it outlives the keys that carry it.
		ws = append(ws, statusWrite(c.keys, leaderStatus{Generation: gen}))
	}
	if len(ws) == 0 {
		c.log.Debug("rebalance round: plan unchanged, nothing to write", "generation", v.gen)
		return false, nil
	}
	moves := planMoves(v, plan)
	// The generation is used up even if the write fails: a later write
	// must never share it with keys this one may have left behind.
	v.gen = gen
	txns, largest, effective, err := c.writeTargets(ctx, guard, v, ws)
	if err != nil {
		return false, err
	}
	if effective == 0 {
		// Only drops, each refused: the member registered again, which
		// the view is about to see.
		c.log.Debug("rebalance round: every target drop was refused", "generation", gen)
		return false, nil
	}
	took := time.Since(start)
	c.m.rebalance(took, gen, moves)
	c.log.Info("plan written", "generation", gen, "members", len(in.Members), "syncs", len(in.Syncs),
		"moves", moves, "targets_written", written, "targets_deleted", dropped,
		"txns", txns, "largest_txn_bytes", largest, "took", took)
	return true, nil
}

const (
	writePut    writeKind = iota
	writeDelete           // one stale key of a live member's target
	writeDrop             // all of a departed member's target, if its member key is as the view saw it
	writeStatus           // status/leader
)

// planWriteError is a plan that could not be written, with its generation.
type planWriteError struct {
	gen int64
	err error
}

func (e *planWriteError) Error() string {
	return fmt.Sprintf("coordinator: write targets of generation %d: %v", e.gen, e.err)
}
func (e *planWriteError) Unwrap() error { return e.err }

// writeTargets sends ws in guarded Txns, and records each Txn's keys in
// the view at its revision once it succeeded. When one fails the rest are
// not sent: the keys already written are of a generation no complete
// target has yet (the heads go last), so no member takes them for a plan;
// and whatever the failed Txn did, its keys reach the view through the
// watch, so the next round (scheduled by the caller) writes what is
// missing. It returns the number of Txns, the largest one's bytes, and how
// many target writes took effect (a refused drop does not).
func (c *Coordinator) writeTargets(ctx context.Context, guard clientv3.Cmp, v *view, ws []targetWrite) (txns, largest, effective int, err error) {
	gen := v.gen
	chunks, err := chunkWrites(ws)
	if err != nil {
		return 0, 0, 0, &planWriteError{gen: gen, err: err}
	}
	kv := c.leaderKV()
	for _, chunk := range chunks {
		ops := make([]clientv3.Op, len(chunk))
		bytes := 0
		for i, w := range chunk {
			ops[i] = w.op
			bytes += w.bytes
		}
		largest = max(largest, bytes)
		tctx, done := c.leaderRequest(ctx)
		resp, err := kv.Txn(tctx).If(guard).Then(ops...).Commit()
		done()
		if err != nil {
			c.m.etcdError("write-targets")
			if chunk[len(chunk)-1].kind == writeStatus {
				v.statusUnknown = true
			}
			return len(chunks), largest, effective, &planWriteError{gen: gen, err: err}
		}
		if !resp.Succeeded {
			return len(chunks), largest, effective, errNotLeader
		}
		effective += v.recordWrites(chunk, resp)
	}
	return len(chunks), largest, effective, nil
}

// testHookLeaderKV, nil in production, lets a test put a faulty KV between
// the leader and etcd for target and status writes.
var testHookLeaderKV func(clientv3.KV) clientv3.KV

func (c *Coordinator) leaderKV() clientv3.KV {
	if testHookLeaderKV != nil {
		return testHookLeaderKV(c.cli)
	}
	return c.cli
}

// leaderStatus is the JSON at status/leader: the highest generation the
// leaders have used, and the error of the newest round if it failed.
type leaderStatus struct {
	Generation int64     `json:"generation"`
	PlanError  string    `json:"planError,omitempty"`
	ErrorGen   int64     `json:"errorGeneration,omitempty"`
	At         time.Time `json:"at,omitzero"`
}

// readLeaderStatus reads a status/leader value; an unreadable one says so
// in PlanError (and is rewritten by the next round).
func readLeaderStatus(b []byte) leaderStatus {
	var st leaderStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return leaderStatus{PlanError: fmt.Sprintf("unreadable leader status %.80q", b)}
	}
	return st
}

// describe renders the plan error for Describe; "" when there is none.
func (st leaderStatus) describe() string {
	if st.PlanError == "" {
		return ""
	}
	if st.ErrorGen == 0 {
		return st.PlanError
	}
	return fmt.Sprintf("plan of generation %d not written (%s): %s", st.ErrorGen, st.At.UTC().Format(time.RFC3339), st.PlanError)
}

// reportPlanError records a failed round in status/leader, for Describe;
// best effort (etcd may be what failed), guarded by the election.
func (c *Coordinator) reportPlanError(ctx context.Context, guard clientv3.Cmp, v *view, err error) {
	gen := v.gen + 1
	if pe, ok := errors.AsType[*planWriteError](err); ok {
		gen = pe.gen
	}
	st := leaderStatus{Generation: v.gen, PlanError: err.Error(), ErrorGen: gen, At: time.Now().UTC()}
	if c.writeStatus(ctx, guard, v, st) {
		v.planError, v.statusUnknown = st.describe(), false
	}
}

// clearPlanError rewrites status/leader without an error after a successful
// round that wrote nothing, and only if it may hold one: the steady state
// writes nothing.
func (c *Coordinator) clearPlanError(ctx context.Context, guard clientv3.Cmp, v *view) {
	if v.planError == "" && !v.statusUnknown {
		return
	}
	if c.writeStatus(ctx, guard, v, leaderStatus{Generation: v.gen}) {
		v.planError, v.statusUnknown = "", false
	}
}

// writeStatus puts status/leader, bounded by the TTL; when the answer is
// lost the view marks the status unknown, so a later round writes it.
func (c *Coordinator) writeStatus(ctx context.Context, guard clientv3.Cmp, v *view, st leaderStatus) bool {
	sctx, cancel := context.WithTimeout(ctx, c.o.ttl)
	defer cancel()
	resp, err := c.leaderKV().Txn(sctx).If(guard).Then(statusWrite(c.keys, st).op).Commit()
	if err != nil || !resp.Succeeded {
		if err != nil {
			v.statusUnknown = true
		}
		c.log.Warn("could not write status/leader; a later round tries again", "error", err)
		return false
	}
	return true
}

// reportInvalid logs each unreadable spec once (per leadership) and
// keeps the gauges current.
func (c *Coordinator) reportInvalid(v *view) {
	c.m.leaderView(len(v.members), len(v.invalid), len(v.unassignable))
	if v.reported == nil {
		v.reported = map[string]bool{}
	}
	for _, id := range slices.Sorted(maps.Keys(v.invalid)) {
		if !v.reported[id] {
			c.log.Error("invalid sync spec; left unassigned", "sync", id, "error", v.invalid[id])
		}
	}
	v.reported = make(map[string]bool, len(v.invalid))
	for id := range v.invalid {
		v.reported[id] = true
	}
}

func (c *Coordinator) reportUnassignable(v *view, in rebalance.Input, plan assignment.Plan) {
	var un []string
	for _, s := range in.Syncs {
		if _, ok := plan[s.ID]; !ok {
			un = append(un, s.ID)
		}
	}
	if !slices.Equal(un, v.unassignable) && len(un) > 0 {
		c.log.Warn("syncs no live member can run", "count", len(un), "syncs", un[:min(len(un), 20)])
	}
	v.unassignable = un
	c.m.leaderView(len(v.members), len(v.invalid), len(un))
}

package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

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
	delay := retryMin
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
			sleepCtx(ectx, delay)
			delay = min(2*delay, retryMax)
			continue
		}
		delay = retryMin
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

// owner is what the leader knows of owners/<sync>.
type owner struct {
	member string
	token  int64
}

// view is the leader's picture of the group, loaded at one revision and
// kept current by watches.
type view struct {
	members map[string]assignment.Member
	syncs   map[string]assignment.Sync
	invalid map[string]error
	targets map[string]*targetKeys // by member: every key under targets/<member>
	owners  map[string]owner
	// gen is the highest generation used: seen in a target key or in
	// status/leader, or written. The next write uses gen+1. status/leader
	// keeps it once the keys that carried it are gone (a departed member's
	// target), so no generation ever names two writes, across leaders too.
	gen int64
	// ignored holds the member keys the view does not count as members
	// (no lease, or no readable record), by member ID, with their mod
	// revision: a departed member's target is dropped only while its key
	// is still exactly that one.
	ignored map[string]int64

	// planError is what status/leader says about the last round (empty:
	// nothing wrong), so that a successful round clears it, and only when
	// set. statusUnknown: a write of status/leader went unanswered, so it
	// may hold an error whatever planError says; the next successful round
	// writes it.
	planError     string
	statusUnknown bool

	unassignable []string        // last reported, to log changes only
	reported     map[string]bool // invalid specs already logged
}

// loadView reads members, syncs, targets and owners at one revision.
func loadView(ctx context.Context, cli *clientv3.Client, k keys.Layout) (*view, int64, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(k.Members(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Syncs(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Targets(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Owners(), clientv3.WithPrefix()),
		clientv3.OpGet(k.LeaderStatus()),
	).Commit()
	if err != nil {
		return nil, 0, err
	}
	v := &view{
		members: map[string]assignment.Member{},
		syncs:   map[string]assignment.Sync{},
		invalid: map[string]error{},
		targets: map[string]*targetKeys{},
		owners:  map[string]owner{},
		ignored: map[string]int64{},
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		v.applyMember(k, kv, false)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		v.applySync(k, kv, false)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		v.applyTarget(k, kv, false)
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		v.applyOwner(k, kv, false)
	}
	if kvs := resp.Responses[4].GetResponseRange().Kvs; len(kvs) == 1 {
		st := readLeaderStatus(kvs[0].Value)
		v.gen = max(v.gen, st.Generation)
		v.planError = st.describe()
	}
	return v, resp.Header.Revision, nil
}

func (v *view) applyMember(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(k.Members(), string(kv.Key))
	if !ok {
		return
	}
	delete(v.members, id)
	delete(v.ignored, id)
	if deleted {
		return
	}
	// Only a key held by a lease is a member: one written by hand without
	// a lease would never expire, and the syncs given to it never run.
	if m, err := decodeMember(id, kv.Value); err == nil && kv.Lease != 0 {
		v.members[id] = m
		return
	}
	v.ignored[id] = kv.ModRevision
}

func (v *view) applySync(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(k.Syncs(), string(kv.Key))
	if !ok {
		if !deleted {
			v.invalid[string(kv.Key)] = fmt.Errorf("%w: key %q is not <prefix>/<group>/syncs/<valid ID>", ErrInvalidSpec, kv.Key)
		} else {
			delete(v.invalid, string(kv.Key))
		}
		return
	}
	delete(v.syncs, id)
	delete(v.invalid, id)
	if deleted {
		return
	}
	sy, err := decodeSync(id, kv.Value, kv.ModRevision)
	if err != nil {
		v.invalid[id] = err
		return
	}
	v.syncs[id] = sy
}

func (v *view) applyTarget(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) {
	m, suffix, ok := targetKey(k, string(kv.Key))
	if !ok {
		return
	}
	t := v.targets[m]
	if t == nil {
		if deleted {
			return
		}
		t = &targetKeys{}
		v.targets[m] = t
	}
	t.apply(m, suffix, kv, deleted)
	if t.empty() {
		delete(v.targets, m)
		return
	}
	if r := t.kvs[suffix].rec; !deleted && r != nil {
		v.gen = max(v.gen, r.Generation)
	}
}

// holdsTarget reports whether an event on targets/ leaves the key as the
// view has it, as the leader's own writes do: the leader records each key
// it writes, at the Txn's revision, before the watch can show it.
func (v *view) holdsTarget(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) bool {
	m, suffix, ok := targetKey(k, string(kv.Key))
	if !ok {
		return true // names no member: ignored
	}
	var cur targetKV
	had := false
	if t := v.targets[m]; t != nil {
		cur, had = t.kvs[suffix]
	}
	if deleted {
		return !had
	}
	return had && cur.rev == kv.ModRevision
}

// targetSyncs is member m's complete target, and whether its keys are
// exactly what the leader writes (see targetKeys.clean).
func (v *view) targetSyncs(m string) (syncs []string, clean bool) {
	t := v.targets[m]
	if t == nil {
		return nil, true
	}
	_, syncs, st := t.assemble()
	return syncs, st == targetComplete && t.clean()
}

func (v *view) applyOwner(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(k.Owners(), string(kv.Key))
	if !ok {
		return
	}
	if deleted {
		delete(v.owners, id)
		return
	}
	v.owners[id] = owner{member: string(kv.Value), token: kv.CreateRevision}
}

// targetOf maps each sync to the member whose complete target holds it; a
// sync in two targets (only by hand) goes to the lowest member ID,
// deterministically.
func (v *view) targetOf() map[string]string {
	out := make(map[string]string, len(v.syncs))
	for _, m := range slices.Sorted(maps.Keys(v.targets)) {
		_, syncs, st := v.targets[m].assemble()
		if st != targetComplete {
			continue // members apply complete targets only
		}
		for _, s := range syncs {
			if _, ok := out[s]; !ok {
				out[s] = m
			}
		}
	}
	return out
}

// input is the Balancer's input: live members and valid syncs sorted by ID,
// Current = actual owners, else targets (live members only).
func (v *view) input() rebalance.Input {
	in := rebalance.Input{
		Members: make([]assignment.Member, 0, len(v.members)),
		Syncs:   make([]assignment.Sync, 0, len(v.syncs)),
		Current: make(assignment.Plan, len(v.syncs)),
	}
	for _, id := range slices.Sorted(maps.Keys(v.members)) {
		in.Members = append(in.Members, v.members[id])
	}
	targetOf := v.targetOf()
	for _, id := range slices.Sorted(maps.Keys(v.syncs)) {
		in.Syncs = append(in.Syncs, v.syncs[id])
		if o, ok := v.owners[id]; ok {
			if _, live := v.members[o.member]; live {
				in.Current[id] = o.member
				continue
			}
		}
		if m, ok := targetOf[id]; ok {
			if _, live := v.members[m]; live {
				in.Current[id] = m
			}
		}
	}
	return in
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

// lead runs the leader loop until leadership ends.
func (c *Coordinator) lead(lctx context.Context, el *election.Election, calls *balancerCalls) error {
	guard := el.Guard()
	settle := c.o.settle
	maxWait := max(10*settle, time.Second)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var dirtySince time.Time
	// schedule asks for a rebalance after settle of quiet, but never later
	// than maxWait after the first change, so churn cannot starve it.
	schedule := func(d time.Duration) {
		now := time.Now()
		if dirtySince.IsZero() {
			dirtySince = now
		}
		timer.Reset(min(d, time.Until(dirtySince.Add(maxWait))))
	}
	retry := time.Second
	// reload paces the loads: a load that fails, or watches that break
	// before delivering anything, wait longer each time; a follow that made
	// progress starts the next reload at once.
	reload := backoff{min: retryMin, max: retryMax}
	for lctx.Err() == nil {
		v, rev, err := c.leaderLoad(lctx)
		if err != nil {
			c.m.etcdError("leader-load")
			c.log.Warn("leader could not load the group, retrying", "error", err)
			reload.wait(lctx)
			continue
		}
		c.reportInvalid(v)
		schedule(settle)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(lctx))
		mch := c.cli.Watch(wctx, c.keys.Members(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		sch := c.cli.Watch(wctx, c.keys.Syncs(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		tch := c.cli.Watch(wctx, c.keys.Targets(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		och := c.cli.Watch(wctx, c.keys.Owners(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		again := false // owners differ from targets: run again once they move (Throttle)
		followed, progress := time.Now(), false
		if testHookLeaderFollow != nil && testHookLeaderFollow() != nil {
			cancel()
			reload.wait(lctx)
			continue
		}
	follow:
		for {
			var wr clientv3.WatchResponse
			var ok bool
			var apply func(keys.Layout, *mvccpb.KeyValue, bool)
			trigger := true
			select {
			case <-lctx.Done():
				cancel()
				return context.Cause(lctx)
			case <-timer.C:
				dirtySince = time.Time{}
				changed, err := c.rebalance(lctx, guard, v, calls)
				switch {
				case errors.Is(err, errNotLeader):
					cancel()
					return err
				case err != nil && lctx.Err() != nil:
				case err != nil:
					c.log.Warn("rebalance failed; previous targets stand", "error", err, "retry_in", retry)
					c.reportPlanError(lctx, guard, v, err)
					schedule(retry)
					retry = min(2*retry, 30*time.Second)
				default:
					retry = time.Second
					c.clearPlanError(lctx, guard, v)
					// Owner events trigger the next round while any sync
					// is not yet where its target wants it, also after a
					// round that wrote nothing because moves were in
					// flight (Throttle goes on once they land).
					again = changed || v.movesInFlight()
				}
				continue
			case wr, ok = <-mch:
				apply = v.applyMember
			case wr, ok = <-sch:
				apply = v.applySync
			case wr, ok = <-tch:
				// The leader's own writes are in the view already; a target
				// written or deleted by anyone else is put right.
				trigger = false
				apply = func(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) {
					trigger = trigger || !v.holdsTarget(k, kv, deleted)
					v.applyTarget(k, kv, deleted)
				}
			case wr, ok = <-och:
				apply, trigger = v.applyOwner, again
			}
			if !ok || wr.Err() != nil {
				if lctx.Err() == nil {
					c.log.Info("leader watch interrupted, reloading", "error", wr.Err())
				}
				break follow
			}
			progress = true
			for _, ev := range wr.Events {
				apply(c.keys, ev.Kv, ev.Type == mvccpb.DELETE)
			}
			if trigger {
				schedule(settle)
			}
		}
		cancel()
		if progress || time.Since(followed) >= retryMax {
			reload.reset()
		} else {
			reload.wait(lctx)
		}
	}
	return context.Cause(lctx)
}

// backoff is an exponential wait between min and max.
type backoff struct {
	min, max, next time.Duration
}

// wait sleeps for the current delay, or until ctx ends, and doubles the
// next one.
func (b *backoff) wait(ctx context.Context) bool {
	d := max(b.next, b.min)
	b.next = min(2*d, b.max)
	if testHookLeaderWait != nil {
		testHookLeaderWait(d)
	}
	return sleepCtx(ctx, d)
}

func (b *backoff) reset() { b.next = b.min }

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
	ws, written, dropped := c.targetWrites(v, in, plan, gen)
	if len(ws) > 0 {
		// The generation goes into status/leader with the last Txn, so
		// that it outlives the keys that carry it.
		ws = append(ws, c.statusWrite(leaderStatus{Generation: gen}))
	}
	if len(ws) == 0 {
		c.log.Debug("rebalance round: plan unchanged, nothing to write", "generation", v.gen)
		return false, nil
	}
	moves := 0
	prev := v.targetOf()
	for s, m := range plan {
		if prev[s] != m {
			moves++
		}
	}
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

// targetWrite is one op of a plan's write, and what it does to the view
// once its Txn has succeeded.
type targetWrite struct {
	member string
	suffix string // of the key written or deleted (see targetKey)
	kind   writeKind
	op     clientv3.Op
	rec    *targetRecord // what a put writes
	bytes  int           // its share of the request
	ops    int           // its share of --max-txn-ops
}

type writeKind int

const (
	writePut    writeKind = iota
	writeDelete           // one stale key of a live member's target
	writeDrop             // all of a departed member's target, if its member key is as the view saw it
	writeStatus           // status/leader
)

// targetWrites lists the writes that make the stored targets the plan's:
// for each live member whose target differs (or is incomplete, or has
// stray keys), its parts, then its head, then the deletes of keys it no
// longer has; and for each departed member with target keys, one nested
// Txn that deletes them all only while its member key is absent (it may
// have registered again since the view last saw it).
func (c *Coordinator) targetWrites(v *view, in rebalance.Input, plan assignment.Plan, gen int64) (ws []targetWrite, written, dropped int) {
	put := func(m, suffix string, rec targetRecord) {
		key := c.keys.Target(m) + suffix
		val := encodeSorted(rec)
		ws = append(ws, targetWrite{member: m, suffix: suffix, kind: writePut, op: clientv3.OpPut(key, string(val)),
			rec: &rec, bytes: len(key) + len(val) + txnOpOverhead, ops: 1})
	}
	next := plan.ByMember()
	for _, m := range in.Members {
		syncs := next[m.ID]
		slices.Sort(syncs)
		cur, clean := v.targetSyncs(m.ID)
		if (clean && slices.Equal(cur, syncs)) || (v.targets[m.ID] == nil && len(syncs) == 0) {
			continue
		}
		head, parts := splitTarget(gen, syncs, maxTargetValue)
		keep := map[string]bool{"": true}
		for i, p := range parts {
			put(m.ID, partSuffix(i), p)
			keep[partSuffix(i)] = true
		}
		put(m.ID, "", head)
		if t := v.targets[m.ID]; t != nil {
			for _, suffix := range slices.Sorted(maps.Keys(t.kvs)) {
				if !keep[suffix] {
					key := c.keys.Target(m.ID) + suffix
					ws = append(ws, targetWrite{member: m.ID, suffix: suffix, kind: writeDelete,
						op: clientv3.OpDelete(key), bytes: len(key) + txnOpOverhead, ops: 1})
				}
			}
		}
		written++
	}
	for _, m := range slices.Sorted(maps.Keys(v.targets)) {
		if _, live := v.members[m]; live {
			continue
		}
		// Only while the member key is as the view has it: absent, or the
		// very key it ignored (no lease, unreadable); a member that
		// registered again meanwhile keeps its target. The keys are deleted
		// one by one, never by prefix: only the leader's own keys go.
		member := c.keys.Member(m)
		guard := clientv3.Compare(clientv3.CreateRevision(member), "=", 0)
		if rev, ok := v.ignored[m]; ok {
			guard = clientv3.Compare(clientv3.ModRevision(member), "=", rev)
		}
		bytes := len(member) + 2*txnOpOverhead
		var dels []clientv3.Op
		for _, suffix := range slices.Sorted(maps.Keys(v.targets[m].kvs)) {
			key := c.keys.Target(m) + suffix
			dels = append(dels, clientv3.OpDelete(key))
			bytes += len(key) + txnOpOverhead
		}
		ws = append(ws, targetWrite{member: m, kind: writeDrop, op: clientv3.OpTxn([]clientv3.Cmp{guard}, dels, nil),
			bytes: bytes, ops: 2 + len(dels)})
		dropped++
	}
	return ws, written, dropped
}

// statusWrite is the put of status/leader as st.
func (c *Coordinator) statusWrite(st leaderStatus) targetWrite {
	key := c.keys.LeaderStatus()
	b, _ := json.Marshal(st)
	return targetWrite{kind: writeStatus, op: clientv3.OpPut(key, string(b)), bytes: len(key) + len(b) + txnOpOverhead, ops: 1}
}

// chunkWrites splits writes into Txns within both of etcd's limits: at
// most maxTxnOps ops (nested ones counted) and maxTxnBytes bytes. Writes
// keep their order, so a member's parts go before its head.
func chunkWrites(ws []targetWrite) ([][]targetWrite, error) {
	var out [][]targetWrite
	start, ops, bytes := 0, 0, 0
	for i, w := range ws {
		if w.bytes > maxTxnBytes || w.ops > maxTxnOps {
			return nil, fmt.Errorf("coordinator: a target write for member %q of %d bytes cannot be sent", w.member, w.bytes)
		}
		if ops+w.ops > maxTxnOps || bytes+w.bytes > maxTxnBytes {
			out = append(out, ws[start:i])
			start, ops, bytes = i, 0, 0
		}
		ops += w.ops
		bytes += w.bytes
	}
	if start < len(ws) {
		out = append(out, ws[start:])
	}
	return out, nil
}

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
		rev := resp.Header.Revision
		for i, w := range chunk {
			t := v.targets[w.member]
			switch w.kind {
			case writePut:
				if t == nil {
					t = &targetKeys{}
					v.targets[w.member] = t
				}
				t.set(w.suffix, rev, w.rec)
				effective++
			case writeDelete:
				if t != nil {
					t.del(w.suffix)
				}
				effective++
			case writeDrop:
				if resp.Responses[i].GetResponseTxn().GetSucceeded() {
					delete(v.targets, w.member)
					effective++
				}
			case writeStatus:
				v.planError, v.statusUnknown = "", false
			}
			if t != nil && t.empty() {
				delete(v.targets, w.member)
			}
		}
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
	resp, err := c.leaderKV().Txn(sctx).If(guard).Then(c.statusWrite(st).op).Commit()
	if err != nil || !resp.Succeeded {
		if err != nil {
			v.statusUnknown = true
		}
		c.log.Warn("could not write status/leader; a later round tries again", "error", err)
		return false
	}
	return true
}

// movesInFlight reports whether some sync in a live member's complete
// target is still owned by another live member: owner events must then
// trigger rounds, or a throttled rollout would stop at a round that ran
// mid-move. A sync owned by nobody is not a move in flight: its claim needs
// no round (and one that fails and retries would otherwise rerun the
// Balancer on every retry).
func (v *view) movesInFlight() bool {
	for m, t := range v.targets {
		if _, live := v.members[m]; !live {
			continue
		}
		_, syncs, st := t.assemble()
		if st != targetComplete {
			continue
		}
		for _, s := range syncs {
			o, owned := v.owners[s]
			if _, live := v.members[o.member]; owned && live && o.member != m {
				return true
			}
		}
	}
	return false
}

// balancerGrace is how long a Balancer call may take to return after its
// ctx is done before it counts as ignoring it and is abandoned.
const balancerGrace = 100 * time.Millisecond

// balancerCalls tracks a coordinator's Balancer call abandoned at its
// budget, if it has not returned yet.
type balancerCalls struct {
	abandoned atomic.Bool
}

// fallbackBalancer places syncs while an abandoned call of the configured
// Balancer still runs.
var fallbackBalancer = rebalance.Sticky()

type balanceResult struct {
	plan assignment.Plan
	err  error
}

// balance calls the Balancer on its own goroutine with a deadline (the
// TTL), and turns an error, a panic or an overrun into an error; the
// previous targets then stand, and the caller retries. A call that ignores
// its ctx past the budget (and a grace), or that is still running when
// leadership ends, is abandoned, not waited for: a Balancer that hangs must
// not wedge the leader (nor Leave, which waits for the leader loop). Its
// late result is dropped.
//
// The Balancer is never called concurrently with itself, an abandoned call
// included: until that call returns, every round plans with
// fallbackBalancer instead (counted as "fallback"), so a hung Balancer
// neither wedges the group nor leaks a goroutine per round.
func (c *Coordinator) balance(ctx context.Context, in rebalance.Input, calls *balancerCalls) (assignment.Plan, error) {
	if calls.abandoned.Load() {
		c.m.balancerError("fallback")
		c.log.Warn("an abandoned Balancer call is still running; the built-in Sticky balancer plans meanwhile")
		fctx, cancel := context.WithTimeout(ctx, c.o.ttl)
		defer cancel()
		return fallbackBalancer.Balance(fctx, in)
	}
	bctx, cancel := context.WithTimeout(ctx, c.o.ttl)
	defer cancel()
	done := make(chan balanceResult, 1)
	var state atomic.Int32 // 0 running, 1 returned in time, 2 abandoned
	go func() {
		var r balanceResult
		defer func() {
			if p := recover(); p != nil {
				r = balanceResult{err: fmt.Errorf("%w: %v\n%s", errBalancerPanic, p, debug.Stack())}
			}
			if !state.CompareAndSwap(0, 1) {
				calls.abandoned.Store(false)
			}
			done <- r
		}()
		r.plan, r.err = c.o.balancer.Balance(bctx, in)
	}()
	var r balanceResult
	select {
	case r = <-done:
	case <-bctx.Done():
		// A Balancer that honours its ctx returns now: wait a moment for
		// it, so that a call is abandoned (and the fallback plans) only
		// when the Balancer ignores its ctx.
		select {
		case r = <-done:
			goto returned
		case <-time.After(balancerGrace):
		}
		calls.abandoned.Store(true)
		if state.CompareAndSwap(0, 2) {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			c.m.balancerError("timeout")
			return nil, fmt.Errorf("coordinator: balancer ignored its ctx past its %v budget; the call is abandoned, and the built-in Sticky balancer plans until it returns",
				c.o.ttl)
		}
		calls.abandoned.Store(false) // it returned just now
		r = <-done
	}
returned:
	switch {
	case errors.Is(r.err, errBalancerPanic):
		c.m.balancerError("panic")
		return nil, r.err
	case r.err != nil:
		c.m.balancerError("error")
		return nil, fmt.Errorf("coordinator: balancer: %w", r.err)
	case bctx.Err() != nil && ctx.Err() == nil:
		c.m.balancerError("timeout")
		return nil, fmt.Errorf("coordinator: balancer overran its %v budget", c.o.ttl)
	case r.plan == nil:
		r.plan = assignment.Plan{}
	}
	return r.plan, nil
}

var errBalancerPanic = errors.New("coordinator: balancer panicked")

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

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
	// The count of abandoned Balancer calls outlives terms and sessions,
	// so a Balancer that hangs on every call cannot leak a goroutine per
	// term or per session.
	calls := &c.balancerCalls
	for ectx.Err() == nil && sess.riskCtx.Err() == nil {
		el := election.New(sess.electionSession(), c.keys.Election())
		lctx, err := el.Campaign(ectx, c.o.memberID)
		if err != nil {
			if ectx.Err() != nil || sess.riskCtx.Err() != nil {
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
		if sess.riskCtx.Err() == nil {
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
	gen     int64 // the highest generation seen; the next write uses gen+1

	// planError is what status/leader holds (empty: nothing), so that a
	// successful round clears it, and only when set.
	planError string

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
		v.planError = describePlanError(kvs[0].Value)
	}
	return v, resp.Header.Revision, nil
}

func (v *view) applyMember(k keys.Layout, kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(k.Members(), string(kv.Key))
	if !ok {
		return
	}
	delete(v.members, id)
	// Only a key held by a lease is a member: one written by hand without
	// a lease would never expire, and the syncs given to it never run.
	if deleted || kv.Lease == 0 {
		return
	}
	if m, err := decodeMember(id, kv.Value); err == nil {
		v.members[id] = m
	}
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
	return loadView(ctx, c.cli, c.keys)
}

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
	txns, largest, err := c.writeTargets(ctx, guard, v, ws)
	if err != nil {
		return false, err
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
	writeDrop             // all of a departed member's target, if its member key is absent
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
		member, head, parts := c.keys.Member(m), c.keys.Target(m), c.keys.TargetParts(m)
		op := clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(member), "=", 0)},
			[]clientv3.Op{clientv3.OpDelete(head), clientv3.OpDelete(parts, clientv3.WithPrefix())},
			nil)
		ws = append(ws, targetWrite{member: m, kind: writeDrop, op: op,
			bytes: len(member) + len(head) + 2*len(parts) + 3*txnOpOverhead, ops: 3})
		dropped++
	}
	return ws, written, dropped
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
// missing. It returns the number of Txns and the largest one's bytes.
func (c *Coordinator) writeTargets(ctx context.Context, guard clientv3.Cmp, v *view, ws []targetWrite) (int, int, error) {
	gen := v.gen
	chunks, err := chunkWrites(ws)
	if err != nil {
		return 0, 0, &planWriteError{gen: gen, err: err}
	}
	kv := c.leaderKV()
	largest := 0
	for _, chunk := range chunks {
		ops := make([]clientv3.Op, len(chunk))
		bytes := 0
		for i, w := range chunk {
			ops[i] = w.op
			bytes += w.bytes
		}
		largest = max(largest, bytes)
		resp, err := kv.Txn(ctx).If(guard).Then(ops...).Commit()
		if err != nil {
			c.m.etcdError("write-targets")
			return len(chunks), largest, &planWriteError{gen: gen, err: err}
		}
		if !resp.Succeeded {
			return len(chunks), largest, errNotLeader
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
			case writeDelete:
				if t != nil {
					t.del(w.suffix)
				}
			case writeDrop:
				if resp.Responses[i].GetResponseTxn().GetSucceeded() {
					delete(v.targets, w.member)
				}
			}
			if t != nil && t.empty() {
				delete(v.targets, w.member)
			}
		}
	}
	return len(chunks), largest, nil
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

// leaderStatus is the JSON at status/leader: the last plan the leader
// could not write. The key exists only while the newest round failed.
type leaderStatus struct {
	PlanError  string    `json:"planError"`
	Generation int64     `json:"generation"`
	At         time.Time `json:"at"`
}

// describePlanError renders a status/leader value for Describe.
func describePlanError(b []byte) string {
	var st leaderStatus
	if err := json.Unmarshal(b, &st); err != nil || st.PlanError == "" {
		return fmt.Sprintf("unreadable leader status %.80q", b)
	}
	return fmt.Sprintf("plan of generation %d not written (%s): %s", st.Generation, st.At.UTC().Format(time.RFC3339), st.PlanError)
}

// reportPlanError records a failed round in status/leader, for Describe;
// best effort (etcd may be what failed), guarded by the election.
func (c *Coordinator) reportPlanError(ctx context.Context, guard clientv3.Cmp, v *view, err error) {
	gen := v.gen + 1
	if pe, ok := errors.AsType[*planWriteError](err); ok {
		gen = pe.gen
	}
	b, _ := json.Marshal(leaderStatus{PlanError: err.Error(), Generation: gen, At: time.Now().UTC()})
	sctx, cancel := context.WithTimeout(ctx, c.o.ttl)
	defer cancel()
	resp, werr := c.leaderKV().Txn(sctx).If(guard).Then(clientv3.OpPut(c.keys.LeaderStatus(), string(b))).Commit()
	if werr != nil || !resp.Succeeded {
		c.log.Warn("could not report the plan error in status/leader", "error", werr)
		return
	}
	v.planError = describePlanError(b)
}

// clearPlanError deletes status/leader after a successful round, and only
// if it is set: the steady state writes nothing.
func (c *Coordinator) clearPlanError(ctx context.Context, guard clientv3.Cmp, v *view) {
	if v.planError == "" {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, c.o.ttl)
	defer cancel()
	resp, err := c.leaderKV().Txn(sctx).If(guard).Then(clientv3.OpDelete(c.keys.LeaderStatus())).Commit()
	if err != nil || !resp.Succeeded {
		c.log.Warn("could not clear status/leader; the next successful round tries again", "error", err)
		return
	}
	v.planError = ""
}

// movesInFlight reports whether some sync in a live member's complete
// target is not owned by that member yet: owner events must then trigger
// rounds, or a throttled rollout would stop at a round that ran mid-move.
func (v *view) movesInFlight() bool {
	for m, t := range v.targets {
		if _, live := v.members[m]; !live {
			continue
		}
		_, syncs, st := t.assemble()
		if st != targetComplete {
			return true
		}
		for _, s := range syncs {
			if _, ok := v.syncs[s]; ok && v.owners[s].member != m {
				return true
			}
		}
	}
	return false
}

// maxAbandonedBalancerCalls bounds the Balancer calls that overran their
// budget and still run: beyond it the leader does not call the Balancer
// (the round fails, logged and counted as "skipped") until one returns.
const maxAbandonedBalancerCalls = 2

// balancerCalls counts a leader's abandoned Balancer calls.
type balancerCalls struct {
	abandoned atomic.Int32
}

type balanceResult struct {
	plan assignment.Plan
	err  error
}

// balance calls the Balancer on its own goroutine with a deadline (the
// TTL), and turns an error, a panic or an overrun into an error; the
// previous targets then stand. A call that overruns, or that is still
// running when leadership ends, is abandoned, not waited for: a Balancer
// that ignores its ctx must not wedge the leader (nor Leave, which waits
// for the leader loop). Its late result is dropped; the next round calls
// the Balancer again.
func (c *Coordinator) balance(ctx context.Context, in rebalance.Input, calls *balancerCalls) (assignment.Plan, error) {
	if n := calls.abandoned.Load(); n >= maxAbandonedBalancerCalls {
		c.m.balancerError("skipped")
		return nil, fmt.Errorf("coordinator: balancer not called: %d earlier calls overran their budget and have not returned", n)
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
			done <- r
			if !state.CompareAndSwap(0, 1) {
				calls.abandoned.Add(-1)
			}
		}()
		r.plan, r.err = c.o.balancer.Balance(bctx, in)
	}()
	var r balanceResult
	select {
	case r = <-done:
	case <-bctx.Done():
		calls.abandoned.Add(1)
		if state.CompareAndSwap(0, 2) {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			c.m.balancerError("timeout")
			return nil, fmt.Errorf("coordinator: balancer overran its %v budget; the call is abandoned (%d abandoned calls still running)",
				c.o.ttl, calls.abandoned.Load())
		}
		calls.abandoned.Add(-1) // it returned just now
		r = <-done
	}
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

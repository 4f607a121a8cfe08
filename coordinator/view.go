package coordinator

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/rebalance"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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
	// successors: member IDs a process waits to register as (keys.Successor).
	successors map[string]bool
	// preparers: live members whose Handler is a Preparer.
	preparers map[string]bool

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

// newView returns an empty view.
func newView() *view {
	return &view{
		members: map[string]assignment.Member{},
		syncs:   map[string]assignment.Sync{},
		invalid: map[string]error{},
		targets: map[string]*targetKeys{},
		owners:  map[string]owner{},
		ignored: map[string]int64{},

		successors: map[string]bool{},
		preparers:  map[string]bool{},
	}
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
	v := newView()
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		v.applyMember(k, kv, mvccpb.PUT)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		v.applySync(k, kv, mvccpb.PUT)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		v.applyTarget(k, kv, mvccpb.PUT)
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		v.applyOwner(k, kv, mvccpb.PUT)
	}
	if kvs := resp.Responses[4].GetResponseRange().Kvs; len(kvs) == 1 {
		st := readLeaderStatus(kvs[0].Value)
		v.gen = max(v.gen, st.Generation)
		v.planError = st.describe()
	}
	return v, resp.Header.Revision, nil
}

// applyMember applies an event under the member prefix. It reports whether
// the event was a member key's (a change the plan must follow), and
// whether it deleted the key of a member whose successor waits to register
// (a restart within the TTL, which the registration follows at once).
func (v *view) applyMember(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) (member, awaited bool) {
	if id, ok := k.SuccessorID(string(kv.Key)); ok {
		if ev == mvccpb.DELETE {
			delete(v.successors, id)
		} else {
			v.successors[id] = true
		}
		return false, false
	}
	id, ok := keys.ID(k.Members(), string(kv.Key))
	if !ok {
		return false, false
	}
	delete(v.members, id)
	delete(v.ignored, id)
	delete(v.preparers, id)
	if ev == mvccpb.DELETE {
		return true, v.successors[id]
	}
	// Only a key held by a lease is a member: one written by hand without
	// a lease would never expire, and the syncs given to it never run.
	if m, err := decodeMember(id, kv.Value); err == nil && kv.Lease != 0 {
		v.members[id] = m
		if memberPrepares(kv.Value) {
			v.preparers[id] = true
		}
		return true, false
	}
	v.ignored[id] = kv.ModRevision
	return true, false
}

func (v *view) applySync(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
	id, ok := keys.ID(k.Syncs(), string(kv.Key))
	if !ok {
		if ev != mvccpb.DELETE {
			v.invalid[string(kv.Key)] = fmt.Errorf("%w: key %q is not <prefix>/<group>/syncs/<valid ID>", ErrInvalidSpec, kv.Key)
		} else {
			delete(v.invalid, string(kv.Key))
		}
		return
	}
	delete(v.syncs, id)
	delete(v.invalid, id)
	if ev == mvccpb.DELETE {
		return
	}
	sy, err := decodeSync(id, kv.Value, kv.ModRevision)
	if err != nil {
		v.invalid[id] = err
		return
	}
	v.syncs[id] = sy
}

func (v *view) applyTarget(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
	m, suffix, ok := targetKey(k, string(kv.Key))
	if !ok {
		return
	}
	t := v.targets[m]
	if t == nil {
		if ev == mvccpb.DELETE {
			return
		}
		t = &targetKeys{}
		v.targets[m] = t
	}
	t.apply(m, suffix, kv, ev)
	if t.empty() {
		delete(v.targets, m)
		return
	}
	if r := t.kvs[suffix].rec; ev != mvccpb.DELETE && r != nil {
		v.gen = max(v.gen, r.Generation)
	}
}

// holdsTarget reports whether an event on targets/ leaves the key as the
// view has it, as the leader's own writes do: the leader records each key
// it writes, at the Txn's revision, before the watch can show it.
func (v *view) holdsTarget(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) bool {
	m, suffix, ok := targetKey(k, string(kv.Key))
	if !ok {
		return true // names no member: ignored
	}
	var cur targetKV
	had := false
	if t := v.targets[m]; t != nil {
		cur, had = t.kvs[suffix]
	}
	if ev == mvccpb.DELETE {
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

func (v *view) applyOwner(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
	id, ok := keys.ID(k.Owners(), string(kv.Key))
	if !ok {
		return
	}
	if ev == mvccpb.DELETE {
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
			if owner, live := v.members[o.member]; live {
				in.Current[id] = o.member
				// A draining owner's sync already given to a live,
				// non-draining member is on its way there: planned again
				// from the owner, it could be sent elsewhere mid-handoff
				// (a prepared handoff would start over, or go cold).
				if m, ok := targetOf[id]; ok && owner.Draining && m != o.member {
					if to, live := v.members[m]; live && !to.Draining {
						in.Current[id] = m
					}
				}
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

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
)

// GroupStatus is a consistent picture of a group, read at one revision.
type GroupStatus struct {
	Group      string         `json:"group"`
	Revision   int64          `json:"revision"`   // etcd revision it was read at
	Leader     string         `json:"leader"`     // member ID, "" when there is none
	Generation int64          `json:"generation"` // newest plan generation in the targets
	Members    []MemberStatus `json:"members"`
	Syncs      []SyncStatus   `json:"syncs"`
	Invalid    []InvalidSync  `json:"invalid,omitempty"`
	Pending    int            `json:"pending"` // syncs whose owner is not (yet) their target
	// PlanError is set while the leader's newest round failed: a plan it
	// could not write (or a Balancer failure), with the plan's generation
	// and when; the previous targets stand meanwhile. Empty once a round
	// succeeds.
	PlanError string `json:"planError,omitempty"`
}

// MemberStatus is one live member.
type MemberStatus struct {
	assignment.Member
	Targeted int `json:"targeted"` // syncs in its target
	Owned    int `json:"owned"`    // syncs it owns
}

// SyncStatus is one valid sync: where the leader wants it (as members see
// it: a target still being written counts once it is complete) and who runs
// it.
type SyncStatus struct {
	ID     string `json:"id"`
	Weight int    `json:"weight"`
	Target string `json:"target,omitempty"` // member the plan gives it to
	Owner  string `json:"owner,omitempty"`  // member holding it now
	Token  int64  `json:"token,omitempty"`  // the owner's fencing token
	// Pending is true while the sync is not running where the plan wants
	// it: moving, waiting to be claimed, or with no target at all.
	Pending bool `json:"pending,omitempty"`
}

// InvalidSync is a stored spec that cannot be read, with the reason.
type InvalidSync struct {
	// Key is the sync ID, or the raw etcd key when it names no valid ID.
	Key   string `json:"key"`
	Error string `json:"error"`
}

// Describe reads the status of group. WithPrefix is the one option that
// means something to it (WithLogger is accepted, see Option): any other
// option is an error.
func Describe(ctx context.Context, cli *clientv3.Client, group string, opts ...Option) (*GroupStatus, error) {
	if cli == nil {
		return nil, errors.New("coordinator: Describe: nil etcd client")
	}
	o, err := memberlessOptions("Describe", opts)
	if err != nil {
		return nil, err
	}
	k, err := keys.New(o.prefix, group)
	if err != nil {
		return nil, fmt.Errorf("coordinator: Describe: %w", err)
	}
	v, rev, err := loadView(ctx, cli, k)
	if err != nil {
		return nil, fmt.Errorf("coordinator: describe %q: %w", group, err)
	}
	// The leader is the campaigner with the oldest election key, read at
	// the same revision.
	lresp, err := cli.Get(ctx, k.Election()+"/", append(clientv3.WithFirstCreate(), clientv3.WithRev(rev))...)
	if err != nil {
		return nil, fmt.Errorf("coordinator: describe %q: leader: %w", group, err)
	}
	st := v.status(group, rev)
	if len(lresp.Kvs) > 0 {
		st.Leader = string(lresp.Kvs[0].Value)
	}
	return st, nil
}

// status is the group's status as the view has it, read at rev, without
// the leader.
func (v *view) status(group string, rev int64) *GroupStatus {
	st := &GroupStatus{Group: group, Revision: rev, Generation: v.gen, PlanError: v.planError}
	targetOf := v.targetOf()
	counts := map[string]*MemberStatus{}
	for _, id := range slices.Sorted(maps.Keys(v.members)) {
		st.Members = append(st.Members, MemberStatus{Member: v.members[id]})
	}
	for i := range st.Members {
		counts[st.Members[i].ID] = &st.Members[i]
	}
	for _, id := range slices.Sorted(maps.Keys(v.syncs)) {
		sy := v.syncs[id]
		ss := SyncStatus{ID: id, Weight: sy.EffectiveWeight(), Target: targetOf[id]}
		if o, ok := v.owners[id]; ok {
			ss.Owner, ss.Token = o.member, o.token
		}
		ss.Pending = ss.Owner == "" || ss.Owner != ss.Target
		if ss.Pending {
			st.Pending++
		}
		if m := counts[ss.Target]; m != nil {
			m.Targeted++
		}
		if m := counts[ss.Owner]; m != nil {
			m.Owned++
		}
		st.Syncs = append(st.Syncs, ss)
	}
	for _, key := range slices.Sorted(maps.Keys(v.invalid)) {
		st.Invalid = append(st.Invalid, InvalidSync{Key: key, Error: v.invalid[key].Error()})
	}
	return st
}

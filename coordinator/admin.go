package coordinator

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/keys"
)

// Admin is the operator's side of a group: it reads the group's status
// and asks members to drain, from outside the group (it needs no
// membership).
type Admin struct {
	cli   *clientv3.Client
	group string
	o     options
	keys  keys.Layout
}

// ErrNoSuchMember is returned by Admin.Drain for a member ID that no live
// member holds.
var ErrNoSuchMember = errors.New("coordinator: no such live member")

// NewAdmin returns an Admin for group. WithPrefix is the one option that
// means something to it (WithLogger is accepted, see Option): any other
// option is an error, as is an invalid group or prefix or a nil client.
func NewAdmin(cli *clientv3.Client, group string, opts ...Option) (*Admin, error) {
	if cli == nil {
		return nil, errors.New("coordinator: NewAdmin: nil etcd client")
	}
	o, err := memberlessOptions("NewAdmin", opts)
	if err != nil {
		return nil, err
	}
	k, err := keys.New(o.prefix, group)
	if err != nil {
		return nil, fmt.Errorf("coordinator: NewAdmin: %w", err)
	}
	return &Admin{cli: cli, group: group, o: o, keys: k}, nil
}

// Describe reads the status of the group, as Describe does.
func (a *Admin) Describe(ctx context.Context) (*GroupStatus, error) {
	return Describe(ctx, a.cli, a.group, WithPrefix(a.o.prefix))
}

// Drain asks member to drain: the leader moves every sync away from it, and
// it stays draining until it leaves. It returns once the member has
// acknowledged the request by writing its own record with the flag, so a
// request written on a record that the member's lease takes away before
// the member saw it (a session lost at that moment) is made again on the
// member's next registration, never reported done and then lost. It
// returns ErrNoSuchMember if no live member holds the ID, and ctx's error
// if the member does not acknowledge in time (it may be cut off from etcd,
// or too old to know the request). Draining a member that drains already
// returns nil at once.
func (a *Admin) Drain(ctx context.Context, member string) error {
	if err := keys.ValidateID("member", member); err != nil {
		return fmt.Errorf("coordinator: drain: %w", err)
	}
	key := a.keys.Member(member)
	for first := true; ; first = false {
		// Read the record, then watch from the revision read at, so no
		// later write of it is missed; a watch that breaks (a compaction,
		// a lost etcd leader) reads again.
		resp, err := a.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("coordinator: drain %q: %w", member, err)
		}
		var kv *mvccpb.KeyValue
		if len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
			kv = resp.Kvs[0]
		} else if first {
			return fmt.Errorf("%w: %q", ErrNoSuchMember, member)
		}
		done, err := a.awaitDrain(ctx, key, kv, resp.Header.Revision)
		if err != nil || done {
			return err
		}
	}
}

// awaitDrain asks for the drain on record kv (nil: none live now) and
// follows the member key from rev+1 until the member itself says it
// drains (done), ctx ends, or the watch breaks (not done, no error: read
// again). A record without the flag that replaces the one asked (a new
// registration) is asked again.
func (a *Admin) awaitDrain(ctx context.Context, key string, kv *mvccpb.KeyValue, rev int64) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	events := a.cli.Watch(wctx, key, clientv3.WithRev(rev+1))
	for {
		if kv != nil {
			done, err := a.requestDrain(ctx, key, kv)
			if err != nil || done {
				return done, err
			}
		}
		kv = nil
		for kv == nil {
			select {
			case <-ctx.Done():
				return false, fmt.Errorf("coordinator: drain %s: the member did not acknowledge: %w", key, ctx.Err())
			case wr, ok := <-events:
				if !ok || wr.Err() != nil {
					if ctx.Err() != nil {
						return false, fmt.Errorf("coordinator: drain %s: the member did not acknowledge: %w", key, ctx.Err())
					}
					return false, nil
				}
				for _, ev := range wr.Events {
					if ev.Type == mvccpb.PUT && ev.Kv.Lease != 0 {
						kv = ev.Kv // the newest write decides
					}
				}
			}
		}
	}
}

// requestDrain looks at one record of the member: done if the member
// itself says it drains, else it writes the request on that exact record
// (same mod revision, same lease: never on a key that expired meanwhile,
// which would revive a dead member, nor over a newer record), unless it is
// there already.
func (a *Admin) requestDrain(ctx context.Context, key string, kv *mvccpb.KeyValue) (bool, error) {
	st, err := readDrain(kv.Value)
	if err != nil {
		return false, fmt.Errorf("coordinator: drain: %s is not a member record: %w", key, err)
	}
	switch st {
	case drainAnswered:
		return true, nil
	case drainAsked:
		return false, nil // asked already: wait for the answer
	}
	val, err := askDrain(kv.Value)
	if err != nil {
		return false, err
	}
	// A lost race (the member wrote its record meanwhile) shows up on the
	// watch, which decides what comes next.
	if _, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision),
			clientv3.Compare(clientv3.LeaseValue(key), "=", clientv3.LeaseID(kv.Lease))).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(clientv3.LeaseID(kv.Lease)))).Commit(); err != nil {
		return false, fmt.Errorf("coordinator: drain: write %s: %w", key, err)
	}
	return false, nil
}

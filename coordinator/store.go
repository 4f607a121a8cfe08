package coordinator

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
)

// SyncStore is the admin side of a group: it writes, deletes and lists the
// sync specs that the leader assigns. It needs no membership.
type SyncStore struct {
	cli  *clientv3.Client
	keys keys.Layout
	err  error // a bad group or prefix, returned by every call
}

// NewSyncStore returns a SyncStore for group. WithPrefix is the one option
// that means something to it (WithLogger is accepted, see Option). An
// invalid group or prefix, or any other option, is reported by every method (an invalid ID as an error wrapping
// assignment.ErrInvalidID), so no key is ever written under the wrong
// prefix and no option is dropped silently.
func NewSyncStore(cli *clientv3.Client, group string, opts ...Option) *SyncStore {
	s := &SyncStore{cli: cli}
	var errs []error
	if cli == nil {
		errs = append(errs, errors.New("coordinator: NewSyncStore: nil etcd client"))
	}
	o, err := memberlessOptions("NewSyncStore", opts)
	if err != nil {
		errs = append(errs, err)
	}
	if l, err := keys.New(o.prefix, group); err != nil {
		errs = append(errs, fmt.Errorf("coordinator: NewSyncStore: %w", err))
	} else {
		s.keys = l
	}
	s.err = errors.Join(errs...)
	return s
}

// Put creates or replaces a sync. Its ID must be valid, its Weight ≥ 0 and
// its Spec valid JSON (or empty); Revision is ignored. The spec is stored
// byte for byte as given, less any whitespace around it, so List and
// Claim.Sync return exactly those bytes (it is not compacted or
// re-escaped). A Put that changes
// nothing but the spec reaches the owner as a spec change (OnUpdate, or
// OnRevoke(SpecChanged) + OnAssign) without moving the sync.
func (s *SyncStore) Put(ctx context.Context, sy assignment.Sync) error {
	if s.err != nil {
		return s.err
	}
	b, err := encodeSync(sy)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.keys.Sync(sy.ID), string(b)); err != nil {
		return fmt.Errorf("coordinator: put sync %q: %w", sy.ID, err)
	}
	return nil
}

// Delete removes a sync; its owner gets OnRevoke(Removed). Deleting a sync
// that does not exist is not an error. The sync's checkpoint is kept, so a
// sync deleted by mistake and put back resumes where it stopped.
func (s *SyncStore) Delete(ctx context.Context, id string) error {
	if s.err != nil {
		return s.err
	}
	if err := keys.ValidateID("sync", id); err != nil {
		return fmt.Errorf("coordinator: delete sync: %w", err)
	}
	if _, err := s.cli.Delete(ctx, s.keys.Sync(id)); err != nil {
		return fmt.Errorf("coordinator: delete sync %q: %w", id, err)
	}
	return nil
}

// Get returns the sync id as stored, with Revision set; found is false when
// there is none. A spec that cannot be read is an error wrapping
// ErrInvalidSpec.
func (s *SyncStore) Get(ctx context.Context, id string) (sy assignment.Sync, found bool, err error) {
	if s.err != nil {
		return assignment.Sync{}, false, s.err
	}
	if err := keys.ValidateID("sync", id); err != nil {
		return assignment.Sync{}, false, fmt.Errorf("coordinator: get sync: %w", err)
	}
	resp, err := s.cli.Get(ctx, s.keys.Sync(id))
	if err != nil {
		return assignment.Sync{}, false, fmt.Errorf("coordinator: get sync %q: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return assignment.Sync{}, false, nil
	}
	sy, err = decodeSync(id, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if err != nil {
		return assignment.Sync{}, true, err
	}
	return sy, true, nil
}

// List returns every readable sync, sorted by ID, with Revision set. Specs
// that cannot be read (written by hand, say) are left out and named in an
// error wrapping ErrInvalidSpec, returned together with the readable syncs.
func (s *SyncStore) List(ctx context.Context) ([]assignment.Sync, error) {
	if s.err != nil {
		return nil, s.err
	}
	resp, err := s.cli.Get(ctx, s.keys.Syncs(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("coordinator: list syncs: %w", err)
	}
	out := make([]assignment.Sync, 0, len(resp.Kvs))
	var bad []error
	for _, kv := range resp.Kvs {
		id, ok := keys.ID(s.keys.Syncs(), string(kv.Key))
		if !ok {
			bad = append(bad, fmt.Errorf("%w: key %q does not name a valid sync ID", ErrInvalidSpec, kv.Key))
			continue
		}
		sy, err := decodeSync(id, kv.Value, kv.ModRevision)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		out = append(out, sy)
	}
	return out, errors.Join(bad...)
}

package assignment

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/claimsync"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim is a member's ownership of one sync. It is valid from OnAssign until
// OnRevoke returns, and carries the fencing token that proves it.
//
// A Claim is safe for concurrent use. Its methods that talk to etcd take a
// context and return promptly when it ends.
type Claim struct {
	kv            clientv3.KV
	ownerKey      string
	checkpointKey string
	member        string
	token         int64
	deadline      func() time.Time

	mu   sync.Mutex
	sync Sync
}

// ClaimConfig holds what a Claim is made of. The coordinator fills it in;
// tests and tools that fence their own writes can build one too.
type ClaimConfig struct {
	KV            clientv3.KV      // used by Valid, SaveCheckpoint and LoadCheckpoint
	OwnerKey      string           // the etcd key whose create revision is the token
	CheckpointKey string           // where SaveCheckpoint writes
	Member        string           // the owning member's ID
	Token         int64            // the owner key's create revision
	Deadline      func() time.Time // the local ownership deadline, read on each call
	Sync          Sync
}

// NewClaim returns a Claim for cfg. It validates only that the fields needed
// for fencing are present.
func NewClaim(cfg ClaimConfig) (*Claim, error) {
	if cfg.KV == nil || cfg.OwnerKey == "" || cfg.Token <= 0 || cfg.Deadline == nil {
		return nil, fmt.Errorf("assignment: claim for %q needs a KV, an owner key, a positive token and a deadline", cfg.Sync.ID)
	}
	return &Claim{
		kv:            cfg.KV,
		ownerKey:      cfg.OwnerKey,
		checkpointKey: cfg.CheckpointKey,
		member:        cfg.Member,
		token:         cfg.Token,
		deadline:      cfg.Deadline,
		sync:          cfg.Sync.Clone(),
	}, nil
}

// Sync returns the sync as last delivered to the handler (a copy: the caller
// may keep or change it).
func (c *Claim) Sync() Sync {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sync.Clone()
}

func init() {
	claimsync.Set = func(c, s any) { c.(*Claim).setSync(s.(Sync)) }
}

// setSync replaces the claim's view of the sync after a spec change. The
// coordinator calls it (through claimsync) before Updater.OnUpdate.
func (c *Claim) setSync(s Sync) {
	c.mu.Lock()
	c.sync = s.Clone()
	c.mu.Unlock()
}

// ID returns the sync's ID.
func (c *Claim) ID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sync.ID
}

// Member returns the ID of the member holding the claim.
func (c *Claim) Member() string { return c.member }

// Token returns the fencing token: the create revision of the sync's owner
// key. It strictly increases each time the sync changes owner (and each time
// the same member claims it anew), so a downstream system can reject a write
// carrying a token lower than one it has already seen.
func (c *Claim) Token() int64 { return c.token }

// Deadline returns the local instant by which this member certainly gives up
// the sync unless its lease is renewed first. It moves forward with every
// renewal; work that must never overlap the next owner checks it.
func (c *Claim) Deadline() time.Time { return c.deadline() }

// Guard returns a comparison to add to your own etcd Txn: it holds only while
// the owner key still exists with this claim's token, so the Txn fails once
// the sync has been released, expired or claimed by anyone else.
func (c *Claim) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(c.ownerKey), "=", c.token)
}

// Valid reports, with a linearizable read, whether the claim still holds:
// the owner key exists with this token and the local deadline has not passed.
func (c *Claim) Valid(ctx context.Context) (bool, error) {
	if !time.Now().Before(c.deadline()) {
		return false, nil
	}
	resp, err := c.kv.Get(ctx, c.ownerKey)
	if err != nil {
		return false, fmt.Errorf("assignment: check claim on %q: %w", c.ID(), err)
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == c.token, nil
}

// SaveCheckpoint stores b as the sync's checkpoint, fenced by the claim: it
// returns ErrNotOwner, writing nothing, once the claim no longer holds or its
// local deadline has passed. A later owner reads it with LoadCheckpoint.
//
// Any other error leaves the outcome unknown, as with every etcd request:
// etcd may have applied the write and the answer been lost (a timeout, a
// cut connection, a process paused with the request in flight). If it was
// applied, it was applied while the claim held; no write of this claim can
// land after a later owner's claim.
func (c *Claim) SaveCheckpoint(ctx context.Context, b []byte) error {
	if c.checkpointKey == "" {
		return fmt.Errorf("assignment: claim on %q has no checkpoint key", c.ID())
	}
	if !time.Now().Before(c.deadline()) {
		return ErrNotOwner
	}
	resp, err := c.kv.Txn(ctx).If(c.Guard()).Then(clientv3.OpPut(c.checkpointKey, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("assignment: save checkpoint of %q: %w", c.ID(), err)
	}
	if !resp.Succeeded {
		return ErrNotOwner
	}
	return nil
}

// LoadCheckpoint returns the sync's last saved checkpoint, or nil if none was
// ever saved. It reads whatever the latest owner wrote, fenced or not by this
// claim: a new owner calls it first thing in OnAssign.
func (c *Claim) LoadCheckpoint(ctx context.Context) ([]byte, error) {
	if c.checkpointKey == "" {
		return nil, fmt.Errorf("assignment: claim on %q has no checkpoint key", c.ID())
	}
	resp, err := c.kv.Get(ctx, c.checkpointKey)
	if err != nil {
		return nil, fmt.Errorf("assignment: load checkpoint of %q: %w", c.ID(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// String describes the claim for logs.
func (c *Claim) String() string {
	return fmt.Sprintf("claim{sync=%s member=%s token=%d}", c.ID(), c.member, c.token)
}

// Package keys is Baton's etcd key layout and ID validation. Every key the
// library reads or writes is built here, from validated IDs only, so no input
// can ever name a key under another group or prefix.
package keys

import (
	"fmt"
	"strings"

	"github.com/baton-go/baton/assignment"
)

// MaxIDLen is the longest valid ID, in bytes.
const MaxIDLen = 128

// ValidateID checks that id is 1–128 bytes of [A-Za-z0-9._:-] and not "." or
// "..". what names the ID in the error ("member", "sync", "group").
func ValidateID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty %s ID", assignment.ErrInvalidID, what)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: %s ID is %d bytes, the limit is %d", assignment.ErrInvalidID, what, len(id), MaxIDLen)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%w: %s ID %q", assignment.ErrInvalidID, what, id)
	}
	for i := 0; i < len(id); i++ {
		if !validByte(id[i]) {
			return fmt.Errorf("%w: %s ID %q has %q at byte %d (allowed: A-Z a-z 0-9 . _ : -)", assignment.ErrInvalidID, what, clip(id), id[i], i)
		}
	}
	return nil
}

func validByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	case b == '.', b == '_', b == ':', b == '-':
		return true
	}
	return false
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// ValidatePrefix checks a key prefix: it must start with "/", must not end
// with "/", and every segment must be a valid ID.
func ValidatePrefix(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%w: prefix %q must start with / and not end with /", assignment.ErrInvalidID, p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if err := ValidateID("prefix segment", seg); err != nil {
			return err
		}
	}
	return nil
}

// Layout builds the keys of one group, all under "<prefix>/<group>/":
//
//	members/<member>          JSON member record, with the member's lease
//	election/…                concurrency.Election keys
//	syncs/<sync>              JSON envelope {weight, labels, spec}
//	targets/<member>          the head of a target: {generation, syncs} or, when split, {generation, syncs:[], parts:n}
//	targets/<member>/<i>      part i (0 ≤ i < n) of a split target: {generation, syncs}
//	status/leader             the leader's report of a plan it could not write
//	owners/<sync>             member ID, with the owner's lease
//	checkpoints/<sync>        bytes, written under the owner's claim
//
// Its zero value is not usable; make
// one with New.
type Layout struct {
	root string // "<prefix>/<group>/"
}

// New returns the layout of group under prefix, both validated.
func New(prefix, group string) (Layout, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return Layout{}, err
	}
	if err := ValidateID("group", group); err != nil {
		return Layout{}, err
	}
	return Layout{root: prefix + "/" + group + "/"}, nil
}

// Root is "<prefix>/<group>/": every key of the group starts with it.
func (l Layout) Root() string { return l.root }

// Members is the prefix of member keys.
func (l Layout) Members() string { return l.root + "members/" }

// Member is the key of member id.
func (l Layout) Member(id string) string { return l.Members() + id }

// Successor is the key a process writes, with its own lease, while it waits
// to register as member id (the ID is still held by an older session of
// it, a restart within the TTL). It sits under the member prefix, where the
// leader watches, yet never reads as a member key: "<id>/successor" is no
// valid ID.
func (l Layout) Successor(id string) string { return l.Member(id) + successorSuffix }

const successorSuffix = "/successor"

// SuccessorID returns the member ID of a successor key.
func (l Layout) SuccessorID(key string) (string, bool) {
	id, ok := strings.CutSuffix(key, successorSuffix)
	if !ok {
		return "", false
	}
	return ID(l.Members(), id)
}

// Handoffs is the prefix of member id's prepared-handoff inbox: the key
// Handoff(id, sync) says that the member a sync moves to has prepared it.
func (l Layout) Handoffs(id string) string { return l.root + "handoffs/" + id + "/" }

// Handoff is the key in member id's inbox for sync.
func (l Layout) Handoff(id, sync string) string { return l.Handoffs(id) + sync }

// Election is the prefix concurrency.Election campaigns under.
func (l Layout) Election() string { return l.root + "election" }

// Syncs is the prefix of sync spec keys.
func (l Layout) Syncs() string { return l.root + "syncs/" }

// Sync is the spec key of sync id.
func (l Layout) Sync(id string) string { return l.Syncs() + id }

// Targets is the prefix of per-member target keys.
func (l Layout) Targets() string { return l.root + "targets/" }

// Target is the target key of member id: the head of its target, which
// holds the whole target when it is small, or else says how many parts it
// has under TargetParts(id).
func (l Layout) Target(id string) string { return l.Targets() + id }

// TargetParts is the prefix of the parts of member id's target, with the
// trailing slash, so that it never covers another member's keys: part i is
// TargetParts(id) + i in decimal.
func (l Layout) TargetParts(id string) string { return l.Target(id) + "/" }

// LeaderStatus is the key where the leader reports a plan it could not
// write (guarded by the election; absent while all is well).
func (l Layout) LeaderStatus() string { return l.root + "status/leader" }

// Owners is the prefix of owner keys.
func (l Layout) Owners() string { return l.root + "owners/" }

// Owner is the owner key of sync id.
func (l Layout) Owner(id string) string { return l.Owners() + id }

// Checkpoints is the prefix of checkpoint keys.
func (l Layout) Checkpoints() string { return l.root + "checkpoints/" }

// Checkpoint is the checkpoint key of sync id.
func (l Layout) Checkpoint(id string) string { return l.Checkpoints() + id }

// ID returns the last segment of key under prefix p, and whether the key is
// directly under p with a valid ID. Keys written by hand with invalid IDs or
// nested paths are reported as not ok, never misread.
func ID(p, key string) (string, bool) {
	id, ok := strings.CutPrefix(key, p)
	if !ok || ValidateID("", id) != nil {
		return "", false
	}
	return id, true
}

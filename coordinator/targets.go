package coordinator

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/keys"
)

// A member's target is stored under targets/<member>. When it fits in one
// value (maxTargetValue), the head key holds it all:
//
//	targets/<m>    {"generation":g,"syncs":["a","b",…]}
//
// A larger one is split over parts under the member's own prefix (with the
// trailing slash, so member "a" never sees the keys of "a2"), and the head
// says how many there are:
//
//	targets/<m>    {"generation":g,"syncs":[],"parts":n}
//	targets/<m>/0  {"generation":g,"syncs":[…]}
//	…
//	targets/<m>/<n-1>
//
// The leader writes the parts before the head (the head goes in the last
// Txn of the member's writes, which may be one of several) and deletes
// parts it no longer needs after. A target is complete only when the head
// and all n parts carry the same generation; readers (the member, the
// leader's view, Describe) use complete targets only, so a write that
// failed half way is never taken for a plan. Generations are never reused
// by a leader, even for a write that failed, and a new leader starts above
// every generation it can read, so one generation names one write.
// They are variables only so that a test can make them small.
var (
	// maxTargetValue bounds one head or part value, well under etcd's
	// request limit. It is large so that a target members from before
	// parts could read (a lone target up to ~1.5 MiB) mostly stays in one
	// key: such a member reads a split head as an empty target. About
	// 55,000 IDs of 10 bytes fit.
	maxTargetValue = 768 << 10
	// maxTxnBytes bounds a leader Txn: etcd's --max-request-bytes is
	// 1.5 MiB by default; this stays well under it.
	maxTxnBytes = 1 << 20
)

// txnOpOverhead is what an op costs in a request beyond its key and value
// bytes (protobuf framing, a lease, a nested Txn's compare), rounded up.
const txnOpOverhead = 64

// targetRecord is the JSON of a target's head or of one of its parts.
type targetRecord struct {
	Generation int64    `json:"generation"`
	Syncs      []string `json:"syncs"`
	Parts      int      `json:"parts,omitempty"` // head only: the number of parts
	// Handoffs (head only): syncs this write takes away from the member
	// that go to a member whose Handler is a Preparer, by sync: the
	// member lets go of each once that one is ready (see Preparer).
	Handoffs map[string]string `json:"handoffs,omitempty"`
}

// maxHandoffBytes bounds the prepared handoffs one target write announces
// (about 2,000 of them with 10-byte IDs), so that the head of a large
// member's drain stays well within a request; the moves beyond it go on
// cold.
const maxHandoffBytes = 64 << 10

// encodeTarget is the JSON of one record holding syncs (sorted here).
func encodeTarget(gen int64, syncs []string) []byte {
	s := slices.Clone(syncs)
	slices.Sort(s)
	return encodeSorted(targetRecord{Generation: gen, Syncs: s})
}

func encodeSorted(r targetRecord) []byte {
	if r.Syncs == nil {
		r.Syncs = []string{}
	}
	b, _ := json.Marshal(r)
	return b
}

// splitTarget returns the records of the target of sorted syncs: the head
// alone when its JSON fits in limit bytes, else a head naming the parts
// and the parts, each within limit. The records share syncs' array.
func splitTarget(gen int64, syncs []string, limit int) (head targetRecord, parts []targetRecord) {
	const frame = len(`{"generation":,"syncs":[],"parts":}`) + 2*20
	size := frame
	for _, s := range syncs {
		size += len(s) + 3 // quotes and comma (IDs need no escaping)
	}
	if size <= limit {
		return targetRecord{Generation: gen, Syncs: syncs}, nil
	}
	start, size := 0, frame
	for i, s := range syncs {
		if size+len(s)+3 > limit && i > start {
			parts = append(parts, targetRecord{Generation: gen, Syncs: syncs[start:i:i]})
			start, size = i, frame
		}
		size += len(s) + 3
	}
	parts = append(parts, targetRecord{Generation: gen, Syncs: syncs[start:len(syncs):len(syncs)]})
	return targetRecord{Generation: gen, Syncs: []string{}, Parts: len(parts)}, parts
}

func decodeTarget(member string, value []byte) (targetRecord, error) {
	var t targetRecord
	if err := json.Unmarshal(value, &t); err != nil {
		return targetRecord{}, fmt.Errorf("coordinator: target of %q: %w", member, err)
	}
	if t.Parts < 0 {
		return targetRecord{}, fmt.Errorf("coordinator: target of %q: %d parts", member, t.Parts)
	}
	// A hand-written target may name anything: keep only valid IDs.
	t.Syncs = slices.DeleteFunc(t.Syncs, func(id string) bool { return keys.ValidateID("sync", id) != nil })
	slices.Sort(t.Syncs)
	t.Syncs = slices.Compact(t.Syncs)
	return t, nil
}

// targetKey splits a key under targets/ into the member and the suffix
// after the member ID: "" for the head, "/<i>" for part i (i in decimal, as
// partSuffix writes it). ok is false for any other key: it is not Baton's
// to read or delete (it may belong to a group whose prefix lies under this
// group's targets/, since every prefix segment is a valid ID).
func targetKey(k keys.Layout, key string) (member, suffix string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.Targets())
	if !ok {
		return "", "", false
	}
	member, part, split := strings.Cut(rest, "/")
	if keys.ValidateID("member", member) != nil {
		return "", "", false
	}
	if split {
		i, err := strconv.Atoi(part)
		if err != nil || i < 0 || partSuffix(i) != "/"+part {
			return "", "", false
		}
		suffix = "/" + part
	}
	return member, suffix, true
}

// partSuffix is the key suffix of part i.
func partSuffix(i int) string { return "/" + strconv.Itoa(i) }

// targetStatus says what a member's target keys amount to.
type targetStatus int

const (
	targetAbsent     targetStatus = iota // no head: the target is empty
	targetComplete                       // head and all its parts of one generation
	targetIncomplete                     // a part missing, unreadable or of another generation: a write in progress (or broken)
	targetUnreadable                     // the head cannot be read
)

// targetKV is one stored key of a target.
type targetKV struct {
	rev int64         // its mod revision
	rec *targetRecord // nil: unreadable
}

// targetKeys is what is stored under one member's target keys, by suffix
// (see targetKey). The leader's view, Describe and the member each keep one
// per member they follow, and read the target only through assemble.
type targetKeys struct {
	kvs map[string]targetKV

	assembled bool // the fields below are current
	status    targetStatus
	gen       int64
	syncs     []string
}

// apply records a put (or a delete) of one of this member's keys.
func (t *targetKeys) apply(member, suffix string, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
	if ev == mvccpb.DELETE {
		t.del(suffix)
		return
	}
	var rec *targetRecord
	if r, err := decodeTarget(member, kv.Value); err == nil {
		rec = &r
	}
	t.set(suffix, kv.ModRevision, rec)
}

func (t *targetKeys) set(suffix string, rev int64, rec *targetRecord) {
	if t.kvs == nil {
		t.kvs = map[string]targetKV{}
	}
	t.kvs[suffix] = targetKV{rev: rev, rec: rec}
	t.assembled = false
}

func (t *targetKeys) del(suffix string) {
	delete(t.kvs, suffix)
	t.assembled = false
}

func (t *targetKeys) empty() bool { return len(t.kvs) == 0 }

// assemble returns the target: its generation, its syncs (sorted; shared,
// not to be modified) and its status. Only a complete target's syncs are
// a plan; an absent one is empty.
func (t *targetKeys) assemble() (int64, []string, targetStatus) {
	if !t.assembled {
		t.gen, t.syncs, t.status = t.build()
		t.assembled = true
	}
	return t.gen, t.syncs, t.status
}

func (t *targetKeys) build() (int64, []string, targetStatus) {
	head, ok := t.kvs[""]
	switch {
	case !ok:
		return 0, nil, targetAbsent
	case head.rec == nil:
		return 0, nil, targetUnreadable
	case head.rec.Parts == 0:
		return head.rec.Generation, head.rec.Syncs, targetComplete
	case head.rec.Parts >= len(t.kvs):
		return head.rec.Generation, nil, targetIncomplete
	}
	gen := head.rec.Generation
	n := len(head.rec.Syncs)
	for i := range head.rec.Parts {
		p, ok := t.kvs[partSuffix(i)]
		if !ok || p.rec == nil || p.rec.Generation != gen || p.rec.Parts != 0 {
			return gen, nil, targetIncomplete
		}
		n += len(p.rec.Syncs)
	}
	syncs := make([]string, 0, n)
	syncs = append(syncs, head.rec.Syncs...)
	for i := range head.rec.Parts {
		syncs = append(syncs, t.kvs[partSuffix(i)].rec.Syncs...)
	}
	if !slices.IsSorted(syncs) { // only by hand: the leader splits a sorted list
		slices.Sort(syncs)
	}
	return gen, slices.Compact(syncs), targetComplete
}

// clean reports whether the keys are exactly what the leader writes for
// a target: absent, or complete with no key beside the head and its parts.
func (t *targetKeys) clean() bool {
	_, _, st := t.assemble()
	switch st {
	case targetAbsent:
		return len(t.kvs) == 0
	case targetComplete:
		return len(t.kvs) == 1+t.kvs[""].rec.Parts
	}
	return false
}

// memberTarget is a member's own target as the member follows it: its
// keys as read and watched, and the sync IDs it applied last, so that it
// applies each new complete target once and never an incomplete one (an
// incomplete target leaves the last one in force until it completes).
type memberTarget struct {
	member  string
	keys    targetKeys
	applied bool
	last    []string
}

// read records the keys of a snapshot (the head's and the parts').
func (t *memberTarget) read(k keys.Layout, member string, kvss ...[]*mvccpb.KeyValue) {
	t.member = member
	for _, kvs := range kvss {
		for _, kv := range kvs {
			t.apply(k, kv, mvccpb.PUT)
		}
	}
}

// events records watch events on the member's keys.
func (t *memberTarget) events(k keys.Layout, evs []*clientv3.Event) {
	for _, ev := range evs {
		t.apply(k, ev.Kv, ev.Type)
	}
}

func (t *memberTarget) apply(k keys.Layout, kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
	if m, suffix, ok := targetKey(k, string(kv.Key)); ok && m == t.member {
		t.keys.apply(m, suffix, kv, ev)
	}
}

// handoffs returns the generation of the target's head and the prepared
// handoffs it announces (nil if none, or no readable head).
func (t *memberTarget) handoffs() (int64, map[string]string) {
	head, ok := t.keys.kvs[""]
	if !ok || head.rec == nil {
		return 0, nil
	}
	return head.rec.Generation, head.rec.Handoffs
}

// next returns the target to apply, if there is a new one: a complete
// target that differs from the last one applied, or an empty one when the
// head is gone or unreadable.
func (t *memberTarget) next(log *slog.Logger) ([]string, bool) {
	gen, syncs, st := t.keys.assemble()
	switch st {
	case targetIncomplete:
		log.Debug("target incomplete (being written); the previous one stands", "generation", gen)
		return nil, false
	case targetUnreadable:
		syncs = nil
	}
	if t.applied && slices.Equal(t.last, syncs) {
		return nil, false
	}
	if st == targetUnreadable {
		log.Error("unreadable target, treating as empty")
	}
	t.applied, t.last = true, syncs
	return syncs, true
}

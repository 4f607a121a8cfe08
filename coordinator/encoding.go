package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
)

// syncEnvelope is the JSON stored at syncs/<id>.
type syncEnvelope struct {
	Weight int               `json:"weight,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Spec   json.RawMessage   `json:"spec,omitempty"`
}

// maxSpecBytes bounds a stored spec; etcd's own request limit is 1.5 MiB.
const maxSpecBytes = 1 << 20

// encodeSync validates sy and returns its envelope. Spec must be JSON (or
// empty), so that every spec a SyncStore writes can be read back.
func encodeSync(sy assignment.Sync) ([]byte, error) {
	if err := keys.ValidateID("sync", sy.ID); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	if sy.Weight < 0 {
		return nil, fmt.Errorf("coordinator: sync %q: weight %d must not be negative", sy.ID, sy.Weight)
	}
	if len(sy.Spec) > maxSpecBytes {
		return nil, fmt.Errorf("coordinator: sync %q: spec is %d bytes, the limit is %d", sy.ID, len(sy.Spec), maxSpecBytes)
	}
	spec := bytes.TrimSpace(sy.Spec)
	if len(spec) > 0 && !json.Valid(spec) {
		return nil, fmt.Errorf("coordinator: sync %q: %w: spec is not valid JSON", sy.ID, ErrInvalidSpec)
	}
	// The spec goes into the envelope as it is: json.Marshal would compact
	// a RawMessage and escape <, > and &, so List and Claim.Sync would not
	// give back the bytes that were Put. Only the whitespace around it is
	// trimmed (inside the envelope it would not survive a decode anyway).
	head, err := json.Marshal(syncEnvelope{Weight: sy.Weight, Labels: sy.Labels})
	if err != nil {
		return nil, fmt.Errorf("coordinator: sync %q: %w", sy.ID, err)
	}
	if len(spec) == 0 {
		return head, nil
	}
	out := make([]byte, 0, len(head)+len(spec)+len(`,"spec":`))
	out = append(out, head[:len(head)-1]...) // without the closing }
	if len(head) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"spec":`...)
	out = append(out, spec...)
	return append(out, '}'), nil
}

// decodeSync reads the envelope stored for sync id at revision rev. Anything
// written by hand that does not fit is an error wrapping ErrInvalidSpec.
func decodeSync(id string, value []byte, rev int64) (assignment.Sync, error) {
	var env syncEnvelope
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return assignment.Sync{}, fmt.Errorf("%w: sync %q: %v", ErrInvalidSpec, id, err)
	}
	if dec.More() {
		return assignment.Sync{}, fmt.Errorf("%w: sync %q: trailing data after the JSON object", ErrInvalidSpec, id)
	}
	if env.Weight < 0 {
		return assignment.Sync{}, fmt.Errorf("%w: sync %q: negative weight %d", ErrInvalidSpec, id, env.Weight)
	}
	sy := assignment.Sync{ID: id, Weight: env.Weight, Labels: env.Labels, Revision: rev}
	if len(env.Spec) > 0 && !bytes.Equal(env.Spec, []byte("null")) {
		sy.Spec = []byte(env.Spec)
	}
	return sy, nil
}

// memberRecord is the JSON stored at members/<id>.
type memberRecord struct {
	Weight   int               `json:"weight"`
	Labels   map[string]string `json:"labels,omitempty"`
	Draining bool              `json:"draining,omitempty"`
	// Prepares: the member's Handler is a Preparer, so a sync that moves
	// to it waits for its OnPrepare (see Preparer).
	Prepares bool `json:"prepares,omitempty"`
}

func encodeMember(m assignment.Member, prepares bool) []byte {
	b, _ := json.Marshal(memberRecord{Weight: m.Weight, Labels: m.Labels, Draining: m.Draining, Prepares: prepares})
	return b
}

// memberPrepares reads the Prepares flag of a member record.
func memberPrepares(value []byte) bool {
	var r memberRecord
	return json.Unmarshal(value, &r) == nil && r.Prepares
}

// handoffReady is the JSON at handoffs/<owner>/<sync>: member has prepared
// the sync, for the target of generation (so that an owner never takes a
// signal left from an earlier move for this one).
type handoffReady struct {
	Member     string `json:"member"`
	Generation int64  `json:"generation"`
}

// decodeMember reads a member record. Baton always writes a weight ≥ 1, so
// a record without one (null, {}, written by hand) is not a member.
func decodeMember(id string, value []byte) (assignment.Member, error) {
	var r *memberRecord
	if err := json.Unmarshal(value, &r); err != nil {
		return assignment.Member{}, fmt.Errorf("coordinator: member %q: %w", id, err)
	}
	if r == nil || r.Weight < 1 {
		return assignment.Member{}, fmt.Errorf("coordinator: member %q: no weight ≥ 1 in %.40q", id, value)
	}
	return assignment.Member{ID: id, Weight: r.Weight, Labels: maps.Clone(r.Labels), Draining: r.Draining}, nil
}

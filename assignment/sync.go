package assignment

import "maps"

// Sync is one unit of work that must run on exactly one member at a time.
type Sync struct {
	// ID names the sync: 1–128 bytes of [A-Za-z0-9._:-].
	ID string `json:"id"`
	// Weight is the sync's cost in capacity units; 0 is read as 1.
	Weight int `json:"weight,omitempty"`
	// Labels describe the sync to a Balancer (placement constraints, spread).
	Labels map[string]string `json:"labels,omitempty"`
	// Spec is the user's payload, opaque to Baton.
	Spec []byte `json:"spec,omitempty"`
	// Revision is the etcd mod revision of the sync's spec (0 if not stored).
	Revision int64 `json:"revision,omitempty"`
}

// EffectiveWeight returns the sync's weight, reading 0 or less as 1.
func (s Sync) EffectiveWeight() int {
	if s.Weight < 1 {
		return 1
	}
	return s.Weight
}

// Clone returns a deep copy, so the copy's labels and spec may be changed
// without affecting s.
func (s Sync) Clone() Sync {
	s.Labels = maps.Clone(s.Labels)
	if s.Spec != nil {
		s.Spec = append([]byte(nil), s.Spec...)
	}
	return s
}

// Member is one live worker process of a group, as the leader sees it.
type Member struct {
	// ID names the member: 1–128 bytes of [A-Za-z0-9._:-].
	ID string `json:"id"`
	// Weight is the member's capacity in units; 0 is read as 1.
	Weight int `json:"weight,omitempty"`
	// Labels describe the member (zone, region, hardware) to a Balancer.
	Labels map[string]string `json:"labels,omitempty"`
	// Draining is set while the member asks for its syncs to be moved away.
	Draining bool `json:"draining,omitempty"`
}

// EffectiveWeight returns the member's weight, reading 0 or less as 1.
func (m Member) EffectiveWeight() int {
	if m.Weight < 1 {
		return 1
	}
	return m.Weight
}

// Clone returns a deep copy of m.
func (m Member) Clone() Member {
	m.Labels = maps.Clone(m.Labels)
	return m
}

// Plan maps a sync ID to the ID of the member that should run it. A sync
// missing from a plan is unassigned.
type Plan map[string]string

// Clone returns a copy of p.
func (p Plan) Clone() Plan {
	if p == nil {
		return Plan{}
	}
	return maps.Clone(p)
}

// Moves counts the syncs whose member differs between p and next, including
// syncs that become assigned or unassigned.
func (p Plan) Moves(next Plan) int {
	n := 0
	for id, m := range next {
		if p[id] != m {
			n++
		}
	}
	for id := range p {
		if _, ok := next[id]; !ok {
			n++
		}
	}
	return n
}

// ByMember groups p by member: member ID to the sync IDs it runs, unsorted.
func (p Plan) ByMember() map[string][]string {
	out := make(map[string][]string)
	for s, m := range p {
		out[m] = append(out[m], s)
	}
	return out
}

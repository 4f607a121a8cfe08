package rebalance

import (
	"fmt"
	"maps"
	"math/big"
	"slices"

	"github.com/baton-go/baton/assignment"
)

// members returns n members m000, m001, … of weight 1.
func members(n int) []assignment.Member {
	ms := make([]assignment.Member, n)
	for i := range ms {
		ms[i] = assignment.Member{ID: fmt.Sprintf("m%03d", i), Weight: 1}
	}
	return ms
}

// syncs returns n syncs s00000, s00001, … of weight 1.
func syncs(n int) []assignment.Sync {
	ss := make([]assignment.Sync, n)
	for i := range ss {
		ss[i] = assignment.Sync{ID: fmt.Sprintf("s%05d", i), Weight: 1}
	}
	return ss
}

// loads returns each member's total sync weight under p.
func loads(in Input, p assignment.Plan) map[string]int64 {
	w := map[string]int64{}
	for _, s := range in.Syncs {
		w[s.ID] = int64(s.EffectiveWeight())
	}
	out := map[string]int64{}
	for _, m := range in.Members {
		out[m.ID] = 0
	}
	for s, m := range p {
		out[m] += w[s]
	}
	return out
}

// counts returns how many syncs each member runs under p.
func counts(in Input, p assignment.Plan) map[string]int {
	out := map[string]int{}
	for _, m := range in.Members {
		out[m.ID] = 0
	}
	for _, m := range p {
		out[m]++
	}
	return out
}

// moved returns the syncs (of in) whose owner differs between a and b.
func moved(in Input, a, b assignment.Plan) []string {
	var out []string
	for _, s := range in.Syncs {
		if a[s.ID] != b[s.ID] {
			out = append(out, s.ID)
		}
	}
	return out
}

// unconstrained reports whether in has no require: labels and at least one
// non-draining member, so that the balance bound applies to the
// non-draining members.
func unconstrained(in Input) bool {
	for _, s := range in.Syncs {
		for k := range s.Labels {
			if len(k) >= len(RequirePrefix) && k[:len(RequirePrefix)] == RequirePrefix {
				return false
			}
		}
	}
	return slices.ContainsFunc(in.Members, func(m assignment.Member) bool { return !m.Draining })
}

// balanceError returns the first non-draining member whose load differs
// from its share (total sync weight × its weight / total non-draining
// weight) by bound or more, computed exactly; "" if none does.
func balanceError(in Input, p assignment.Plan, bound func(maxSync int64) *big.Rat) string {
	var total, weight, maxSync int64
	for _, s := range in.Syncs {
		total += int64(s.EffectiveWeight())
		maxSync = max(maxSync, int64(s.EffectiveWeight()))
	}
	for _, m := range in.Members {
		if !m.Draining {
			weight += int64(m.EffectiveWeight())
		}
	}
	l := loads(in, p)
	b := bound(maxSync)
	for _, id := range slices.Sorted(maps.Keys(l)) {
		m := in.Members[slices.IndexFunc(in.Members, func(m assignment.Member) bool { return m.ID == id })]
		if m.Draining {
			if l[id] != 0 {
				return fmt.Sprintf("draining member %s has load %d", id, l[id])
			}
			continue
		}
		share := big.NewRat(total*int64(m.EffectiveWeight()), weight)
		diff := new(big.Rat).Sub(big.NewRat(l[id], 1), share)
		if diff.Sign() != 0 && diff.Abs(diff).Cmp(b) >= 0 {
			return fmt.Sprintf("member %s (weight %d) has load %d, share %s, bound %s", id, m.EffectiveWeight(), l[id], share.FloatString(3), b.FloatString(3))
		}
	}
	return ""
}

func mustValid(t interface {
	Helper()
	Fatalf(string, ...any)
}, in Input, p assignment.Plan) {
	t.Helper()
	if err := Validate(in, p); err != nil {
		t.Fatalf("invalid plan: %v", err)
	}
}

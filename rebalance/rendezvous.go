package rebalance

import (
	"context"
	"math"
	"math/bits"

	"github.com/baton-go/baton/assignment"
)

// loadBound is Rendezvous's cap on a member's load, as a multiple of its
// fair share: the 1+ε of "Consistent Hashing with Bounded Loads" (Mirrokni,
// Thorup, Zadimoghaddam, 2018) with ε = 0.25, which keeps the extra moves
// per membership change small while no member runs more than 25% over.
const loadBound = 1.25

// Rendezvous returns a [Balancer] using highest-random-weight (rendezvous)
// hashing with bounded loads. Every sync ranks its eligible members by a
// hash of the sync's and the member's IDs, scaled by the member's weight
// (weighted rendezvous hashing: score = weight / −ln(hash as a fraction of
// 2⁶⁴)), and goes to the best-ranked member whose load stays within 1.25
// times its fair share (rounded up); syncs are placed in ID order. If no
// eligible member has room under its cap (heavy syncs, or constraints that
// crowd a few members), the sync goes to the eligible member with the least
// load per unit of weight. It is safe for concurrent use.
//
// Rendezvous ignores Current: stability comes from the hash. When a member
// joins, the syncs that rank it first move to it (about N/(n+1)); when one
// leaves, only its syncs move, each to its next choice; the cap adds a few
// moves where it pushes syncs past full members. It needs no state and
// costs O(N × n) hash evaluations.
func Rendezvous() Balancer {
	return BalancerFunc(func(ctx context.Context, in Input) (assignment.Plan, error) {
		if ctx.Err() != nil {
			return nil, stopped(ctx)
		}
		p, err := prepare(ctx, in)
		if err != nil {
			return nil, err
		}
		r, err := newRendezvous(p)
		if err != nil {
			return nil, err
		}
		plan := make(assignment.Plan, len(p.syncs))
		for i, s := range p.syncs {
			g := p.syncGroup[i]
			if g < 0 {
				continue
			}
			if err := p.add(len(p.groups[g].members)); err != nil { // a hash per candidate
				return nil, err
			}
			w := p.syncWeight[i]
			best := r.bestUnderCap(g, hashString(s.ID), w)
			if best < 0 {
				best = leastFilled(p, r.load, p.groups[g].members, w)
			}
			plan[s.ID] = p.members[best].ID
			r.load[best] += w
		}
		return plan, nil
	})
}

// rendezvous is one run of Rendezvous.
type rendezvous struct {
	p          *problem
	limit      []int64  // per member: the cap on its load, loadBound × its fair share, rounded up
	memberHash []uint64 // per member: the hash of its ID
	uniform    []bool   // per group: whether its candidates all weigh the same
	load       []int64  // per member: the weight of the syncs placed on it so far
}

// newRendezvous prepares a run of Rendezvous over p: each member's cap and
// hash, and which groups are uniform. It returns the context's error once
// p's context is done.
func newRendezvous(p *problem) (*rendezvous, error) {
	share, err := p.fairShares()
	if err != nil {
		return nil, err
	}
	r := &rendezvous{
		p:          p,
		limit:      make([]int64, len(p.members)),
		memberHash: make([]uint64, len(p.members)),
		uniform:    make([]bool, len(p.groups)),
		load:       make([]int64, len(p.members)),
	}
	for m := range p.members {
		r.limit[m] = int64(math.Ceil(loadBound * share[m]))
		r.memberHash[m] = hashString(p.members[m].ID)
	}
	// Groups whose candidates weigh the same compare raw hashes, which
	// ranks them exactly as the weighted score would, without a logarithm.
	for g, gr := range p.groups {
		if err := p.add(len(gr.members)); err != nil {
			return nil, err
		}
		r.uniform[g] = true
		for _, m := range gr.members {
			r.uniform[g] = r.uniform[g] && p.memberWeight[m] == p.memberWeight[gr.members[0]]
		}
	}
	return r, nil
}

// bestUnderCap returns the candidate of group g that ranks highest for a
// sync with hash h among those whose load stays within their cap with the
// sync's weight w added, the first on a tie; -1 if none has room.
func (r *rendezvous) bestUnderCap(g int32, h uint64, w int64) int32 {
	p := r.p
	best := int32(-1)
	var bestHash uint64
	var bestScore float64
	for _, m := range p.groups[g].members {
		if r.load[m]+w > r.limit[m] {
			continue
		}
		x := mix(h, r.memberHash[m])
		if r.uniform[g] {
			if best < 0 || x > bestHash {
				best, bestHash = m, x
			}
			continue
		}
		u := (float64(x>>11) + 0.5) / (1 << 53) // in (0, 1)
		mw := float64(p.memberWeight[m])
		// −ln(u) ≥ 1 − u, so mw / (1 − u) bounds the score from above:
		// most members are ruled out without computing a logarithm.
		if best >= 0 && mw/(1-u) <= bestScore {
			continue
		}
		if score := mw / -math.Log(u); best < 0 || score > bestScore {
			best, bestScore = m, score
		}
	}
	return best
}

// leastFilled returns the member of ms with the least (load + w) per unit of
// weight, the first on a tie.
func leastFilled(p *problem, load []int64, ms []int32, w int64) int32 {
	best := ms[0]
	for _, m := range ms[1:] {
		hm, lm := bits.Mul64(uint64(load[m]+w), uint64(p.memberWeight[best]))
		hb, lb := bits.Mul64(uint64(load[best]+w), uint64(p.memberWeight[m]))
		if hm < hb || hm == hb && lm < lb {
			best = m
		}
	}
	return best
}

// hashString is 64-bit FNV-1a, written out to avoid allocating.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix combines a sync's and a member's hash into one well-mixed 64-bit
// value (the splitmix64 finalizer), so that each sync ranks the members
// independently.
func mix(a, b uint64) uint64 {
	x := a ^ (b * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

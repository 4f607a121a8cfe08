package rebalance

import (
	"fmt"
	"math/bits"
	"testing"
)

// Sticky's heap work is O(N log n) plus work per constraint group (its
// candidates), not work per sync times the groups a member belongs to. It is
// counted in heap comparisons, which, unlike time, a shared machine does not
// disturb. With k binary labels a member is a candidate of up to 2^k groups;
// the bound below does not grow with that, so Sticky must not touch every
// group of a member each time the member gains or loses a sync.
func TestStickyWorkPerConstraintGroup(t *testing.T) {
	for _, keys := range []int{0, 2, 4, 6, 8} {
		for _, join := range []bool{false, true} {
			t.Run(fmt.Sprintf("keys=%d/join=%v", keys, join), func(t *testing.T) {
				in := constrainedInput(20_000, 200, keys, true)
				if join {
					before := in
					before.Members = in.Members[:len(in.Members)-1]
					in.Current = balance(t, Sticky(), before)
				}
				p, err := newProblem(in)
				if err != nil {
					t.Fatal(err)
				}
				s, err := newStickyState(p, stickyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				comparisons := 0
				for g := range s.groups {
					for _, h := range []*slotHeap{&s.groups[g].room, &s.groups[g].holders} {
						less := h.less
						h.less = func(a, b int32) bool { comparisons++; return less(a, b) }
					}
				}
				s.keep(in.Current, -1)
				if err := s.place(); err != nil {
					t.Fatal(err)
				}
				if err := s.settle(); err != nil {
					t.Fatal(err)
				}
				mustValid(t, in, s.plan())
				// Placing or moving a sync costs O(log n) comparisons in its
				// own group; bringing a group's heaps up to date costs at
				// most O(|candidates|) per pass over the groups.
				work := len(p.syncs) * bits.Len(uint(len(p.members)))
				for _, g := range p.groups {
					work += len(g.members) * bits.Len(uint(len(g.members)))
				}
				t.Logf("%d groups, %d comparisons, %.2f per unit of work", len(p.groups), comparisons, float64(comparisons)/float64(work))
				if comparisons > 4*work {
					t.Errorf("%d heap comparisons for %d syncs on %d members in %d groups: more than 4 × %d", comparisons, len(p.syncs), len(p.members), len(p.groups), work)
				}
			})
		}
	}
}

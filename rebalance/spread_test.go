package rebalance

import (
	"fmt"
	"testing"

	"github.com/baton-go/baton/assignment"
)

// twoTenantsInput: 100 members in two zones and two tenants of 5,000 syncs
// each, every tenant running wholly in one zone (Current), as after a
// Spread option is switched on for a group that ran without it. zoneOf
// gives member i's zone.
func twoTenantsInput(zoneOf func(i int) int) Input {
	var in Input
	in.Current = assignment.Plan{}
	var inZone [2][]string
	for i := range 100 {
		id := fmt.Sprintf("m%03d", i)
		z := zoneOf(i)
		in.Members = append(in.Members, assignment.Member{ID: id, Labels: map[string]string{"zone": fmt.Sprintf("z%d", z)}})
		inZone[z] = append(inZone[z], id)
	}
	for tn := range 2 {
		for k := range 5000 {
			id := fmt.Sprintf("t%d-%04d", tn, k)
			in.Syncs = append(in.Syncs, assignment.Sync{ID: id, Labels: map[string]string{"tenant": fmt.Sprintf("t%d", tn)}})
			in.Current[id] = inZone[tn][k%len(inZone[tn])]
		}
	}
	return in
}

// perTenantZone counts each tenant's syncs per zone under p.
func perTenantZone(in Input, p assignment.Plan) map[string]map[string]int {
	zone := map[string]string{}
	for _, m := range in.Members {
		zone[m.ID] = m.Labels["zone"]
	}
	out := map[string]map[string]int{}
	for _, s := range in.Syncs {
		tn := s.Labels["tenant"]
		if out[tn] == nil {
			out[tn] = map[string]int{}
		}
		out[tn][zone[p[s.ID]]]++
	}
	return out
}

// Spread evens out tenants that run wholly in one zone each: 100 members
// in two zones, two tenants of 5,000 syncs. Every member already holds its
// share, so spreading can only swap syncs between zones; it must reach an
// even split (within one) in one call, moving no more than the 2,500 syncs
// per tenant that an even split needs, and a rerun must move nothing.
func TestStickySpreadSwapsConverge(t *testing.T) {
	layouts := []struct {
		name   string
		zoneOf func(int) int
	}{{"alternating", func(i int) int { return i % 2 }}, {"halves", func(i int) int { return i / 50 }}}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			in := twoTenantsInput(l.zoneOf)
			b := Sticky(Spread("tenant", "zone"))
			check := func(what string, p assignment.Plan) {
				t.Helper()
				mustValid(t, in, p)
				for tn, zones := range perTenantZone(in, p) {
					if d := zones["z0"] - zones["z1"]; d < -1 || d > 1 {
						t.Fatalf("%s: tenant %s split %d : %d over the zones, want 2500 : 2500", what, tn, zones["z0"], zones["z1"])
					}
				}
			}
			p := balance(t, b, in)
			check("first call", p)
			if n := len(moved(in, in.Current, p)); n > 5000 {
				t.Fatalf("first call moved %d syncs, an even split needs 5000", n)
			}
			in.Current = p
			again := balance(t, b, in)
			check("rerun", again)
			if n := len(moved(in, p, again)); n > 0 {
				t.Fatalf("rerun moved %d syncs", n)
			}
		})
	}
}

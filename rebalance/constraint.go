package rebalance

import (
	"strings"

	"github.com/baton-go/baton/assignment"
)

// RequirePrefix marks a sync label as a placement constraint: a sync label
// "require:<name>" with value v may run only on a member whose label <name>
// exists and equals v. For example the sync label "require:region": "eu"
// needs a member labelled region=eu. Other sync labels are free-form (for
// example the tenant that [Spread] reads).
const RequirePrefix = "require:"

// Eligible reports whether m meets every constraint of s: for each sync
// label "require:<name>" = v, m has the label <name> with value exactly v.
// A sync without require: labels may run on any member. Eligible does not
// look at m.Draining; see the package documentation for draining.
func Eligible(m assignment.Member, s assignment.Sync) bool {
	for k, v := range s.Labels {
		name, ok := strings.CutPrefix(k, RequirePrefix)
		if !ok {
			continue
		}
		if mv, ok := m.Labels[name]; !ok || mv != v {
			return false
		}
	}
	return true
}

// Unassignable returns, sorted, the IDs of the syncs in in.Syncs that no
// member in in.Members is eligible for (draining members count as eligible).
// Every valid plan leaves exactly these syncs unassigned. Duplicate sync IDs
// are reported once.
func Unassignable(in Input) []string {
	p, _ := newProblem(in) // duplicates are tolerated here: the answer is still well defined
	var out []string
	for i, g := range p.syncGroup {
		if g < 0 && (i == 0 || p.syncs[i].ID != p.syncs[i-1].ID) {
			out = append(out, p.syncs[i].ID)
		}
	}
	return out
}

package rebalance

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/baton-go/baton/assignment"
)

// maxReported bounds how many violations Validate spells out: a badly
// broken plan over many syncs should yield a readable error, not megabytes.
const maxReported = 20

// Validate checks p against in and returns nil if p is a plan the leader may
// write, else an error wrapping [ErrInvalidPlan] that joins one [*PlanError]
// per violation (sorted by sync ID; after the first 20 it only counts the
// rest). The rules, which every built-in [Balancer] keeps:
//
//   - every sync in p is in in.Syncs ([ErrUnknownSync]);
//   - every member in p is in in.Members ([ErrUnknownMember]);
//   - the member meets the sync's require: labels ([ErrIneligible], see
//     [Eligible]);
//   - the member is not draining unless every eligible member is
//     ([ErrDraining]);
//   - every sync that some member is eligible for is in p ([ErrUnassigned]);
//     syncs that no member is eligible for ([Unassignable]) are not.
//
// Validate also rejects an Input with duplicate IDs ([ErrInvalidInput]).
func Validate(in Input, p assignment.Plan) error {
	prob, err := newProblem(in)
	if err != nil {
		return err
	}
	var errs []*PlanError
	// Walk the syncs in order and look each up in p: one map lookup per
	// sync, and the candidate lists answer eligibility without reading
	// labels on the common, valid path.
	found := 0
	for i, s := range prob.syncs {
		g := prob.syncGroup[i]
		mid, ok := p[s.ID]
		if !ok {
			if g >= 0 {
				errs = append(errs, &PlanError{Sync: s.ID, Member: prob.members[prob.groups[g].members[0]].ID, Reason: ErrUnassigned})
			}
			continue
		}
		found++
		m, ok := prob.memberIndex[mid]
		switch {
		case !ok:
			errs = append(errs, &PlanError{Sync: s.ID, Member: mid, Reason: ErrUnknownMember})
		case g >= 0 && prob.hasCandidate(g, m):
			// valid
		case !Eligible(prob.members[m], s):
			errs = append(errs, &PlanError{Sync: s.ID, Member: mid, Reason: ErrIneligible})
		default: // eligible but not a candidate: draining while others are not
			errs = append(errs, &PlanError{Sync: s.ID, Member: mid, Reason: ErrDraining})
		}
	}
	if found < len(p) {
		known := make(map[string]bool, len(prob.syncs))
		for _, s := range prob.syncs {
			known[s.ID] = true
		}
		for sid, mid := range p {
			if !known[sid] {
				errs = append(errs, &PlanError{Sync: sid, Member: mid, Reason: ErrUnknownSync})
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	slices.SortFunc(errs, func(a, b *PlanError) int {
		if a.Sync != b.Sync {
			return strings.Compare(a.Sync, b.Sync)
		}
		return strings.Compare(a.Member, b.Member)
	})
	joined := make([]error, 0, min(len(errs), maxReported)+1)
	for _, e := range errs[:min(len(errs), maxReported)] {
		joined = append(joined, e)
	}
	if n := len(errs) - maxReported; n > 0 {
		joined = append(joined, fmt.Errorf("%w: and %d more violations", ErrInvalidPlan, n))
	}
	return errors.Join(joined...)
}

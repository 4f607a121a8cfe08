package rebalance

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidPlan is wrapped by every error [Validate] returns.
	ErrInvalidPlan = errors.New("rebalance: invalid plan")
	// ErrUnknownSync: the plan assigns a sync that is not in the input.
	ErrUnknownSync = errors.New("rebalance: unknown sync")
	// ErrUnknownMember: the plan assigns a sync to a member that is not live.
	ErrUnknownMember = errors.New("rebalance: member not live")
	// ErrUnassigned: the plan leaves a sync unassigned although a live member
	// is eligible for it.
	ErrUnassigned = errors.New("rebalance: sync unassigned although a member is eligible")
	// ErrIneligible: the member does not meet the sync's require: labels.
	ErrIneligible = errors.New("rebalance: member does not meet the sync's constraints")
	// ErrDraining: the member is draining while another eligible member is not.
	ErrDraining = errors.New("rebalance: member is draining while an eligible member is not")
	// ErrInvalidInput: the Input breaks the Balancer contract (duplicate IDs).
	ErrInvalidInput = errors.New("rebalance: invalid input")
)

// PlanError is one violation found by [Validate]. It matches
// [ErrInvalidPlan] and its Reason with errors.Is.
type PlanError struct {
	Sync   string // the sync concerned
	Member string // the member it is assigned to, or for ErrUnassigned an eligible member
	Reason error  // one of ErrUnknownSync, ErrUnknownMember, ErrUnassigned, ErrIneligible, ErrDraining
}

// Error names the sync, the member and what is wrong, for example
// `rebalance: invalid plan: sync "a" on member "b": member not live`.
func (e *PlanError) Error() string {
	reason := strings.TrimPrefix(e.Reason.Error(), "rebalance: ")
	if e.Reason == ErrUnassigned {
		return fmt.Sprintf("rebalance: invalid plan: sync %q: %s (member %q)", e.Sync, reason, e.Member)
	}
	return fmt.Sprintf("rebalance: invalid plan: sync %q on member %q: %s", e.Sync, e.Member, reason)
}

// Unwrap lets errors.Is match both ErrInvalidPlan and the specific reason.
func (e *PlanError) Unwrap() []error { return []error{ErrInvalidPlan, e.Reason} }

package rebalance

import (
	"errors"
	"strings"
	"testing"

	"github.com/baton-go/baton/assignment"
)

func validateInput() Input {
	return Input{
		Members: []assignment.Member{
			{ID: "eu-1", Labels: map[string]string{"region": "eu"}},
			{ID: "eu-2", Labels: map[string]string{"region": "eu"}, Draining: true},
			{ID: "us-1", Labels: map[string]string{"region": "us"}, Draining: true},
		},
		Syncs: []assignment.Sync{
			{ID: "free"},
			{ID: "in-eu", Labels: map[string]string{"require:region": "eu"}},
			{ID: "in-us", Labels: map[string]string{"require:region": "us"}},
			{ID: "on-mars", Labels: map[string]string{"require:region": "mars"}},
		},
	}
}

func TestValidateAccepts(t *testing.T) {
	in := validateInput()
	// in-us may only run on a draining member, which is then allowed.
	ok := assignment.Plan{"free": "eu-1", "in-eu": "eu-1", "in-us": "us-1"}
	if err := Validate(in, ok); err != nil {
		t.Fatalf("valid plan rejected: %v", err)
	}
	if err := Validate(Input{}, nil); err != nil {
		t.Fatalf("empty input: %v", err)
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		plan   assignment.Plan
		reason error
		sync   string
		member string
	}{
		{"unknown sync", assignment.Plan{"free": "eu-1", "in-eu": "eu-1", "in-us": "us-1", "ghost": "eu-1"}, ErrUnknownSync, "ghost", "eu-1"},
		{"member not live", assignment.Plan{"free": "gone", "in-eu": "eu-1", "in-us": "us-1"}, ErrUnknownMember, "free", "gone"},
		{"missing", assignment.Plan{"in-eu": "eu-1", "in-us": "us-1"}, ErrUnassigned, "free", "eu-1"},
		{"missing, only draining eligible", assignment.Plan{"free": "eu-1", "in-eu": "eu-1"}, ErrUnassigned, "in-us", "us-1"},
		{"constraint", assignment.Plan{"free": "eu-1", "in-eu": "us-1", "in-us": "us-1"}, ErrIneligible, "in-eu", "us-1"},
		{"unassignable placed", assignment.Plan{"free": "eu-1", "in-eu": "eu-1", "in-us": "us-1", "on-mars": "eu-1"}, ErrIneligible, "on-mars", "eu-1"},
		{"draining", assignment.Plan{"free": "eu-2", "in-eu": "eu-1", "in-us": "us-1"}, ErrDraining, "free", "eu-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(validateInput(), tc.plan)
			if err == nil {
				t.Fatal("invalid plan accepted")
			}
			if !errors.Is(err, ErrInvalidPlan) || !errors.Is(err, tc.reason) {
				t.Fatalf("error %q does not match ErrInvalidPlan and %v", err, tc.reason)
			}
			var pe *PlanError
			if !errors.As(err, &pe) || pe.Sync != tc.sync || pe.Member != tc.member {
				t.Fatalf("PlanError = %+v, want sync %q member %q", pe, tc.sync, tc.member)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "rebalance: ") || !strings.Contains(msg, `"`+tc.sync+`"`) || !strings.Contains(msg, `"`+tc.member+`"`) {
				t.Fatalf("message %q should start with the package and name sync %q and member %q", msg, tc.sync, tc.member)
			}
		})
	}
}

func TestValidateReportsEveryViolationBriefly(t *testing.T) {
	in := Input{Members: members(2), Syncs: syncs(100)}
	err := Validate(in, assignment.Plan{"s00007": "nobody"})
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxReported+1 || !strings.Contains(lines[maxReported], "and 80 more") {
		t.Fatalf("want %d violations and a count of the rest, got:\n%s", maxReported, err)
	}
	if !strings.Contains(lines[0], `"s00000"`) {
		t.Fatalf("violations should be sorted by sync, first is %q", lines[0])
	}
}

func TestValidateDuplicateIDs(t *testing.T) {
	in := Input{Members: append(members(2), members(1)...), Syncs: syncs(1)}
	if err := Validate(in, assignment.Plan{"s00000": "m000"}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("duplicate member: got %v", err)
	}
	in = Input{Members: members(1), Syncs: append(syncs(1), syncs(1)...)}
	if err := Validate(in, assignment.Plan{"s00000": "m000"}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("duplicate sync: got %v", err)
	}
	for name, b := range balancers() {
		if _, err := b.Balance(t.Context(), in); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%s: duplicate sync: got %v", name, err)
		}
	}
}

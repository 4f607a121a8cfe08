package rebalance

import (
	"slices"
	"testing"

	"github.com/baton-go/baton/assignment"
)

func TestEligible(t *testing.T) {
	eu := assignment.Member{ID: "a", Labels: map[string]string{"region": "eu", "disk": "ssd"}}
	bare := assignment.Member{ID: "b"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		m      assignment.Member
		want   bool
	}{
		{"no labels", nil, bare, true},
		{"free-form labels only", map[string]string{"tenant": "acme", "region": "us"}, bare, true},
		{"met", map[string]string{"require:region": "eu"}, eu, true},
		{"all met", map[string]string{"require:region": "eu", "require:disk": "ssd"}, eu, true},
		{"wrong value", map[string]string{"require:region": "us"}, eu, false},
		{"one of two unmet", map[string]string{"require:region": "eu", "require:disk": "hdd"}, eu, false},
		{"label missing", map[string]string{"require:region": "eu"}, bare, false},
		{"empty value needs the label", map[string]string{"require:gpu": ""}, eu, false},
		{"empty value met", map[string]string{"require:gpu": ""}, assignment.Member{Labels: map[string]string{"gpu": ""}}, true},
		{"prefix is case sensitive", map[string]string{"Require:region": "us"}, eu, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Eligible(tc.m, assignment.Sync{ID: "s", Labels: tc.labels}); got != tc.want {
				t.Fatalf("Eligible = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUnassignable(t *testing.T) {
	in := Input{
		Members: []assignment.Member{
			{ID: "eu-1", Labels: map[string]string{"region": "eu"}},
			{ID: "us-1", Labels: map[string]string{"region": "us"}, Draining: true},
		},
		Syncs: []assignment.Sync{
			{ID: "c", Labels: map[string]string{"require:region": "mars"}},
			{ID: "a", Labels: map[string]string{"require:region": "eu"}},
			{ID: "b", Labels: map[string]string{"require:region": "us"}}, // draining members count
			{ID: "d", Labels: map[string]string{"require:region": "eu", "require:gpu": "yes"}},
			{ID: "e"},
		},
	}
	if got, want := Unassignable(in), []string{"c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("Unassignable = %v, want %v", got, want)
	}
	if got := Unassignable(Input{Syncs: syncs(2)}); !slices.Equal(got, []string{"s00000", "s00001"}) {
		t.Fatalf("without members every sync is unassignable, got %v", got)
	}
}

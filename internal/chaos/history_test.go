package chaos_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/baton-go/baton/internal/chaos"
)

// TestMatchHistory checks TestProcesses' comparison of etcd's checkpoint
// history with the fenced logs on histories made by hand: each rule must
// reject what it forbids and accept what etcd may legitimately do.
func TestMatchHistory(t *testing.T) {
	val := func(m string, token, seq int64) chaos.Value {
		return chaos.Value{Member: m, Token: token, Seq: seq, Kind: chaos.KindCheckpoint}
	}
	done := func(m string, token, seq int64) chaos.Write {
		return chaos.Write{Member: m, Sync: "s", Token: token, Seq: seq, Kind: chaos.KindCheckpoint, OK: true}
	}
	failed := func(m string, token, seq int64, err string) chaos.Write {
		return chaos.Write{Member: m, Sync: "s", Token: token, Seq: seq, Kind: chaos.KindCheckpoint, Err: err}
	}
	for _, tc := range []struct {
		name    string
		hist    []chaos.Value
		writes  []chaos.Write
		killed  string
		unknown int
		want    string // substring of the one error expected; "" for none
	}{
		{name: "clean handover",
			hist:   []chaos.Value{val("a", 10, 1), val("a", 10, 2), val("b", 20, 1)},
			writes: []chaos.Write{done("a", 10, 1), done("a", 10, 2), failed("a", 10, 3, "not-owner"), done("b", 20, 1)}},
		{name: "applied but the answer timed out (paused with the request in flight)",
			hist:    []chaos.Value{val("a", 10, 1), val("a", 10, 2), val("b", 20, 1)},
			writes:  []chaos.Write{done("a", 10, 1), failed("a", 10, 2, "context deadline exceeded"), done("b", 20, 1)},
			unknown: 1},
		{name: "timed out and not applied",
			hist:   []chaos.Value{val("a", 10, 1), val("b", 20, 1)},
			writes: []chaos.Write{done("a", 10, 1), failed("a", 10, 2, "context deadline exceeded"), done("b", 20, 1)}},
		{name: "refused yet applied",
			hist:   []chaos.Value{val("a", 10, 1), val("a", 10, 2)},
			writes: []chaos.Write{done("a", 10, 1), failed("a", 10, 2, "not-owner")},
			want:   "refused as not-owner is in etcd's history"},
		{name: "done but not applied",
			hist:   []chaos.Value{val("a", 10, 1)},
			writes: []chaos.Write{done("a", 10, 1), done("a", 10, 2)},
			want:   "logged as done is not in etcd's history"},
		{name: "unlogged write of a live member",
			hist:   []chaos.Value{val("a", 10, 1), val("a", 10, 2)},
			writes: []chaos.Write{done("a", 10, 1)},
			want:   "that no log holds"},
		{name: "last write of a killed member",
			hist:   []chaos.Value{val("a", 10, 1), val("a", 10, 2), val("b", 20, 1)},
			writes: []chaos.Write{done("a", 10, 1), done("b", 20, 1)},
			killed: "a"},
		{name: "two unlogged writes of a killed member",
			hist:   []chaos.Value{val("a", 10, 1), val("a", 10, 2), val("a", 10, 3)},
			writes: []chaos.Write{done("a", 10, 1)},
			killed: "a",
			want:   "more than one write taken by etcd but not logged"},
		{name: "old owner after new owner",
			hist:   []chaos.Value{val("a", 10, 1), val("b", 20, 1), val("a", 10, 2)},
			writes: []chaos.Write{done("a", 10, 1), done("b", 20, 1), done("a", 10, 2)},
			want:   "an old owner wrote after a new one"},
		{name: "seq goes back within a token",
			hist:   []chaos.Value{val("a", 10, 2), val("a", 10, 1)},
			writes: []chaos.Write{done("a", 10, 1), done("a", 10, 2)},
			want:   "token 10 wrote seq 1 after 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			killed := map[string]bool{}
			if tc.killed != "" {
				killed[tc.killed] = true
			}
			unknown, errs := matchHistory(map[string][]chaos.Value{"s": tc.hist}, tc.writes, killed)
			if len(unknown) != tc.unknown {
				t.Errorf("unknown = %v, want %d writes", unknown, tc.unknown)
			}
			switch {
			case tc.want == "" && len(errs) != 0:
				t.Errorf("want no error, got %v", errs)
			case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want)):
				t.Errorf("want one error with %q, got %v", tc.want, fmt.Sprint(errs))
			}
		})
	}
}

package main

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// TestCheckpoint runs the example as `go run ./examples/checkpoint` does.
func TestCheckpoint(t *testing.T) {
	var out strings.Builder
	if err := run("", &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{
		"beta  owns orders-copy",
		"ErrNotOwner: true",
		"destination: write with a stale fencing token refused",
		"200 of 200 rows",
		"1 stale write refused",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

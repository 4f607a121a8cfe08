package main

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// TestRolling runs the example as `go run ./examples/rolling` does.
func TestRolling(t *testing.T) {
	var out strings.Builder
	sum, err := demo("", &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Restarts != 3 || len(sum.Interrupted) != 0 || sum.TwiceRunning != 0 {
		t.Errorf("rolling restart: %+v", sum)
	}
	if sum.Handoffs == 0 || sum.MaxGap > time.Second {
		t.Errorf("handoffs %d, longest gap %v: want quick handoffs", sum.Handoffs, sum.MaxGap)
	}
	if sum.KillInterrupted == 0 || sum.KillFailoverTime < time.Second {
		t.Errorf("the kill without drain interrupted %d syncs for %v", sum.KillInterrupted, sum.KillFailoverTime)
	}
}

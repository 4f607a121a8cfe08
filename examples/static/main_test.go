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

// TestStatic runs the example as `go run ./examples/static` does.
func TestStatic(t *testing.T) {
	var out strings.Builder
	res, err := demo("", &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	stable, random := res[0], res[1]
	if stable.Rejoined != stable.Restarted {
		t.Errorf("stable ID changed: %s -> %s", stable.Restarted, stable.Rejoined)
	}
	if stable.OthersMoved != 0 {
		t.Errorf("a restart with a stable ID moved %d syncs on other members", stable.OthersMoved)
	}
	if stable.Had == 0 || stable.BackHome != stable.Had {
		t.Errorf("the restarted member owns %d of its %d syncs again", stable.BackHome, stable.Had)
	}
	if random.Rejoined == random.Restarted {
		t.Errorf("a random ID came back the same: %s", random.Rejoined)
	}
}

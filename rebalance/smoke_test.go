package rebalance

import (
	"context"
	"testing"
)

func TestSmoke(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(10)}
	for name, b := range map[string]Balancer{"sticky": Sticky(), "rr": RoundRobin(), "hrw": Rendezvous(), "throttle": Throttle(Sticky(), 2)} {
		p, err := b.Balance(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		mustValid(t, in, p)
		t.Log(name, counts(in, p))
	}
}

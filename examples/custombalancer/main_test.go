package main

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun runs the example end to end on an embedded etcd, so CI keeps
// the program working.
func TestRun(t *testing.T) {
	if err := run(""); err != nil {
		t.Fatal(err)
	}
}

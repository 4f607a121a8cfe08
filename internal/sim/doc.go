// Package sim runs the real coordinator in virtual time: N members of
// package coordinator, each on its own connection to one simetcd server,
// inside a testing/synctest bubble, driven by a seeded schedule of
// workload, etcd faults and misbehaving users, with the single-owner and
// liveness invariants checked on every run.
//
// A minute of group life takes milliseconds of real time. The schedule is a
// function of the seed; what the members do in reply depends on goroutine
// scheduling too, so a seed replays its schedule exactly and the run
// closely (see docs/failure-model.md).
//
// Running:
//
//	go test ./internal/sim                             # the CI seeds, 1..100
//	go test ./internal/sim -run TestSim -sims=1000     # seeds 1..1000
//	go test ./internal/sim -run TestSim -seed=N -v     # one seed, with its event log
//	BATON_SIM_LOG=/tmp/log go test ./internal/sim ...  # the members' logs of a failing seed
//	BATON_SIM_SOAK=10m go test ./internal/sim -run TestSimSoak -timeout 0
//
// A run that stops advancing (a goroutine blocked on a mutex is not durably
// blocked, so a deadlock freezes a bubble instead of failing it) is caught
// by a real-time watchdog that dumps every goroutine.
package sim

// Package recorder records when each member owned each sync and checks
// Baton's single-owner invariant over those records, for tests and
// benchmarks that may span several OS processes.
//
// # Guarantees
//
// Timestamps are CLOCK_MONOTONIC nanoseconds ([Now]), one clock for every
// process on a machine, so intervals recorded by different processes can be
// merged ([Read], [Merge]) and compared. A [Recorder] keeps the events it was
// given in order; its intervals, [Recorder.Check] and [Recorder.Gaps] are
// derived from them, so a recorder read back from [Recorder.WriteTo]'s output
// answers the same. With [WithSink] every event is also written out as it
// happens, so the record of a process that is killed survives up to its last
// event.
//
// [Recorder.Check] fails when two intervals of one sync overlap in time (an
// interval not yet ended extends forever), when fencing tokens of a sync go
// down over time or stay equal across a change of member, and on misuse: an
// End without a matching Start, or a second Start of a sync by a member that
// already owns it.
//
// # Failure model
//
// A killed process never records the End of what it owned. The harness that
// killed it ends those intervals with [Recorder.EndMember] at the kill time;
// a process cannot run after SIGKILL, so this is exact. A process that was
// paused (SIGSTOP) is different: it may still act after it resumes, so its
// intervals are left to the process itself.
package recorder

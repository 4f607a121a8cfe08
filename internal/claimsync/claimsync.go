// Package claimsync lets the coordinator replace the sync an
// assignment.Claim carries after a spec change (the same *Claim goes on with
// the new spec), without a public setter: applications only read a claim.
// Package assignment installs Set when it is initialised; it is typed
// loosely because this package cannot import assignment (assignment
// imports it).
package claimsync

// Set replaces claim's sync with a copy of sync; claim is an
// *assignment.Claim and sync an assignment.Sync.
var Set func(claim, sync any)

package keys_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
)

func TestValidateIDAccepts(t *testing.T) {
	for _, id := range []string{
		"a", "Z", "0", "db-1", "orders_eu.2", "host:8080", "...", ".a", "a..b",
		strings.Repeat("x", keys.MaxIDLen),
	} {
		assert.NoError(t, keys.ValidateID("sync", id), "%q", id)
	}
}

func TestValidateIDRejects(t *testing.T) {
	for _, tc := range []struct {
		id, says string
	}{
		{"", "empty sync ID"},
		{".", `sync ID "."`},
		{"..", `sync ID ".."`},
		{"a/b", `'/' at byte 1`},
		{"/", `'/' at byte 0`},
		{"../../etc", `'/' at byte 2`},
		{"tab\there", `'\t' at byte 3`},
		{"nul\x00", `'\x00' at byte 3`},
		{"new\nline", `'\n' at byte 3`},
		{"space here", `' ' at byte 5`},
		{"ünicode", `at byte 0`},
		{"star*", `'*' at byte 4`},
		{strings.Repeat("x", keys.MaxIDLen+1), "129 bytes, the limit is 128"},
		{strings.Repeat("y", 10_000), "10000 bytes, the limit is 128"},
	} {
		err := keys.ValidateID("sync", tc.id)
		require.Error(t, err, "%q", tc.id)
		assert.True(t, errors.Is(err, assignment.ErrInvalidID), "%q: %v does not wrap ErrInvalidID", tc.id, err)
		assert.Contains(t, err.Error(), tc.says, "%q", tc.id)
	}
}

func TestValidateIDClipsLongInput(t *testing.T) {
	// A long ID with a bad byte is quoted clipped, so an error from a
	// hostile 100-byte key stays readable in a log line.
	id := strings.Repeat("a", 100) + "/"
	err := keys.ValidateID("member", id)
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 150, err.Error())
	assert.Contains(t, err.Error(), "…")
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"/baton", "/a/b/c", "/team-1/baton.v2"} {
		assert.NoError(t, keys.ValidatePrefix(p), p)
	}
	for _, p := range []string{"", "baton", "/baton/", "/", "//baton", "/a//b", "/a/../b", "/a/b c"} {
		err := keys.ValidatePrefix(p)
		assert.ErrorIs(t, err, assignment.ErrInvalidID, "%q", p)
	}
}

func TestLayout(t *testing.T) {
	l, err := keys.New("/baton", "orders")
	require.NoError(t, err)
	assert.Equal(t, "/baton/orders/", l.Root())
	for got, want := range map[string]string{
		l.Member("m1"):     "/baton/orders/members/m1",
		l.Sync("db-1"):     "/baton/orders/syncs/db-1",
		l.Target("m1"):     "/baton/orders/targets/m1",
		l.Owner("db-1"):    "/baton/orders/owners/db-1",
		l.Checkpoint("d"):  "/baton/orders/checkpoints/d",
		l.Election():       "/baton/orders/election",
		l.Members():        "/baton/orders/members/",
		l.Syncs():          "/baton/orders/syncs/",
		l.Targets():        "/baton/orders/targets/",
		l.Owners():         "/baton/orders/owners/",
		l.Checkpoints():    "/baton/orders/checkpoints/",
		l.Root() + "extra": "/baton/orders/extra",
	} {
		assert.Equal(t, want, got)
	}
	// Every key of the group is under its root, and the root of group
	// "orders" is not a prefix of group "orders-eu"'s keys.
	eu, err := keys.New("/baton", "orders-eu")
	require.NoError(t, err)
	assert.False(t, strings.HasPrefix(eu.Owner("x"), l.Root()))

	_, err = keys.New("/baton", "a/b")
	assert.ErrorIs(t, err, assignment.ErrInvalidID)
	_, err = keys.New("baton", "a")
	assert.ErrorIs(t, err, assignment.ErrInvalidID)
}

func TestID(t *testing.T) {
	l, err := keys.New("/baton", "g")
	require.NoError(t, err)
	id, ok := keys.ID(l.Owners(), l.Owner("db-1"))
	assert.True(t, ok)
	assert.Equal(t, "db-1", id)

	// Keys written by hand under the prefix that are not one valid ID are
	// reported, never misread as another sync.
	for _, key := range []string{
		l.Owners(),                 // the prefix itself
		l.Owners() + "a/b",         // nested
		l.Owners() + "..",          // dot-dot
		l.Owners() + "bad id",      // space
		l.Owners() + "x\x00",       // control byte
		l.Syncs() + "db-1",         // another prefix
		"/other" + l.Owner("db-1"), // not under the prefix at all
		l.Owners() + strings.Repeat("z", 200),
	} {
		_, ok := keys.ID(l.Owners(), key)
		assert.False(t, ok, "%q", key)
	}
}

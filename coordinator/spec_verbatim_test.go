package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
)

// TestSpecStoredVerbatim: List and the claim return the spec bytes that
// were Put (only surrounding whitespace is trimmed).
func TestSpecStoredVerbatim(t *testing.T) {
	w := newWorld(t, nil)
	spec := `{"b": "<x> & y",  "a" : [1, 2.50, 1e3], "u":"\u00e9"}`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.store.Put(ctx, assignment.Sync{ID: "s1", Weight: 2, Labels: map[string]string{"k": "<v>"}, Spec: []byte(" \n" + spec + "\t ")}))
	list, err := w.store.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, spec, string(list[0].Spec))
	require.Equal(t, 2, list[0].Weight)
	require.Equal(t, map[string]string{"k": "<v>"}, list[0].Labels)
	got, found, err := w.store.Get(ctx, "s1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, list[0], got, "Get reads what List does")
	_, found, err = w.store.Get(ctx, "absent")
	require.NoError(t, err)
	require.False(t, found)
	_, _, err = w.store.Get(ctx, "a/b")
	require.ErrorIs(t, err, assignment.ErrInvalidID)
	_, err = w.admin.Put(ctx, "/baton/"+w.group+"/syncs/broken", "{not json")
	require.NoError(t, err)
	_, found, err = w.store.Get(ctx, "broken")
	require.ErrorIs(t, err, coordinator.ErrInvalidSpec)
	require.True(t, found, "a stored spec that cannot be read is found, with the error")
	_, err = w.admin.Delete(ctx, "/baton/"+w.group+"/syncs/broken")
	require.NoError(t, err)

	m := w.join("m1", nil, nil)
	w.waitOwned([]string{"s1"}, 5*time.Second, "m1")
	owned := m.co.Owned()
	require.Len(t, owned, 1)
	require.Equal(t, spec, string(owned[0].Sync().Spec))
}

using Motr.Be.Segments;

namespace Motr.Be.BTree;

/// <summary>
/// What every <see cref="BTree"/> object on one tree shares (one per tree in a segment, see <see cref="Segment.Watcher"/>):
/// the cursors open on it and the count of its changes, so a change through any object, or an abort or rollback
/// anywhere in the segment, makes every cursor keep its key first and find its place again after.
/// </summary>
internal sealed class TreeWatch : RestoreWatcher
{
    private WeakReference<BTreeCursor>[] _cursors = new WeakReference<BTreeCursor>[4];
    private int _count;

    /// <summary>Changes made to the tree, and restores of its segment: a cursor that saw another count is stale.</summary>
    internal long Modifications;

    /// <summary>Cursors in the registry, some perhaps collected and not yet dropped (tests: the registry stays bounded).</summary>
    internal int Registered => _count;

    internal void Register(BTreeCursor c)
    {
        if (_count == _cursors.Length)
        {
            int live = 0;
            for (int i = 0; i < _count; i++)
                if (_cursors[i].TryGetTarget(out _)) _cursors[live++] = _cursors[i];
            _count = live;
            if (_count == _cursors.Length) Array.Resize(ref _cursors, _cursors.Length * 2);
        }
        _cursors[_count++] = new WeakReference<BTreeCursor>(c);
    }

    /// <summary>The tree is about to change: every cursor keeps its key, to find its place again afterwards.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal void BeforeChange()
    {
        if (_count != 0) SaveKeys();
        Modifications++;
    }

    // An abort or a rollback to a savepoint may restore this tree's nodes, and the segment cannot tell which trees a
    // transaction touched: every cursor on every tree of the segment finds its place again.
    internal override void BeforeRestore() => BeforeChange();

    // Nothing here may keep a change or a restore from happening: a cursor whose key cannot be read (a damaged
    // out-of-node key) is left lost instead (its next move asks for a seek). A change it stopped would be refused
    // through every object on the tree for as long as the cursor lived, a delete of the damaged record included.
    // Cursors gone are dropped on the way, so a burst of them (short-lived objects each register the cursor behind
    // Min and Slant) is walked once after they are collected, not by every later change until a registration prunes.
    private void SaveKeys()
    {
        int live = 0;
        for (int i = 0; i < _count; i++)
        {
            var w = _cursors[i];
            if (!w.TryGetTarget(out var c)) continue;
            if (live != i) _cursors[live] = w;
            live++;
            try { c.SaveKey(); }
            catch (Exception) { /* not saved: lost */ }
        }
        if (live == _count) return;
        Array.Clear(_cursors, live, _count - live);
        _count = live;
    }
}

namespace Motr.Be.Segments;

/// <summary>
/// In-memory state that every handle on one structure of a segment shares (a b+tree's cursors and its count of
/// changes), and that must hear before a transaction puts captured bytes back: an abort or a rollback to a
/// savepoint changes the structure behind the backs of whatever points into it.
/// </summary>
internal abstract class RestoreWatcher
{
    /// <summary>A transaction of the segment is about to restore bytes it captured; called on the owner thread.</summary>
    internal abstract void BeforeRestore();
}

public sealed partial class Segment
{
    // Keyed by the structure's offset and a stamp it was made with, so a structure made later at the same place
    // gets its own. Held weakly: the handles keep their watcher alive, and the table forgets it with the last one.
    private readonly Dictionary<(long Offset, ulong Stamp), WeakReference<RestoreWatcher>> _watchers = new();
    private int _watchersPruneAt = 16;

    /// <summary>The watcher every handle on the structure at <paramref name="offset"/> made with <paramref name="stamp"/> shares: the live one, or a new one from <paramref name="make"/>.</summary>
    internal T Watcher<T>(long offset, ulong stamp, Func<T> make) where T : RestoreWatcher
    {
        lock (_watchers)
        {
            if (_watchers.TryGetValue((offset, stamp), out var weak) && weak.TryGetTarget(out var live) && live is T same) return same;
            if (_watchers.Count >= _watchersPruneAt)
            {
                foreach (var (key, w) in _watchers)
                    if (!w.TryGetTarget(out _)) _watchers.Remove(key);
                _watchersPruneAt = Math.Max(16, _watchers.Count * 2);
            }
            var made = make();
            _watchers[(offset, stamp)] = new WeakReference<RestoreWatcher>(made);
            return made;
        }
    }

    /// <summary>
    /// Changes whenever the segment's memory may go back to an earlier state (an abort, a rollback to a savepoint that
    /// undid something): whatever remembered a place before (a b+tree cookie) must not trust it, since the block may be
    /// something else again. Its values come from a clock of the process, so they never repeat, across reopens
    /// included: a cookie from before a restore never hits, in this session or a later one, where the block of a node
    /// the restore unmade is free in the file. (So a cookie kept across a reopen misses once.)
    /// </summary>
    internal long Restores = Interlocked.Increment(ref s_restoreClock);

    private static long s_restoreClock;

    /// <summary>Entries in the watcher table, some perhaps collected and not yet pruned (for tests: the table stays bounded).</summary>
    internal int WatcherEntries
    {
        get
        {
            lock (_watchers) return _watchers.Count;
        }
    }

    /// <summary>Tells every live watcher that a transaction is about to restore captured bytes.</summary>
    internal void BeforeRestore()
    {
        Restores = Interlocked.Increment(ref s_restoreClock);
        if (_watchers.Count == 0) return;
        lock (_watchers)
        {
            foreach (var (_, w) in _watchers)
                if (w.TryGetTarget(out var watcher)) watcher.BeforeRestore();
        }
    }
}

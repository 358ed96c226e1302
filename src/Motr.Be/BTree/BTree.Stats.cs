namespace Motr.Be.BTree;

/// <summary>
/// Counters of one tree object since it was opened, and the tree's persistent shape. An insert, delete or update
/// counts, with its splits and prefix shortenings, when it returns <see cref="BTreeStatus.Ok"/>; one that answers
/// anything else or throws (rolled back: <see cref="BTreeStatus.OutOfSpace"/>, an insert-in-place whose fill threw)
/// counts for nothing, and the counters never go down. Lookups count every search. Operations of a transaction
/// aborted later stay counted.
/// </summary>
/// <param name="Inserts">Inserts done.</param>
/// <param name="Deletes">Deletes done.</param>
/// <param name="Updates">Updates done.</param>
/// <param name="Lookups">Lookups done.</param>
/// <param name="Splits">Node splits.</param>
/// <param name="Merges">Node merges.</param>
/// <param name="Rebalances">Leaf pairs rebalanced without merging.</param>
/// <param name="CookieHits">Operations that used their cookie's leaf.</param>
/// <param name="CookieMisses">Operations whose cookie no longer fit and that descended from the root.</param>
/// <param name="Records">Records in the tree.</param>
/// <param name="Height">Levels.</param>
/// <param name="Nodes">Nodes.</param>
/// <param name="LargeChunks">Out-of-node chunks.</param>
/// <param name="LargeBytes">Bytes in out-of-node chunks.</param>
/// <param name="PrefixShortenings">Nodes retagged because a key arrived that did not begin with their key prefix (after the root shrank or a sibling took over a freed child's range; splits and merges set prefixes that fit).</param>
public readonly record struct BTreeStats(long Inserts, long Deletes, long Updates, long Lookups, long Splits, long Merges, long Rebalances,
    long CookieHits, long CookieMisses, long Records, int Height, long Nodes, long LargeChunks, long LargeBytes, long PrefixShortenings = 0);

public sealed partial class BTree
{
    private long _inserts, _deletes, _updates, _lookups, _splits, _merges, _borrows, _cookieHits, _cookieMisses, _cookieSplitDescents;

    // Splits and prefix shortenings of the operation under way (reset by BeginOp), added to the counters only when
    // it succeeds: one rolled back (OutOfSpace, an insert-in-place whose fill threw) changed nothing, and the
    // counters, published as observable counters, must never be seen to go down (an exporter takes that for a reset).
    private long _opSplits, _opShortened;

    /// <summary>The operation under way succeeded: its splits and prefix shortenings count.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private void CommitCounts()
    {
        if ((_opSplits | _opShortened) == 0) return;
        _splits += _opSplits;
        _prefixShortened += _opShortened;
        _opSplits = _opShortened = 0;
    }

    /// <summary>Counters and shape.</summary>
    public BTreeStats Stats
    {
        get
        {
            using var read = ReadHeader();
            ref TreeHeader h = ref Hdr;
            return new BTreeStats(_inserts, _deletes, _updates, _lookups, _splits, _merges, _borrows, _cookieHits, _cookieMisses,
                h.Count, (int)h.Height, h.Nodes, h.LargeChunks, h.LargeBytes, _prefixShortened);
        }
    }
}

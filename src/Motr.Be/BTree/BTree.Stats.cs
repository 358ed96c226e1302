namespace Motr.Be.BTree;

/// <summary>
/// Counters of one tree object since it was opened, and the tree's persistent shape. An operation that answered
/// anything but <see cref="BTreeStatus.Ok"/> (or threw) is not counted as done, nor are the splits of an insert or
/// update rolled back for want of space; lookups count every search. Operations of a transaction aborted later stay counted.
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

    // The structural counters when the insert or update under way began: one that is rolled back (OutOfSpace, or an
    // insert-in-place whose fill threw) changed nothing, so the splits and retaggings it made do not count.
    private long _splitsMark, _prefixShortenedMark;

    private void MarkCounts()
    {
        _splitsMark = _splits;
        _prefixShortenedMark = _prefixShortened;
    }

    private void UndoCounts()
    {
        _splits = _splitsMark;
        _prefixShortened = _prefixShortenedMark;
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

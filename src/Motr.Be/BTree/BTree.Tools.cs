namespace Motr.Be.BTree;

// Internal hooks for the tools (BTreeDump, BTreeMetrics, SegmentCheck). Kept in their own file so the
// tree's own files can change independently; they read private fields and change nothing.
public sealed partial class BTree
{
    /// <summary>The stable name of the tree's key order ("bytewise" for the default).</summary>
    internal string ComparerName => _cmp?.Name ?? BytewiseComparer.Instance.Name;

    /// <summary>The comparer the tree was opened with (null: bytewise).</summary>
    internal IKeyComparer? KeyComparer => _cmp;

    /// <summary>The random stamp of the tree's creation: two objects of the same offset with the same stamp are of the same tree.</summary>
    internal ulong Birth => _birth;

    /// <summary>Whether records carry a CRC32C.</summary>
    internal bool HasRecordChecksums => _recordCrc;

    /// <summary>
    /// The operation counters alone, without the persistent shape: reads only managed fields, never
    /// segment memory, so another thread may call it. The fields are plain longs written on the
    /// locality thread; a reader elsewhere sees each of them at some recent value (64-bit reads do not
    /// tear on the platforms we run on), not a consistent set.
    /// </summary>
    internal BTreeStats CountersOnly =>
        new(_inserts, _deletes, _updates, _lookups, _splits, _merges, _borrows, _cookieHits, _cookieMisses, 0, 0, 0, 0, 0, _prefixShortened);

    /// <summary>
    /// The persistent shape for the instruments, read as <see cref="Stats"/> reads it (on the owner thread, or off it with
    /// the segment's memory held mapped) but without throwing: false, and nothing read, when the tree is gone (destroyed,
    /// through this object or another, or another tree made at its place) or its segment is closed (the engine was
    /// disposed). Monitoring calls it from a meter's callback, where an exception would lose every tree's measurements.
    /// </summary>
    internal bool TryReadShape(out long height, out long nodes, out long records, out long largeBytes, out int leafNodeSize)
    {
        height = nodes = records = largeBytes = 0;
        leafNodeSize = 0;
        bool foreign = _seg.Tx.Owner is not { IsOwnerThread: true };
        if (foreign && !_seg.EnterForeignRead()) return false;
        try
        {
            if (!_seg.IsOpen) return false;
            ref TreeHeader h = ref Hdr;
            if (!IsOurs(ref h)) return false;
            height = h.Height;
            nodes = h.Nodes;
            records = h.Count;
            largeBytes = h.LargeBytes;
            leafNodeSize = (int)h.LeafSize;
            return true;
        }
        finally
        {
            if (foreign) _seg.ExitForeignRead();
        }
    }

    /// <summary>The configuration that makes an empty tree shaped like this one (node sizes for new nodes, formats, comparer).</summary>
    internal BTreeConfig ToConfig() => new()
    {
        NodeSize = LeafNodeSize,
        InternalNodeSize = InternalNodeSize,
        KeySize = KeySize,
        ValueSize = ValueSize,
        RecordChecksums = _recordCrc,
        Comparer = _cmp,
    };
}

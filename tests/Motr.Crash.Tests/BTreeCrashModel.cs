using Motr.Be.Segments;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Crash.Tests;

/// <summary>Bytewise order of byte-array keys (the b+tree's default order) and equality, for models.</summary>
public sealed class ByteKeys : IComparer<byte[]>, IEqualityComparer<byte[]>
{
    /// <summary>The one instance.</summary>
    public static readonly ByteKeys Instance = new();

    /// <inheritdoc />
    public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);

    /// <inheritdoc />
    public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);

    /// <inheritdoc />
    public int GetHashCode(byte[] obj)
    {
        var h = new HashCode();
        h.AddBytes(obj);
        return h.ToHashCode();
    }

    /// <summary>A short printable form of a key: its length and up to 12 hex bytes.</summary>
    public static string Show(ReadOnlySpan<byte> key) =>
        $"[{key.Length}]{Convert.ToHexString(key[..Math.Min(key.Length, 12)])}{(key.Length > 12 ? ".." : "")}";
}

/// <summary>
/// The model of one segment of the b+tree crash workload (<see cref="BTreeSimWorkload"/>): transaction 1 creates the
/// tree (named root <see cref="RootName"/>) empty, and every later closed transaction is 1-4 inserts, deletes and
/// updates of it. The model keeps the tree's key→value map after every closed transaction id (aborted transactions
/// are not in it: they change nothing), so a recovered segment can be compared with the state after any prefix j.
/// </summary>
public sealed class BTreeSegmentModel : ISegmentOracle
{
    /// <summary>The segment dictionary name of the tree.</summary>
    public const string RootName = "t";

    private static readonly KeyValuePair<byte[], byte[]>[] Empty = [];
    private readonly List<KeyValuePair<byte[], byte[]>[]> _states = [Empty];   // [j]: sorted records after tx j
    private readonly object _gate = new();
    private long _treeOffset;

    /// <inheritdoc />
    public long LastId
    {
        get { lock (_gate) return _states.Count - 1; }
    }

    /// <summary>The tree header's offset (known once transaction 1 closed).</summary>
    public long TreeOffset => _treeOffset;

    /// <summary>Records transaction 1, which created the (empty) tree at <paramref name="offset"/>.</summary>
    public void AddCreate(long id, long offset)
    {
        if (id != 1) throw new InvalidOperationException($"model: the tree must be created by tx 1, not {id}");
        _treeOffset = offset;
        Add(id, Empty);
    }

    /// <summary>Records closed transaction <paramref name="id"/>, after which the tree holds <paramref name="records"/> (sorted; not changed later).</summary>
    public void Add(long id, KeyValuePair<byte[], byte[]>[] records)
    {
        lock (_gate)
        {
            if (id != _states.Count)
                throw new InvalidOperationException($"model: tx ids must be consecutive per segment: got {id}, expected {_states.Count}");
            _states.Add(records);
        }
    }

    /// <summary>The records after transaction <paramref name="j"/>, in key order.</summary>
    public KeyValuePair<byte[], byte[]>[] StateAfter(long j)
    {
        lock (_gate) return _states[(int)j];
    }

    /// <inheritdoc />
    public byte[]? PayloadOf(long id) => null;

    /// <inheritdoc />
    public string? Verify(Segment seg, long j)
    {
        string at = $"segment {seg.Id}, recovered prefix {j}";
        bool hasRoot = seg.TryGetRoot(RootName, out long off);
        if (j == 0)
        {
            if (hasRoot) return $"{at}: the tree's root '{RootName}' (0x{off:X}) is there, but tx 1 (which created it) is not";
            var blocks = seg.Allocator.AllocatedBlocks().Count();
            return blocks == 0 ? null : $"{at}: no tx recovered, but the allocator holds {blocks} blocks";
        }
        if (!hasRoot) return $"{at}: no root '{RootName}', but tx 1 created the tree";
        if (off != _treeOffset) return $"{at}: root '{RootName}' is 0x{off:X}, but tx 1 put the tree at 0x{_treeOffset:X}";
        var roots = seg.Roots();
        if (roots.Count != 1) return $"{at}: the segment dictionary holds {roots.Count} roots [{string.Join(", ", roots.Select(r => r.Key))}], expected only '{RootName}'";
        Tree t;
        try { t = Tree.Open(seg, off); }
        catch (Exception e) { return $"{at}: the tree does not open: {e.GetType().Name}: {e.Message}"; }
        // The tree is the only user of the segment's allocator: its chunks are exactly the allocated blocks.
        if (Motr.CrashChild.TreeChecks.Segment(seg, t, out long fsckRecords) is { } bad) return $"{at}: {bad}";

        var expected = StateAfter(j);
        var actual = Scan(t);
        string? diff = Diff(actual, expected);
        if (diff != null)
        {
            var matches = new List<long>();
            for (long p = 0; p <= LastId && matches.Count < 4; p++)
                if (p >= 1 && Diff(actual, StateAfter(p)) is null) matches.Add(p);
            return $"{at}: the tree is not the state after tx {j}: {diff}; " +
                (matches.Count == 0 ? "it matches no prefix of the closed txs" : $"it matches the state after tx {string.Join(" / ", matches)}");
        }
        // Backwards too: the cursor walks the leaves through their parents either way.
        var backward = new List<KeyValuePair<byte[], byte[]>>();
        var c = t.OpenCursor();
        for (bool ok = c.SeekLast(); ok; ok = c.MovePrev()) backward.Add(new(c.Key.ToArray(), c.Value.ToArray()));
        backward.Reverse();
        if (Diff(backward, expected) is { } bd) return $"{at}: a backward scan is not the state after tx {j}: {bd}";
        if (t.Count != expected.Length) return $"{at}: the tree header counts {t.Count} records, the scan found {expected.Length}";
        if (fsckRecords != expected.Length) return $"{at}: fsck found {fsckRecords} records, expected {expected.Length}";
        return null;
    }

    /// <summary>A full forward cursor scan of <paramref name="t"/>.</summary>
    public static List<KeyValuePair<byte[], byte[]>> Scan(Tree t)
    {
        var list = new List<KeyValuePair<byte[], byte[]>>();
        var c = t.OpenCursor();
        for (bool ok = c.SeekFirst(); ok; ok = c.MoveNext()) list.Add(new(c.Key.ToArray(), c.Value.ToArray()));
        return list;
    }

    /// <summary>Null if <paramref name="actual"/> equals <paramref name="expected"/>, else the first difference.</summary>
    public static string? Diff(IReadOnlyList<KeyValuePair<byte[], byte[]>> actual, IReadOnlyList<KeyValuePair<byte[], byte[]>> expected)
    {
        int n = Math.Min(actual.Count, expected.Count);
        for (int i = 0; i < n; i++)
        {
            var (ak, av) = actual[i];
            var (ek, ev) = expected[i];
            int c = ByteKeys.Instance.Compare(ak, ek);
            if (c != 0)
                return $"{actual.Count} records, expected {expected.Count}; record {i}: " +
                    (c < 0 ? $"key {ByteKeys.Show(ak)} should not be there (expected {ByteKeys.Show(ek)} next)" : $"key {ByteKeys.Show(ek)} is missing (found {ByteKeys.Show(ak)})");
            if (!av.AsSpan().SequenceEqual(ev))
                return $"record {i}, key {ByteKeys.Show(ak)}: value of {av.Length} bytes (crc 0x{Motr.Be.Crc32C.Compute(av):X8}), expected {ev.Length} bytes (crc 0x{Motr.Be.Crc32C.Compute(ev):X8})";
        }
        if (actual.Count > n) return $"{actual.Count} records, expected {expected.Count}: extra keys from {ByteKeys.Show(actual[n].Key)}";
        if (expected.Count > n) return $"{actual.Count} records, expected {expected.Count}: missing keys from {ByteKeys.Show(expected[n].Key)}";
        return null;
    }
}

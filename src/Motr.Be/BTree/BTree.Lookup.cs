using System.Runtime.CompilerServices;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

/// <summary>
/// Remembers the leaf a key was found or inserted in (r.btree.cookie-lookup). A later operation given the
/// cookie goes straight to that leaf when the key still falls inside it and no node of the tree was freed
/// since (nor a transaction of the segment rolled back), and silently descends from the root when not.
/// Keep one per caller; it is a plain value.
/// </summary>
public struct BTreeCookie
{
    internal long Leaf;
    internal ulong Epoch;    // the tree's birth stamp plus its count of freed nodes when the cookie was made
    internal long Restores;  // the segment's restore count (aborts, rollbacks; never repeats over reopens) then

    /// <summary>Whether the cookie points at a leaf at all.</summary>
    public readonly bool IsSet => Leaf != 0;

    /// <summary>Forgets the leaf.</summary>
    public void Reset() => this = default;
}

public sealed unsafe partial class BTree
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetCookie(ref BTreeCookie cookie, long leaf)
    {
        cookie.Leaf = leaf;
        cookie.Epoch = _birth + Hdr.NodeFrees;
        cookie.Restores = _seg.Restores;
    }

    private struct PathEntry
    {
        public long Node;
        public int Index;
    }

    // The descent of the current operation: _path[0] is the root, _path[_depth - 1] the leaf.
    private readonly PathEntry[] _path = new PathEntry[MaxHeight + 1];
    private int _depth;

    /// <summary>Descends to the leaf that holds, or would hold, <paramref name="key"/>, recording the path.</summary>
    private Node Descend(ReadOnlySpan<byte> key)
    {
        long off = Hdr.Root;
        int d = 0;
        while (true)
        {
            var n = N(off);
            _path[d].Node = off;
            if (n.IsLeaf)
            {
                _depth = d + 1;
                return n;
            }
            int i = SearchInternal(n, key);
            _path[d].Index = i;
            off = n.Child(i);
            // The child's header and index, before its header is read: a search runs on the index's tags and
            // then reads one record, so these lines are most of what it waits for. A leaf's index is short
            // (records carry values); an internal node's is most of what it holds.
            Prefetch(off, n.Level == 1 ? LeafIndexPrefetch : InternalIndexPrefetch);
            if (++d >= MaxHeight) throw new BeCorruptionException(_seg.FileName, off, $"{Where}: deeper than {MaxHeight} levels: a cycle");
        }
    }

    // Bytes of a child prefetched on the way down: header and 48 index entries of a leaf, 240 of an internal
    // node (measured on the btree bench's 4 KiB nodes against whole-node and no prefetch: lookups ~15% and
    // inserts ~9% less locality CPU than prefetching the whole leaf; more lines only crowd the cache).
    private const int LeafIndexPrefetch = 256, InternalIndexPrefetch = 1024;

    /// <summary>
    /// Asks for a node's first <paramref name="size"/> bytes (at most 4 KiB) at once, before its header is read:
    /// a search over a node out of cache otherwise waits for one miss per line, in turn.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Prefetch(long off, int size)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        size = Math.Min(size, 4096);
        if (size <= 0 || (ulong)off > (ulong)(_seg.Size - size)) return;
        byte* p = _seg.Base + off, end = p + size;
        for (byte* line = (byte*)((nuint)p & ~(nuint)63); line < end; line += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(line);
    }

    /// <summary>Finds <paramref name="key"/>; <paramref name="value"/> points into the segment until the tree next changes.</summary>
    /// <remarks>The span may be passed straight back into a change of the tree (<see cref="Insert(Motr.Be.Tx.Transaction, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>,
    /// <see cref="Update"/>, ...): those copy it out before they move anything. After any change, look it up again.</remarks>
    public BTreeStatus Lookup(ReadOnlySpan<byte> key, out ReadOnlySpan<byte> value)
    {
        Enter();
        CheckKey(key);
        _lookups++;
        var leaf = Descend(key);
        return LookupIn(leaf, key, out value);
    }

    /// <summary>Like <see cref="Lookup(ReadOnlySpan{byte}, out ReadOnlySpan{byte})"/>, trying the cookie's leaf first and updating the cookie.</summary>
    public BTreeStatus Lookup(ReadOnlySpan<byte> key, out ReadOnlySpan<byte> value, ref BTreeCookie cookie)
    {
        Enter();
        CheckKey(key);
        _lookups++;
        if (!TryCookie(key, cookie, out var leaf)) leaf = Descend(key);
        SetCookie(ref cookie, leaf.Off);
        return LookupIn(leaf, key, out value);
    }

    /// <summary>Copies the value of <paramref name="key"/> into <paramref name="destination"/> if it fits; <paramref name="length"/> is the value's length.</summary>
    public BTreeStatus Lookup(ReadOnlySpan<byte> key, Span<byte> destination, out int length)
    {
        var st = Lookup(key, out ReadOnlySpan<byte> v);
        length = v.Length;
        if (st == BTreeStatus.Ok && v.Length <= destination.Length) v.CopyTo(destination);
        return st;
    }

    /// <summary>Whether <paramref name="key"/> is in the tree.</summary>
    public bool Contains(ReadOnlySpan<byte> key) => Lookup(key, out _) == BTreeStatus.Ok;

    private BTreeStatus LookupIn(Node leaf, ReadOnlySpan<byte> key, out ReadOnlySpan<byte> value)
    {
        int i = SearchLeaf(leaf, key, out bool found);
        if (!found)
        {
            value = default;
            return BTreeStatus.NotFound;
        }
        if (_recordCrc) CheckRecord(leaf, i);
        value = ValueAt(leaf, i);
        return BTreeStatus.Ok;
    }

    /// <summary>
    /// Whether the cookie's leaf still holds the place of <paramref name="key"/>: no node of the tree was freed and
    /// nothing restored since the cookie was made (so its leaf is still a node of this tree, not a block reused for
    /// something else: a copy of a node would pass every other check), it is a leaf of this tree, and the key lies
    /// within its first and last keys.
    /// </summary>
    private bool TryCookie(ReadOnlySpan<byte> key, in BTreeCookie cookie, out Node leaf)
    {
        leaf = default;
        long off = cookie.Leaf;
        if (off == 0 || (ulong)off > (ulong)(_seg.Size - NodeHeader.SizeOf))
        {
            _cookieMisses++;
            return false;
        }
        var n = new Node(_seg.Base, off);
        if (cookie.Epoch != _birth + Hdr.NodeFrees || cookie.Restores != _seg.Restores
            || n.H.Magic != NodeMagic || n.H.Tree != _hdr || n.H.Level != 0 || n.Count == 0
            || !(_seg.IsVerified(off) || FirstReadProblem(off) is null)
            || Compare(KeyAt(n, 0), key) > 0 || Compare(KeyAt(n, n.Count - 1), key) < 0)
        {
            _cookieMisses++;
            return false;
        }
        _cookieHits++;
        leaf = n;
        return true;
    }
}

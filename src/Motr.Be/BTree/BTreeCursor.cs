using System.Runtime.CompilerServices;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

/// <summary>
/// Walks a tree in key order: <see cref="SeekFirst"/>, <see cref="SeekLast"/>, <see cref="Seek"/> (slant:
/// the first key not below the given one), then <see cref="MoveNext"/> / <see cref="MovePrev"/>.
/// <see cref="Key"/> and <see cref="Value"/> point into the segment. If the tree changes between moves,
/// the cursor finds its place again by its last key, so it can be kept across transactions: changes
/// through any <see cref="BTree"/> object on the tree, and transactions that abort or roll back.
/// Reusable and allocation-free once its key buffer has grown; use on the tree's locality.
/// </summary>
/// <remarks>
/// A move that throws (the tree's comparer, a damaged node) while the cursor finds its place again after a change
/// leaves it at its last key: the next move tries again from there. A <see cref="Seek"/>, <see cref="SeekFirst"/> or
/// <see cref="SeekLast"/> that throws, or a move that throws on its way to another leaf, leaves it unpositioned.
/// </remarks>
public sealed unsafe class BTreeCursor
{
    private readonly BTree _t;
    private readonly long[] _nodes = new long[MaxHeight + 1];
    private readonly int[] _idx = new int[MaxHeight + 1];
    private int _depth;
    private bool _valid;
    private long _mods;
    private byte[] _key = new byte[64];
    private int _keyLength;
    private bool _saved; // _key holds the current key (copied when the tree was about to change)
    // The current leaf, cached: its records' fixed key/value places when its format has them.
    private byte* _leaf;
    private int _leafCount;
    private int _i;       // index in the current leaf (mirrors _idx[_depth - 1])
    private byte* _rec;   // the current record
    private int _keyAt = -1, _keyLen, _valueAt = -1, _valueLen;

    internal BTreeCursor(BTree tree)
    {
        _t = tree;
        tree.Register(this);
    }

    /// <summary>The tree is about to change: keep the current key to find the place again afterwards.</summary>
    internal void SaveKey()
    {
        if (!_valid || _saved || Stale) return;
        _idx[_depth - 1] = _i;
        CopyKey(_t.KeyAt(Leaf, _i));
        _saved = true;
    }

    private void CopyKey(ReadOnlySpan<byte> k)
    {
        if (k.Length > _key.Length) _key = new byte[Math.Max(k.Length, _key.Length * 2)];
        k.CopyTo(_key);
        _keyLength = k.Length;
    }

    /// <summary>
    /// The key <see cref="SaveKey"/> kept, in place: a seek never writes <c>_key</c> (only <see cref="SaveKey"/> does, when
    /// the tree is about to change; <see cref="CacheLeaf"/> may grow the array, copying it, and this span then reads the old
    /// one, unchanged), so finding the place again by it needs no copy.
    /// </summary>
    private ReadOnlySpan<byte> SavedKey => _key.AsSpan(0, _keyLength);

    /// <summary>Whether the cursor is at a record.</summary>
    public bool IsValid => _valid && !Stale;

    private bool Stale => _mods != _t.Modifications;

    /// <summary>The key at the cursor.</summary>
    public ReadOnlySpan<byte> Key
    {
        get
        {
            if (_valid && _keyAt >= 0 && _mods == _t.Modifications && _t.Segment.IsOpen) return new ReadOnlySpan<byte>(_rec + _keyAt, _keyLen);
            _t.Enter();
            Reposition();
            if (_keyAt >= 0) return new ReadOnlySpan<byte>(_rec + _keyAt, _keyLen);
            return _t.KeyAt(Leaf, _i);
        }
    }

    /// <summary>The value at the cursor.</summary>
    public ReadOnlySpan<byte> Value
    {
        get
        {
            if (_valid && _valueAt >= 0 && _mods == _t.Modifications && _t.Segment.IsOpen) return new ReadOnlySpan<byte>(_rec + _valueAt, _valueLen);
            _t.Enter();
            Reposition();
            if (_valueAt >= 0) return new ReadOnlySpan<byte>(_rec + _valueAt, _valueLen);
            return _t.ValueOfCursor(Leaf, _i);
        }
    }

    private Node Leaf => new(_t.Segment.Base, _nodes[_depth - 1]);

    /// <summary>To the smallest key; false if the tree is empty.</summary>
    public bool SeekFirst() => SeekEdge(last: false);

    /// <summary>To the largest key; false if the tree is empty.</summary>
    public bool SeekLast() => SeekEdge(last: true);

    /// <summary>To the smallest key not below <paramref name="key"/> (slant lookup); false if there is none.</summary>
    public bool Seek(ReadOnlySpan<byte> key)
    {
        _t.Enter();
        _valid = false; // until it arrives: a throw on the way (the comparer, a damaged node) must not leave the old place current
        _mods = _t.Modifications;
        _depth = _t.DescendInto(key, _nodes, _idx);
        var leaf = Leaf;
        int i = _t.LeafPosition(leaf, key, out _);
        _idx[_depth - 1] = i;
        _valid = true;
        if (i >= leaf.Count) return NextLeaf();
        return Remember();
    }

    /// <summary>To the next key; false (and invalid) past the last.</summary>
    public bool MoveNext()
    {
        if (!_valid) return false;
        if (!_t.Segment.IsOpen) _t.Enter(); // throws: the cursor's cached leaf is unmapped memory
        if (Stale && RefindForNext() is { } moved) return moved;
        if (++_i < _leafCount)
        {
            // Same leaf: the scan's hot path.
            _rec = Node.RecIn(_leaf, _i);
            _saved = false;
            return true;
        }
        _idx[_depth - 1] = _i;
        return CrossLeaf(forward: true);
    }

    /// <summary>To the previous key; false (and invalid) before the first.</summary>
    public bool MovePrev()
    {
        if (!_valid) return false;
        if (!_t.Segment.IsOpen) _t.Enter();
        if (Stale && RefindForPrev() is { } moved) return moved;
        if (--_i >= 0)
        {
            _rec = Node.RecIn(_leaf, _i);
            _saved = false;
            return true;
        }
        _idx[_depth - 1] = _i;
        return CrossLeaf(forward: false);
    }

    /// <summary>
    /// From the leaf's last record to the next leaf (or its first to the previous one). A damaged node on the way
    /// throws; the cursor then stays at the record it was at (its key kept, as after a change), so a retried move
    /// throws again or, once the node is readable, goes on — instead of having lost its place and reporting the end.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool CrossLeaf(bool forward)
    {
        long leaf = _nodes[_depth - 1];
        int at = forward ? _i - 1 : _i + 1;
        try
        {
            return forward ? NextLeaf() : PrevLeaf();
        }
        catch
        {
            KeepKeyOf(leaf, at);
            throw;
        }
    }

    // For CrossLeaf: keeps the key of record i of leaf (unchanged memory: the move only read) and the place by it.
    private void KeepKeyOf(long leaf, int i)
    {
        try
        {
            CopyKey(_t.KeyAt(new Node(_t.Segment.Base, leaf), i));
            KeepPlace();
        }
        catch (Exception)
        {
            // The key cannot be read either: the cursor stays unpositioned.
        }
    }

    /// <summary>
    /// After the tree changed: at the first key above the last one seen (true), past the end (false), or at that key
    /// itself (null: the caller steps on).
    /// </summary>
    private bool? RefindForNext()
    {
        if (!_saved) ThrowLost();
        var last = SavedKey;
        try
        {
            if (!Seek(last)) return false;
            return _t.CompareKeys(Key, last) > 0 ? true : null;
        }
        catch
        {
            KeepPlace();
            throw;
        }
    }

    /// <summary>After the tree changed: at the last key seen or the first above it (null: the caller steps back), or, past the end, at the last key.</summary>
    private bool? RefindForPrev()
    {
        if (!_saved) ThrowLost();
        try
        {
            return Seek(SavedKey) ? null : SeekLast();
        }
        catch
        {
            KeepPlace();
            throw;
        }
    }

    /// <summary>
    /// Finding the place again failed (the comparer threw, a damaged node): stay lost at the saved key, so the next
    /// move tries again from it instead of taking the leaf the seek left behind for current.
    /// </summary>
    private void KeepPlace()
    {
        _valid = true;
        _saved = true;
        _mods = long.MinValue;
    }

    /// <summary>
    /// Moves to the next key if it is not above <paramref name="bound"/> (next-upto); false at the end or
    /// past the bound. With <paramref name="inclusive"/> false the bound itself is excluded.
    /// </summary>
    public bool MoveNextUpTo(ReadOnlySpan<byte> bound, bool inclusive = true)
    {
        if (!MoveNext()) return false;
        int c = _t.CompareKeys(Key, bound);
        if (c < 0 || (c == 0 && inclusive)) return true;
        _valid = false;
        return false;
    }

    private bool SeekEdge(bool last)
    {
        _t.Enter();
        _valid = false; // as in Seek
        _mods = _t.Modifications;
        _depth = _t.DescendEdge(last, _nodes, _idx);
        var leaf = Leaf;
        if (leaf.Count == 0)
        {
            // Only an empty root leaf should be empty; step over any other defensively.
            _valid = _depth > 1;
            _idx[_depth - 1] = last ? 0 : -1;
            if (!_valid) return false;
            return last ? PrevLeaf() : NextLeaf();
        }
        _valid = true;
        _idx[_depth - 1] = last ? leaf.Count - 1 : 0;
        Remember();
        PrefetchSibling(last ? -1 : 1);
        return true;
    }

    private bool NextLeaf()
    {
        _t.Enter();
        // Unpositioned until the next leaf is reached: a damaged node on the way throws, and the cursor must
        // not then describe a record by the new path and the old leaf's index.
        _valid = false;
        int d = _depth - 2;
        while (d >= 0 && ++_idx[d] >= new Node(_t.Segment.Base, _nodes[d]).Count) d--;
        if (d < 0)
        {
            _valid = false;
            return false;
        }
        for (; d < _depth - 1; d++)
        {
            var n = _t.CheckedNode(_nodes[d]);
            _nodes[d + 1] = n.Child(_idx[d]);
            _idx[d + 1] = 0;
        }
        var leaf = _t.CheckedNode(_nodes[_depth - 1]);
        if (leaf.Count == 0) return NextLeaf();
        Remember();
        PrefetchSibling(1);
        return true;
    }

    private bool PrevLeaf()
    {
        _t.Enter();
        _valid = false; // as in NextLeaf
        int d = _depth - 2;
        while (d >= 0 && --_idx[d] < 0) d--;
        if (d < 0)
        {
            _valid = false;
            return false;
        }
        for (; d < _depth - 1; d++)
        {
            var n = _t.CheckedNode(_nodes[d]);
            _nodes[d + 1] = n.Child(_idx[d]);
            _idx[d + 1] = _t.CheckedNode(_nodes[d + 1]).Count - 1;
        }
        if (_idx[_depth - 1] < 0) return PrevLeaf();
        Remember();
        PrefetchSibling(-1);
        return true;
    }

    /// <summary>
    /// Starts loading the leaf a scan reaches after this one (<paramref name="step"/> +1 forward, -1 back)
    /// while this one is read: leaves lie at random places, so each change of leaf otherwise waits for its
    /// TLB and cache misses (a quarter of a 1M-record scan's time, profiled).
    /// </summary>
    private void PrefetchSibling(int step)
    {
        if (_depth < 2) return;
        var parent = new Node(_t.Segment.Base, _nodes[_depth - 2]);
        int i = _idx[_depth - 2] + step;
        if ((uint)i < (uint)parent.Count) _t.Prefetch(parent.Child(i), _t.LeafNodeSize);
    }

    /// <summary>At a record now: cache its leaf. (Its key is copied only if the tree is about to change: <see cref="SaveKey"/>.)</summary>
    private bool Remember()
    {
        byte* leaf = _t.Segment.Base + _nodes[_depth - 1];
        if (leaf != _leaf) CacheLeaf(leaf);
        _leafCount = ((NodeHeader*)leaf)->Count;
        _i = _idx[_depth - 1];
        _rec = Node.RecIn(leaf, _i);
        _valid = true;
        _saved = false;
        return true;
    }

    /// <summary>The tree changed with no operation to warn the cursor first (an abort after it was positioned): its place is unknown.</summary>
    private void ThrowLost()
    {
        _valid = false;
        throw new InvalidOperationException("the tree changed under the cursor and its key could not be kept first " +
            "(its out-of-node key unreadable when the tree changed or a transaction aborted?); seek again");
    }

    /// <summary>Leaves the cursor unpositioned (so the tree need not save its key on changes).</summary>
    internal void Invalidate() => _valid = false;

    private void CacheLeaf(byte* leaf)
    {
        _leaf = leaf;
        var h = (NodeHeader*)leaf;
        var format = (NodeFormat)h->Format;
        bool crc = (h->Flags & RecordChecksumFlag) != 0;
        _keyAt = format == NodeFormat.Variable ? -1 : Node.LengthFields(format);
        _keyLen = h->KeySize;
        if (_keyLen > _key.Length) Array.Resize(ref _key, _keyLen); // keeping a saved key (Reposition keeps it after a failed seek)
        _valueAt = format == NodeFormat.FixedKeyValue && !crc ? _keyLen : -1;
        _valueLen = h->ValueSize;
    }

    private void Reposition()
    {
        if (!_valid) throw new InvalidOperationException("the cursor is not at a record");
        if (!Stale) return;
        if (!_saved) ThrowLost();
        var key = SavedKey;
        bool there;
        try
        {
            there = Seek(key) && _t.CompareKeys(Key, key) == 0;
        }
        catch
        {
            KeepPlace();
            throw;
        }
        if (!there)
        {
            // Keep the old place (its key is still saved): MoveNext/MovePrev go on from there. The seek may have
            // run off the end and left the cursor unpositioned; it is still at that place.
            KeepPlace();
            throw new InvalidOperationException("the record under the cursor was deleted; move the cursor");
        }
    }
}

public sealed unsafe partial class BTree
{
    /// <summary>Changes made to the tree through any object on it, and restores of its segment (cursors compare it to know when to find their place again).</summary>
    internal long Modifications => _watch.Modifications;

    internal void Register(BTreeCursor c) => _watch.Register(c);

    /// <summary>Cursors in the tree's shared registry, some perhaps collected and not yet dropped (for tests).</summary>
    internal int CursorsRegistered => _watch.Registered;

    /// <summary>A cursor over this tree, not yet positioned.</summary>
    public BTreeCursor OpenCursor() => new(this);

    /// <summary>The smallest key not below <paramref name="key"/> and its value (slant lookup).</summary>
    public BTreeStatus Slant(ReadOnlySpan<byte> key, out ReadOnlySpan<byte> foundKey, out ReadOnlySpan<byte> value)
    {
        var c = SharedCursor;
        if (!c.Seek(key))
        {
            foundKey = value = default;
            return BTreeStatus.NotFound;
        }
        foundKey = c.Key;
        value = c.Value;
        c.Invalidate();
        return BTreeStatus.Ok;
    }

    /// <summary>The smallest key.</summary>
    public BTreeStatus Min(out ReadOnlySpan<byte> key, out ReadOnlySpan<byte> value) => Edge(false, out key, out value);

    /// <summary>The largest key.</summary>
    public BTreeStatus Max(out ReadOnlySpan<byte> key, out ReadOnlySpan<byte> value) => Edge(true, out key, out value);

    private BTreeStatus Edge(bool last, out ReadOnlySpan<byte> key, out ReadOnlySpan<byte> value)
    {
        var c = SharedCursor;
        if (!(last ? c.SeekLast() : c.SeekFirst()))
        {
            key = value = default;
            return BTreeStatus.NotFound;
        }
        key = c.Key;
        value = c.Value;
        c.Invalidate();
        return BTreeStatus.Ok;
    }

    private BTreeCursor? _shared;
    private BTreeCursor SharedCursor => _shared ??= new BTreeCursor(this);

    internal int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => Compare(a, b);

    internal Node CheckedNode(long off) => N(off);

    internal ReadOnlySpan<byte> ValueOfCursor(Node leaf, int i)
    {
        if (_recordCrc) CheckRecord(leaf, i);
        return ValueAt(leaf, i);
    }

    internal int LeafPosition(Node leaf, ReadOnlySpan<byte> key, out bool found) => SearchLeaf(leaf, key, out found);

    /// <summary>Descends to the leaf for <paramref name="key"/>, filling a cursor's path; returns the depth.</summary>
    internal int DescendInto(ReadOnlySpan<byte> key, long[] nodes, int[] idx)
    {
        Descend(key);
        for (int d = 0; d < _depth; d++)
        {
            nodes[d] = _path[d].Node;
            idx[d] = _path[d].Index;
        }
        return _depth;
    }

    /// <summary>Descends along the first (or last) children, filling a cursor's path; returns the depth.</summary>
    internal int DescendEdge(bool last, long[] nodes, int[] idx)
    {
        long off = Hdr.Root;
        int d = 0;
        while (true)
        {
            var n = N(off);
            nodes[d] = off;
            if (n.IsLeaf) return d + 1;
            int i = last ? n.Count - 1 : 0;
            idx[d] = i;
            off = n.Child(i);
            if (++d >= MaxHeight) throw new BeCorruptionException(_seg.FileName, off, $"{Where}: deeper than {MaxHeight} levels: a cycle");
        }
    }
}

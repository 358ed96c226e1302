using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Motr.Be.Tx;

namespace Motr.Be.BTree;

public sealed unsafe partial class BTree
{
    /// <summary>Inserts <paramref name="key"/> with <paramref name="value"/>; <see cref="BTreeStatus.Exists"/> if the key is there (nothing changes).</summary>
    /// <remarks>The transaction needs <see cref="InsertCredit"/> for these lengths. <paramref name="key"/> and <paramref name="value"/>
    /// may point into the tree's segment (a lookup's value, a cursor's key, a slice of them): the tree stores the bytes they held at
    /// the call, though the insert moves or frees records (it copies such spans out first; spans of other memory are not copied).</remarks>
    /// <exception cref="ArgumentException">Empty key, or a key or value over the limit or of the wrong fixed size, or a
    /// transaction of another segment (nothing changed).</exception>
    /// <exception cref="TxUsageException">The transaction is not open, or its remaining credit does not cover the insert (nothing changed).</exception>
    public BTreeStatus Insert(Transaction tx, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        BTreeCookie none = default;
        return Insert(tx, key, value, ref none, useCookie: false);
    }

    /// <summary>Inserts, trying the cookie's leaf first and leaving the cookie at the leaf that now holds the key.</summary>
    /// <remarks>As <see cref="Insert(Transaction, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>, spans into the segment included.</remarks>
    public BTreeStatus Insert(Transaction tx, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, ref BTreeCookie cookie) =>
        Insert(tx, key, value, ref cookie, useCookie: true);

    private BTreeStatus Insert(Transaction tx, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, ref BTreeCookie cookie, bool useCookie)
    {
        // Spans into the segment (a lookup's value, a cursor's key) are copied out first: the insert may move or free
        // those bytes (a compaction, a split) before it copies them (BTree.Aliasing.cs).
        if (InSegment(key) || InSegment(value)) return InsertAliased(tx, key, value, ref cookie, useCookie);
        var st = BeginInsert(tx, key, value.Length, ref cookie, useCookie, out var node, out int rec, out var spec, out var dest, out _);
        if (st != BTreeStatus.Ok) return st;
        value.CopyTo(dest);
        FinishRecord(node, rec, spec);
        _inserts++;
        CommitCounts();
        return BTreeStatus.Ok;
    }

    /// <summary>
    /// Inserts <paramref name="key"/> with a value of <paramref name="valueLength"/> bytes that
    /// <paramref name="fill"/> writes straight into its place in the tree (inside the transaction), so the
    /// value is never built elsewhere first. <see cref="BTreeStatus.Exists"/> if the key is there.
    /// </summary>
    /// <remarks>
    /// <paramref name="fill"/> should write the whole span: bytes it leaves are zeros in node, and whatever the
    /// chunk held before out of node. If it throws, the insert is rolled back — with anything <paramref name="fill"/>
    /// captured in <paramref name="tx"/> itself — and the exception passes on: the transaction is as it was before
    /// the call, and may still be closed.
    /// <para><paramref name="key"/> may point into the segment (it is copied out first). <paramref name="fill"/> runs once the
    /// record's place is made — splits done — so a span into the tree taken before the call may no longer hold what it
    /// did: read the tree inside <paramref name="fill"/> (a lookup there sees every other record where it now is), or pass a
    /// copy in <paramref name="state"/>. <paramref name="fill"/> must not change the tree.</para>
    /// </remarks>
    /// <exception cref="ArgumentException">As for <see cref="Insert(Transaction, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>.</exception>
    /// <exception cref="TxUsageException">As for <see cref="Insert(Transaction, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>.</exception>
    public BTreeStatus InsertInPlace<TState>(Transaction tx, ReadOnlySpan<byte> key, int valueLength, TState state, SpanAction<byte, TState> fill)
    {
        ArgumentNullException.ThrowIfNull(fill);
        CheckValue(valueLength, nameof(valueLength));
        if (InSegment(key)) return InsertInPlaceAliased(tx, key, valueLength, state, fill);
        BTreeCookie none = default;
        var st = BeginInsert(tx, key, valueLength, ref none, false, out var node, out int rec, out var spec, out var dest, out var start);
        if (st != BTreeStatus.Ok) return st;
        try
        {
            fill(dest, state);
        }
        catch
        {
            // The record is not finished (its checksums unset): a caller that caught this and closed the transaction
            // would commit it so. Undo the insert (unless the fill ended the transaction itself); nothing is counted.
            UndoPartial(tx, start);
            throw;
        }
        FinishRecord(node, rec, spec);
        _inserts++;
        CommitCounts();
        return BTreeStatus.Ok;
    }

    private BTreeStatus BeginInsert(Transaction tx, ReadOnlySpan<byte> key, int valueLength, ref BTreeCookie cookie, bool useCookie,
        out Node node, out int recOffset, out RecordSpec spec, out Span<byte> value, out TxSavepoint sp)
    {
        CheckKey(key);
        CheckValue(valueLength);
        CheckTx(tx, InsertCredit(key.Length, valueLength), "insert");
        BeginOp();
        // Every capture of this operation comes after the savepoint (BeginOp makes it capture afresh).
        sp = tx.Savepoint();
        node = default;
        recOffset = -1;
        spec = default;
        value = default;
        bool viaCookie = useCookie && TryCookie(key, cookie, out node);
        if (!viaCookie) node = Descend(key);
        spec = LeafSpec(key.Length, valueLength);
        PrefetchPlace(node, spec.Size);
        int i = SearchLeaf(node, key, out bool found);
        if (found)
        {
            SetCookie(ref cookie, node.Off);
            return BTreeStatus.Exists;
        }
        if (!EnoughSpace(spec, split: node.FreeBytes < spec.Size + NodeHeader.LeafEntrySize)) return BTreeStatus.OutOfSpace;
        try
        {
            var leaf = Touch(tx, node.Off);
            if (TryInsert(tx, leaf, i, key, spec, out value, out recOffset)) node = leaf;
            else
            {
                if (viaCookie)
                {
                    Descend(key); // a split needs the path
                    _cookieSplitDescents++;
                }
                (node, recOffset) = SplitInsert(tx, _depth - 1, i, key, spec, out value);
            }
        }
        catch (NoSpace)
        {
            // Free space was there in total but too fragmented: undo this insert alone.
            tx.RollbackTo(sp);
            return BTreeStatus.OutOfSpace;
        }
        catch
        {
            // Anything else part-way (damage the allocator found, memory the segment could not commit): undo this insert
            // too, so a caller that catches the exception and closes the transaction commits nothing half-done.
            UndoPartial(tx, sp);
            throw;
        }
        ref TreeHeader h = ref TouchTree(tx);
        h.Count++;
        if ((uint)key.Length > h.MaxKeyLength) h.MaxKeyLength = (uint)key.Length;
        SetCookie(ref cookie, node.Off);
        return BTreeStatus.Ok; // counted by the caller once the value is in
    }

    /// <summary>
    /// Asks for the lines a new record of <paramref name="size"/> bytes will most likely go to in leaf
    /// <paramref name="n"/> (the first hole, else below the heap top), as soon as its header is in: the
    /// search then waits for its record line while these arrive, instead of the record's write waiting after.
    /// A leaf without room will be split, which reads all of it: then the whole leaf.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PrefetchPlace(Node n, int size)
    {
        ref NodeHeader h = ref n.H;
        if (n.FreeBytes < size + NodeHeader.LeafEntrySize)
        {
            Prefetch(n.Off, n.Size);
            return;
        }
        int at = h.FirstHole != 0 ? h.FirstHole << 3 : (int)h.HeapTop - size;
        Prefetch(n.Off + at, size);
    }

    /// <summary>Splits the node at path depth <paramref name="d"/> and inserts the record into the half it belongs to; returns where it landed.</summary>
    private (Node Node, int Record) SplitInsert(Transaction tx, int d, int i, ReadOnlySpan<byte> key, RecordSpec spec, out Span<byte> value) =>
        SplitInsert(tx, d, i, key, spec, out value, out _);

    /// <summary>As above; <paramref name="at"/> is the record's index in the node it landed in.</summary>
    private (Node Node, int Record) SplitInsert(Transaction tx, int d, int i, ReadOnlySpan<byte> key, RecordSpec spec, out Span<byte> value, out int at)
    {
        var n = Touch(tx, _path[d].Node);
        // A record past the last of the tree's right edge (keys arriving in order: a load, rising ids) starts a
        // new node alone, so the full node stays full, and one before the first of a leaf on the left edge (keys
        // arriving in reverse order) keeps the old leaf alone while its records move to the new one: a split in
        // half would leave every node of such a tree half empty for good.
        Node r;
        int m;
        if (i == n.Count && OnEdge(d, right: true)) r = SplitOff(tx, n, out m);
        else r = Split(tx, n, out m, keepNone: i == 0 && n.IsLeaf && OnEdge(d, right: false));
        bool left = i < m || m == 0; // m == 0: every record moved, the new one (i == 0) stays alone
        Node target = left ? n : r;
        at = left ? i : i - m;
        if (!TryInsert(tx, target, at, key, spec, out value, out int rec, tag: false)) // both halves are retagged below
            throw new BeException($"{Where}: no room for a {spec.Size}-byte record in a half-full node 0x{target.Off:X}; the node sizes are inconsistent");
        // The right half's first key is the separator; an internal half gives it up (record 0 holds no key),
        // here, or, when the new record is that record 0, once the caller has written its child.
        var sep = CopySeparator(KeyAt(r, 0));
        if (!r.IsLeaf && !(target.Off == r.Off && at == 0)) EmptyFirstKey(tx, r);
        if (Tagged)
        {
            // Each half gets the prefix of its new bounds (the ancestors are not changed yet).
            Fences(d, out var low, out bool hasLow, out var high, out bool hasHigh);
            PrefixFromFences(tx, n, low, hasLow, sep, true, indexCaptured: false);
            PrefixFromFences(tx, r, sep, true, high, hasHigh, indexCaptured: true); // Split and the insert captured r's index
        }
        InsertSeparator(tx, d, sep, r.Off);
        return (target, rec);
    }

    /// <summary>Adds (separator → right) to the parent of the node at depth <paramref name="d"/>, or makes a new root.</summary>
    private void InsertSeparator(Transaction tx, int d, ReadOnlySpan<byte> sep, long right)
    {
        if (d == 0)
        {
            NewRoot(tx, _path[0].Node, sep, right);
            return;
        }
        int pi = _path[d - 1].Index + 1;
        var spec = InternalSpec(sep.Length);
        var p = Touch(tx, _path[d - 1].Node);
        Node node;
        int rec, at = pi;
        Span<byte> child;
        if (TryInsert(tx, p, pi, sep, spec, out child, out rec)) node = p;
        else (node, rec) = SplitInsert(tx, d - 1, pi, sep, spec, out child, out at);
        MemoryMarshal.Write(child, right);
        node.SetIndexChild(at, right); // the entry was captured when it was inserted
        FinishRecord(node, rec, spec);
        if (at == 0) EmptyFirstKey(tx, node); // it went up as the separator of the node a split made
    }

    /// <summary>Whether the node at path depth <paramref name="d"/> is the last (<paramref name="right"/>) or the first of its level: every ancestor was descended through its last or first child.</summary>
    private bool OnEdge(int d, bool right)
    {
        for (int e = 0; e < d; e++)
            if (_path[e].Index != (right ? new Node(_seg.Base, _path[e].Node).Count - 1 : 0)) return false;
        return true;
    }

    /// <summary>
    /// The split of a full node <paramref name="n"/> on the tree's right edge whose new record goes past its last:
    /// an empty new node, returned touched, to take the record; <paramref name="n"/> keeps all it holds (<paramref name="m"/>).
    /// </summary>
    private Node SplitOff(Transaction tx, Node n, out int m)
    {
        _opSplits++;
        m = n.Count;
        int size = (int)(n.IsLeaf ? Hdr.LeafSize : Hdr.InternalSize);
        if (NodeHeader.SizeOf + _inline + n.EntrySize > size) size = n.Size; // as in Split: a smaller configured size would not hold the record
        return new Node(_seg.Base, NewNode(tx, n.Level, size));
    }

    /// <summary>
    /// Moves the upper half (by bytes) of touched node <paramref name="n"/>'s records to a new node, returned touched;
    /// all of them if <paramref name="keepNone"/> (a leaf whose new record goes before them all).
    /// </summary>
    private Node Split(Transaction tx, Node n, out int m, bool keepNone = false)
    {
        _opSplits++;
        int count = n.Count;
        int total = 0;
        int es = n.EntrySize;
        for (int j = 0; j < count; j++) total += n.RecordSizeAt(j) + es;
        int acc = 0;
        m = 0;
        while (m < count - 1 && !keepNone)
        {
            int s = n.RecordSizeAt(m) + es;
            if (acc + s > total / 2 && m > 0) break;
            acc += s;
            m++;
        }
        int moved = count - m, movedBytes = total - acc;
        int size = (int)(n.IsLeaf ? Hdr.LeafSize : Hdr.InternalSize);
        if (NodeHeader.SizeOf + movedBytes + _inline + es > size) size = n.Size; // a smaller configured size would not hold this half
        long roff = NewNode(tx, n.Level, size);
        var r = new Node(_seg.Base, roff);

        int top = size - (movedBytes - es * moved);
        // Capture before writing (the header was captured whole when the node was made): an abort must
        // restore these bytes too, or freed memory would differ from the disk under later checksums.
        tx.Capture(roff + NodeHeader.SizeOf, es * moved);
        tx.Capture(roff + top, size - top);
        int pos = size;
        for (int j = 0; j < moved; j++)
        {
            int len = n.RecordSizeAt(m + j);
            pos -= len;
            Buffer.MemoryCopy(n.Rec(m + j), r.P + pos, len, len);
            Node.CopyEntry(r.P + NodeHeader.SizeOf + es * j, n.EntryAt(m + j), es, pos); // tags: SplitInsert retags both halves
        }
        r.H.Count = (ushort)moved;
        r.H.HeapTop = (uint)top;

        // The old node keeps [0, m): the moved records' space becomes holes, or the node is compacted
        // when there are many of them (one region instead of many small ones).
        if (moved <= 32)
        {
            Span<int> offs = stackalloc int[moved];
            Span<int> lens = stackalloc int[moved];
            for (int j = 0; j < moved; j++)
            {
                offs[j] = n.RecOffset(m + j);
                lens[j] = n.RecordSizeAt(m + j);
            }
            n.H.Count = (ushort)m;
            // Lowest offsets first: a record at the heap top moves the top up, and the next may then be at it.
            offs.Sort(lens);
            for (int j = 0; j < moved; j++) n.Release(tx, offs[j], lens[j]);
        }
        else
        {
            n.H.Count = (ushort)m;
            n.Compact(tx, _scratch);
        }
        return r;
    }

    /// <summary>A new root over <paramref name="left"/> and <paramref name="right"/>: the tree grows a level.</summary>
    private void NewRoot(Transaction tx, long left, ReadOnlySpan<byte> sep, long right)
    {
        int level = new Node(_seg.Base, left).Level + 1;
        long root = NewNode(tx, level, (int)Hdr.InternalSize);
        var rn = new Node(_seg.Base, root);
        // Record 0's key is never compared: empty (or zeros for fixed keys).
        ReadOnlySpan<byte> k0 = _keySize >= 0 ? _scratch2.AsSpan(0, _keySize) : default;
        if (_keySize >= 0) _scratch2.AsSpan(0, _keySize).Clear();
        AddChild(tx, rn, 0, k0, left);
        AddChild(tx, rn, 1, sep, right);
        ref TreeHeader h = ref TouchTree(tx);
        h.Root = root;
        h.Height++;
    }

    private void AddChild(Transaction tx, Node n, int i, ReadOnlySpan<byte> key, long child)
    {
        var spec = InternalSpec(key.Length);
        if (!TryInsert(tx, n, i, key, spec, out var c, out int rec))
            throw new BeException($"{Where}: no room for a child in new node 0x{n.Off:X}");
        MemoryMarshal.Write(c, child);
        n.SetIndexChild(i, child);
        FinishRecord(n, rec, spec);
    }

    /// <summary>
    /// False when the allocator surely cannot give what the operation must allocate: its record's out-of-node
    /// parts, and a node when <paramref name="split"/> (the leaf has no room for the record). An early refusal only:
    /// it must never refuse what could be done — the operation still answers OutOfSpace, rolled back, when an
    /// allocation fails on the way (more levels split, a large separator, fragments) — so <c>need</c> is a lower
    /// bound and the room an upper one. (A worst-case bound here, one node per level, kept the tree from the last
    /// few nodes' worth of free space for good, even for records that fit leaves with room.)
    /// <paramref name="freed"/>: bytes the operation frees before it allocates (an update's old out-of-node parts).
    /// </summary>
    private bool EnoughSpace(RecordSpec spec, bool split, long freed = 0)
    {
        var a = _seg.Allocator;
        long room = a.FreeBytes + (a.GrowthAllowed ? _seg.MaxSize - _seg.Size : 0) + freed;
        const int chunkHeader = Motr.Be.Alloc.AllocFormat.ChunkHeaderSize;
        long need = (split ? Math.Min(Hdr.LeafSize, Hdr.InternalSize) + chunkHeader : 0)
            + (spec.KeyLarge ? spec.KeyLength + chunkHeader : 0) + (spec.ValueLarge ? spec.ValueLength + chunkHeader : 0);
        return room >= need;
    }
}

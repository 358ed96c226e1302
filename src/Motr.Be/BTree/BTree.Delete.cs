using Motr.Be.Tx;

namespace Motr.Be.BTree;

public sealed unsafe partial class BTree
{
    /// <summary>Deletes <paramref name="key"/>; <see cref="BTreeStatus.NotFound"/> if it is not there. Underfull nodes are merged or rebalanced.</summary>
    /// <remarks>The transaction needs <see cref="DeleteCredit"/>. <paramref name="key"/> may point into the tree (a cursor's key,
    /// even the deleted record's own, in node or out): it is read only before anything changes.</remarks>
    /// <exception cref="ArgumentException">The transaction is of another segment (nothing was changed).</exception>
    /// <exception cref="TxUsageException">The transaction is not open, or its remaining credit does not cover the operation (nothing was changed).</exception>
    public BTreeStatus Delete(Transaction tx, ReadOnlySpan<byte> key)
    {
        CheckKey(key);
        CheckTx(tx, DeleteCredit(), "delete");
        BeginOp();
        var leaf = Descend(key);
        int i = SearchLeaf(leaf, key, out bool found);
        if (!found) return BTreeStatus.NotFound;
        var sp = tx.Savepoint(); // before the first capture of this operation
        try
        {
            var n = Touch(tx, leaf.Off);
            FreeLargeParts(tx, n, i);
            RemoveRecord(tx, n, i);
            TouchTree(tx).Count--;
            Rebalance(tx, _depth - 1);
        }
        catch
        {
            // Damage found part-way (a chunk the allocator refuses to free): undo the delete, as an insert does.
            UndoPartial(tx, sp);
            throw;
        }
        _deletes++;
        CommitCounts(); // a separator rewritten by a rebalance may shorten its node's prefix
        return BTreeStatus.Ok;
    }

    /// <summary>Below this fraction of its size a node is merged with, or refilled from, a sibling.</summary>
    private const int UnderfullDivisor = 4;

    /// <summary>
    /// After a removal from the node at depth <paramref name="d"/>: drop it if empty, else merge or
    /// rebalance up the path while nodes are underfull; then let the root shrink. Never allocates, so a
    /// delete cannot run out of space.
    /// </summary>
    private void Rebalance(Transaction tx, int d)
    {
        while (d > 0)
        {
            var x = new Node(_seg.Base, _path[d].Node);
            var p = new Node(_seg.Base, _path[d - 1].Node);
            int xi = _path[d - 1].Index;
            if (x.Count == 0)
            {
                // An empty node never stays below the root (a scan would stop at it).
                FreeNode(tx, x.Off);
                RemoveEntry(tx, p, xi);
                d--;
                continue;
            }
            // A single record or child is underfull whatever its size: with records of a quarter of a node, such
            // nodes would otherwise pile up beside siblings that could take them, and the tree keep its peak height.
            if ((x.UsedBytes * UnderfullDivisor >= x.Size && x.Count > 1) || p.Count < 2) break;
            int li = xi > 0 ? xi - 1 : 0, ri = li + 1;
            var a = N(p.Child(li));
            var b = N(p.Child(ri));
            if (CanMerge(p, ri, a, b))
            {
                Merge(tx, d - 1, p, ri, a, b);
                d--;
                continue;
            }
            if (x.IsLeaf) Rebalance(tx, d - 1, p, ri, a, b);
            break;
        }
        CollapseRoot(tx);
    }

    /// <summary>
    /// Removes entry <paramref name="i"/> of internal node <paramref name="p"/>. Entry 0 holds no key, so
    /// removing entry 0 moves entry 1's child into it instead (that child then spans from p's lower bound).
    /// <paramref name="keepLargeParts"/>: the record's out-of-node key has a new owner (a merge moved it down).
    /// </summary>
    private void RemoveEntry(Transaction tx, Node p, int i, bool keepLargeParts = false)
    {
        var pn = Touch(tx, p.Off);
        if (i == 0 && pn.Count >= 2)
        {
            long child = pn.Child(1);
            pn.Parts(0, out _, out _, out byte* v0, out _);
            tx.Capture(pn.Off + (v0 - pn.P), 8);
            *(long*)v0 = child;
            tx.Capture(pn.Off + NodeHeader.SizeOf + 4, 4);
            pn.SetIndexChild(0, child);
            if (_recordCrc) ResealRecord(tx, pn, 0);
            i = 1;
        }
        if (!keepLargeParts) FreeLargeParts(tx, pn, i);
        RemoveRecord(tx, pn, i);
    }

    /// <summary>Recomputes the CRC of record <paramref name="i"/> after an in-place change.</summary>
    private static void ResealRecord(Transaction tx, Node n, int i)
    {
        tx.Capture(n.Off + (n.RecordCrcField(i, out _) - n.P), 4);
        SealRecordCrc(n, i);
    }

    /// <summary>Writes the CRC of record <paramref name="i"/> into its field, which the caller captured.</summary>
    private static void SealRecordCrc(Node n, int i)
    {
        byte* f = n.RecordCrcField(i, out int covered);
        *(uint*)f = Crc32C.Compute(new ReadOnlySpan<byte>(n.Rec(i), covered));
    }

    /// <summary>Whether <paramref name="b"/> (entry <paramref name="ri"/> of <paramref name="p"/>) fits into its left sibling <paramref name="a"/>; internal nodes trade b's keyless record 0 for p's separator.</summary>
    private static bool CanMerge(Node p, int ri, Node a, Node b) =>
        a.UsedBytes + b.UsedBytes - NodeHeader.SizeOf + (a.IsLeaf ? 0 : p.RecordSizeAt(ri) - b.RecordSizeAt(0)) <= a.Size;

    /// <summary>
    /// Moves every record of <paramref name="b"/> into <paramref name="a"/> (its left sibling), frees <paramref name="b"/>
    /// and drops its entry <paramref name="ri"/> from the parent <paramref name="p"/>, at path depth <paramref name="pd"/>.
    /// </summary>
    private void Merge(Transaction tx, int pd, Node p, int ri, Node a, Node b)
    {
        _merges++;
        a = Touch(tx, a.Off);
        int na = a.Count, nb = b.Count;
        if (a.IsLeaf) Rebuild(tx, a, a, 0, na, b, 0, nb);
        else
        {
            // b's record 0 holds no key: the parent's separator for b comes down in its place, out-of-node
            // key and all, pointing at b's first child.
            Rebuild(tx, a, a, 0, na, b, 1, nb - 1);
            MoveDown(tx, a, na, p, ri, b.Child(0));
        }
        if (Tagged)
        {
            // a now spans both ranges: the prefix of their outer bounds.
            PairFences(pd, p, ri, out var low, out bool hasLow, out var high, out bool hasHigh);
            PrefixFromFences(tx, a, low, hasLow, high, hasHigh, indexCaptured: true);
        }
        FreeNode(tx, b.Off);
        RemoveEntry(tx, p, ri, keepLargeParts: !a.IsLeaf);
    }

    /// <summary>
    /// Copies record <paramref name="si"/> of internal node <paramref name="src"/> into touched internal node
    /// <paramref name="dst"/> at index <paramref name="i"/>, pointing at <paramref name="child"/> (untagged: the caller retags).
    /// </summary>
    private void MoveDown(Transaction tx, Node dst, int i, Node src, int si, long child)
    {
        int len = src.RecordSizeAt(si);
        int off = dst.Allocate(tx, len, _scratch);
        if (off < 0) throw new BeException($"{Where}: no room for a separator in node 0x{dst.Off:X} while merging");
        tx.Capture(dst.Off + off, len);
        Buffer.MemoryCopy(src.Rec(si), dst.P + off, len, len);
        dst.InsertIndex(tx, i, off, 0);
        dst.SetIndexChild(i, child);
        dst.Parts(i, out _, out _, out byte* v, out _);
        *(long*)v = child;
        if (_recordCrc) SealRecordCrc(dst, i);
    }

    /// <summary>Spreads the records of leaves <paramref name="a"/> and <paramref name="b"/> evenly (by bytes) and updates the separator in their parent <paramref name="p"/> (at path depth <paramref name="pd"/>).</summary>
    private void Rebalance(Transaction tx, int pd, Node p, int ri, Node a, Node b)
    {
        int na = a.Count, nb = b.Count;
        int total = 0;
        int es = a.EntrySize;
        for (int j = 0; j < na; j++) total += a.RecordSizeAt(j) + es;
        for (int j = 0; j < nb; j++) total += b.RecordSizeAt(j) + es;
        // First index (over a's records then b's) that goes to b: as even as possible by bytes, but each
        // side within its own node (siblings may have different sizes).
        int capA = a.Size - NodeHeader.SizeOf, capB = b.Size - NodeHeader.SizeOf;
        int acc = 0, m = 0;
        while (m < na + nb - 1)
        {
            int s = (m < na ? a.RecordSizeAt(m) : b.RecordSizeAt(m - na)) + es;
            if ((acc + s > total / 2 && m > 0) || acc + s > capA) break;
            acc += s;
            m++;
        }
        if (m == na || total - acc > capB) return; // already as even as it gets, or no split fits both
        // The new separator is the key that becomes b's first; the parent must hold it.
        var sep = CopySeparator(m < na ? KeyAt(a, m) : KeyAt(b, m - na));
        var spec = InternalSpec(sep.Length);
        int oldSize = p.RecordSizeAt(ri);
        // Deletes never allocate: skip when the new separator would need its own chunk, or more room.
        if (spec.KeyLarge || (spec.Size > oldSize && p.FreeBytes < spec.Size - oldSize)) return;
        _borrows++;
        a = Touch(tx, a.Off);
        b = Touch(tx, b.Off);
        if (m < na)
        {
            // a gives its tail to the front of b.
            Rebuild(tx, b, a, m, na - m, b, 0, nb, second: _scratch2);
            a.H.Count = (ushort)m;
            a.Compact(tx, _scratch); // a's keys are a subset of what it had: its prefix still holds
        }
        else
        {
            // b gives its head to the end of a.
            int k = m - na;
            Rebuild(tx, a, a, 0, na, b, 0, k);
            Rebuild(tx, b, b, k, nb - k, b, 0, 0);
        }
        if (Tagged)
        {
            PairFences(pd, p, ri, out var low, out bool hasLow, out var high, out bool hasHigh);
            if (m >= na) PrefixFromFences(tx, a, low, hasLow, sep, true, indexCaptured: true);
            PrefixFromFences(tx, b, sep, true, high, hasHigh, indexCaptured: true);
        }
        var pn = Touch(tx, p.Off);
        FreeLargeParts(tx, pn, ri);
        RemoveRecord(tx, pn, ri);
        if (!TryInsert(tx, pn, ri, sep, spec, out var child, out int rec))
            throw new BeException($"{Where}: no room for a separator in node 0x{pn.Off:X} after freeing its old one");
        System.Runtime.InteropServices.MemoryMarshal.Write(child, b.Off);
        pn.SetIndexChild(ri, b.Off);
        FinishRecord(pn, rec, spec);
    }

    /// <summary>
    /// Rewrites touched node <paramref name="dst"/> to hold records [s1, s1 + n1) of <paramref name="from1"/>
    /// then [s2, s2 + n2) of <paramref name="from2"/>, packed, built in scratch first (the sources may
    /// include <paramref name="dst"/> itself).
    /// </summary>
    private void Rebuild(Transaction tx, Node dst, Node from1, int s1, int n1, Node from2, int s2, int n2, byte[]? second = null)
    {
        var scratch = second ?? _scratch;
        int size = dst.Size, top = size, k = 0, es = dst.EntrySize;
        fixed (byte* s = scratch)
        {
            for (int pass = 0; pass < 2; pass++)
            {
                var src = pass == 0 ? from1 : from2;
                int start = pass == 0 ? s1 : s2, cnt = pass == 0 ? n1 : n2;
                for (int j = start; j < start + cnt; j++)
                {
                    int len = src.RecordSizeAt(j);
                    top -= len;
                    if (top < NodeHeader.SizeOf + es * (k + 1))
                        throw new BeException($"{Where}: records do not fit node 0x{dst.Off:X} ({size} bytes) while rebalancing");
                    Buffer.MemoryCopy(src.Rec(j), s + top, len, len);
                    Node.CopyEntry(s + NodeHeader.SizeOf + es * k++, src.EntryAt(j), es, top); // tags: the caller retags the node
                }
            }
            tx.Capture(dst.Off + NodeHeader.SizeOf, size - NodeHeader.SizeOf);
            Buffer.MemoryCopy(s + NodeHeader.SizeOf, dst.P + NodeHeader.SizeOf, es * k, es * k);
            Buffer.MemoryCopy(s + top, dst.P + top, size - top, size - top);
        }
        ref NodeHeader h = ref dst.H;
        h.Count = (ushort)k;
        h.HeapTop = (uint)top;
        h.FirstHole = 0;
        h.HoleBytes = 0;
    }

    /// <summary>While the root is an internal node with one child, that child becomes the root.</summary>
    private void CollapseRoot(Transaction tx)
    {
        while (true)
        {
            var root = N(Hdr.Root);
            if (root.IsLeaf || root.Count != 1) return;
            long child = root.Child(0);
            var rn = Touch(tx, root.Off);
            FreeLargeParts(tx, rn, 0);
            FreeNode(tx, root.Off);
            ref TreeHeader h = ref TouchTree(tx);
            h.Root = child;
            h.Height--;
        }
    }
}

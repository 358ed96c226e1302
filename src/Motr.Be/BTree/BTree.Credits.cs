using System.Runtime.CompilerServices;
using Motr.Be.Alloc;
using Motr.Be.Log;
using Motr.Be.Segments;
using Motr.Be.Tx;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

public sealed partial class BTree
{
    // Worst cases, by the pieces an operation is made of. Every operation checks at its start that the
    // transaction's remaining credit covers its worst case for the tree's current height, and the tests
    // run every operation in a transaction opened with exactly its credit (a capture beyond it throws).

    /// <summary>A node's header fields and deferred checksum, once per operation.</summary>
    private static TxCredit TouchCost => TxCredit.Region(NodeHeader.MutableLength) + Transaction.ChecksumCredit;

    /// <summary>The tree header's fields and checksum, once per operation.</summary>
    private static TxCredit TreeCost => TxCredit.Region(TreeHeader.MutableLength) + Transaction.ChecksumCredit;
    // The header's count of freed nodes, captured once by an operation that frees one (its checksum is TreeCost's).
    private static TxCredit FreesCost => TxCredit.Region(sizeof(ulong));

    /// <summary>A node's key prefix.</summary>
    private static TxCredit PrefixCost => TxCredit.Region(NodeHeader.PrefixRegionLength);

    /// <summary>A new prefix and every tag of a node's index.</summary>
    private static TxCredit RetagCost(int nodeSize) => TxCredit.Region(nodeSize) + PrefixCost;

    /// <summary>Room for a record (a hole's link or size, or a compaction), the record, the index shift, and a retag if the key leaves the node's prefix.</summary>
    private static TxCredit PlaceCost(int nodeSize, int recordSize) =>
        TxCredit.Region(nodeSize) + TxCredit.Region(recordSize) + TxCredit.Region(nodeSize) + RetagCost(nodeSize);

    /// <summary>Removing a record: index shift and a hole.</summary>
    private static TxCredit RemoveCost(int nodeSize) => TxCredit.Region(nodeSize) + TxCredit.Region(4);

    /// <summary>A new node: allocation, header, index and heap, checksum.</summary>
    private static TxCredit NewNodeCost(int nodeSize) =>
        Allocator.AllocCredit + TxCredit.Region(NodeHeader.SizeOf) + TxCredit.Region(nodeSize) * 2 + Transaction.ChecksumCredit;

    /// <summary>Splitting a node: the new node, the old one's holes (at most 32) or its compaction, and both halves' prefixes and tags.</summary>
    private static TxCredit SplitCost(int nodeSize) => NewNodeCost(nodeSize) + new TxCredit(32, nodeSize) + RetagCost(nodeSize) + PrefixCost;

    private static TxCredit LargeCost(int length) => Allocator.AllocCredit + TxCredit.Region(length);

    private TxCredit LargeParts(RecordSpec s) =>
        (s.KeyLarge ? LargeCost(s.KeyLength) : default) + (s.ValueLarge ? LargeCost(s.ValueLength) : default);

    /// <summary>
    /// Credit of <see cref="Insert(Transaction, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/> for a key and value
    /// of these lengths, at the tree's current height: every level may split and the root grow.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A length is negative or over the tree's limit for keys or values.</exception>
    public TxCredit InsertCredit(int keyLength, int valueLength)
    {
        // Fixed-size trees: the credit depends only on the header's height and node sizes; keep it for them (they may
        // change through another object on the tree, or back by an abort, so they are compared, not invalidated).
        int height = Height; // (refuses an object whose tree is gone)
        uint largest = Hdr.LargestNode, inner = Hdr.InternalSize;
        bool fixedSizes = _keySize >= 0 && _valueSize >= 0;
        if (fixedSizes && keyLength == _keySize && valueLength == _valueSize
            && _cachedInsertHeight == height && _cachedInsertLargest == largest && _cachedInsertInner == inner) return _cachedInsert;
        // Lengths no record may have: their worst case overflowed into a negative credit, refused later by BeginAsync
        // with a message about the credit instead of the length.
        if ((uint)keyLength > MaxKeyLength) ThrowLength(nameof(keyLength), keyLength, MaxKeyLength);
        if ((uint)valueLength > MaxValueLength) ThrowLength(nameof(valueLength), valueLength, MaxValueLength);
        var credit = InsertCreditFor(keyLength, valueLength, (int)largest, (int)inner, height);
        if (fixedSizes && keyLength == _keySize && valueLength == _valueSize)
        {
            _cachedInsert = credit;
            _cachedInsertHeight = height;
            _cachedInsertLargest = largest;
            _cachedInsertInner = inner;
        }
        return credit;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowLength(string paramName, int length, int max) =>
        throw new ArgumentOutOfRangeException(paramName, length, $"{Where}: a {(paramName == "keyLength" ? "key" : "value")} length must be 0 to {max}");

    private TxCredit _cachedInsert;
    private int _cachedInsertHeight = -1;
    private uint _cachedInsertLargest, _cachedInsertInner;

    private TxCredit InsertCreditFor(int keyLength, int valueLength, int big, int inner, int height)
    {
        var leaf = LeafSpec(keyLength, valueLength);
        // A split may promote any key of the node, not just the new one: size separators by the longest.
        int sepLength = Math.Max(keyLength, (int)Hdr.MaxKeyLength);
        var sep = InternalSpec(sepLength);
        // An internal split also empties the new node's record 0 key: the record rewritten, a hole, its chunk freed.
        var emptyFirst = TxCredit.Region(sep.Size) + TxCredit.Region(4) + (sep.KeyLarge ? Allocator.FreeCredit : default);
        var perLevel = SplitCost(big) + TouchCost + PlaceCost(big, sep.Size) + (sep.KeyLarge ? LargeCost(sepLength) : default) + emptyFirst;
        var newRoot = NewNodeCost(inner) + (PlaceCost(inner, sep.Size) + (sep.KeyLarge ? LargeCost(sepLength) : default)) * 2;
        return TreeCost + TouchCost + PlaceCost(big, leaf.Size) + LargeParts(leaf) + perLevel * height + newRoot;
    }

    /// <summary>Credit of <see cref="Delete"/> at the tree's current height: every level may merge or rebalance, the root may shrink.</summary>
    public TxCredit DeleteCredit() => DeleteCreditFor(LargestNode, Height);

    private TxCredit DeleteCreditFor(int big, int height)
    {
        int keyLength = (int)Math.Max(Hdr.MaxKeyLength, 1u);
        // A delete never allocates: a merge moves the parent's separator down, out-of-node chunk and all, and a borrow
        // whose new separator would need a chunk of its own is skipped. So a separator written is an in-node record:
        // at most the longest key's, and never over the inline limit.
        var sep = InternalSpec(keyLength);
        int sepSize = sep.KeyLarge ? _inline : sep.Size;
        var freeParts = Allocator.FreeCredit * 2;
        var leafRemove = TouchCost + RemoveCost(big) + freeParts;
        var merge = TouchCost + TxCredit.Region(big) + PrefixCost                        // rebuild the left node
            + TxCredit.Region(sepSize) + TxCredit.Region(big)                            // the separator moved down into it
            + TouchCost + TxCredit.Region(4) + Allocator.FreeCredit                      // free the right node
            + TouchCost + TxCredit.Region(8) + TxCredit.Region(4) + RemoveCost(big) + Allocator.FreeCredit; // drop its entry
        var rebalance = TouchCost * 2 + TxCredit.Region(big) * 3 + PrefixCost * 2         // rebuild both leaves
            + TouchCost + RemoveCost(big) + Allocator.FreeCredit                         // old separator out
            + PlaceCost(big, sepSize);                                                   // new one in
        var perLevel = TxCredit.Max(merge, rebalance);
        var collapse = TouchCost + TxCredit.Region(4) + Allocator.FreeCredit + Allocator.FreeCredit;
        return TreeCost + FreesCost + leafRemove + perLevel * height + collapse * height;
    }

    /// <summary>
    /// Why nodes of up to <paramref name="big"/> bytes (internal ones <paramref name="inner"/>) would leave this tree
    /// unchangeable on its domain's log, or null: once a node size is used, credits are sized by it for good (the
    /// tree may hold such nodes), so a size whose smallest insert or any delete needs more log than one transaction
    /// may reserve would leave a tree that can never be changed nor emptied. Checked with a level to grow on.
    /// </summary>
    private string? NodeSizeProblem(int big, int inner)
    {
        int height = Height + 1;
        long max = _seg.Domain.MaxTxReservation;
        long insert = LogFormat.Reservation(InsertCreditFor(Math.Max(_keySize, 1), Math.Max(_valueSize, 0), big, inner, height));
        long delete = LogFormat.Reservation(DeleteCreditFor(big, height));
        long need = Math.Max(insert, delete);
        return need <= max ? null
            : $"nodes of {big} bytes need {need} bytes of log per operation at height {height}, more than a transaction may reserve on this domain's log ({max}); " +
              "use smaller nodes or a larger log";
    }

    /// <summary>Credit of <see cref="Update"/> for a key and new value of these lengths.</summary>
    public TxCredit UpdateCredit(int keyLength, int valueLength) =>
        InsertCredit(keyLength, valueLength) + RemoveCost(LargestNode) + Allocator.FreeCredit * 2 + TxCredit.Region(4) * 2;

    /// <summary>
    /// Every changing operation starts here, before it changes anything: the transaction must be an open one of the
    /// tree's segment (a transaction captures, and an abort restores, its own segment's bytes only: the tree's changes
    /// would be neither logged nor undone), and its remaining credit must cover <paramref name="need"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckTx(Transaction tx, TxCredit need, string op)
    {
        if (!TxFits(tx, _seg, need)) ThrowTx(tx, _seg, need, op, Where); // Where is built only to throw: it allocates
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckTx(Transaction tx, Segment seg, TxCredit need, string op, string where)
    {
        if (!TxFits(tx, seg, need)) ThrowTx(tx, seg, need, op, where);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TxFits(Transaction tx, Segment seg, TxCredit need)
    {
        return tx is not null && tx.Segment == seg && tx.State == TxState.Open && tx.Fits(need);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowTx(Transaction tx, Segment seg, TxCredit need, string op, string where)
    {
        ArgumentNullException.ThrowIfNull(tx);
        if (tx.Segment != seg)
            throw new ArgumentException($"{where}: {op} was given a transaction of segment {tx.Segment.Id}, not of the tree's segment {seg.Id}", nameof(tx));
        if (tx.State != TxState.Open) throw new TxUsageException($"{where}: {op} needs an open transaction; it is {tx.State}");
        var c = tx.Credit;
        var u = tx.Used;
        throw new TxUsageException($"{where}: {op} needs credit {need}; the transaction has {c.Regions - u.Regions} regions / {c.Bytes - u.Bytes} bytes left " +
            "(compute the credit in the same turn as the operation: the tree's height may have changed)");
    }
}

using Motr.Be.Tx;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

public sealed unsafe partial class BTree
{
    /// <summary>Replaces the value of <paramref name="key"/> (it may grow or shrink); <see cref="BTreeStatus.NotFound"/> if the key is not there.</summary>
    /// <remarks>The transaction needs <see cref="UpdateCredit"/> for the new value's length. <see cref="BTreeStatus.OutOfSpace"/> changes nothing.
    /// <paramref name="key"/> and <paramref name="value"/> may point into the tree's segment — the record's own value or a slice
    /// of it (to shrink it), another record's value, a cursor's key: the record gets the bytes they held at the call, though
    /// the update frees the old record and its out-of-node parts and may compact or split the leaf.</remarks>
    /// <exception cref="ArgumentException">The transaction is of another segment (nothing was changed).</exception>
    /// <exception cref="TxUsageException">The transaction is not open, or its remaining credit does not cover the operation (nothing was changed).</exception>
    public BTreeStatus Update(Transaction tx, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        // A value in the segment (the record's own, a slice of it, another record's) is copied out first: the update
        // frees the old record and its out-of-node parts, and may compact or split the leaf, before it copies the
        // value (BTree.Aliasing.cs). The key needs no copy: it is read before any change, then copied (keyCopy).
        if (InSegment(value)) return UpdateAliased(tx, key, value);
        CheckKey(key);
        CheckValue(value.Length);
        CheckTx(tx, UpdateCredit(key.Length, value.Length), "update");
        BeginOp();
        var sp = tx.Savepoint(); // before the first capture of this operation
        var leaf = Descend(key);
        int i = SearchLeaf(leaf, key, out bool found);
        if (!found) return BTreeStatus.NotFound;
        var spec = LeafSpec(key.Length, value.Length);
        leaf.Parts(i, out byte* k, out uint klenf, out byte* v, out uint vlenf);
        // The old record's out-of-node parts are freed first (their sizes read before any capture: a damaged chunk
        // header throws here, changing nothing).
        long freed = 0;
        if ((klenf & LargeFlag) != 0) freed += LargeChunkBytes(((LargeRef*)k)->Chunk);
        if ((vlenf & LargeFlag) != 0) freed += LargeChunkBytes(((LargeRef*)v)->Chunk);
        var n = Touch(tx, leaf.Off);
        // In place only when the record keeps its layout: all in node before and after. The size alone does not
        // say so: a key that must now go out of node (a 16-byte reference instead of the key) can leave the
        // record the same size, and writing the value after the old key would run past the record.
        if (!spec.KeyLarge && !spec.ValueLarge && (vlenf & LargeFlag) == 0 && (klenf & LargeFlag) == 0 && n.RecordSizeAt(i) == spec.Size)
        {
            // Same record size, all in node: overwrite the value (and its length field) in place.
            int off = n.RecOffset(i);
            if (_leafFormat != NodeFormat.FixedKeyValue)
            {
                tx.Capture<uint>(n.Off + off + (_leafFormat == NodeFormat.FixedKey ? 0 : 4)) = (uint)value.Length;
            }
            if (value.Length > 0) value.CopyTo(tx.Capture(n.Off + (v - n.P), value.Length));
            if (_recordCrc)
            {
                byte* f = n.RecordCrcField(i, out _);
                tx.Capture(n.Off + (f - n.P), 4);
            }
            FinishRecord(n, off, spec);
            _updates++;
            return BTreeStatus.Ok;
        }
        // The old record's place in the leaf is the new record's to take.
        if (!EnoughSpace(spec, split: n.FreeBytes + n.RecordSizeAt(i) < spec.Size, freed))
        {
            tx.RollbackTo(sp); // the leaf was touched: OutOfSpace leaves the transaction as it was
            return BTreeStatus.OutOfSpace;
        }
        // Otherwise the record is rebuilt at the same index (it may move, or split the leaf).
        var keyCopy = CopySeparator(key);
        Node node;
        int rec;
        Span<byte> dest;
        try
        {
            FreeLargeParts(tx, n, i);
            RemoveRecord(tx, n, i);
            if (TryInsert(tx, n, i, keyCopy, spec, out dest, out rec)) node = n;
            else (node, rec) = SplitInsert(tx, _depth - 1, i, keyCopy, spec, out dest);
        }
        catch (NoSpace)
        {
            tx.RollbackTo(sp);
            return BTreeStatus.OutOfSpace;
        }
        catch
        {
            UndoPartial(tx, sp); // as for an insert
            throw;
        }
        value.CopyTo(dest);
        FinishRecord(node, rec, spec);
        _updates++;
        CommitCounts();
        return BTreeStatus.Ok;
    }

    /// <summary>What freeing out-of-node chunk <paramref name="chunk"/> gives back to the allocator (header included).</summary>
    private long LargeChunkBytes(long chunk) => _seg.Allocator.UsableSize(chunk) + Motr.Be.Alloc.AllocFormat.ChunkHeaderSize;
}

using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Motr.Be.Tx;

namespace Motr.Be.BTree;

// Caller spans that alias the segment's memory.
//
// Lookups and cursors hand out spans into the segment, and a natural caller passes one straight back into a
// change: copy record A's value to key B, shrink a value from its own bytes, a key cut from another record. A
// change moves and frees records before it writes the new one (a compaction of the node, a split, the old
// record's place and out-of-node chunks freed and reused), so reading such a span late would store whatever
// lies there by then. Update, which copies the caller's value after it changed the leaf, therefore first checks,
// by comparing pointers, whether the value lies in the segment's memory, and then copies it out (on the stack
// when small, else a pooled array) and goes on with the copy. The usual path, spans of the caller's own memory,
// pays two compares and no allocation. Update reads its key only before it changes anything (it works on its own
// copy of the key from there), so the key needs no copy.
//
// A span into ANOTHER segment is not copied: an operation of this tree changes only this segment's memory, so
// nothing it does moves or frees those bytes. (Reading them at all is up to the caller: that memory belongs to
// the other segment's locality.)
public sealed unsafe partial class BTree
{
    /// <summary>Aliasing spans up to this many bytes in all are copied to the stack, larger ones to a pooled array.</summary>
    private const int StackCopyLimit = 1024;

    // The segment's whole reserved address range (its base never moves: SegmentMemory), fixed at open.
    private readonly nuint _memLow, _memLength;

    /// <summary>
    /// Whether <paramref name="s"/> lies, even in part, in the segment's memory (the whole reserved range, so a span
    /// into memory of a closed segment counts too: the slow path then throws instead of reading unmapped memory).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool InSegment(ReadOnlySpan<byte> s)
    {
        nuint p = (nuint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(s));
        return p - _memLow < _memLength || (p < _memLow && p + (nuint)s.Length > _memLow);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private BTreeStatus UpdateAliased(Transaction tx, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        Enter();
        CheckKey(key);
        CheckValue(value.Length);
        byte[]? rented = null;
        Span<byte> buf = value.Length <= StackCopyLimit ? stackalloc byte[StackCopyLimit] : (rented = ArrayPool<byte>.Shared.Rent(value.Length));
        try
        {
            value.CopyTo(buf);
            return Update(tx, key, buf[..value.Length]);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }
}

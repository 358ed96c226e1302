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
// lies there by then. The operations that copy a caller's bytes after they changed something — Insert,
// InsertInPlace (its key) and Update (its value) — therefore first check, by comparing pointers, whether a span
// lies in the segment's memory, and then copy it out (on the stack when small, else a pooled array) and go on
// with the copy. The usual path, spans of the caller's own memory, pays two compares and no allocation.
// Delete reads its key, and Update its key, only before they change anything (Update works on its own copy of
// the key from there), so they need no copy.
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
    private BTreeStatus InsertAliased(Transaction tx, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, ref BTreeCookie cookie, bool useCookie)
    {
        Enter(); // a span into a closed segment's memory: ObjectDisposedException here, before any read of it
        CheckKey(key);
        CheckValue(value.Length);
        bool copyKey = InSegment(key), copyValue = InSegment(value);
        int n = (copyKey ? key.Length : 0) + (copyValue ? value.Length : 0);
        byte[]? rented = null;
        Span<byte> buf = n <= StackCopyLimit ? stackalloc byte[StackCopyLimit] : (rented = ArrayPool<byte>.Shared.Rent(n));
        try
        {
            scoped ReadOnlySpan<byte> k = key, v = value;
            if (copyKey)
            {
                key.CopyTo(buf);
                k = buf[..key.Length];
                buf = buf[key.Length..];
            }
            if (copyValue)
            {
                value.CopyTo(buf);
                v = buf[..value.Length];
            }
            return Insert(tx, k, v, ref cookie, useCookie);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private BTreeStatus InsertInPlaceAliased<TState>(Transaction tx, ReadOnlySpan<byte> key, int valueLength, TState state, SpanAction<byte, TState> fill)
    {
        Enter();
        CheckKey(key);
        byte[]? rented = null;
        Span<byte> buf = key.Length <= StackCopyLimit ? stackalloc byte[StackCopyLimit] : (rented = ArrayPool<byte>.Shared.Rent(key.Length));
        try
        {
            key.CopyTo(buf);
            return InsertInPlace(tx, buf[..key.Length], valueLength, state, fill);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
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

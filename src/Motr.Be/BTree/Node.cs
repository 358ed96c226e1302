using System.Runtime.CompilerServices;
using Motr.Be.Tx;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

/// <summary>
/// A view of one node in segment memory (see BTreeFormat.cs for the layout). Reading is free; every
/// change goes through a method taking the transaction, which captures exactly the bytes it changes.
/// The caller (the tree) captures the header first with <see cref="BTree"/>.Touch.
/// </summary>
internal readonly unsafe struct Node
{
    public readonly byte* P;
    public readonly long Off;

    public Node(byte* segmentBase, long offset)
    {
        P = segmentBase + offset;
        Off = offset;
    }

    public ref NodeHeader H
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref *(NodeHeader*)P;
    }

    public int Count => ((NodeHeader*)P)->Count;
    public int Level => ((NodeHeader*)P)->Level;
    public bool IsLeaf => ((NodeHeader*)P)->Level == 0;
    public int Size => (int)((NodeHeader*)P)->Size;
    public NodeFormat Format => (NodeFormat)((NodeHeader*)P)->Format;
    public bool RecordCrc => (((NodeHeader*)P)->Flags & RecordChecksumFlag) != 0;
    /// <summary>The index: per record a u32 with the record offset / 8 in its low half and the key tag in its high half, then in internal nodes a u32 with the child / 64.</summary>
    public uint* Index => (uint*)(P + NodeHeader.SizeOf);
    /// <summary>Bytes per index entry of this node.</summary>
    public int EntrySize => EntrySizeAt(((NodeHeader*)P)->Level);
    public static int EntrySizeAt(int level) => level == 0 ? NodeHeader.LeafEntrySize : NodeHeader.InternalEntrySize;
    public int IndexEnd => NodeHeader.SizeOf + EntrySize * Count;
    public int PrefixBits => ((NodeHeader*)P)->PrefixBits;
    public byte* Prefix => P + NodeHeader.PrefixOffset;
    public int ContiguousFree => (int)((NodeHeader*)P)->HeapTop - IndexEnd;
    public int FreeBytes => ContiguousFree + (int)((NodeHeader*)P)->HoleBytes;
    /// <summary>Header, index and live records.</summary>
    public int UsedBytes => Size - FreeBytes;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int RecOffset(int i) => (ushort)Word(i) << 3;

    /// <summary>The first word of entry <paramref name="i"/>: record offset / 8 and key tag.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Word(int i) => *(uint*)EntryAt(i);

    /// <summary>The key tag of record <paramref name="i"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Tag(int i) => (ushort)(Word(i) >> 16);

    /// <summary>Sets the key tag of entry <paramref name="i"/> (its bytes must be captured).</summary>
    public void SetTag(int i, ushort tag)
    {
        uint* w = (uint*)EntryAt(i);
        *w = (*w & 0xFFFF) | (uint)tag << 16;
    }

    /// <summary>Sets the child kept in entry <paramref name="i"/> of an internal node (its bytes must be captured).</summary>
    public void SetIndexChild(int i, long child) => *ChildWord(i) = (uint)(child >> 6);

    /// <summary>The second word of entry <paramref name="i"/> of an internal node: the child / 64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint* ChildWord(int i) => (uint*)(P + NodeHeader.SizeOf + NodeHeader.InternalEntrySize * i + 4);

    /// <summary>Copies an index entry of <paramref name="es"/> bytes, pointing it at <paramref name="recOffset"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CopyEntry(byte* dst, byte* src, int es, int recOffset)
    {
        *(uint*)dst = (*(uint*)src & 0xFFFF0000) | (uint)(recOffset >> 3);
        if (es == NodeHeader.InternalEntrySize) *(uint*)(dst + 4) = *(uint*)(src + 4);
    }

    /// <summary>Where entry <paramref name="i"/> sits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* EntryAt(int i) => EntryIn(P, i);

    /// <summary>Where entry <paramref name="i"/> of the node at <paramref name="node"/> sits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* EntryIn(byte* node, int i) => node + NodeHeader.SizeOf + EntrySizeAt(((NodeHeader*)node)->Level) * i;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Rec(int i) => RecIn(P, i);

    /// <summary>Record <paramref name="i"/> of the node at <paramref name="node"/> (for callers that keep a raw pointer, like cursors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* RecIn(byte* node, int i) => node + (*(ushort*)EntryIn(node, i) << 3);

    /// <summary>An index entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Entry(int recOffset, ushort tag) => (uint)(recOffset >> 3) | ((uint)tag << 16);

    // ---- record encoding ---------------------------------------------------------------------------

    /// <summary>In-node bytes of a part stored with length field <paramref name="lenf"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PartLength(uint lenf) => (lenf & LargeFlag) != 0 ? LargeRef.SizeOf : (int)lenf;

    /// <summary>Bytes before the key in a record of <paramref name="format"/>.</summary>
    public static int LengthFields(NodeFormat format) => format switch
    {
        NodeFormat.FixedKeyValue => 0,
        NodeFormat.FixedKey => 4,
        _ => 8,
    };

    /// <summary>Size of a record whose key and value parts take these in-node bytes.</summary>
    public static int RecordSize(NodeFormat format, int keyPart, int valuePart, bool crc) =>
        (LengthFields(format) + keyPart + valuePart + (crc ? 4 : 0) + 7) & ~7;

    /// <summary>The parts of record <paramref name="i"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Parts(int i, out byte* key, out uint klenf, out byte* value, out uint vlenf)
    {
        byte* r = Rec(i);
        switch (Format)
        {
            case NodeFormat.FixedKeyValue:
                key = r;
                klenf = H.KeySize;
                value = r + klenf;
                vlenf = H.ValueSize;
                return;
            case NodeFormat.FixedKey:
                vlenf = *(uint*)r;
                key = r + 4;
                klenf = H.KeySize;
                value = key + klenf;
                return;
            default:
                klenf = *(uint*)r;
                vlenf = *(uint*)(r + 4);
                key = r + 8;
                value = key + PartLength(klenf);
                return;
        }
    }

    /// <summary>Size in bytes of record <paramref name="i"/>.</summary>
    public int RecordSizeAt(int i)
    {
        Parts(i, out _, out uint klenf, out _, out uint vlenf);
        return RecordSize(Format, PartLength(klenf), PartLength(vlenf), RecordCrc);
    }

    /// <summary>The child of entry <paramref name="i"/> of an internal node, from the index.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Child(int i) => (long)*ChildWord(i) << 6;

    /// <summary>The child as record <paramref name="i"/> of an internal node holds it (fsck compares it with the index's).</summary>
    public long RecordChild(int i)
    {
        Parts(i, out _, out _, out byte* value, out _);
        return *(long*)value;
    }

    /// <summary>Where the CRC of record <paramref name="i"/> sits (only when <see cref="RecordCrc"/>), and how many bytes it covers.</summary>
    public byte* RecordCrcField(int i, out int covered)
    {
        covered = RecordSizeAtExact(i);
        return Rec(i) + covered;
    }

    private int RecordSizeAtExact(int i)
    {
        Parts(i, out _, out uint klenf, out _, out uint vlenf);
        return LengthFields(Format) + PartLength(klenf) + PartLength(vlenf);
    }

    // ---- space in the node ---------------------------------------------------------------------------

    /// <summary>
    /// Finds room for a record of <paramref name="size"/> bytes (plus its index entry): a hole, else the
    /// contiguous free space, else compaction. Returns the record's offset in the node, or -1 when the
    /// node is too full (split it). The header must already be captured.
    /// </summary>
    public int Allocate(Transaction tx, int size, byte[] scratch)
    {
        ref NodeHeader h = ref H;
        int es = EntrySize;
        if (ContiguousFree >= es)
        {
            // First fit among the holes, a bounded walk.
            ushort* link = &((NodeHeader*)P)->FirstHole;
            int steps = 0;
            for (int hole = *link; hole != 0 && steps < 16; steps++)
            {
                byte* hp = P + (hole << 3);
                int holeSize = ((ushort*)hp)[1] << 3;
                if (holeSize >= size)
                {
                    if (holeSize == size)
                    {
                        if (link != &((NodeHeader*)P)->FirstHole) tx.Capture(Off + ((byte*)link - P), 2);
                        *link = *(ushort*)hp;
                        h.HoleBytes -= (uint)size;
                        return hole << 3;
                    }
                    // Take the tail of the hole; what is left stays a hole in place.
                    tx.Capture(Off + (hole << 3) + 2, 2);
                    ((ushort*)hp)[1] = (ushort)((holeSize - size) >> 3);
                    h.HoleBytes -= (uint)size;
                    return (hole << 3) + holeSize - size;
                }
                link = (ushort*)hp;
                hole = *link;
            }
        }
        if (ContiguousFree >= size + es)
        {
            h.HeapTop -= (uint)size;
            return (int)h.HeapTop;
        }
        if (FreeBytes >= size + es)
        {
            Compact(tx, scratch);
            h.HeapTop -= (uint)size;
            return (int)h.HeapTop;
        }
        return -1;
    }

    /// <summary>Gives back the space of a record of <paramref name="size"/> bytes at <paramref name="offset"/>.</summary>
    public void Release(Transaction tx, int offset, int size)
    {
        ref NodeHeader h = ref H;
        if (offset == h.HeapTop)
        {
            h.HeapTop += (uint)size;
            return;
        }
        tx.Capture(Off + offset, 4);
        ((ushort*)(P + offset))[0] = h.FirstHole;
        ((ushort*)(P + offset))[1] = (ushort)(size >> 3);
        h.FirstHole = (ushort)(offset >> 3);
        h.HoleBytes += (uint)size;
    }

    /// <summary>Rewrites the heap without holes, tags kept (captures the index and heap: one region).</summary>
    public void Compact(Transaction tx, byte[] scratch)
    {
        int n = Count, size = Size;
        int top = size;
        fixed (byte* s = scratch)
        {
            int es = EntrySize;
            for (int i = 0; i < n; i++)
            {
                int len = RecordSizeAt(i);
                top -= len;
                Buffer.MemoryCopy(Rec(i), s + top, len, len);
                CopyEntry(s + NodeHeader.SizeOf + es * i, EntryAt(i), es, top);
            }
            tx.Capture(Off + NodeHeader.SizeOf, size - NodeHeader.SizeOf);
            int indexBytes = es * n;
            Buffer.MemoryCopy(s + NodeHeader.SizeOf, P + NodeHeader.SizeOf, indexBytes, indexBytes);
            Buffer.MemoryCopy(s + top, P + top, size - top, size - top);
        }
        ref NodeHeader h = ref H;
        h.HeapTop = (uint)top;
        h.FirstHole = 0;
        h.HoleBytes = 0;
    }

    // ---- the index -----------------------------------------------------------------------------------

    /// <summary>
    /// Makes record offset <paramref name="recOffset"/>, with key tag <paramref name="tag"/>, the <paramref name="i"/>-th
    /// in key order (an internal node's entry gets its child from <see cref="SetIndexChild"/> next).
    /// </summary>
    public void InsertIndex(Transaction tx, int i, int recOffset, ushort tag)
    {
        int n = Count, es = EntrySize;
        byte* at = EntryAt(i);
        tx.Capture(Off + (at - P), es * (n + 1 - i));
        Buffer.MemoryCopy(at, at + es, es * (n - i), es * (n - i));
        *(uint*)at = Entry(recOffset, tag);
        if (es == NodeHeader.InternalEntrySize) *(uint*)(at + 4) = 0;
        H.Count = (ushort)(n + 1);
    }

    /// <summary>Drops the <paramref name="i"/>-th index entry.</summary>
    public void RemoveIndex(Transaction tx, int i)
    {
        int n = Count;
        if (i < n - 1)
        {
            int es = EntrySize;
            byte* at = EntryAt(i);
            tx.Capture(Off + (at - P), es * (n - 1 - i));
            Buffer.MemoryCopy(at + es, at, es * (n - 1 - i), es * (n - 1 - i));
        }
        H.Count = (ushort)(n - 1);
    }
}

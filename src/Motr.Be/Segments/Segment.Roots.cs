using System.Runtime.InteropServices;
using System.Text;
using Motr.Be.Tx;

namespace Motr.Be.Segments;

/// <summary>One entry of the segment dictionary: a name and the offset of the structure it names.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal unsafe struct RootSlot
{
    public const int SizeOf = 64;
    public const int MaxName = 48;
    /// <summary>[0, u8[48]] UTF-8 name, zero padded.</summary>
    [FieldOffset(0)] public fixed byte Name[MaxName];
    /// <summary>[48, u8] name length; 0 marks a free slot.</summary>
    [FieldOffset(48)] public byte NameLength;
    /// <summary>[56, i64] offset of the named structure.</summary>
    [FieldOffset(56)] public long Offset;
}

public sealed unsafe partial class Segment
{
    /// <summary>Number of named roots a segment can hold.</summary>
    public const int MaxRoots = 39;

    private const int RootsCrcOffset = SegmentHeader.RootsLength - 4; // relative to RootsOffset

    /// <summary>Credit of <see cref="SetRoot"/> or <see cref="RemoveRoot"/>.</summary>
    public static TxCredit RootCredit => TxCredit.Region(RootSlot.SizeOf) + Transaction.ChecksumCredit;

    private ref RootSlot Slot(int i) => ref At<RootSlot>(SegmentHeader.RootsOffset + (long)i * RootSlot.SizeOf);

    /// <summary>The offset stored under <paramref name="name"/>, if any.</summary>
    public bool TryGetRoot(string name, out long offset)
    {
        int i = FindRoot(name);
        offset = i >= 0 ? Slot(i).Offset : 0;
        return i >= 0;
    }

    /// <summary>Stores <paramref name="offset"/> under <paramref name="name"/> (1 to 48 UTF-8 bytes), replacing any previous value.</summary>
    /// <exception cref="BeException">The dictionary is full or the name is invalid.</exception>
    public void SetRoot(Transaction tx, string name, long offset)
    {
        ArgumentNullException.ThrowIfNull(tx);
        int i = FindRoot(name);
        if (i < 0)
        {
            for (int j = 0; j < MaxRoots && i < 0; j++)
                if (Slot(j).NameLength == 0) i = j;
            if (i < 0) throw new BeException($"segment {Id}: the segment dictionary is full ({MaxRoots} roots); cannot add '{name}'");
        }
        Span<byte> utf8 = stackalloc byte[RootSlot.MaxName];
        int n = EncodeName(name, utf8);
        ref RootSlot s = ref tx.Capture<RootSlot>(SegmentHeader.RootsOffset + (long)i * RootSlot.SizeOf);
        s = default;
        fixed (byte* p = s.Name) utf8[..n].CopyTo(new Span<byte>(p, RootSlot.MaxName));
        s.NameLength = (byte)n;
        s.Offset = offset;
        tx.DeferChecksum(SegmentHeader.RootsOffset, SegmentHeader.RootsLength, RootsCrcOffset);
    }

    /// <summary>Removes <paramref name="name"/>; returns whether it was present.</summary>
    public bool RemoveRoot(Transaction tx, string name)
    {
        ArgumentNullException.ThrowIfNull(tx);
        int i = FindRoot(name);
        if (i < 0) return false;
        tx.Capture<RootSlot>(SegmentHeader.RootsOffset + (long)i * RootSlot.SizeOf) = default;
        tx.DeferChecksum(SegmentHeader.RootsOffset, SegmentHeader.RootsLength, RootsCrcOffset);
        return true;
    }

    /// <summary>Every named root, in slot order.</summary>
    public IReadOnlyList<KeyValuePair<string, long>> Roots()
    {
        var list = new List<KeyValuePair<string, long>>();
        for (int i = 0; i < MaxRoots; i++)
        {
            ref RootSlot s = ref Slot(i);
            if (s.NameLength == 0) continue;
            fixed (byte* p = s.Name) list.Add(new(Encoding.UTF8.GetString(p, Math.Min((int)s.NameLength, RootSlot.MaxName)), s.Offset));
        }
        return list;
    }

    private int FindRoot(string name)
    {
        Span<byte> utf8 = stackalloc byte[RootSlot.MaxName];
        int n = EncodeName(name, utf8);
        for (int i = 0; i < MaxRoots; i++)
        {
            ref RootSlot s = ref Slot(i);
            if (s.NameLength != n) continue;
            fixed (byte* p = s.Name)
                if (new ReadOnlySpan<byte>(p, n).SequenceEqual(utf8[..n])) return i;
        }
        return -1;
    }

    private int EncodeName(string name, Span<byte> utf8)
    {
        if (string.IsNullOrEmpty(name) || Encoding.UTF8.GetByteCount(name) > RootSlot.MaxName)
            throw new BeException($"segment {Id}: root name '{name}' must be 1 to {RootSlot.MaxName} UTF-8 bytes");
        return Encoding.UTF8.GetBytes(name, utf8);
    }

    /// <summary>Checks the CRC32C of the roots block; used at open.</summary>
    internal bool RootsChecksumValid() =>
        BlockChecksum.Verify(Bytes(SegmentHeader.RootsOffset, SegmentHeader.RootsLength), RootsCrcOffset);

    internal static void SealNewRoots(Span<byte> headerPage) =>
        BlockChecksum.Seal(headerPage.Slice(SegmentHeader.RootsOffset, SegmentHeader.RootsLength), RootsCrcOffset);
}

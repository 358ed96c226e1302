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
    /// <exception cref="ArgumentNullException"><paramref name="name"/> is null.</exception>
    /// <exception cref="BeException">The name is not 1 to 48 UTF-8 bytes of valid UTF-16.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public bool TryGetRoot(string name, out long offset)
    {
        CheckOwner("reading the segment roots");
        int i = FindRoot(name);
        offset = i >= 0 ? Slot(i).Offset : 0;
        return i >= 0;
    }

    /// <summary>Stores <paramref name="offset"/> under <paramref name="name"/> (1 to 48 UTF-8 bytes), replacing any previous value.</summary>
    /// <exception cref="BeException">The dictionary is full, the name is invalid (not 1 to 48 UTF-8 bytes of valid
    /// UTF-16), or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open or lacks <see cref="RootCredit"/>; nothing was captured.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void SetRoot(Transaction tx, string name, long offset)
    {
        CheckRootTx(tx, "set root");
        int i = FindRoot(name);
        if (i < 0)
        {
            for (int j = 0; j < MaxRoots && i < 0; j++)
                if (Slot(j).NameLength == 0) i = j;
            if (i < 0) throw new BeException($"segment {Id}: the segment dictionary is full ({MaxRoots} roots); cannot add '{name}'");
        }
        Span<byte> utf8 = stackalloc byte[RootSlot.MaxName];
        int n = EncodeName(name, utf8);
        CheckRootCredit(tx, "set root", name);
        ref RootSlot s = ref tx.CaptureHeader<RootSlot>(SegmentHeader.RootsOffset + (long)i * RootSlot.SizeOf);
        s = default;
        fixed (byte* p = s.Name) utf8[..n].CopyTo(new Span<byte>(p, RootSlot.MaxName));
        s.NameLength = (byte)n;
        s.Offset = offset;
        tx.DeferHeaderChecksum(SegmentHeader.RootsOffset, SegmentHeader.RootsLength, RootsCrcOffset);
    }

    /// <summary>Removes <paramref name="name"/>; returns whether it was present (false changes nothing).</summary>
    /// <exception cref="BeException">The name is invalid, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open or lacks <see cref="RootCredit"/>; nothing was captured.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public bool RemoveRoot(Transaction tx, string name)
    {
        CheckRootTx(tx, "remove root");
        int i = FindRoot(name);
        if (i < 0) return false;
        CheckRootCredit(tx, "remove root", name);
        tx.CaptureHeader<RootSlot>(SegmentHeader.RootsOffset + (long)i * RootSlot.SizeOf) = default;
        tx.DeferHeaderChecksum(SegmentHeader.RootsOffset, SegmentHeader.RootsLength, RootsCrcOffset);
        return true;
    }

    /// <summary>Every named root, in slot order.</summary>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public IReadOnlyList<KeyValuePair<string, long>> Roots()
    {
        CheckOwner("reading the segment roots");
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

    /// <summary>
    /// Refuses what would change the wrong segment or leave the roots block half-changed: the transaction must be an
    /// open one of this segment, used on the owner thread. (A transaction of another segment would capture the slot
    /// found here at the same place of <em>its</em> segment, overwriting another root there.)
    /// </summary>
    private void CheckRootTx(Transaction tx, string op)
    {
        ArgumentNullException.ThrowIfNull(tx);
        if (tx.Segment != this)
            throw new BeException($"segment {Id} ({FileName}): {op}: the transaction is on segment {tx.Segment.Id}, not on this segment");
        CheckOwner(op);
    }

    /// <summary>
    /// The slot's capture and the block's checksum must both fit before the first is made: a slot changed without its
    /// checksum deferred would be closed with a stale CRC, and the segment would no longer open.
    /// </summary>
    private void CheckRootCredit(Transaction tx, string op, string name)
    {
        if (tx.State != TxState.Open) return; // the capture says why, naming the state
        TxCredit need = TxCredit.Region(RootSlot.SizeOf) + tx.DeferChecksumCredit(SegmentHeader.RootsOffset, SegmentHeader.RootsLength, RootsCrcOffset, 0);
        if (!tx.Fits(need))
        {
            TxCredit c = tx.Credit, u = tx.Used;
            throw new TxUsageException($"segment {Id} ({FileName}): {op} '{name}': needs {need} but the transaction has " +
                $"{c.Regions - u.Regions} regions / {c.Bytes - u.Bytes} bytes left: it exceeds its credit; nothing was captured");
        }
    }

    /// <summary>Strict UTF-8: a lone surrogate is refused, not stored as U+FFFD (which would make two names one).</summary>
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private int EncodeName(string name, Span<byte> utf8)
    {
        ArgumentNullException.ThrowIfNull(name);
        int bytes;
        try { bytes = StrictUtf8.GetByteCount(name); }
        catch (EncoderFallbackException)
        {
            throw new BeException($"segment {Id}: root name '{name}' is not valid UTF-16 (a lone surrogate): it cannot be stored as UTF-8");
        }
        if (bytes == 0 || bytes > RootSlot.MaxName)
            throw new BeException($"segment {Id}: root name '{name}' must be 1 to {RootSlot.MaxName} UTF-8 bytes (it is {bytes})");
        return StrictUtf8.GetBytes(name, utf8);
    }

    /// <summary>Checks the CRC32C of the roots block; used at open.</summary>
    internal bool RootsChecksumValid() =>
        BlockChecksum.Verify(Bytes(SegmentHeader.RootsOffset, SegmentHeader.RootsLength), RootsCrcOffset);

    internal static void SealNewRoots(Span<byte> headerPage) =>
        BlockChecksum.Seal(headerPage.Slice(SegmentHeader.RootsOffset, SegmentHeader.RootsLength), RootsCrcOffset);
}

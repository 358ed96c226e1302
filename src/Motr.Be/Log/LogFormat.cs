using System.Runtime.InteropServices;
using Motr.Be.Tx;

namespace Motr.Be.Log;

// The log file:
//   [0, 512)        header slot A (LogHeaderSlot)
//   [512, 1024)     header slot B; checkpoints alternate between the slots, recovery takes the valid
//                   slot with the larger sequence, so a torn header write loses at most the newest checkpoint
//   [4096, end)     the record area, used as a circle. A record is addressed by its logical position,
//                   which only grows; it lives at AreaOffset + position % AreaSize and never wraps: when it
//                   does not fit before the end of the area, it starts at the next lap.
// A record:
//   RecordHeader (64) | GroupChunk ... | zero padding to a multiple of 512
// A group chunk (one locality's sealed tx group for one segment):
//   GroupHeader (64) | RegionDesc[RegionCount] (16 each) | region bytes, each padded to 8 |
//   payloads: PayloadHeader (16) + bytes padded to 8, one per tx that set a payload

/// <summary>One of the two header slots of the log file. Little-endian; offsets in comments.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct LogHeaderSlot
{
    public const int SizeOf = 128;
    /// <summary>[0, u64] <see cref="BeConstants.LogHeaderMagic"/>.</summary>
    [FieldOffset(0)] public ulong Magic;
    /// <summary>[8, u32] log format version.</summary>
    [FieldOffset(8)] public uint Version;
    /// <summary>[12, u32] flags, none defined.</summary>
    [FieldOffset(12)] public uint Flags;
    /// <summary>[16, u64] id of the domain.</summary>
    [FieldOffset(16)] public ulong DomainId;
    /// <summary>[24, i64] file size the log was created with.</summary>
    [FieldOffset(24)] public long FileSize;
    /// <summary>[32, i64] offset of the record area.</summary>
    [FieldOffset(32)] public long AreaOffset;
    /// <summary>[40, i64] size of the record area.</summary>
    [FieldOffset(40)] public long AreaSize;
    /// <summary>[48, u64] sequence of this slot write; the larger valid one wins.</summary>
    [FieldOffset(48)] public ulong SlotSeq;
    /// <summary>[56, i64] logical position of the first record not yet placed.</summary>
    [FieldOffset(56)] public long CheckpointPosition;
    /// <summary>[64, u64] lsn of that record.</summary>
    [FieldOffset(64)] public ulong CheckpointLsn;
    /// <summary>[72, i64] creation time, Unix milliseconds.</summary>
    [FieldOffset(72)] public long CreatedUnixMs;
    /// <summary>[80, u32] number of segments in the domain (ids 1..N).</summary>
    [FieldOffset(80)] public uint SegmentCount;
    /// <summary>[124, u32] CRC32C of [0, 124).</summary>
    [FieldOffset(124)] public uint Crc;

    public const int CrcOffset = 124;
}

/// <summary>Header of a log record.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct RecordHeader
{
    public const int SizeOf = 64;
    /// <summary>[0, u64] <see cref="BeConstants.LogRecordMagic"/>.</summary>
    [FieldOffset(0)] public ulong Magic;
    /// <summary>[8, u32] log format version.</summary>
    [FieldOffset(8)] public uint Version;
    /// <summary>[12, u32] flags, none defined.</summary>
    [FieldOffset(12)] public uint Flags;
    /// <summary>[16, u64] log sequence number: 1 for the first record, then +1.</summary>
    [FieldOffset(16)] public ulong Lsn;
    /// <summary>[24, i64] logical position of this record.</summary>
    [FieldOffset(24)] public long Position;
    /// <summary>[32, u32] bytes of the record including header and padding (a multiple of 512).</summary>
    [FieldOffset(32)] public uint Length;
    /// <summary>[36, u32] number of group chunks.</summary>
    [FieldOffset(36)] public uint GroupCount;
    /// <summary>[40, u32] bytes of group chunks after the header (the rest up to Length is zero padding).</summary>
    [FieldOffset(40)] public uint BodyLength;
    /// <summary>[44, u32] CRC32C over the CRC fields of the group chunks, in order.</summary>
    [FieldOffset(44)] public uint GroupCrcs;
    /// <summary>[48, u64] domain id, so records of another domain's log are never replayed.</summary>
    [FieldOffset(48)] public ulong DomainId;
    /// <summary>[56, u32] reserved, zero.</summary>
    [FieldOffset(56)] public uint Reserved;
    /// <summary>[60, u32] CRC32C of [0, 60).</summary>
    [FieldOffset(60)] public uint HeaderCrc;
}

/// <summary>Header of one sealed tx group inside a record.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct GroupHeader
{
    public const int SizeOf = 64;
    /// <summary>[0, u32] <see cref="BeConstants.GroupMagic"/>.</summary>
    [FieldOffset(0)] public uint Magic;
    /// <summary>[4, u32] bytes of the chunk including this header (a multiple of 8).</summary>
    [FieldOffset(4)] public uint Length;
    /// <summary>[8, u64] segment the regions belong to.</summary>
    [FieldOffset(8)] public ulong SegmentId;
    /// <summary>[16, i64] group sequence number within the segment.</summary>
    [FieldOffset(16)] public long GroupSeq;
    /// <summary>[24, i64] id of the first tx in the group; the group holds ids FirstTxId .. FirstTxId + TxCount - 1.</summary>
    [FieldOffset(24)] public long FirstTxId;
    /// <summary>[32, u32] number of txs.</summary>
    [FieldOffset(32)] public uint TxCount;
    /// <summary>[36, u32] number of regions.</summary>
    [FieldOffset(36)] public uint RegionCount;
    /// <summary>[40, u32] number of payloads.</summary>
    [FieldOffset(40)] public uint PayloadCount;
    /// <summary>[44, u32] <see cref="GroupFlags"/>.</summary>
    [FieldOffset(44)] public uint Flags;
    /// <summary>[48, i64] size of the segment's address space when the group was sealed.</summary>
    [FieldOffset(48)] public long SegmentSize;
    /// <summary>[56, u32] number of checksum descriptors, the last MarkCount * 16 bytes of the chunk (<see cref="PackedChecksumDesc"/>; * 24, <see cref="ChecksumDesc"/>, without <see cref="GroupFlags.Packed"/>).</summary>
    [FieldOffset(56)] public uint MarkCount;
    /// <summary>[60, u32] CRC32C of [0, 60) and [64, Length).</summary>
    [FieldOffset(60)] public uint Crc;

    /// <summary>Whether the group is laid out packed (<see cref="GroupFlags.Packed"/>).</summary>
    public readonly bool IsPacked => (Flags & GroupFlags.Packed) != 0;
}

/// <summary>Flags of a <see cref="GroupHeader"/>.</summary>
internal static class GroupFlags
{
    /// <summary>
    /// Packed (written since log format version 3): 8-byte <see cref="RegionDesc"/>s, the regions' bytes back to
    /// back, padded to 8 once after the last, and 16-byte <see cref="PackedChecksumDesc"/>s. Without it (versions 1
    /// and 2): 16-byte <see cref="RegionDescV1"/>s, each region's bytes padded to 8, and 24-byte <see cref="ChecksumDesc"/>s.
    /// </summary>
    public const uint Packed = 1;
}

/// <summary>Where one region's bytes go in its segment, in a group with <see cref="GroupFlags.Packed"/>: one u64.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct RegionDesc
{
    public const int SizeOf = 8;
    /// <summary>Bits of the offset: every offset below <see cref="BeConstants.MaxSegmentSize"/>.</summary>
    public const int OffsetBits = 43;
    /// <summary>Longest region one descriptor holds (2 MiB - 1); the seal cuts longer ones into several.</summary>
    public const int MaxLength = (1 << (64 - OffsetBits)) - 1;
    /// <summary>[0, u64] bits 0-42: offset in the segment; bits 43-63: length in bytes (1 .. <see cref="MaxLength"/>).</summary>
    [FieldOffset(0)] public ulong Packed;

    public readonly long Offset => (long)(Packed & ((1UL << OffsetBits) - 1));
    public readonly int Length => (int)(Packed >> OffsetBits);
    public static RegionDesc Make(long offset, int length) => new() { Packed = (ulong)offset | ((ulong)length << OffsetBits) };
    /// <summary>Descriptors a region of <paramref name="length"/> bytes takes.</summary>
    public static int CountFor(long length) => (int)((length + MaxLength - 1) / MaxLength);
}

/// <summary>Where one region's bytes go in its segment, in a group without <see cref="GroupFlags.Packed"/> (log format versions 1 and 2; read, no longer written).</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct RegionDescV1
{
    public const int SizeOf = 16;
    /// <summary>[0, i64] offset in the segment.</summary>
    [FieldOffset(0)] public long Offset;
    /// <summary>[8, u32] length in bytes.</summary>
    [FieldOffset(8)] public uint Length;
    /// <summary>[12, u32] reserved, zero.</summary>
    [FieldOffset(12)] public uint Reserved;
}

/// <summary>Kinds of <see cref="ChecksumDesc"/>.</summary>
internal static class ChecksumDescKind
{
    /// <summary>Recompute the block's checksum in the segment file when it is placed.</summary>
    public const uint Placed = 1;
    /// <summary>The block was freed: drop any checksum pending for it.</summary>
    public const uint Cancel = 2;
}

/// <summary>
/// A checksum the placer computes in the segment file (b+tree nodes): after the group's regions are placed,
/// and before the next checkpoint is recorded, the CRC32C of [Block, Block + Length) without the 4-byte field
/// at Block + CrcOffset is written into that field, if the block still starts with Magic. Recovery does the
/// same for every replayed group, so the file's checksums are valid whenever a checkpoint says it is current.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct ChecksumDesc
{
    public const int SizeOf = 24;
    /// <summary>[0, i64] offset of the block in the segment.</summary>
    [FieldOffset(0)] public long Block;
    /// <summary>[8, u32] length of the block (0 for <see cref="ChecksumDescKind.Cancel"/>).</summary>
    [FieldOffset(8)] public uint Length;
    /// <summary>[12, u32] offset of the CRC field within the block.</summary>
    [FieldOffset(12)] public uint CrcOffset;
    /// <summary>[16, u32] the block's magic, its first 4 bytes (0 for a cancel).</summary>
    [FieldOffset(16)] public uint Magic;
    /// <summary>[20, u32] <see cref="ChecksumDescKind"/>.</summary>
    [FieldOffset(20)] public uint Kind;
}

/// <summary>
/// A <see cref="ChecksumDesc"/> as a group with <see cref="GroupFlags.Packed"/> carries it: 16 bytes instead of 24
/// (a b+tree insert logs one, for its leaf).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct PackedChecksumDesc
{
    public const int SizeOf = 16;
    private const int KindShift = RegionDesc.OffsetBits, CrcShift = KindShift + 2;
    /// <summary>Largest offset of a checksum field within its block that a descriptor holds (512 KiB - 1).</summary>
    public const int MaxCrcOffset = (1 << (64 - CrcShift)) - 1;
    /// <summary>[0, u64] bits 0-42: block offset; bits 43-44: <see cref="ChecksumDescKind"/>; bits 45-63: offset of the CRC field in the block.</summary>
    [FieldOffset(0)] public ulong BlockKindCrc;
    /// <summary>[8, u32] length of the block (0 for a cancel).</summary>
    [FieldOffset(8)] public uint Length;
    /// <summary>[12, u32] the block's magic (0 for a cancel).</summary>
    [FieldOffset(12)] public uint Magic;

    public static PackedChecksumDesc From(in ChecksumDesc d) => new()
    {
        BlockKindCrc = (ulong)d.Block | ((ulong)d.Kind << KindShift) | ((ulong)d.CrcOffset << CrcShift),
        Length = d.Length,
        Magic = d.Magic,
    };

    public readonly ChecksumDesc ToDesc() => new()
    {
        Block = (long)(BlockKindCrc & ((1UL << KindShift) - 1)),
        Kind = (uint)(BlockKindCrc >> KindShift) & 3,
        CrcOffset = (uint)(BlockKindCrc >> CrcShift),
        Length = Length,
        Magic = Magic,
    };
}

/// <summary>Header of one tx's payload.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct PayloadHeader
{
    public const int SizeOf = 16;
    /// <summary>[0, i64] id of the tx.</summary>
    [FieldOffset(0)] public long TxId;
    /// <summary>[8, u32] payload length.</summary>
    [FieldOffset(8)] public uint Length;
    /// <summary>[12, u32] reserved, zero.</summary>
    [FieldOffset(12)] public uint Reserved;
}

/// <summary>Sizes the log reserves for transactions.</summary>
internal static class LogFormat
{
    public const long AreaOffset = 4096;

    /// <summary>Extra bytes a group adds at seal beyond its txs' captures: the rewritten geometry block.</summary>
    public const int SealExtra = RegionDesc.SizeOf + 32;

    /// <summary>Per-tx overhead reserved in the worst case that the tx ends up alone in its group and record.</summary>
    public const int TxOverhead = GroupHeader.SizeOf + SealExtra + RecordHeader.SizeOf + BeConstants.SectorSize - 1 + PayloadHeader.SizeOf + 7;

    /// <summary>
    /// Log bytes reserved for a tx with <paramref name="credit"/>: twice its worst case. A record that does
    /// not fit before the end of the area skips to the next lap, wasting less than its own length; so
    /// when every reservation covers its bytes twice, the records written from them always fit, skips
    /// included, and the log needs no permanently reserved slack. Only unwritten transactions hold
    /// reservations, so the doubling costs a few MiB at most. A credit of more than 2^61 bytes gets
    /// <see cref="long.MaxValue"/>, more than any log holds: the sum would overflow into a negative
    /// reservation, which passed the check against the largest record and gave log space that does not exist.
    /// </summary>
    public static long Reservation(TxCredit credit) =>
        credit.Bytes > MaxReservedBytes ? long.MaxValue
        : 2 * ((long)credit.Regions * RegionReserve + credit.Bytes + (credit.Bytes >> 18) + TxOverhead);

    /// <summary>Credit bytes above which <see cref="Reservation"/> saturates (with at most 2^31 regions the sum stays below 2^62).</summary>
    private const long MaxReservedBytes = 1L << 61;

    /// <summary>
    /// Log bytes reserved per captured region besides its bytes: its descriptor and up to 7 bytes of padding, with
    /// room to spare; the descriptors a region longer than <see cref="RegionDesc.MaxLength"/> adds are at most
    /// 8 bytes per 2 MiB, the <c>Bytes &gt;&gt; 18</c> of the reservation.
    /// </summary>
    private const int RegionReserve = RegionDesc.SizeOf + 16;

    public static int Align8(int n) => (n + 7) & ~7;
    public static long Align8(long n) => (n + 7) & ~7L;
    public static long AlignSector(long n) => (n + BeConstants.SectorSize - 1) & ~(long)(BeConstants.SectorSize - 1);
}

using System.Runtime.InteropServices;

namespace Motr.Be.Segments;

/// <summary>
/// Page 0 of every segment: the same bytes in memory and in the file. The static part is written once
/// at creation and guarded by <see cref="StaticCrc"/>; the dynamic blocks change inside transactions and
/// each carries its own CRC32C, recomputed when its transaction group is sealed (see
/// <c>Transaction.DeferChecksum</c>), so every durable state of the file has valid checksums.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
public struct SegmentHeader
{
    /// <summary>Bytes of the header: one page.</summary>
    public const int SizeOf = BeConstants.PageSize;

    // ---- static part [0, 64): written at creation, never captured --------------------------------
    /// <summary>[0, u64] <see cref="BeConstants.SegmentMagic"/>.</summary>
    [FieldOffset(0)] public ulong Magic;
    /// <summary>[8, u32] format version.</summary>
    [FieldOffset(8)] public uint Version;
    /// <summary>[12, u32] flags, none defined yet.</summary>
    [FieldOffset(12)] public uint Flags;
    /// <summary>[16, u64] segment id, unique in its domain; log regions name it.</summary>
    [FieldOffset(16)] public ulong SegmentId;
    /// <summary>[24, u64] id of the domain the segment belongs to.</summary>
    [FieldOffset(24)] public ulong DomainId;
    /// <summary>[32, u32] page size the segment was made with.</summary>
    [FieldOffset(32)] public uint PageSize;
    /// <summary>[36, u32] header size (= page size).</summary>
    [FieldOffset(36)] public uint HeaderSize;
    /// <summary>[40, i64] creation time, Unix milliseconds.</summary>
    [FieldOffset(40)] public long CreatedUnixMs;
    /// <summary>[48, i64] the largest size the segment may grow to.</summary>
    [FieldOffset(48)] public long MaxSize;
    /// <summary>[56, u32] reserved, zero.</summary>
    [FieldOffset(56)] public uint Reserved0;
    /// <summary>[60, u32] CRC32C of bytes [0, 60).</summary>
    [FieldOffset(60)] public uint StaticCrc;

    // ---- geometry block [64, 96): rewritten at every group seal ---------------------------------
    /// <summary>[64, i64] current size of the address space (multiple of the page size).</summary>
    [FieldOffset(64)] public long Size;
    /// <summary>[72, i64] id of the last transaction whose changes the segment holds (0: none).</summary>
    [FieldOffset(72)] public long LastTxId;
    /// <summary>[80, i64] sequence number of the last sealed group.</summary>
    [FieldOffset(80)] public long LastGroupSeq;
    /// <summary>[88, u32] reserved, zero.</summary>
    [FieldOffset(88)] public uint Reserved1;
    /// <summary>[92, u32] CRC32C of bytes [64, 92).</summary>
    [FieldOffset(92)] public uint GeometryCrc;

    // [96, 128) reserved. Nothing below SizeOf (the heap's start) is captured or checksummed by users: see UserStart.
    // [128, 1536) allocator state: see Alloc/AllocatorState.
    // [1536, 4096) segment dictionary: see SegmentRoots.

    /// <summary>Offset of the geometry block.</summary>
    public const int GeometryOffset = 64;
    /// <summary>Length of the geometry block including its CRC.</summary>
    public const int GeometryLength = 32;
    /// <summary>Offset of the allocator state block.</summary>
    public const int AllocatorOffset = 128;
    /// <summary>Length of the allocator state block.</summary>
    public const int AllocatorLength = 1408;
    /// <summary>Offset of the allocator block's CRC field, relative to <see cref="AllocatorOffset"/>.</summary>
    public const int AllocatorCrcOffset = AllocatorLength - 4;
    /// <summary>Offset of the segment dictionary (named roots).</summary>
    public const int RootsOffset = 1536;
    /// <summary>Length of the segment dictionary.</summary>
    public const int RootsLength = SizeOf - RootsOffset;
    /// <summary>End of the static part; no transaction may capture below it.</summary>
    public const int StaticLength = 64;
    /// <summary>
    /// First offset a user may capture or checksum: the heap's start, the end of this page. The whole header below it
    /// is the engine's: the static part, the geometry block (Size by <c>Segment.Grow</c>, the rest and its CRC at every
    /// seal), the allocator's state and the roots block. The blocks carry CRCs the engine recomputes only when it changes
    /// them itself, so a change by hand without that checksum (or a checksum with another field) would leave a bad CRC and
    /// a segment that no longer opens; a Size changed by hand would claim memory never committed. The engine's own writers
    /// go through <c>Transaction.CaptureHeader</c> and <c>Transaction.DeferHeaderChecksum</c>.
    /// </summary>
    public const int UserStart = SizeOf;

    /// <summary>What lives at <paramref name="offset"/> of the header, for errors (the offset is below <see cref="UserStart"/>).</summary>
    internal static string BlockAt(long offset) => offset switch
    {
        < 0 => "no part of the segment (a negative offset)",
        < StaticLength => "the header's static part",
        < GeometryOffset + GeometryLength => "the geometry block",
        < AllocatorOffset => "the header's reserved bytes",
        < RootsOffset => "the allocator's state",
        < SizeOf => "the roots block",
        _ => "the heap",
    };
}

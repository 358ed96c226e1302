using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Motr.Be.Segments;

namespace Motr.Be.Alloc;

// The allocator's on-disk format (little-endian, offsets in comments):
//
//   segment [128, 1536)   AllocatorState: geometry, counters, the non-empty-bin bitmap, 160 free-list
//                         heads, CRC32C at [1404, 1408) (deferred to group seal).
//   segment [4096, top)   the heap: a chain of chunks in address order, each starting with a
//                         ChunkHeader (32 bytes) whose data follows it. A free chunk keeps its
//                         free-list links (FreeNode, 16 bytes) at the start of its data.
//   segment [top, size)   the wilderness: never formatted, carved on demand (and grown into).
//
// Chunks are 16-byte aligned and a multiple of 16 bytes, at least MinChunkSize (48). Free chunks are
// never adjacent to each other nor to the wilderness (they are coalesced on free).

/// <summary>Magic numbers, versions and geometry of the allocator's on-disk format.</summary>
public static class AllocFormat
{
    /// <summary>"ALOC" — magic of the allocator state block.</summary>
    public const uint StateMagic = 0x434F4C41;

    /// <summary>Allocator format version written by this build.</summary>
    public const uint StateVersion = 1;

    /// <summary>"CHNK" — magic of every chunk header.</summary>
    public const uint ChunkMagic = 0x4B4E4843;

    /// <summary>Bytes of the header that precedes every chunk's data.</summary>
    public const int ChunkHeaderSize = 32;

    /// <summary>Granularity of chunk sizes and offsets, and the smallest data alignment handed out.</summary>
    public const int Granule = 16;

    /// <summary>Smallest chunk: a header plus room for the free-list links.</summary>
    public const int MinChunkSize = ChunkHeaderSize + Granule;

    /// <summary>Offset of the first chunk: the page after the segment header.</summary>
    public const long HeapStart = SegmentHeader.SizeOf;

    /// <summary>Largest alignment <see cref="Allocator.TryAlloc"/> accepts: a page.</summary>
    public const int MaxAlignment = BeConstants.PageSize;

    /// <summary>Number of exact-fit size classes: usable sizes 16, 32, ..., 1024.</summary>
    public const int SmallClassCount = 64;

    /// <summary>Largest usable size served by an exact-fit class.</summary>
    public const int MaxSmallUsable = SmallClassCount * Granule;

    /// <summary>Number of best-fit bins for larger chunks: 4 per power of two from 1 KiB, the last one open-ended.</summary>
    public const int LargeBinCount = 96;

    /// <summary>Number of free lists (size classes then large bins).</summary>
    public const int BinCount = SmallClassCount + LargeBinCount;

    /// <summary>Words of the non-empty-bin bitmap.</summary>
    public const int BitmapWords = (BinCount + 63) / 64;

    /// <summary>The bits of the bitmap's last word that name a free list; the others are always zero.</summary>
    public const ulong LastBitmapWordMask = BinCount % 64 == 0 ? ~0UL : (1UL << (BinCount % 64)) - 1;

    /// <summary>Chunk flag: the chunk is free (on a free list).</summary>
    public const ushort FlagFree = 0x1;

    /// <summary>Chunk flag: the chunk is allocated.</summary>
    public const ushort FlagUsed = 0x2;

    /// <summary>Free-list index (size class or bin) of a chunk of <paramref name="chunkSize"/> bytes (header included).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BinOf(long chunkSize)
    {
        long usable = chunkSize - ChunkHeaderSize;
        if (usable <= MaxSmallUsable) return (int)(usable / Granule) - 1;
        int fl = BitOperations.Log2((ulong)chunkSize);             // >= 10
        int sl = (int)(chunkSize >> (fl - 2)) & 3;
        int bin = SmallClassCount + (fl - 10) * 4 + sl;
        return bin < BinCount ? bin : BinCount - 1;
    }

    /// <summary>The smallest chunk size (header included) that falls into free list <paramref name="bin"/>.</summary>
    public static long BinMinChunkSize(int bin)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bin);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(bin, BinCount);
        if (bin < SmallClassCount) return ChunkHeaderSize + (long)(bin + 1) * Granule;
        int l = bin - SmallClassCount;
        long min = (4L + (l & 3)) << (l / 4 + 8);
        return Math.Max(min, ChunkHeaderSize + MaxSmallUsable + Granule);
    }
}

/// <summary>
/// The allocator's persistent state: the block [<see cref="SegmentHeader.AllocatorOffset"/>, +<see cref="SegmentHeader.AllocatorLength"/>)
/// of the segment header page. Little-endian; offsets (relative to the block) in comments. The CRC is
/// recomputed when the transaction group is sealed (<c>Transaction.DeferChecksum</c>).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal unsafe struct AllocatorState
{
    public const int SizeOf = SegmentHeader.AllocatorLength;

    /// <summary>[0, u32] <see cref="AllocFormat.StateMagic"/>.</summary>
    [FieldOffset(0)] public uint Magic;
    /// <summary>[4, u32] <see cref="AllocFormat.StateVersion"/>.</summary>
    [FieldOffset(4)] public uint Version;
    /// <summary>[8, u32] flags, none defined.</summary>
    [FieldOffset(8)] public uint Flags;
    /// <summary>[12, u32] chunk header size the heap was made with (<see cref="AllocFormat.ChunkHeaderSize"/>).</summary>
    [FieldOffset(12)] public uint ChunkHeaderSize;
    /// <summary>[16, i64] offset of the first chunk (<see cref="AllocFormat.HeapStart"/>).</summary>
    [FieldOffset(16)] public long HeapStart;

    // ---- the mutable scalars [24, 72): captured as one region per operation ----
    /// <summary>[24, i64] end of the chunk chain = start of the wilderness.</summary>
    [FieldOffset(24)] public long HeapTop;
    /// <summary>[32, i64] offset of the last chunk (the one ending at HeapTop); 0 when the heap is empty.</summary>
    [FieldOffset(32)] public long LastChunk;
    /// <summary>[40, i64] sum of the usable sizes of allocated chunks.</summary>
    [FieldOffset(40)] public long UsedBytes;
    /// <summary>[48, i64] sum of the sizes (headers included) of free chunks; the wilderness is not included.</summary>
    [FieldOffset(48)] public long FreeBytes;
    /// <summary>[56, i64] number of allocated chunks.</summary>
    [FieldOffset(56)] public long UsedChunks;
    /// <summary>[64, i64] number of free chunks.</summary>
    [FieldOffset(64)] public long FreeChunks;

    /// <summary>[72, u32] number of free lists the state was made with (<see cref="AllocFormat.BinCount"/>).</summary>
    [FieldOffset(72)] public uint BinCount;
    /// <summary>[76, u32] reserved, zero.</summary>
    [FieldOffset(76)] public uint Reserved0;
    /// <summary>[80, u64[3]] bit i set iff free list i is not empty.</summary>
    [FieldOffset(80)] public fixed ulong Bitmap[AllocFormat.BitmapWords];
    /// <summary>[104, i64[160]] head (chunk offset, 0 = empty) of each free list.</summary>
    [FieldOffset(104)] public fixed long Heads[AllocFormat.BinCount];
    // [1384, 1404) reserved, zero.
    /// <summary>[1404, u32] CRC32C of the block without this field.</summary>
    [FieldOffset(1404)] public uint Crc;

    public const int MutableOffset = 24;
    public const int HeapTopOffset = 24;
    public const int MutableLength = 48;
    public const int BitmapOffset = 80;
    public const int HeadsOffset = 104;
}

/// <summary>The header of every chunk. Little-endian; offsets (relative to the chunk) in comments.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct ChunkHeader
{
    public const int SizeOf = AllocFormat.ChunkHeaderSize;

    /// <summary>[0, u32] <see cref="AllocFormat.ChunkMagic"/>.</summary>
    [FieldOffset(0)] public uint Magic;
    /// <summary>[4, u16] exactly one of <see cref="AllocFormat.FlagFree"/>, <see cref="AllocFormat.FlagUsed"/>.</summary>
    [FieldOffset(4)] public ushort Flags;
    /// <summary>[6, u16] reserved, zero.</summary>
    [FieldOffset(6)] public ushort Reserved0;
    /// <summary>[8, i64] chunk size including this header (a multiple of 16, at least 48).</summary>
    [FieldOffset(8)] public long Size;
    /// <summary>[16, i64] offset of the previous chunk in address order (boundary tag); 0 for the first chunk.</summary>
    [FieldOffset(16)] public long Prev;
    /// <summary>[24, u32] reserved, zero.</summary>
    [FieldOffset(24)] public uint Reserved1;
    /// <summary>[28, u32] CRC32C of [0, 28) followed by the chunk's own offset (u64), so a header copied elsewhere does not validate.</summary>
    [FieldOffset(28)] public uint Crc;

    public const int CrcOffset = 28;
    /// <summary>Start of the tail [16, 32) captured when only the previous-chunk link changes.</summary>
    public const int LinkOffset = 16;
    public const int LinkLength = 16;
}

/// <summary>The free-list links kept at the start of a free chunk's data.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct FreeNode
{
    public const int SizeOf = 16;
    /// <summary>[0, i64] next free chunk of the same list; 0 = last.</summary>
    [FieldOffset(0)] public long Next;
    /// <summary>[8, i64] previous free chunk of the same list; 0 = first (the list head points here).</summary>
    [FieldOffset(8)] public long Prev;
}

using System.Runtime.InteropServices;
using Motr.Be.Segments;

namespace Motr.Be.Alloc;

public sealed partial class Allocator
{
    /// <summary>
    /// Initialises the allocator block of a new segment's header page (no transaction: the file is
    /// being created): an empty heap at <see cref="AllocFormat.HeapStart"/> whose whole data area is
    /// wilderness, so nothing past the header page needs formatting. Leaves a valid CRC.
    /// </summary>
    internal static void FormatNew(Span<byte> headerPage, long segmentSize)
    {
        if (segmentSize < AllocFormat.HeapStart)
            throw new ArgumentOutOfRangeException(nameof(segmentSize), $"segment size {segmentSize} leaves no room for a heap after the {AllocFormat.HeapStart}-byte header");
        var block = headerPage.Slice(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorLength);
        block.Clear();
        ref AllocatorState s = ref MemoryMarshal.AsRef<AllocatorState>(block);
        s.Magic = AllocFormat.StateMagic;
        s.Version = AllocFormat.StateVersion;
        s.ChunkHeaderSize = AllocFormat.ChunkHeaderSize;
        s.HeapStart = AllocFormat.HeapStart;
        s.HeapTop = AllocFormat.HeapStart;
        s.BinCount = AllocFormat.BinCount;
        BlockChecksum.Seal(block, SegmentHeader.AllocatorCrcOffset);
    }
}

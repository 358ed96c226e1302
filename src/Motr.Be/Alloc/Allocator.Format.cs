using Motr.Be.Segments;

namespace Motr.Be.Alloc;

/// <summary>Allocator inside a segment (placeholder until the allocator lands: formats an empty state block).</summary>
public sealed partial class Allocator
{
    /// <summary>Initialises the allocator block of a new segment's header page (no transaction: the file is being created).</summary>
    internal static void FormatNew(Span<byte> headerPage, long segmentSize)
    {
        var block = headerPage.Slice(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorLength);
        block.Clear();
        BlockChecksum.Seal(block, SegmentHeader.AllocatorCrcOffset);
    }
}

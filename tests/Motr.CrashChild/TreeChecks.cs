using Motr.Be.BTree;
using Motr.Be.Segments;

namespace Motr.CrashChild;

/// <summary>
/// Checks of a recovered segment holding one b+tree, shared by the crash workloads here and the crash tests'
/// models: the tree's fsck, and the allocator's agreement with what the tree owns.
/// </summary>
public static class TreeChecks
{
    /// <summary>Null if the tree's fsck found it healthy, else the report and its first problems.</summary>
    public static string? Fsck(BTreeCheckReport report) =>
        report.Healthy ? null : $"fsck: {report}; problems: {string.Join(" | ", report.Problems.Take(5))}";

    /// <summary>
    /// Null if the allocator's fsck is clean and its allocated blocks are exactly the tree's chunks (header, nodes,
    /// out-of-node parts: nothing leaked, nothing freed too early); else what differs. The tree must be the
    /// segment's only user of the allocator.
    /// </summary>
    public static string? Ownership(Segment seg, BTreeCheckReport report)
    {
        var alloc = seg.Allocator.Check();
        if (alloc.Count > 0) return $"allocator fsck: {string.Join(" | ", alloc.Take(3))}";
        var owned = new HashSet<long>(report.Chunks);
        var allocated = seg.Allocator.AllocatedBlocks().Select(b => b.Offset).ToHashSet();
        if (owned.SetEquals(allocated)) return null;
        return $"the tree owns {owned.Count} chunks, the allocator holds {allocated.Count} blocks: " +
            $"[{string.Join(", ", allocated.Except(owned).Take(5).Select(o => $"0x{o:X}"))}] allocated but not in the tree, " +
            $"[{string.Join(", ", owned.Except(allocated).Take(5).Select(o => $"0x{o:X}"))}] in the tree but not allocated";
    }
}

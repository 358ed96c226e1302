using Motr.Be.BTree;
using Motr.Be.Segments;

namespace Motr.CrashChild;

/// <summary>
/// The check of a recovered segment holding one b+tree, shared by the crash workloads here and the crash tests'
/// models: the engine's segment fsck (<see cref="SegmentCheck.Run"/>) over that one tree.
/// </summary>
public static class TreeChecks
{
    /// <summary>
    /// Null if the tree's fsck and the allocator's are clean and the allocated blocks are exactly the tree's chunks
    /// (header, nodes, out-of-node parts: nothing leaked, nothing freed too early, nothing owned twice); else the
    /// segment report's summary and its first problems. The tree must be the segment's only user of the allocator.
    /// <paramref name="records"/> is the number of records the tree's fsck found.
    /// </summary>
    public static string? Segment(Segment seg, BTree tree, out long records)
    {
        var r = SegmentCheck.Run(seg, [tree]);
        records = r.Records;
        if (r.Healthy && r.AllocationWalked) return null;
        var summary = r.ToString();
        int end = summary.IndexOf('\n');
        return $"fsck: {(end < 0 ? summary : summary[..end])}; problems: {string.Join(" | ", r.Problems.Take(5))}";
    }
}

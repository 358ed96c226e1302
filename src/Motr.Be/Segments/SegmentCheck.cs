using System.Text;
using Motr.Be.Alloc;
using Motr.Be.BTree;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Segments;

/// <summary>One tree's part of a <see cref="SegmentCheckReport"/>.</summary>
public sealed class SegmentCheckTree
{
    internal SegmentCheckTree(int index, long offset, BTreeCheckReport? report)
    {
        Index = index;
        Offset = offset;
        Report = report;
    }

    /// <summary>Position of the tree in the sequence given to <see cref="SegmentCheck.Run"/>.</summary>
    public int Index { get; }

    /// <summary>Offset of the tree's header.</summary>
    public long Offset { get; }

    /// <summary>The tree's own fsck report; null if <see cref="Tree.Check"/> itself failed (the problem says why).</summary>
    public BTreeCheckReport? Report { get; }

    /// <summary>Records found.</summary>
    public long Records => Report?.Records ?? 0;

    /// <summary>Nodes found.</summary>
    public long Nodes => Report?.Nodes ?? 0;

    /// <summary>Levels.</summary>
    public int Height => Report?.Height ?? 0;

    /// <summary>Allocator blocks the tree owns: header, nodes, out-of-node parts.</summary>
    public long Blocks => Report?.Chunks.Count ?? 0;

    /// <summary>Usable bytes of those of its blocks that are allocated.</summary>
    public long Bytes { get; internal set; }

    /// <summary>Problems the tree's own check found.</summary>
    public int Problems => Report?.Problems.Count ?? 1;

    /// <summary>Whether the tree's own check found nothing wrong (ownership problems are in the segment report).</summary>
    public bool Healthy => Report is { Healthy: true };

    /// <inheritdoc />
    public override string ToString() =>
        $"b+tree 0x{Offset:X} (#{Index}): {(Healthy ? "healthy" : $"{Problems} problems")}, {Records} records, {Nodes} nodes, height {Height}, {Blocks} blocks, {Bytes} bytes";
}

/// <summary>What <see cref="SegmentCheck.Run"/> found in a segment.</summary>
public sealed class SegmentCheckReport
{
    /// <summary>Most problems listed; beyond this only counted (<see cref="UnlistedProblems"/>).</summary>
    public const int MaxListedProblems = 1000;

    internal SegmentCheckReport(Segment segment)
    {
        SegmentId = segment.Id;
        FileName = segment.FileName;
    }

    /// <summary>Id of the segment checked.</summary>
    public ulong SegmentId { get; }

    /// <summary>File of the segment checked.</summary>
    public string FileName { get; }

    /// <summary>
    /// Damage found, each naming an offset (and a size where it has one): the allocator's own problems
    /// ("allocator: ..."), each tree's, and the ownership problems: "LEAK: ..." (allocated, owned by nobody),
    /// "DOUBLE: ..." (owned twice), "UNALLOCATED: ..." (owned but not an allocated block). Empty: healthy.
    /// </summary>
    public List<string> Problems { get; } = new();

    /// <summary>Problems found beyond <see cref="MaxListedProblems"/> (counted, not listed).</summary>
    public long UnlistedProblems { get; internal set; }

    /// <summary>Per-tree summaries, in the order given.</summary>
    public List<SegmentCheckTree> Trees { get; } = new();

    /// <summary>Whether the allocated blocks could be listed whole (false: the chunk chain is damaged, and leaks and unallocated chunks were not looked for).</summary>
    public bool AllocationWalked { get; internal set; }

    /// <summary>Allocated blocks in the segment.</summary>
    public long AllocatedBlocks { get; internal set; }

    /// <summary>Usable bytes of the allocated blocks.</summary>
    public long AllocatedBytes { get; internal set; }

    /// <summary>Distinct blocks claimed by the trees and the other chunks.</summary>
    public long OwnedBlocks { get; internal set; }

    /// <summary>Usable bytes of the claimed blocks that are allocated.</summary>
    public long OwnedBytes { get; internal set; }

    /// <summary>Allocated blocks nobody claims.</summary>
    public long LeakedBlocks { get; internal set; }

    /// <summary>Usable bytes of the leaked blocks.</summary>
    public long LeakedBytes { get; internal set; }

    /// <summary>Claims of a block already claimed (by another tree, the same tree again, or the other chunks).</summary>
    public long DoubleOwned { get; internal set; }

    /// <summary>Claimed blocks that are not allocated blocks.</summary>
    public long Unallocated { get; internal set; }

    /// <summary>Records in all trees.</summary>
    public long Records { get; internal set; }

    /// <summary>Nodes in all trees.</summary>
    public long Nodes { get; internal set; }

    /// <summary>Whether no damage was found.</summary>
    public bool Healthy => Problems.Count == 0;

    /// <summary>Exit code for a command-line fsck: 0 healthy, 1 damage found.</summary>
    public int ExitCode => Healthy ? 0 : 1;

    internal void Add(string problem)
    {
        if (Problems.Count < MaxListedProblems) Problems.Add(problem);
        else UnlistedProblems++;
    }

    /// <inheritdoc />
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append($"segment {SegmentId} ({FileName}): ");
        sb.Append(Healthy ? "healthy" : $"{Problems.Count + UnlistedProblems} problems");
        sb.Append($"; {Trees.Count} trees, {Records} records, {Nodes} nodes; {AllocatedBlocks} blocks allocated ({AllocatedBytes} bytes), ");
        sb.Append($"{OwnedBlocks} owned ({OwnedBytes} bytes), {LeakedBlocks} leaked ({LeakedBytes} bytes), {DoubleOwned} double-owned, {Unallocated} unallocated");
        if (!AllocationWalked) sb.Append(" (allocation not walked)");
        for (int i = 0; i < Problems.Count; i++) sb.Append('\n').Append("  ").Append(Problems[i]);
        if (UnlistedProblems > 0) sb.Append($"\n  ... and {UnlistedProblems} more");
        return sb.ToString();
    }
}

/// <summary>
/// Segment-level fsck: the allocator's check, every tree's check, and the ownership of every allocated
/// block (r.btree.fsck at segment scope). Reads only. Run on the segment's owner thread with no
/// transaction open; the caller names every structure that owns blocks (trees, and other blocks by offset),
/// since the segment does not know what its roots point to.
/// </summary>
public static class SegmentCheck
{
    /// <summary>
    /// Runs <see cref="Allocator.Check"/>, <see cref="Tree.Check"/> on every tree, then compares the allocated
    /// blocks (<see cref="Allocator.AllocatedBlocks"/>) with the union of the blocks the trees own
    /// (<see cref="BTreeCheckReport.Chunks"/>: header, nodes, out-of-node parts) and <paramref name="otherChunks"/>:
    /// a block claimed twice, a claimed block that is not allocated, and an allocated block nobody claims (a leak)
    /// are each a problem naming the offset and size.
    /// </summary>
    /// <param name="segment">The segment.</param>
    /// <param name="trees">Every tree in the segment (a tree given twice claims its blocks twice).</param>
    /// <param name="otherChunks">Offsets (as the allocator returned them) of every other allocated block in use.</param>
    /// <param name="cancellationToken">Stops the check within any stage (every <see cref="CheckProgress.Interval"/> chunks,
    /// blocks or nodes) with <see cref="OperationCanceledException"/>; a check changes nothing, so nothing is left half done.</param>
    /// <param name="progress">Told, on this thread, how far each stage is: the allocator's chunk chain, the list of
    /// allocated blocks, each tree (<see cref="CheckProgress"/>).</param>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public static SegmentCheckReport Run(Segment segment, IEnumerable<Tree> trees, IEnumerable<long>? otherChunks = null,
        CancellationToken cancellationToken = default, IProgress<CheckProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(trees);
        segment.CheckOwner("fsck");
        cancellationToken.ThrowIfCancellationRequested();
        var rep = new SegmentCheckReport(segment);

        // 1. The allocator: its own check, then the list of allocated blocks.
        var allocated = new Dictionary<long, long>();
        var order = new List<AllocatedBlock>();
        Allocator? alloc = null;
        try { alloc = segment.Allocator; }
        catch (BeCorruptionException e) { rep.Add($"allocator: {e.Message}"); }
        if (alloc != null)
        {
            var aproblems = alloc.Check(cancellationToken, progress);
            for (int i = 0; i < aproblems.Count; i++) rep.Add($"allocator: {aproblems[i]}");
            long expected = alloc.UsedChunksRecorded;
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                foreach (var b in alloc.AllocatedBlocks())
                {
                    if ((rep.AllocatedBlocks + 1) % CheckProgress.Interval == 0)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        progress?.Report(new CheckProgress(BlocksStage, rep.AllocatedBlocks, expected, "blocks"));
                    }
                    allocated[b.Offset] = b.Size;
                    order.Add(b);
                    rep.AllocatedBlocks++;
                    rep.AllocatedBytes += b.Size;
                }
                rep.AllocationWalked = true;
                progress?.Report(new CheckProgress(BlocksStage, rep.AllocatedBlocks, expected, "blocks"));
            }
            catch (BeCorruptionException e)
            {
                rep.Add($"allocator: cannot list the allocated blocks past a damaged chunk, so leaks and unallocated blocks were not looked for: {e.Message}");
            }
        }
        bool walked = rep.AllocationWalked;

        // 2. The trees, and who claims which block.
        var owner = new Dictionary<long, int>();
        int index = 0;
        // The caller's reporter runs inside each tree's check: what it throws is the caller's, never the tree's damage.
        var guarded = progress is null ? null : new GuardedProgress(progress);
        foreach (var tree in trees)
        {
            BTreeCheckReport? tr = null;
            try { tr = tree.Check(cancellationToken, guarded); }
            catch (Exception e) when (e is BeException or ArgumentOutOfRangeException && guarded?.Threw != true)
            {
                rep.Add($"b+tree 0x{tree.Offset:X} (#{index}): its check failed: {e.Message}");
            }
            var summary = new SegmentCheckTree(index, tree.Offset, tr);
            rep.Trees.Add(summary);
            if (tr != null)
            {
                for (int i = 0; i < tr.Problems.Count; i++) rep.Add(tr.Problems[i]);
                rep.Records += tr.Records;
                rep.Nodes += tr.Nodes;
                var chunks = tr.Chunks;
                for (int i = 0; i < chunks.Count; i++)
                    summary.Bytes += Claim(rep, owner, allocated, walked, chunks[i], index, tree.Offset);
            }
            index++;
        }
        if (otherChunks != null)
            foreach (long c in otherChunks) Claim(rep, owner, allocated, walked, c, -1, 0);
        rep.OwnedBlocks = owner.Count;

        // 3. Leaks: allocated, claimed by nobody.
        if (walked)
            for (int i = 0; i < order.Count; i++)
            {
                var b = order[i];
                if (owner.ContainsKey(b.Offset)) continue;
                rep.LeakedBlocks++;
                rep.LeakedBytes += b.Size;
                rep.Add($"LEAK: block 0x{b.Offset:X} of {b.Size} bytes is allocated but no tree owns it and it is not among the other chunks");
            }
        return rep;
    }

    private const string BlocksStage = "allocated blocks";

    /// <summary>Passes reports on, and remembers whether the reporter threw.</summary>
    private sealed class GuardedProgress(IProgress<CheckProgress> inner) : IProgress<CheckProgress>
    {
        public bool Threw { get; private set; }

        public void Report(CheckProgress value)
        {
            try { inner.Report(value); }
            catch
            {
                Threw = true;
                throw;
            }
        }
    }

    /// <summary>Records that <paramref name="who"/> owns block <paramref name="chunk"/>; returns its usable size if it is allocated and not claimed before.</summary>
    private static long Claim(SegmentCheckReport rep, Dictionary<long, int> owner, Dictionary<long, long> allocated, bool walked,
        long chunk, int who, long treeOffset)
    {
        bool isAllocated = allocated.TryGetValue(chunk, out long size);
        string sized = isAllocated ? $" of {size} bytes" : "";
        if (owner.TryGetValue(chunk, out int first))
        {
            rep.DoubleOwned++;
            rep.Add($"DOUBLE: block 0x{chunk:X}{sized} is owned by {Name(rep, first)} and again by {Name(who, treeOffset)}");
            return 0;
        }
        owner.Add(chunk, who);
        if (walked && !isAllocated)
        {
            rep.Unallocated++;
            rep.Add($"UNALLOCATED: block 0x{chunk:X} is owned by {Name(who, treeOffset)} but is not an allocated block");
            return 0;
        }
        rep.OwnedBytes += size;
        return size;
    }

    private static string Name(SegmentCheckReport rep, int who) => who < 0 ? Name(who, 0) : Name(who, rep.Trees[who].Offset);

    private static string Name(int who, long treeOffset) => who < 0 ? "the other chunks" : $"b+tree 0x{treeOffset:X} (#{who})";
}

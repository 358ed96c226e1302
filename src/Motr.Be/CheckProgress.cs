namespace Motr.Be;

/// <summary>
/// Where a long check stands, reported to an <see cref="IProgress{T}"/> by <see cref="Alloc.Allocator.Check"/>,
/// <see cref="BTree.BTree.Check"/> and <see cref="Segments.SegmentCheck.Run"/>: on the checking (owner) thread, every
/// <see cref="Interval"/> units of work and once at the end of each stage, so a reporter that blocks slows the check.
/// </summary>
/// <param name="Stage">What is being checked, e.g. <c>allocator chunk chain</c> or <c>b+tree 0x1040</c>.</param>
/// <param name="Done">Units done in this stage: bytes of the heap walked for the allocator's stages, nodes for a b+tree.</param>
/// <param name="Total">Units the stage expects (the heap's size, the node count the tree's header records); a damaged
/// structure may end short of it or pass it.</param>
/// <param name="Unit">What <paramref name="Done"/> and <paramref name="Total"/> count: <c>bytes</c> or <c>nodes</c>.</param>
public readonly record struct CheckProgress(string Stage, long Done, long Total, string Unit)
{
    /// <summary>Units of work (chunks walked, nodes checked) between two reports within a stage.</summary>
    public const int Interval = 4096;

    /// <inheritdoc />
    public override string ToString() =>
        Total > 0 ? $"{Stage}: {Done:N0} of {Total:N0} {Unit} ({Math.Min(100.0, 100.0 * Done / Total):F0}%)" : $"{Stage}: {Done:N0} {Unit}";
}

using Motr.Be.BTree;
using Motr.Be.Segments;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>
/// A long fsck of one segment reports how far it is (per stage, against the totals the structures record) and stops
/// within the segment when cancelled, leaving the segment as it was: checkable and writable.
/// </summary>
public sealed class CheckProgressTests
{
    /// <summary>Collects reports on the checking thread; may cancel at a chosen report.</summary>
    private sealed class Recorder(Func<CheckProgress, bool>? cancelAt = null, CancellationTokenSource? cts = null) : IProgress<CheckProgress>
    {
        public List<CheckProgress> Reports { get; } = new();

        public void Report(CheckProgress value)
        {
            Reports.Add(value);
            if (cancelAt != null && cancelAt(value)) cts!.Cancel();
        }
    }

    /// <summary>A tree of small nodes with well over two progress intervals of nodes, and one of variable records.</summary>
    private static async Task<(Tree Big, Tree Small)> TreesAsync(Segment seg)
    {
        var big = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 }, "big");
        var small = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 1024 }, "small");
        var rng = new Random(7);
        var records = new List<(byte[], byte[])>();
        for (int i = 0; i < 150_000; i++) records.Add((BitConverter.GetBytes(rng.NextInt64()), BitConverter.GetBytes((long)i)));
        await ToolsHarness.InsertAllAsync(big, records);
        var few = new List<(byte[], byte[])>();
        for (int i = 0; i < 300; i++) few.Add((ToolsHarness.BigEndianKey(i, 12), new byte[i % 50]));
        await ToolsHarness.InsertAllAsync(small, few);
        Assert.True(big.NodeCount > 2 * CheckProgress.Interval, $"{big.NodeCount} nodes");
        return (big, small);
    }

    [Fact]
    public async Task Each_stage_reports_its_progress_in_order_and_ends_at_what_the_check_found()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (big, small) = await TreesAsync(seg);
            var rec = new Recorder();
            var rep = SegmentCheck.Run(seg, [big, small], null, CancellationToken.None, rec);
            Assert.True(rep.Healthy, rep.ToString());

            string bigStage = $"b+tree 0x{big.Offset:X}", smallStage = $"b+tree 0x{small.Offset:X}";
            string[] order = ["allocator chunk chain", "allocated blocks", bigStage, smallStage];
            int stage = 0;
            long last = -1;
            foreach (var r in rec.Reports)
            {
                if (r.Stage != order[stage])
                {
                    stage++;
                    last = -1;
                    Assert.True(stage < order.Length && r.Stage == order[stage], $"report '{r}' out of order");
                }
                Assert.True(r.Done > last, $"'{r}' does not move on from {last}");
                last = r.Done;
            }
            Assert.Equal(order.Length - 1, stage);

            var stats = seg.Allocator.GetStats();
            CheckProgress End(string s) => rec.Reports.FindLast(r => r.Stage == s);
            Assert.Equal(new CheckProgress(order[0], stats.HeapTop - stats.HeapStart, stats.HeapTop - stats.HeapStart, "bytes"), End(order[0]));
            Assert.Equal(new CheckProgress(order[1], rep.AllocatedBlocks, rep.AllocatedBlocks, "blocks"), End(order[1]));
            Assert.Equal(new CheckProgress(bigStage, big.NodeCount, big.NodeCount, "nodes"), End(bigStage));
            Assert.Equal(new CheckProgress(smallStage, small.NodeCount, small.NodeCount, "nodes"), End(smallStage));
            // The long stages report on the way too, not only at their end.
            Assert.True(rec.Reports.FindAll(r => r.Stage == bigStage).Count >= 3);
            Assert.True(rec.Reports.FindAll(r => r.Stage == order[1]).Count >= 2);
            Assert.Equal($"{bigStage}: {big.NodeCount:N0} of {big.NodeCount:N0} nodes (100%)", End(bigStage).ToString());
        });
    }

    [Theory]
    [InlineData("allocator chunk chain", false)] // at the chain's end: the next stage does not start
    [InlineData("allocated blocks", true)] // mid-walk
    [InlineData("b+tree", true)] // mid-tree
    public async Task A_cancel_stops_the_check_within_the_segment_and_leaves_it_as_it_was(string at, bool midStage)
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (big, small) = await TreesAsync(seg);
            using var cts = new CancellationTokenSource();
            var rec = new Recorder(r => r.Stage.StartsWith(at, StringComparison.Ordinal) && (midStage ? r.Done < r.Total : r.Done == r.Total), cts);
            Assert.ThrowsAny<OperationCanceledException>(() => SegmentCheck.Run(seg, [big, small], null, cts.Token, rec));
            // Nothing was reported after the cancel: the check stopped at its next look at the token.
            var lastReport = rec.Reports[^1];
            Assert.StartsWith(at, lastReport.Stage, StringComparison.Ordinal);
            Assert.Equal(midStage, lastReport.Done < lastReport.Total);
            Assert.DoesNotContain(rec.Reports, r => r.Stage.StartsWith($"b+tree 0x{small.Offset:X}", StringComparison.Ordinal));

            // The segment is as it was: a full check is healthy, and it still takes transactions.
            var again = SegmentCheck.Run(seg, [big, small]);
            Assert.True(again.Healthy, again.ToString());
            Assert.Equal(150_300, again.Records);
            await ToolsHarness.InsertAllAsync(small, [(ToolsHarness.BigEndianKey(1_000_000, 12), new byte[3])]);
            Assert.True(small.Check().Healthy);
        });
    }

    // SegmentCheck.Run turns a tree check's BeException or ArgumentOutOfRangeException into that tree's problem ("its
    // check failed"). The progress reporter runs inside the tree's check: an exception of the caller's own reporter was
    // caught there too and reported as damage of a healthy tree, and the check went on. It passes to the caller, as
    // one thrown in the allocator's stages does.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_exception_of_the_progress_reporter_in_a_trees_stage_passes_to_the_caller_not_reported_as_damage(bool beException)
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512 }, "t");
            Exception boom = beException ? new BeException("the reporter's own failure") : new ArgumentOutOfRangeException("the reporter's own failure");
            var reporter = new Reporter(r => { if (r.Stage.StartsWith("b+tree", StringComparison.Ordinal)) throw boom; });
            var e = Assert.ThrowsAny<Exception>(() => SegmentCheck.Run(seg, [t], null, CancellationToken.None, reporter));
            Assert.Same(boom, e);
            Assert.True(SegmentCheck.Run(seg, [t]).Healthy);
        });
    }

    private sealed class Reporter(Action<CheckProgress> report) : IProgress<CheckProgress>
    {
        public void Report(CheckProgress value) => report(value);
    }

    [Fact]
    public async Task A_token_cancelled_before_the_check_stops_it_before_any_work()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512 }, "t");
            var rec = new Recorder();
            using var cts = new CancellationTokenSource();
            cts.Cancel();
            Assert.ThrowsAny<OperationCanceledException>(() => SegmentCheck.Run(seg, [t], null, cts.Token, rec));
            Assert.ThrowsAny<OperationCanceledException>(() => t.Check(cts.Token, rec));
            Assert.ThrowsAny<OperationCanceledException>(() => seg.Allocator.Check(cts.Token, rec));
            Assert.Empty(rec.Reports);
        });
    }
}

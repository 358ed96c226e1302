using Motr.Be.BTree;
using Xunit.Abstractions;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Keys that arrive in order (a load of a saved tree, rising ids, or the reverse) fill their nodes: a split on the tree's
/// right edge past the last record, or on its left edge before the first leaf record, leaves the full node full instead
/// of halving it. Before, every node of such a tree stayed about half empty for good (average fill 45-56%).
/// </summary>
public class BTreeOrderedFillTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("fkv", 512, false)]
    [InlineData("fkv", 512, true)]
    [InlineData("fk", 512, false)]
    [InlineData("fk", 512, true)]
    [InlineData("var", 512, false)]
    [InlineData("var", 1024, true)]
    [InlineData("var-crc", 1024, false)]
    [InlineData("var-crc", 4096, true)]
    public async Task Keys_inserted_in_order_fill_the_nodes_and_the_tree_stays_right(string format, int nodeSize, bool descending)
    {
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, logSize: 64 << 20);
        await h.Run(async seg =>
        {
            var shape = TreeShape.Of(format, nodeSize);
            var t = await Ops.Create(seg, shape.Config);
            var rng = new Random(nodeSize + (descending ? 1 : 0));
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            for (int i = 0; i < 6000; i++) model[shape.Key(rng, int.MaxValue)] = shape.Value(rng);
            var order = descending ? model.Reverse().ToList() : model.ToList();
            foreach (var (k, v) in order) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
            var r = t.Check();
            output.WriteLine($"{format}/{nodeSize} {(descending ? "descending" : "ascending")}: {r}");
            Assert.True(r.Healthy, r.ToString());
            Assert.True(r.AverageFill >= 0.8, $"average fill {r.AverageFill:P0} of {r.Nodes} nodes for {r.Records} records");
            Ops.AssertEqual(t, model, "after the ordered inserts");

            // The full nodes take random changes as any other: every other key deleted, new keys among the old.
            int j = 0;
            foreach (var k in model.Keys.ToList())
                if (j++ % 2 == 0)
                {
                    Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                    model.Remove(k);
                }
            for (int i = 0; i < 2000; i++)
            {
                var k = shape.Key(rng, int.MaxValue);
                if (model.ContainsKey(k)) continue;
                var v = shape.Value(rng);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
                model[k] = v;
            }
            Ops.AssertHealthy(t, "after random deletes and inserts");
            Ops.AssertEqual(t, model, "after random deletes and inserts");
        });
        h.AssertNoCaptureViolations();
    }
}

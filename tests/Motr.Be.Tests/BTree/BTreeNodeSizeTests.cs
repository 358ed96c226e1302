using Motr.Be.BTree;
using Motr.Be.Segments;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>SetNodeSizes: nodes made before keep their size, new ones take the new size, and both live in one tree through splits, merges and rebalancing.</summary>
public class BTreeNodeSizeTests(ITestOutputHelper output)
{
    private static async Task SetSizes(Segment seg, Tree t, int leaf, int inner)
    {
        using var tx = await seg.BeginAsync(Tree.SetNodeSizesCredit);
        t.SetNodeSizes(tx, leaf, inner);
        await tx.Close();
    }

    private static Dictionary<int, int> SizesByCount(Segment seg, Tree t) =>
        Raw.Nodes(seg, t.Check()).GroupBy(n => Raw.Size(seg, n)).ToDictionary(g => g.Key, g => g.Count());

    /// <summary>Random inserts (bias &gt; 0.5) or deletes against the model.</summary>
    private static async Task Churn(Tree t, SortedDictionary<byte[], byte[]> model, TreeShape shape, Random rng, int ops, double insertBias, int space)
    {
        for (int i = 0; i < ops; i++)
        {
            var k = shape.Key(rng, space);
            if (rng.NextDouble() < insertBias)
            {
                var v = shape.Value(rng);
                if (rng.Next(4) == 0 && model.ContainsKey(k))
                {
                    Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, k, v));
                    model[k] = v;
                }
                else Assert.Equal(model.TryAdd(k, v) ? BTreeStatus.Ok : BTreeStatus.Exists, await Ops.Insert(t, k, v));
            }
            else Assert.Equal(model.Remove(k) ? BTreeStatus.Ok : BTreeStatus.NotFound, await Ops.Delete(t, k));
        }
    }

    [Theory]
    [InlineData("var", 0)]
    [InlineData("var", 1)]
    [InlineData("fk", 0)]
    [InlineData("fkv", 0)]
    [InlineData("var-crc", 0)]
    public async Task Nodes_of_different_sizes_coexist_through_growth_and_shrinking(string format, int seedOffset)
    {
        int seed = Ops.Seed() + seedOffset;
        output.WriteLine($"{format}: seed {seed} (MOTR_SEED={seed - seedOffset})");
        var rng = new Random(seed);
        var shape = TreeShape.Of(format, 512);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        await using var h = await TreeHost.Start(segmentSize: 16 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, shape.Config);
            Assert.Equal(512, t.MinimumNodeSize);
            await Churn(t, model, shape, rng, 2500, 0.9, 6000);
            Ops.AssertEqual(t, model, "512-byte nodes");
            Assert.Equal(new[] { 512 }, SizesByCount(seg, t).Keys.ToArray());
            await SetSizes(seg, t, 4096, 8192);
            Assert.Equal((4096, 8192), (t.LeafNodeSize, t.InternalNodeSize));
            await Churn(t, model, shape, rng, 6000, 0.8, 12000);
            Ops.AssertEqual(t, model, "grown with 4 KiB leaves and 8 KiB internal nodes");
            var sizes = SizesByCount(seg, t);
            output.WriteLine("after growth: " + string.Join(", ", sizes.Select(kv => $"{kv.Value} of {kv.Key}")));
            Assert.Contains(512, sizes.Keys);
            Assert.Contains(4096, sizes.Keys);
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            Ops.AssertEqual(t, model, "reopened");
            Assert.Equal((4096, 8192), (t.LeafNodeSize, t.InternalNodeSize));
            // Shrink: merges and rebalancing between nodes of different sizes.
            await Churn(t, model, shape, rng, 8000, 0.3, 12000);
            Ops.AssertEqual(t, model, "shrunk");
            output.WriteLine("after shrinking: " + string.Join(", ", SizesByCount(seg, t).Select(kv => $"{kv.Value} of {kv.Key}")) + $"; {model.Count} records, height {t.Height}");
            // Back to small nodes, and grow and shrink again.
            await SetSizes(seg, t, 512, 1024);
            await Churn(t, model, shape, rng, 4000, 0.7, 12000);
            Ops.AssertEqual(t, model, "grown again with small nodes");
            var sizes = SizesByCount(seg, t);
            output.WriteLine("mixed: " + string.Join(", ", sizes.Select(kv => $"{kv.Value} of {kv.Key}")));
            Assert.True(sizes.Count >= 2, "one node size only");
            await Churn(t, model, shape, rng, 6000, 0.2, 12000);
            Ops.AssertEqual(t, model, "shrunk again");
            foreach (var k in model.Keys.ToList())
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
            }
            Ops.AssertEqual(t, model, "emptied");
            Assert.Equal(1, t.Height);
        });
        h.AssertNoCaptureViolations();
    }

    /// <summary>
    /// A 512-byte leaf left of a 4 KiB sibling (made by a split after SetNodeSizes): emptying the small leaf
    /// must merge or rebalance within what it can hold, not fail.
    /// </summary>
    [Fact]
    public async Task Deleting_from_a_small_leaf_next_to_a_large_sibling_works()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 16 });
            for (ulong i = 1; i <= 16; i++) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(i), new byte[16]));
            Assert.Equal(1, t.Height); // 16 records of 24 bytes and their 4-byte index entries fill the 512-byte root leaf
            await SetSizes(seg, t, 4096, 4096);
            for (ulong i = 17; i <= 100; i++) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(i), new byte[16]));
            Assert.Equal(2, t.Height);
            var sizes = SizesByCount(seg, t);
            Assert.Equal(1, sizes[512]); // the old root leaf, now the left leaf
            for (ulong i = 1; i <= 100; i++)
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, Ops.U64(i)));
                Ops.AssertHealthy(t, $"deleted {i}");
            }
            Assert.Equal(0, t.Count);
        });
        h.AssertNoCaptureViolations();
    }

    [Fact]
    public async Task Node_sizes_below_the_trees_minimum_or_invalid_are_refused()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096, InternalNodeSize = 8192 });
            Assert.Equal(4096, t.MinimumNodeSize);
            using var tx = await seg.BeginAsync(Tree.SetNodeSizesCredit * 8);
            var e = Assert.Throws<ArgumentException>(() => t.SetNodeSizes(tx, 2048, 4096));
            Assert.Contains("node sizes 2048/4096: this tree's records need nodes of at least 4096 bytes", e.Message);
            e = Assert.Throws<ArgumentException>(() => t.SetNodeSizes(tx, 4096, 1024));
            Assert.Contains("at least 4096 bytes", e.Message);
            e = Assert.Throws<ArgumentException>(() => t.SetNodeSizes(tx, 5000, 8192));
            Assert.Contains("leaf size 5000 must be a power of two from 512 to 65536", e.Message);
            e = Assert.Throws<ArgumentException>(() => t.SetNodeSizes(tx, 4096, 128 << 10));
            Assert.Contains("internal node size 131072 must be a power of two", e.Message);
            Assert.Equal(0, tx.Used.Regions);
            t.SetNodeSizes(tx, 65536, 4096);
            await tx.Close();
            Assert.Equal((65536, 4096), (t.LeafNodeSize, t.InternalNodeSize));
            // A fixed-record tree's minimum follows its records: 4 records of 8 + 100 (+ padding) need 1 KiB nodes.
            var f = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024, KeySize = 8, ValueSize = 100 }, "f");
            Assert.Equal(1024, f.MinimumNodeSize);
            using var tx2 = await seg.BeginAsync(Tree.SetNodeSizesCredit);
            Assert.Throws<ArgumentException>(() => f.SetNodeSizes(tx2, 512, 1024));
            await tx2.Close();
        });
        await h.Reopen();
        await h.Run(seg =>
        {
            var t = Ops.Open(seg);
            Assert.Equal((65536, 4096), (t.LeafNodeSize, t.InternalNodeSize));
            Assert.Equal(4096, t.MinimumNodeSize);
        });
    }
}

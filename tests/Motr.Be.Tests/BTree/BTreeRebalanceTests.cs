using System.Buffers.Binary;
using Motr.Be.BTree;
using Xunit.Abstractions;

namespace Motr.Be.Tests.BTree;

/// <summary>Deletes in the orders that stress merging: ascending, descending, random; the tree stays valid after every step and ends at height 1.</summary>
public class BTreeRebalanceTests(ITestOutputHelper output)
{
    /// <summary>
    /// Keys 0..4999 inserted in a shuffled order (Random(0)) into 512-byte fixed-size nodes (height 4), then
    /// deleted in ascending order. Every step must leave a valid tree whose Min is the smallest remaining key.
    /// </summary>
    [Fact]
    public async Task Ascending_deletes_never_leave_an_empty_leaf_and_Min_finds_the_smallest_key()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 16 });
            var rng = new Random(0);
            var keys = Enumerable.Range(0, 5000).Select(i => (ulong)i).OrderBy(_ => rng.Next()).ToList();
            foreach (var k in keys) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(k), new byte[16]));
            Assert.Equal(4, t.Height);
            for (ulong k = 0; k < 5000; k++)
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, Ops.U64(k)));
                if (k == 4999) break;
                Assert.True(t.Min(out var min, out _) == BTreeStatus.Ok, $"after deleting 0..{k}: Min is NotFound with {t.Count} records");
                Assert.Equal(k + 1, BinaryPrimitives.ReadUInt64BigEndian(min));
                if (k % 16 == 0 || k > 1280 && k < 1300) Ops.AssertHealthy(t, $"after deleting 0..{k}");
            }
            Assert.Equal(0, t.Count);
            Assert.Equal(1, t.Height);
            Assert.Equal(1, t.NodeCount);
        });
        h.AssertNoCaptureViolations();
    }

    [Theory]
    [InlineData("fkv", 512, "ascending")]
    [InlineData("fkv", 512, "descending")]
    [InlineData("fkv", 512, "random")]
    [InlineData("fk", 512, "ascending")]
    [InlineData("fk", 1024, "descending")]
    [InlineData("var", 512, "ascending")]
    [InlineData("var", 512, "descending")]
    [InlineData("var", 512, "random")]
    [InlineData("var-crc", 1024, "random")]
    public async Task Deletes_in_any_order_keep_the_tree_valid_and_end_at_height_1(string format, int nodeSize, string order)
    {
        int seed = Ops.Seed();
        output.WriteLine($"{format}/{nodeSize}/{order}: seed {seed} (MOTR_SEED={seed})");
        var rng = new Random(seed);
        var shape = TreeShape.Of(format, nodeSize);
        await using var h = await TreeHost.Start(segmentSize: 16 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, shape.Config);
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            for (int i = 0; i < 6000; i++)
            {
                var k = shape.Key(rng, 1_000_000);
                var v = shape.Value(rng);
                if (await Ops.Insert(t, k, v) == BTreeStatus.Ok) model[k] = v;
                if (i % 64 == 0) await seg.FlushAsync();
            }
            int height = t.Height;
            Assert.True(height >= 3, $"height {height}");
            var keys = model.Keys.ToList();
            if (order == "descending") keys.Reverse();
            if (order == "random") keys = keys.OrderBy(_ => rng.Next()).ToList();
            int n = 0, minHeight = height;
            var set = new SortedSet<byte[]>(model.Keys, ByteArrayComparer.Instance);
            foreach (var k in keys)
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
                set.Remove(k);
                n++;
                if (set.Count > 0)
                {
                    Assert.True(t.Min(out var min, out _) == BTreeStatus.Ok, $"after {n} deletes: Min NotFound with {t.Count} records");
                    Assert.True(min.SequenceEqual(set.Min), $"after {n} deletes: Min {Ops.Hex(min)}, model {Ops.Hex(set.Min)}");
                    Assert.True(t.Max(out var max, out _) == BTreeStatus.Ok, $"after {n} deletes: Max NotFound with {t.Count} records");
                    Assert.True(max.SequenceEqual(set.Max), $"after {n} deletes: Max differs");
                }
                if (n % 250 == 0) Ops.AssertEqual(t, model, $"after {n} deletes");
                minHeight = Math.Min(minHeight, t.Height);
                if (n % 64 == 0) await seg.FlushAsync();
            }
            Ops.AssertEqual(t, model, "emptied");
            Assert.Equal(1, t.Height);
            Assert.Equal(1, t.NodeCount);
            output.WriteLine($"{n} deletes from height {height}, {t.Stats.Merges} merges, {t.Stats.Rebalances} rebalances");
        });
        h.AssertNoCaptureViolations();
    }
}

using Motr.Be.BTree;
using Motr.Be.Segments;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// A segment that may not grow, filled to the last byte: every operation answers a status (or a clear
/// exception), changes nothing when refused, and space given back is usable again.
/// </summary>
public sealed class BTreeExhaustionTests
{
    private static byte[] Snapshot(Segment seg) => seg.Bytes(0, checked((int)seg.Size)).ToArray();

    private static void AssertUnchanged(Segment seg, byte[] before, string what)
    {
        Assert.True(seg.Size == before.Length, $"{what}: the segment grew from {before.Length} to {seg.Size} bytes");
        int at = seg.Bytes(0, before.Length).CommonPrefixLength(before);
        Assert.True(at == before.Length, $"{what}: the segment changed at 0x{at:X}");
    }

    /// <summary>Inserts random small records until the segment answers OutOfSpace a few times in a row.</summary>
    private static async Task<SortedDictionary<byte[], byte[]>> FillToOutOfSpace(Tree t, Random rng, int valueLength,
        SortedDictionary<byte[], byte[]>? model = null)
    {
        model ??= new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        int refused = 0;
        for (int i = 0; refused < 8; i++)
        {
            var k = Ops.U64((ulong)rng.NextInt64());
            var v = Ops.Bytes(valueLength, i);
            var s = await Ops.Insert(t, k, v);
            if (s == BTreeStatus.OutOfSpace) refused++;
            else
            {
                Assert.Equal(BTreeStatus.Ok, s);
                model[k] = v;
                refused = 0;
            }
        }
        return model;
    }

    /// <summary>
    /// Records deleted from a full tree leave room in their leaves; inserting records of the same size there needs
    /// no new node and no chunk, so it must succeed however little the allocator has left.
    /// </summary>
    [Fact]
    public async Task Room_freed_in_leaves_of_a_full_segment_takes_new_records()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 16 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            var rng = new Random(3);
            // A few hundred small records, then out-of-node values (of few nodes: little lost to node alignment) to
            // the last bytes.
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            for (int i = 0; i < 400; i++)
            {
                var k = Ops.U64((ulong)rng.NextInt64());
                model[k] = Ops.Bytes(40, k[7]);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, model[k]));
            }
            await FillToOutOfSpace(t, rng, 2000, model);
            await FillToOutOfSpace(t, rng, 1100, model);
            await FillToOutOfSpace(t, rng, 40, model);
            long nodes = t.NodeCount;
            // Delete every fourth record: leaves stay well above a quarter full, so no node is merged or freed.
            var gone = new List<byte[]>();
            int j = 0;
            foreach (var k in model.Keys.ToList())
                if (model[k].Length == 40 && j++ % 4 == 0)
                {
                    Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                    model.Remove(k);
                    gone.Add(k);
                }
            Assert.Equal(nodes, t.NodeCount);
            // The same keys go back into the leaves they came from, which have room for them.
            foreach (var k in gone)
            {
                var v = Ops.Bytes(40, k[7]);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
                model[k] = v;
            }
            Assert.Equal(nodes, t.NodeCount);
            Ops.AssertEqual(t, model, "refilled");
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertHealthy(Ops.Open(seg), "reopened"));
    }

    /// <summary>
    /// In a segment full of out-of-node values, an update that replaces one by a value of the same size or smaller
    /// frees its old chunk before it allocates the new one: it must succeed, not answer OutOfSpace for want of
    /// room the update itself gives back. One that grows past what is free is refused and changes nothing.
    /// </summary>
    [Fact]
    public async Task An_update_that_does_not_grow_a_large_value_succeeds_in_a_full_segment()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 32 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024 });
            var rng = new Random(7);
            var model = await FillToOutOfSpace(t, rng, 60_000);
            await FillToOutOfSpace(t, rng, 5_000, model);
            await FillToOutOfSpace(t, rng, 300, model);
            Assert.True(seg.Allocator.FreeBytes < 5_000, $"free {seg.Allocator.FreeBytes}");
            var keys = model.Where(r => r.Value.Length == 60_000).Select(r => r.Key).ToList();
            Assert.True(keys.Count >= 10);

            // Same size, then smaller (still out of node), then in node, then back out of node.
            foreach (var (k, len) in new[] { (keys[0], 60_000), (keys[1], 40_000), (keys[2], 20), (keys[3], 60_000), (keys[2], 59_000) })
            {
                var v = Ops.Bytes(len, len);
                Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, k, v));
                model[k] = v;
            }
            // Growing a value past what is free is refused, changing nothing.
            var before = Snapshot(seg);
            using (var tx = await seg.BeginAsync(t.UpdateCredit(keys[4].Length, 200_000)))
            {
                Assert.Equal(BTreeStatus.OutOfSpace, t.Update(tx, keys[4], new byte[200_000]));
                AssertUnchanged(seg, before, "a refused growth");
                Assert.Equal(default, tx.Used);
                await tx.Close();
            }
            Ops.AssertEqual(t, model, "updated in a full segment");
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertHealthy(Ops.Open(seg), "reopened"));
    }

    /// <summary>Every block of the allocator belongs to the tree, and the tree owns nothing the allocator does not hold.</summary>
    private static void AssertNoLeak(Segment seg, Tree t, string when)
    {
        var report = t.Check();
        Assert.True(report.Healthy, $"{when}: {report}\n{string.Join("\n", report.Problems.Take(10))}");
        Assert.Empty(seg.Allocator.Check());
        var owned = report.Chunks.Order().ToList();
        var blocks = seg.Allocator.AllocatedBlocks().Select(b => b.Offset).Order().ToList();
        Assert.True(owned.SequenceEqual(blocks), $"{when}: the tree owns {owned.Count} chunks, the allocator holds {blocks.Count} blocks " +
            $"(leaked: {string.Join(", ", blocks.Except(owned).Take(5).Select(o => $"0x{o:X}"))}; lost: {string.Join(", ", owned.Except(blocks).Take(5).Select(o => $"0x{o:X}"))})");
    }

    /// <summary>
    /// A tree of small records filling a segment that may not grow: its nodes take the segment, not gaps between
    /// them. Nodes are 64-byte aligned behind a 32-byte chunk header, so a node carved right after another one
    /// left a free 96-byte gap chunk in front of it, which no node can ever use: 15 % of the segment stranded as
    /// "free" in 512-byte nodes, 8 % in 1 KiB ones.
    /// </summary>
    [Theory]
    [InlineData(512)]
    [InlineData(1024)]
    [InlineData(4096)]
    public async Task Nodes_fill_the_segment_without_stranded_alignment_gaps(int nodeSize)
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 16 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = nodeSize, KeySize = 8, ValueSize = 8 });
            var model = await FillToOutOfSpace(t, new Random(9), 8);
            var stats = seg.Allocator.GetStats();
            // What is left free is about a node: less than one with its chunk header and padding, and the tree
            // header's gap.
            Assert.True(seg.Allocator.FreeBytes <= nodeSize + 64 + 96, $"{nodeSize}-byte nodes: {stats}");
            long heap = seg.Size - 4096;
            Assert.True(t.NodeCount * (long)nodeSize >= heap * nodeSize / (nodeSize + 64) - nodeSize - 256,
                $"{t.NodeCount} nodes of {nodeSize} bytes in a heap of {heap}: {stats}");
            Ops.AssertEqual(t, model, "full");
            AssertNoLeak(seg, t, "full");
        });
    }
}

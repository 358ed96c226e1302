using Motr.Be.Alloc;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>Segment fsck: healthy with two trees; finds a leak, a double owner, an owned block that is not allocated.</summary>
public sealed class SegmentCheckTests
{
    /// <summary>Two trees: one of fixed records, one of variable records with some large values (out-of-node blocks).</summary>
    private static async Task<(Tree A, Tree B)> TwoTreesAsync(Segment seg)
    {
        var a = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 }, "a");
        var b = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 1024 }, "b");
        var ra = new List<(byte[], byte[])>();
        var rb = new List<(byte[], byte[])>();
        for (int i = 0; i < 2000; i++) ra.Add((ToolsHarness.BigEndianKey(i), BitConverter.GetBytes((long)i)));
        for (int i = 0; i < 500; i++) rb.Add((ToolsHarness.BigEndianKey(i * 3L, 12), new byte[i % 25 == 0 ? 5000 : i % 40]));
        await ToolsHarness.InsertAllAsync(a, ra);
        await ToolsHarness.InsertAllAsync(b, rb);
        return (a, b);
    }

    [Fact]
    public async Task A_normal_segment_with_two_trees_is_healthy_and_every_block_is_owned()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (a, b) = await TwoTreesAsync(seg);
            var rep = SegmentCheck.Run(seg, [a, b]);
            Assert.True(rep.Healthy, rep.ToString());
            Assert.Equal(0, rep.ExitCode);
            Assert.True(rep.AllocationWalked);
            Assert.Equal(2, rep.Trees.Count);
            Assert.Equal(2500, rep.Records);
            Assert.Equal(a.NodeCount + b.NodeCount, rep.Nodes);
            // Every allocated block is one of the trees': headers, nodes, and b's 20 out-of-node values.
            long expectedBlocks = 2 + a.NodeCount + b.NodeCount + b.Stats.LargeChunks;
            Assert.Equal(20, b.Stats.LargeChunks);
            Assert.Equal(expectedBlocks, rep.AllocatedBlocks);
            Assert.Equal(expectedBlocks, rep.OwnedBlocks);
            Assert.Equal(seg.Allocator.UsedBytes, rep.AllocatedBytes);
            Assert.Equal(rep.AllocatedBytes, rep.OwnedBytes);
            Assert.Equal(rep.OwnedBytes, rep.Trees[0].Bytes + rep.Trees[1].Bytes);
            Assert.Equal(0, rep.LeakedBlocks + rep.DoubleOwned + rep.Unallocated);
            Assert.Equal(a.Offset, rep.Trees[0].Offset);
            Assert.Equal(2000, rep.Trees[0].Records);
            Assert.Equal(1 + a.NodeCount, rep.Trees[0].Blocks);
            Assert.True(rep.Trees[1].Healthy);
        });
    }

    [Fact]
    public async Task An_allocated_block_nobody_owns_is_a_leak_naming_offset_and_size()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (a, b) = await TwoTreesAsync(seg);
            long leak;
            using (var tx = await seg.BeginAsync(Allocator.AllocCredit))
            {
                leak = seg.Allocator.Alloc(tx, 1000);
                await tx.Close();
            }
            long size = seg.Allocator.UsableSize(leak);
            Assert.Equal(1008, size);
            var rep = SegmentCheck.Run(seg, [a, b]);
            Assert.False(rep.Healthy);
            Assert.Equal(1, rep.ExitCode);
            Assert.Equal(1, rep.LeakedBlocks);
            Assert.Equal(size, rep.LeakedBytes);
            var p = Assert.Single(rep.Problems);
            Assert.Equal($"LEAK: block 0x{leak:X} of {size} bytes is allocated but no tree owns it and it is not among the other chunks", p);
            Assert.Contains(p, rep.ToString());

            // Named as another owner, it is accounted for.
            var ok = SegmentCheck.Run(seg, [a, b], [leak]);
            Assert.True(ok.Healthy, ok.ToString());
            Assert.Equal(rep.AllocatedBlocks, ok.OwnedBlocks);
        });
        // Still there after a reopen: the leak is persistent, and still found.
        await h.ReopenAsync();
        await h.Run(() =>
        {
            var seg = h.Seg;
            Assert.True(seg.TryGetRoot("a", out long ao));
            Assert.True(seg.TryGetRoot("b", out long bo));
            var rep = SegmentCheck.Run(seg, [Tree.Open(seg, ao), Tree.Open(seg, bo)]);
            Assert.Equal(1, rep.LeakedBlocks);
            return Task.CompletedTask;
        });
    }

    [Fact]
    public async Task A_block_owned_twice_is_found_whoever_claims_it()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (a, b) = await TwoTreesAsync(seg);
            // The same tree handed in twice: each of its blocks is claimed twice.
            var rep = SegmentCheck.Run(seg, [a, b, a]);
            Assert.False(rep.Healthy);
            Assert.Equal(1 + a.NodeCount, rep.DoubleOwned);
            Assert.Equal(0, rep.LeakedBlocks);
            long hdrSize = seg.Allocator.UsableSize(a.Offset);
            Assert.Contains($"DOUBLE: block 0x{a.Offset:X} of {hdrSize} bytes is owned by b+tree 0x{a.Offset:X} (#0) and again by b+tree 0x{a.Offset:X} (#2)", rep.Problems);

            // A tree's block also listed among the other chunks.
            var rep2 = SegmentCheck.Run(seg, [a, b], [b.Offset]);
            var p = Assert.Single(rep2.Problems);
            Assert.Equal($"DOUBLE: block 0x{b.Offset:X} of {seg.Allocator.UsableSize(b.Offset)} bytes is owned by b+tree 0x{b.Offset:X} (#1) and again by the other chunks", p);
            Assert.Equal(1, rep2.ExitCode);
        });
    }

    [Fact]
    public async Task An_owned_block_that_is_not_allocated_is_found()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (a, b) = await TwoTreesAsync(seg);
            long freed;
            using (var tx = await seg.BeginAsync(Allocator.AllocCredit * 2 + Allocator.FreeCredit))
            {
                freed = seg.Allocator.Alloc(tx, 200);
                seg.Allocator.Alloc(tx, 200); // keeps the freed block out of the wilderness
                seg.Allocator.Free(tx, freed);
                await tx.Close();
            }
            var rep = SegmentCheck.Run(seg, [a, b], [freed]);
            Assert.Equal(1, rep.Unallocated);
            Assert.Contains($"UNALLOCATED: block 0x{freed:X} is owned by the other chunks but is not an allocated block", rep.Problems);
            Assert.Equal(1, rep.LeakedBlocks); // the second block is named by nobody
            Assert.Equal(2, rep.Problems.Count);
        });
    }

    [Fact]
    public async Task The_allocated_blocks_are_listed_in_address_order()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            long x, y, z;
            using (var tx = await seg.BeginAsync(Allocator.AllocCredit * 3 + Allocator.FreeCredit))
            {
                x = seg.Allocator.Alloc(tx, 100);
                y = seg.Allocator.Alloc(tx, 5000, 64);
                z = seg.Allocator.Alloc(tx, 16);
                seg.Allocator.Free(tx, y);
                await tx.Close();
            }
            var blocks = seg.Allocator.AllocatedBlocks().ToList();
            // z may take y's alignment gap (then a little more than asked); what counts is that the walk agrees with the allocator.
            Assert.Equal([new AllocatedBlock(x, 112), new AllocatedBlock(z, seg.Allocator.UsableSize(z))], blocks);
            Assert.InRange(blocks[1].Size, 16, 48);
            var rep = SegmentCheck.Run(seg, [], [x, z]);
            Assert.True(rep.Healthy, rep.ToString());
            Assert.Equal(2, rep.AllocatedBlocks);
        });
    }

    [Fact]
    public async Task Damage_inside_a_tree_is_reported_and_fails_the_check()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (a, b) = await TwoTreesAsync(seg);
            await seg.FlushAsync();
            // Scribble over a's header count without a transaction (as a bad disk would).
            ref long count = ref seg.At<long>(a.Offset + 40);
            long saved = count;
            count = 12345;
            try
            {
                var rep = SegmentCheck.Run(seg, [a, b]);
                Assert.False(rep.Healthy);
                Assert.Equal(1, rep.ExitCode);
                Assert.False(rep.Trees[0].Healthy);
                Assert.True(rep.Trees[1].Healthy);
                Assert.Contains(rep.Problems, p => p.Contains("tree header checksum mismatch") || p.Contains("checksum mismatch"));
                Assert.Contains(rep.Problems, p => p.Contains("tree header says 12345 records, found 2000"));
            }
            finally
            {
                count = saved;
            }
            Assert.True(SegmentCheck.Run(seg, [a, b]).Healthy);
        });
    }
}

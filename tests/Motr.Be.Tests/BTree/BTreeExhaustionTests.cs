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

    // A segment whose memory could not be committed as it grew (mprotect failing: the process at its memory limit) threw
    // OutOfMemoryException out of the allocation, through whatever operation asked for space. It is now out of space
    // like a segment at its limit: the operation answers its status and changes nothing, a warning gives the errno, and
    // once memory comes back the segment grows again.
    [Fact]
    public async Task A_segment_whose_memory_cannot_be_committed_answers_out_of_space_and_grows_again_later()
    {
        await using var h = await TreeHost.Start(segmentSize: 256 << 10, segmentMaxSize: 64 << 20);
        var warnings = new List<string>();
        h.Engine.Domain.Options.OnWarning = warnings.Add;
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            var rng = new Random(5);
            long size = seg.Size;
            seg.Memory.CommitFault = _ => 12; // ENOMEM
            model = await FillToOutOfSpace(t, rng, 3000, model);
            Assert.Equal(size, seg.Size);
            Assert.True(model.Count > 10, $"{model.Count} records went in before the segment was full");
            Assert.Contains(warnings, w => w.Contains($"segment 1 ({seg.FileName}): cannot grow from {size} to ", StringComparison.Ordinal) &&
                w.Contains("the process cannot get the memory (mprotect errno 12)", StringComparison.Ordinal));
            Ops.AssertHealthy(t, "after the refused growths");
            Ops.AssertEqual(t, model, "after the refused growths");
            var before = Snapshot(seg);
            var k = Ops.U64(42);
            Assert.Equal(BTreeStatus.OutOfSpace, await Ops.Insert(t, k, Ops.Bytes(20_000, 1))); // an out-of-node value needs space
            AssertUnchanged(seg, before, "a refused insert");

            seg.Memory.CommitFault = null;
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, Ops.Bytes(20_000, 1), wait: true));
            model[k] = Ops.Bytes(20_000, 1);
            Assert.True(seg.Size > size);
            Ops.AssertHealthy(t, "after growing again");
        });
        h.AssertNoCaptureViolations();
        await h.Reopen();
        await h.Run(seg =>
        {
            var t = Ops.Open(seg);
            Ops.AssertHealthy(t, "after reopen");
            Assert.Equal(Ops.Bytes(20_000, 1), Ops.Get(t, Ops.U64(42)));
        });
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
    /// <summary>
    /// Random mixes of every changing operation — small records, out-of-node keys and values, in-place inserts,
    /// updates across the in-node limit both ways and up to many kilobytes, deletes — on a segment that may not
    /// grow, several operations per transaction with their exact credits, until the segment is full and beyond.
    /// An operation refused for space must leave the segment byte for byte as before it and its transaction
    /// without a capture more, the transaction going on with the operations that fit; the tree equals the model,
    /// fsck is clean and the allocator holds exactly the tree's chunks, also after reopening.
    /// </summary>
    [Theory]
    [InlineData(8 << 10, 512, 1, 0)]     // the smallest segment: two pages
    [InlineData(64 << 10, 512, 2, 0)]
    [InlineData(128 << 10, 1024, 3, 0)]
    [InlineData(128 << 10, 512, 4, 0)]
    [InlineData(8 << 10, 512, 5, 120 << 10)] // growing by pages to a limit: refusals also undo the growth
    public async Task Mixed_operations_on_a_segment_filled_to_the_last_byte(int segmentSize, int nodeSize, int seed, int maxSize)
    {
        if (maxSize == 0) maxSize = segmentSize;
        await using var h = await TreeHost.Start(segmentSize: segmentSize, logSize: 16 << 20, segmentMaxSize: maxSize);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        int inline = Tree.MaxInline(nodeSize);
        int refusedTotal = 0, okTotal = 0;
        for (int round = 0; round < 3; round++)
        {
            await h.Run(async seg =>
            {
                var t = round == 0 ? await Ops.Create(seg, new BTreeConfig { NodeSize = nodeSize }) : Ops.Open(seg);
                var rng = new Random(seed * 100 + round);
                var keys = new List<byte[]>(model.Keys);
                byte[] NewKey() 
                {
                    var k = new byte[rng.Next(10) == 0 ? rng.Next(inline, inline * 3) : rng.Next(1, 24)];
                    rng.NextBytes(k);
                    return k;
                }
                int ValueLength() => rng.Next(10) switch
                {
                    0 => rng.Next(inline, maxSize / 8),   // out of node, up to an eighth of the segment
                    1 => rng.Next(inline - 40, inline + 40),  // about the in-node limit
                    _ => rng.Next(0, 100),
                };
                for (int step = 0; step < 1000; step++)
                {
                    int ops = rng.Next(1, 4);
                    var plan = new List<(int Kind, byte[] Key, byte[] Value)>();
                    var credit = default(Motr.Be.Tx.TxCredit);
                    for (int j = 0; j < ops; j++)
                    {
                        int kind = rng.Next(10) switch { < 4 => 0, 4 => 1, < 7 => 2, _ => 3 }; // insert, in place, update, delete
                        byte[] k = kind != 0 && kind != 1 && keys.Count > 0 ? keys[rng.Next(keys.Count)] : NewKey();
                        var v = Ops.Bytes(ValueLength(), step * 4 + j);
                        plan.Add((kind, k, v));
                        credit += kind switch
                        {
                            0 or 1 => t.InsertCredit(k.Length, v.Length),
                            2 => t.UpdateCredit(k.Length, v.Length),
                            _ => t.DeleteCredit(),
                        };
                    }
                    // Credits for the tree as it is: an insert may make it taller for the next one; those are skipped then.
                    using var tx = await seg.BeginAsync(credit);
                    var pending = new SortedDictionary<byte[], byte[]?>(ByteArrayComparer.Instance);
                    foreach (var (kind, k, v) in plan)
                    {
                        var need = kind switch { 0 or 1 => t.InsertCredit(k.Length, v.Length), 2 => t.UpdateCredit(k.Length, v.Length), _ => t.DeleteCredit() };
                        if (tx.Credit.Regions - tx.Used.Regions < need.Regions || tx.Credit.Bytes - tx.Used.Bytes < need.Bytes) continue;
                        var before = Snapshot(seg);
                        var used = tx.Used;
                        var st = kind switch
                        {
                            0 => t.Insert(tx, k, v),
                            1 => t.InsertInPlace(tx, k, v.Length, v, static (span, val) => val.CopyTo(span)),
                            2 => t.Update(tx, k, v),
                            _ => t.Delete(tx, k),
                        };
                        bool present = pending.TryGetValue(k, out var pv) ? pv is not null : model.ContainsKey(k);
                        switch (st)
                        {
                            case BTreeStatus.OutOfSpace:
                                Assert.NotEqual(3, kind); // a delete never allocates
                                AssertUnchanged(seg, before, $"step {step}: refused {kind} of a {k.Length}-byte key, {v.Length}-byte value");
                                Assert.Equal(used, tx.Used);
                                refusedTotal++;
                                break;
                            case BTreeStatus.Ok:
                                Assert.Equal(kind is 0 or 1 ? false : true, present);
                                pending[k] = kind == 3 ? null : v;
                                okTotal++;
                                break;
                            case BTreeStatus.Exists:
                                Assert.True(present);
                                break;
                            case BTreeStatus.NotFound:
                                Assert.False(present);
                                break;
                            default:
                                Assert.Fail($"step {step}: {st}");
                                break;
                        }
                    }
                    if (rng.Next(8) == 0)
                    {
                        tx.Abort();
                        continue;
                    }
                    await tx.Close();
                    foreach (var (k, v) in pending)
                    {
                        if (v is null)
                        {
                            if (model.Remove(k)) keys.Remove(k);
                        }
                        else
                        {
                            if (!model.ContainsKey(k)) keys.Add(k);
                            model[k] = v;
                        }
                    }
                    if (step % 250 == 249) Ops.AssertEqual(t, model, $"round {round} step {step}");
                }
                Ops.AssertEqual(t, model, $"round {round} end");
                AssertNoLeak(seg, t, $"round {round} end");
                Assert.True(seg.Size == maxSize, $"round {round}: the segment is {seg.Size} bytes, below its limit {maxSize}");
            });
            await h.Reopen();
            await h.Run(seg =>
            {
                var t = Ops.Open(seg);
                Ops.AssertEqual(t, model, $"round {round} reopened");
                AssertNoLeak(seg, t, $"round {round} reopened");
            });
        }
        Assert.True(refusedTotal > 50, $"only {refusedTotal} operations were refused for space");
        Assert.True(okTotal > 300, $"only {okTotal} operations took");
    }

    /// <summary>
    /// A transaction opened with an operation's exact credit, then the tree grew a level through another object on
    /// it (in other transactions) before the operation ran: the operation needs more than the credit now, and must
    /// say so (TxUsageException) before changing anything, not overrun the credit at a capture half-way.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_credit_computed_before_the_tree_grew_taller_is_refused_before_any_change(bool fixedSizes)
    {
        await using var h = await TreeHost.Start(segmentSize: 4 << 20, logSize: 32 << 20);
        await h.Run(async seg =>
        {
            var config = fixedSizes ? new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 16 } : new BTreeConfig { NodeSize = 512 };
            var a = await Ops.Create(seg, config);
            var b = Tree.Open(seg, a.Offset);
            ulong next = 0;
            var key = Ops.U64(ulong.MaxValue);
            var value = new byte[16];
            _ = a.InsertCredit(8, 16); // a fixed-size tree keeps this figure for its height
            using var tx = await seg.BeginAsync(a.InsertCredit(8, 16));
            using var del = await seg.BeginAsync(a.DeleteCredit());
            int height = a.Height;
            while (b.Height == height) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(b, Ops.U64(next++ * 2), value));
            var before = Snapshot(seg);
            var ex = Assert.Throws<Motr.Be.TxUsageException>(() => a.Insert(tx, key, value));
            Assert.Contains("insert needs credit", ex.Message);
            Assert.Throws<Motr.Be.TxUsageException>(() => a.Delete(del, Ops.U64(0)));
            AssertUnchanged(seg, before, "refused for a short credit");
            Assert.Equal(default, tx.Used);
            Assert.Equal(default, del.Used);
            await tx.Close();
            await del.Close();
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(a, key, value));
            Ops.AssertHealthy(a, "after");
        });
    }

    /// <summary>
    /// A full segment is emptied by delete-all (which never allocates) and destroy, given back whole — nothing left
    /// allocated, the heap one wilderness again — and a tree with other node sizes fills it as far as the first did.
    /// </summary>
    [Fact]
    public async Task A_full_segment_emptied_by_delete_all_and_destroy_is_reused_whole()
    {
        await using var h = await TreeHost.Start(segmentSize: 512 << 10, logSize: 32 << 20, segmentMaxSize: 512 << 10);
        int firstCount = 0;
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            var rng = new Random(21);
            var model = await FillToOutOfSpace(t, rng, 3000);
            await FillToOutOfSpace(t, rng, 30, model);
            firstCount = model.Count;
            // A larger node size for what comes: refused splits, nothing changed.
            using (var tx = await seg.BeginAsync(Tree.SetNodeSizesCredit))
            {
                t.SetNodeSizes(tx, 2048, 2048);
                await tx.Close();
            }
            await FillToOutOfSpace(t, rng, 30, model);
            Ops.AssertEqual(t, model, "full");
            AssertNoLeak(seg, t, "full");
            Assert.Equal(model.Count, await t.DeleteAllAsync(batch: 16));
            Assert.Equal(0, t.Count);
            AssertNoLeak(seg, t, "emptied");
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit + Segment.RootCredit))
            {
                t.Destroy(tx);
                seg.RemoveRoot(tx, "t");
                await tx.Close();
            }
            var stats = seg.Allocator.GetStats();
            Assert.True(seg.Allocator.UsedBytes == 0 && seg.Allocator.FreeBytes == seg.Size - 4096, $"after destroy: {stats}");
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            Assert.Empty(seg.Allocator.Check());
            Assert.Equal(0, seg.Allocator.UsedBytes);
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024 });
            var rng = new Random(22);
            var model = await FillToOutOfSpace(t, rng, 3000);
            await FillToOutOfSpace(t, rng, 30, model);
            Assert.True(model.Count >= firstCount * 9 / 10, $"{model.Count} records the second time, {firstCount} the first");
            Ops.AssertEqual(t, model, "refilled");
            AssertNoLeak(seg, t, "refilled");
        });
    }

    /// <summary>A tree created in a segment with no room left is refused naming the segment and what was asked, changing nothing.</summary>
    [Fact]
    public async Task Create_in_a_full_segment_names_the_segment_and_the_tree_and_changes_nothing()
    {
        await using var h = await TreeHost.Start(segmentSize: 8 << 10, logSize: 16 << 20, segmentMaxSize: 8 << 10);
        await h.Run(async seg =>
        {
            // Take the heap down to the last 16-byte block.
            while (true)
            {
                using var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit);
                if (seg.Allocator.TryAlloc(tx, 16, 16, out _) != Motr.Be.Alloc.AllocStatus.Ok) break;
                await tx.Close();
            }
            var before = Snapshot(seg);
            using (var tx = await seg.BeginAsync(Tree.CreateCredit))
            {
                var ex = Assert.Throws<BeException>(() => Tree.Create(tx, seg, new BTreeConfig { NodeSize = 512 }));
                Assert.Contains($"segment {seg.Id} ({seg.FileName}): cannot create a b+tree", ex.Message);
                AssertUnchanged(seg, before, "create refused");
                Assert.Equal(default, tx.Used);
                await tx.Close();
            }
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
    }
}

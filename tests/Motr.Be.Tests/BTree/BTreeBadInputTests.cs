using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>DESIGN invariant 7 for the b+tree: bad input gets a clear error naming what and where, and changes nothing.</summary>
public class BTreeBadInputTests
{
    private static readonly byte[] K = [1, 2, 3, 4, 5, 6, 7, 8], V = new byte[16];

    [Fact]
    public async Task An_empty_key_is_rejected_by_every_changing_operation()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [9], [1]));
            using var tx = await seg.BeginAsync(t.UpdateCredit(1, 1) * 4);
            var e1 = Assert.Throws<ArgumentException>(() => t.Insert(tx, ReadOnlySpan<byte>.Empty, [1]));
            var e2 = Assert.Throws<ArgumentException>(() => t.Update(tx, ReadOnlySpan<byte>.Empty, [1]));
            var e3 = Assert.Throws<ArgumentException>(() => t.Delete(tx, ReadOnlySpan<byte>.Empty));
            var e4 = Assert.Throws<ArgumentException>(() => t.InsertInPlace(tx, ReadOnlySpan<byte>.Empty, 1, 0, (_, _) => Assert.Fail("called")));
            foreach (var e in new[] { e1, e2, e3, e4 })
            {
                Assert.Contains("empty key", e.Message);
                Assert.Contains($"b+tree 0x{t.Offset:X}", e.Message);
            }
            Assert.Equal(new TxCredit(0, 0), tx.Used);
            await tx.Close();
            Assert.Equal(1, t.Count);
            // Reads check keys the same way.
            Assert.Contains("empty key", Assert.Throws<ArgumentException>(() => t.Lookup(ReadOnlySpan<byte>.Empty, out _)).Message);
            Ops.AssertHealthy(t);
        });
    }

    [Fact]
    public async Task Key_and_value_lengths_are_checked_against_the_limits_and_the_fixed_sizes()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var vt = await Ops.Create(seg, new BTreeConfig(), "var");
            var fk = await Ops.Create(seg, new BTreeConfig { KeySize = 8 }, "fk");
            var fkv = await Ops.Create(seg, new BTreeConfig { KeySize = 8, ValueSize = 16 }, "fkv");
            // A small credit: the lengths are checked before the credit.
            using var tx = await seg.BeginAsync(fkv.UpdateCredit(8, 16));

            var big = new byte[BTreeFormatConstants.MaxKeyLength + 1];
            big[0] = 1;
            var e = Assert.Throws<ArgumentException>(() => vt.Insert(tx, big, [1]));
            Assert.Contains("key of 1048577 bytes is over the limit of 1048576", e.Message);
            e = Assert.Throws<ArgumentException>(() => vt.Delete(tx, big));
            Assert.Contains("key of 1048577 bytes is over the limit of 1048576", e.Message);
            e = Assert.Throws<ArgumentException>(() => vt.Update(tx, big, [1]));
            Assert.Contains("1048577", e.Message);

            e = Assert.Throws<ArgumentException>(() => vt.InsertInPlace(tx, [1], BTreeFormatConstants.MaxValueLength + 1, 0, (_, _) => Assert.Fail("called")));
            Assert.Contains("value of 67108865 bytes is over the limit of 67108864", e.Message);
            e = Assert.Throws<ArgumentException>(() => vt.InsertInPlace(tx, [1], -1, 0, (_, _) => Assert.Fail("called")));
            Assert.Contains("value length -1 is negative", e.Message);
            var hugeValue = new byte[BTreeFormatConstants.MaxValueLength + 1];
            e = Assert.Throws<ArgumentException>(() => vt.Insert(tx, [1], hugeValue));
            Assert.Contains("value of 67108865 bytes is over the limit of 67108864", e.Message);
            e = Assert.Throws<ArgumentException>(() => vt.Update(tx, [1], hugeValue));
            Assert.Contains("value of 67108865 bytes is over the limit of 67108864", e.Message);

            e = Assert.Throws<ArgumentException>(() => fk.Insert(tx, [1, 2, 3, 4, 5, 6, 7], [1]));
            Assert.Contains("key of 7 bytes; this tree's keys are 8 bytes", e.Message);
            Assert.Contains($"b+tree 0x{fk.Offset:X}", e.Message);
            e = Assert.Throws<ArgumentException>(() => fk.Delete(tx, new byte[9]));
            Assert.Contains("key of 9 bytes; this tree's keys are 8 bytes", e.Message);
            e = Assert.Throws<ArgumentException>(() => fkv.Update(tx, new byte[9], V));
            Assert.Contains("key of 9 bytes; this tree's keys are 8 bytes", e.Message);

            e = Assert.Throws<ArgumentException>(() => fkv.Insert(tx, K, new byte[15]));
            Assert.Contains("value of 15 bytes; this tree's values are 16 bytes", e.Message);
            e = Assert.Throws<ArgumentException>(() => fkv.Update(tx, K, new byte[17]));
            Assert.Contains("value of 17 bytes; this tree's values are 16 bytes", e.Message);
            e = Assert.Throws<ArgumentException>(() => fkv.InsertInPlace(tx, K, 0, 0, (_, _) => Assert.Fail("called")));
            Assert.Contains("value of 0 bytes; this tree's values are 16 bytes", e.Message);

            Assert.Equal(new TxCredit(0, 0), tx.Used);
            // The right sizes work in the same transaction.
            Assert.Equal(BTreeStatus.Ok, fkv.Insert(tx, K, V));
            await tx.Close();
            Assert.Equal(0, vt.Count);
            Assert.Equal(0, fk.Count);
            Assert.Equal(1, fkv.Count);
            foreach (var t in new[] { vt, fk, fkv }) Ops.AssertHealthy(t);
        });
        h.AssertNoCaptureViolations();
    }

    public static TheoryData<string, BTreeConfig, string> BadConfigs => new()
    {
        { "not a power of two", new BTreeConfig { NodeSize = 1000 }, "NodeSize 1000 must be a power of two from 512 to 65536" },
        { "100 bytes", new BTreeConfig { NodeSize = 100 }, "NodeSize 100 must be a power of two from 512 to 65536" },
        { "256 bytes", new BTreeConfig { NodeSize = 256 }, "NodeSize 256 must be a power of two" },
        { "128 KiB", new BTreeConfig { NodeSize = 128 << 10 }, "NodeSize 131072 must be a power of two from 512 to 65536" },
        { "zero", new BTreeConfig { NodeSize = 0 }, "NodeSize 0 must be" },
        { "internal 3000", new BTreeConfig { NodeSize = 4096, InternalNodeSize = 3000 }, "InternalNodeSize 3000 must be a power of two" },
        { "internal 128 KiB", new BTreeConfig { InternalNodeSize = 128 << 10 }, "InternalNodeSize 131072" },
        { "fixed records too big", new BTreeConfig { NodeSize = 512, KeySize = 100, ValueSize = 100 }, "do not fit four to a node of 512/512 bytes" },
        { "fixed key too big for internal nodes", new BTreeConfig { NodeSize = 4096, InternalNodeSize = 512, KeySize = 200, ValueSize = 8 }, "do not fit four to a node of 4096/512 bytes" },
        { "fixed key too big", new BTreeConfig { NodeSize = 512, KeySize = 120 }, "do not fit four" },
        { "ValueSize without KeySize", new BTreeConfig { ValueSize = 8 }, "a fixed ValueSize needs a fixed KeySize" },
        { "KeySize 0", new BTreeConfig { KeySize = 0 }, "KeySize 0 must be 1 to 1048576" },
        { "KeySize over the limit", new BTreeConfig { KeySize = (1 << 20) + 1 }, "KeySize 1048577 must be 1 to 1048576" },
        { "ValueSize negative", new BTreeConfig { KeySize = 8, ValueSize = -1 }, "ValueSize -1 must be 0 to 67108864" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public async Task An_invalid_configuration_is_refused_and_allocates_nothing(string what, BTreeConfig config, string message)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            long used = seg.Allocator.UsedBytes;
            using var tx = await seg.BeginAsync(Tree.CreateCredit);
            var e = Assert.Throws<ArgumentException>(() => Tree.Create(tx, seg, config));
            Assert.True(e.Message.Contains(message), $"{what}: message '{e.Message}' lacks '{message}'");
            Assert.Equal(new TxCredit(0, 0), tx.Used);
            await tx.Close();
            Assert.Equal(used, seg.Allocator.UsedBytes);
        });
    }

    [Fact]
    public async Task The_largest_fixed_records_that_fit_four_to_a_node_are_accepted()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            // MaxInline(512) = ((512 - 64) / 4 - 2) & ~7 = 104: an internal record of key + 8-byte child must fit.
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 96, ValueSize = 8 });
            for (int i = 0; i < 200; i++)
            {
                var k = new byte[96];
                BitConverter.TryWriteBytes(k.AsSpan(88), (ulong)i * 2654435761UL);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, BitConverter.GetBytes((long)i)));
            }
            Assert.True(t.Height >= 3, $"height {t.Height}");
            Ops.AssertHealthy(t);
            using var tx = await seg.BeginAsync(Tree.CreateCredit);
            Assert.Throws<ArgumentException>(() => Tree.Create(tx, seg, new BTreeConfig { NodeSize = 512, KeySize = 97, ValueSize = 8 }));
            await tx.Close();
        });
        h.AssertNoCaptureViolations();
    }

    [Fact]
    public async Task Destroy_of_a_tree_with_records_is_refused_and_changes_nothing()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            await Ops.Insert(t, [1], [1]);
            long used = seg.Allocator.UsedBytes;
            using var tx = await seg.BeginAsync(Tree.DestroyCredit);
            var e = Assert.Throws<BeException>(() => t.Destroy(tx));
            Assert.Contains("cannot destroy a tree holding 1 records", e.Message);
            Assert.Contains($"b+tree 0x{t.Offset:X}", e.Message);
            Assert.Equal(new TxCredit(0, 0), tx.Used);
            await tx.Close();
            Assert.Equal(used, seg.Allocator.UsedBytes);
            Assert.Equal([1], Ops.Get(t, [1]));
            Ops.AssertHealthy(t);
        });
        await h.Reopen();
        await h.Run(seg => Assert.Equal([1], Ops.Get(Ops.Open(seg), [1])));
    }

    [Fact]
    public async Task Open_at_an_offset_that_holds_no_tree_is_a_corruption_error_naming_the_offset()
    {
        await using var h = await TreeHost.Start();
        long hdr = 0, node = 0, chunk = 0;
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (int i = 0; i < 50; i++) await Ops.Insert(t, Ops.U64((ulong)i), new byte[20]);
            hdr = t.Offset;
            node = Raw.Nodes(seg, t.Check())[0];
            using var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit + TxCredit.Region(128));
            chunk = seg.Allocator.Alloc(tx, 128, 64);
            tx.Capture(chunk, 128).Fill(0xAB);
            await tx.Close();
        });
        await h.Reopen();
        await h.Run(seg =>
        {
            foreach (var (off, magic) in new[] { (node, "0x444E5442"), (chunk, "0xABABABAB"), (hdr + 64, "0x") })
            {
                var e = Assert.Throws<BeCorruptionException>(() => Tree.Open(seg, off));
                Assert.Equal(off, e.Offset);
                Assert.Contains($"b+tree 0x{off:X}", e.Message);
                Assert.Contains($"not a b+tree header (magic {magic}", e.Message);
                Assert.EndsWith(h.SegmentFile.Split('/')[^1], e.File);
            }
            Assert.ThrowsAny<ArgumentException>(() => Tree.Open(seg, seg.Size));
            Assert.ThrowsAny<ArgumentException>(() => Tree.Open(seg, -64));
            Assert.Equal(50, Tree.Open(seg, hdr).Count); // the real one still opens
        });
    }

    [Fact]
    public async Task Open_with_another_comparer_than_the_tree_was_made_with_is_refused()
    {
        await using var h = await TreeHost.Start();
        long bytewise = 0, reverse = 0;
        await h.Run(async seg =>
        {
            bytewise = (await Ops.Create(seg, new BTreeConfig(), "b")).Offset;
            var r = await Ops.Create(seg, new BTreeConfig { Comparer = ReverseBytewiseComparer.Instance }, "r");
            reverse = r.Offset;
            await Ops.Insert(r, [1], [1]);
        });
        await h.Reopen();
        await h.Run(seg =>
        {
            var e = Assert.Throws<ArgumentException>(() => Tree.Open(seg, bytewise, ReverseBytewiseComparer.Instance));
            Assert.Contains($"b+tree 0x{bytewise:X}", e.Message);
            Assert.Contains("was made with another key comparer than 'reverse-bytewise'", e.Message);
            e = Assert.Throws<ArgumentException>(() => Tree.Open(seg, reverse));
            Assert.Contains("another key comparer than 'bytewise'", e.Message);
            e = Assert.Throws<ArgumentException>(() => Tree.Open(seg, reverse, U64LittleEndianComparer.Instance));
            Assert.Contains("'u64-little-endian'", e.Message);
            // The bytewise comparer object counts as the default.
            Assert.Equal(0, Tree.Open(seg, bytewise, BytewiseComparer.Instance).Count);
            Assert.Equal(1, Tree.Open(seg, reverse, ReverseBytewiseComparer.Instance).Count);
        });
    }

    [Theory]
    [InlineData("insert", false)]
    [InlineData("insert", true)]
    [InlineData("update", false)]
    [InlineData("update", true)]
    [InlineData("delete", false)]
    [InlineData("delete", true)]
    public async Task An_operation_in_a_transaction_with_too_small_a_credit_throws_and_changes_nothing(string op, bool fewerRegions)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            for (int i = 0; i < 300; i++)
            {
                var k = Ops.U64((ulong)i * 7);
                var v = Ops.Bytes(i % 50, i);
                await Ops.Insert(t, k, v);
                model[k] = v;
            }
            Assert.True(t.Height >= 3);
            long used = seg.Allocator.UsedBytes;
            byte[] key = Ops.U64(op == "insert" ? 701UL : 700UL), value = new byte[300];
            var need = op switch
            {
                "insert" => t.InsertCredit(key.Length, value.Length),
                "update" => t.UpdateCredit(key.Length, value.Length),
                _ => t.DeleteCredit(),
            };
            var less = fewerRegions ? new TxCredit(need.Regions - 1, need.Bytes) : new TxCredit(need.Regions, need.Bytes - 1);
            using (var tx = await seg.BeginAsync(less))
            {
                var e = Assert.Throws<TxUsageException>(() =>
                {
                    _ = op switch
                    {
                        "insert" => t.Insert(tx, key, value),
                        "update" => t.Update(tx, key, value),
                        _ => t.Delete(tx, key),
                    };
                });
                Assert.Contains($"{op} needs credit {need}", e.Message);
                Assert.Contains($"the transaction has {less.Regions} regions / {less.Bytes} bytes left", e.Message);
                Assert.Equal(new TxCredit(0, 0), tx.Used);
                await tx.Close();
            }
            // Two operations in a transaction with the credit of one: the second is refused, the first stays.
            using (var tx = await seg.BeginAsync(t.InsertCredit(8, 1)))
            {
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, Ops.U64(1), [1]));
                var e = Assert.Throws<TxUsageException>(() => t.Insert(tx, Ops.U64(3), [3]));
                Assert.Contains("insert needs credit", e.Message);
                await tx.Close();
            }
            model[Ops.U64(1)] = [1];
            Ops.AssertEqual(t, model, $"{op} refused");
            Assert.True(seg.Allocator.UsedBytes >= used);
        });
        await h.Reopen();
        await h.Run(seg =>
        {
            var t = Ops.Open(seg);
            Assert.Equal(301, t.Count);
            Assert.Null(Ops.Get(t, Ops.U64(701)));
            Assert.Empty(Ops.Get(t, Ops.U64(700))!); // i = 100: a value of 100 % 50 bytes
            Assert.Null(Ops.Get(t, Ops.U64(3)));
            Ops.AssertHealthy(t);
        });
    }

    [Fact]
    public async Task Create_without_room_for_the_root_is_a_clear_error_naming_the_segment()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 16 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            // Fill the heap with 4 KiB blocks, then free one: a hole that holds a tree header but no 8 KiB root.
            var blocks = new List<long>();
            while (true)
            {
                using var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit);
                if (seg.Allocator.TryAlloc(tx, 4096, 8, out long b) != Motr.Be.Alloc.AllocStatus.Ok) { tx.Abort(); break; }
                blocks.Add(b);
                await tx.Close();
            }
            using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.FreeCredit))
            {
                seg.Allocator.Free(tx, blocks[blocks.Count / 2]);
                await tx.Close();
            }
            using (var tx = await seg.BeginAsync(Tree.CreateCredit))
            {
                // Before: BTree+NoSpace, a private exception with no message, from NewNode.
                var ex = Assert.Throws<BeException>(() => Tree.Create(tx, seg, new BTreeConfig { NodeSize = 8192 }));
                Assert.Contains($"segment {seg.Id} ({seg.FileName}): cannot create a b+tree: no room for its 8192-byte root node", ex.Message);
                Assert.Equal(0, tx.Used.Regions); // the header allocated first is rolled back
                await tx.Close();
            }
            Assert.Empty(seg.Allocator.Check());
        });
    }

    [Fact]
    public async Task Node_sizes_whose_operations_the_log_can_never_admit_are_refused()
    {
        await using var h = await TreeHost.Start(logSize: 4 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (ulong k = 0; k < 3000; k++) await Ops.Insert(t, Ops.U64(k), new byte[16]);
            Assert.True(t.Height >= 4);
            using (var tx = await seg.BeginAsync(Tree.SetNodeSizesCredit))
            {
                // Before, this was accepted, and from then on no insert, delete or delete-all could be admitted:
                // credits are sized by the largest node size ever set.
                var ex = Assert.Throws<ArgumentException>(() => t.SetNodeSizes(tx, 65536, 65536));
                Assert.Contains("more than a transaction may reserve on this domain's log", ex.Message);
                Assert.Equal(0, tx.Used.Regions);
                t.SetNodeSizes(tx, 1024, 1024); // within reach: accepted
                await tx.Close();
            }
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, Ops.U64(5)));
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(5), new byte[16]));
            Assert.Equal(3000, await t.DeleteAllAsync());
            Ops.AssertHealthy(t);
        });
        await using var tiny = await TreeHost.Start(logSize: 1 << 20);
        await tiny.Run(async seg =>
        {
            using var tx = await seg.BeginAsync(Tree.CreateCredit);
            long free = seg.Allocator.FreeBytes;
            var ex = Assert.Throws<ArgumentException>(() => Tree.Create(tx, seg, new BTreeConfig { NodeSize = 65536 }));
            Assert.Contains("nodes of 65536 bytes need", ex.Message);
            Assert.Equal(0, tx.Used.Regions);
            Assert.Equal(free, seg.Allocator.FreeBytes);
            await tx.Close();
        });
    }

    [Fact]
    public async Task A_full_segment_that_may_not_grow_gives_OutOfSpace_and_changes_nothing()
    {
        // 1 MiB segment, no growth.
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 16 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024 });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            var rng = new Random(5);
            int outOfSpace = 0;
            for (int i = 0; i < 20000 && outOfSpace < 20; i++)
            {
                var k = Ops.U64((ulong)rng.NextInt64());
                var v = Ops.Bytes(rng.Next(10) == 0 ? 3000 : 40, i);
                var s = await Ops.Insert(t, k, v);
                if (s == BTreeStatus.OutOfSpace) outOfSpace++;
                else
                {
                    Assert.Equal(BTreeStatus.Ok, s);
                    model[k] = v;
                }
            }
            Assert.Equal(20, outOfSpace);
            Ops.AssertEqual(t, model, "full");
            // Updates that need space are refused too; deleting makes room again.
            var first = model.Keys.First();
            Assert.Equal(BTreeStatus.OutOfSpace, await Ops.Update(t, first, new byte[20000]));
            Assert.Equal(model[first], Ops.Get(t, first));
            foreach (var k in model.Keys.Take(model.Count / 2).ToList())
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
            }
            Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, model.Keys.Last(), new byte[20000]));
            model[model.Keys.Last()] = new byte[20000];
            Ops.AssertEqual(t, model, "after deletes");
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
    }

    /// <summary>
    /// Free space that is plentiful in total but only in small pieces: an insert that needs a larger chunk
    /// (an out-of-node value, or a node for a split) must answer OutOfSpace and change nothing, as documented.
    /// </summary>
    [Theory]
    [InlineData("out-of-node value")]
    [InlineData("node for a split")]
    public async Task Fragmented_free_space_gives_OutOfSpace_not_an_exception(string need)
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 16 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            await Ops.FragmentFreeSpace(seg);
            Assert.True(seg.Allocator.FreeBytes > 400_000, $"free {seg.Allocator.FreeBytes}");
            long used = seg.Allocator.UsedBytes;
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            if (need == "out-of-node value")
            {
                Assert.Equal(BTreeStatus.OutOfSpace, await Ops.Insert(t, [1], new byte[3000]));
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [2], new byte[50]));
                model[[2]] = new byte[50];
                Assert.Equal(BTreeStatus.OutOfSpace, await Ops.Update(t, [2], new byte[3000]));
            }
            else
            {
                // The root leaf fills up; the insert that must split it needs a 512-byte node.
                BTreeStatus s = BTreeStatus.Ok;
                for (int i = 0; i < 20 && s == BTreeStatus.Ok; i++)
                {
                    var k = Ops.U64((ulong)i);
                    s = await Ops.Insert(t, k, new byte[60]);
                    if (s == BTreeStatus.Ok) model[k] = new byte[60];
                }
                Assert.Equal(BTreeStatus.OutOfSpace, s);
                Assert.Equal(1, t.Height);
            }
            Ops.AssertEqual(t, model, need);
            Assert.Empty(seg.Allocator.Check());
        });
        h.AssertNoCaptureViolations();
    }
}

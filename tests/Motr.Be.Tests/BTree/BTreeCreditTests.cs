using Motr.Be.BTree;
using Motr.Be.Tx;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Every operation in a transaction opened with exactly its credit (a capture beyond the credit throws), from an
/// empty tree up to height 4 or more and back down to height 1, with a tenth of the transactions aborted.
/// </summary>
public class BTreeCreditTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("fkv", 512)]
    [InlineData("fk", 512)]
    [InlineData("var", 512)]
    [InlineData("var-crc", 512)]
    [InlineData("var", 1024)]
    public async Task Every_operation_fits_its_exact_credit_from_height_1_to_4_and_back(string format, int nodeSize)
    {
        int seed = Ops.Seed();
        output.WriteLine($"{format}/{nodeSize}: seed {seed} (MOTR_SEED={seed})");
        var rng = new Random(seed);
        var shape = TreeShape.Of(format, nodeSize);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, segmentMaxSize: 256 << 20, logSize: 64 << 20);
        int maxHeight = 0;
        long ops = 0, aborted = 0;
        double maxRegionUse = 0, maxByteUse = 0;
        string[] kinds = ["insert", "in-place", "update", "delete"];
        var perKind = new Dictionary<string, (double Regions, double Bytes)>();
        int space = format == "fkv" ? 400_000 : 150_000;

        // One operation in its own transaction with exactly its credit; returns whether the model changed.
        async Task Step(Tree t, string kind, byte[] k, byte[] v)
        {
            var credit = kind switch
            {
                "insert" or "in-place" => t.InsertCredit(k.Length, v.Length),
                "update" => t.UpdateCredit(k.Length, v.Length),
                _ => t.DeleteCredit(),
            };
            using var tx = await t.Segment.BeginAsync(credit);
            bool abort = rng.Next(10) == 0;
            BTreeStatus st = kind switch
            {
                "insert" => t.Insert(tx, k, v),
                "in-place" => t.InsertInPlace(tx, k, v.Length, v, static (span, state) => state.CopyTo(span)),
                "update" => t.Update(tx, k, v),
                _ => t.Delete(tx, k),
            };
            var expect = kind switch
            {
                "insert" or "in-place" => model.ContainsKey(k) ? BTreeStatus.Exists : BTreeStatus.Ok,
                _ => model.ContainsKey(k) ? BTreeStatus.Ok : BTreeStatus.NotFound,
            };
            Assert.Equal(expect, st);
            var u = tx.Used;
            double r = (double)u.Regions / credit.Regions, b = (double)u.Bytes / credit.Bytes;
            maxRegionUse = Math.Max(maxRegionUse, r);
            maxByteUse = Math.Max(maxByteUse, b);
            var pk = perKind.GetValueOrDefault(kind);
            perKind[kind] = (Math.Max(pk.Regions, r), Math.Max(pk.Bytes, b));
            ops++;
            if (abort)
            {
                tx.Abort();
                aborted++;
                return;
            }
            var p = tx.Close();
            if (ops % 64 == 0) await p;
            if (st != BTreeStatus.Ok) return;
            if (kind == "delete") model.Remove(k);
            else model[k] = v;
        }

        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, shape.Config);
            // Grow to height 4 (mostly inserts).
            while (t.Height < 4)
            {
                Assert.True(ops < 400_000, $"height {t.Height} after {ops} operations");
                int op = rng.Next(100);
                var k = shape.Key(rng, space);
                await Step(t, op < 75 ? "insert" : op < 85 ? "in-place" : op < 95 ? "update" : "delete", k, shape.Value(rng));
                maxHeight = Math.Max(maxHeight, t.Height);
            }
            Ops.AssertEqual(t, model, $"height {t.Height} after {ops} ops");
        });
        output.WriteLine($"height 4 after {ops} operations, {model.Count} records");
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            // Mixed.
            for (int i = 0; i < 4000; i++)
            {
                var k = rng.Next(2) == 0 && model.Count > 0 ? model.Keys.ElementAt(rng.Next(Math.Min(model.Count, 50))) : shape.Key(rng, space);
                await Step(t, kinds[rng.Next(kinds.Length)], k, shape.Value(rng));
                maxHeight = Math.Max(maxHeight, t.Height);
            }
            Ops.AssertEqual(t, model, "mixed");
            // Shrink to nothing, with some updates on the way.
            foreach (var k in model.Keys.OrderBy(_ => rng.Next()).ToList())
            {
                if (rng.Next(8) == 0 && model.ContainsKey(k)) await Step(t, "update", k, shape.Value(rng));
                while (model.ContainsKey(k)) await Step(t, "delete", k, []);
            }
            Ops.AssertEqual(t, model, "emptied");
            Assert.Equal(1, t.Height);
        });
        h.AssertNoCaptureViolations();
        Assert.True(maxHeight >= 4);
        output.WriteLine($"{ops} operations ({aborted} aborted), max height {maxHeight}; largest share of the credit used: {maxRegionUse:P0} of regions, {maxByteUse:P0} of bytes");
        foreach (var (k, v) in perKind) output.WriteLine($"  {k}: {v.Regions:P0} regions, {v.Bytes:P0} bytes");
    }

    /// <summary>
    /// A split promotes an existing key as the separator, which may be far longer (and out of node) than the
    /// key being inserted: the insert's credit must cover it. One 4 KiB leaf holding 29 small keys, a 64 KiB key,
    /// and 29 small keys (59 records of 64 bytes with their 4-byte index entries: full); inserting one more small key splits it at the 64 KiB
    /// key, whose copy becomes the new root's separator.
    /// </summary>
    [Theory]
    [InlineData("insert")]
    [InlineData("update")]
    public async Task A_split_that_promotes_a_long_existing_key_fits_the_credit_of_a_short_key(string op)
    {
        await using var h = await TreeHost.Start(segmentSize: 16 << 20, logSize: 64 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            var big = Ops.Bytes(64 << 10, 1);
            big[0] = 1;
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, big, new byte[40]));
            for (byte i = 0; i < 29; i++)
            {
                var lo = new byte[16];
                lo[0] = 0;
                lo[1] = i;
                var hi = new byte[16];
                hi[0] = 2;
                hi[1] = i;
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, lo, new byte[40]));
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, hi, new byte[40]));
            }
            Assert.Equal(1, t.Height);
            var k = new byte[16];
            if (op == "insert")
            {
                k[0] = 3;
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, new byte[40])); // with its exact credit
            }
            else
            {
                k[0] = 2;
                k[1] = 28;
                Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, k, new byte[200])); // grows: the leaf must split
            }
            Assert.Equal(2, t.Height);
            Assert.Equal(op == "insert" ? 60 : 59, t.Count);
            Ops.AssertHealthy(t);
        });
        h.AssertNoCaptureViolations();
    }

    [Fact]
    public async Task Credits_grow_with_the_height_of_the_tree()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var f = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 16 }, "f");
            var v = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 }, "v");
            var byHeight = new Dictionary<int, (TxCredit Insert, TxCredit Delete, TxCredit Update)>();
            var varByHeight = new Dictionary<int, TxCredit>();
            void Record()
            {
                byHeight.TryAdd(f.Height, (f.InsertCredit(8, 16), f.DeleteCredit(), f.UpdateCredit(8, 16)));
                varByHeight.TryAdd(v.Height, v.InsertCredit(8, 16));
            }
            Record();
            for (ulong i = 0; (byHeight.Count < 4 || varByHeight.Count < 4) && i < 200_000; i++)
            {
                await Ops.Insert(f, Ops.U64(i * 7919 % 1_000_003), new byte[16]);
                await Ops.Insert(v, Ops.U64(i * 7919 % 1_000_003), new byte[16]);
                Record();
            }
            Assert.Equal([1, 2, 3, 4], byHeight.Keys.Order().Take(4));
            Assert.Equal([1, 2, 3, 4], varByHeight.Keys.Order().Take(4));
            for (int height = 2; height <= 4; height++)
            {
                var lo = byHeight[height - 1];
                var hi = byHeight[height];
                foreach (var (a, b, what) in new[] { (lo.Insert, hi.Insert, "insert"), (lo.Delete, hi.Delete, "delete"), (lo.Update, hi.Update, "update"), (varByHeight[height - 1], varByHeight[height], "variable insert") })
                {
                    Assert.True(a.Regions < b.Regions && a.Bytes < b.Bytes, $"{what} credit at height {height - 1} ({a}) is not below height {height} ({b})");
                }
            }
            output.WriteLine(string.Join("\n", byHeight.OrderBy(kv => kv.Key).Select(kv => $"height {kv.Key}: insert {kv.Value.Insert}, delete {kv.Value.Delete}, update {kv.Value.Update}")));
            // A larger value needs more credit; an out-of-node one at least its length.
            Assert.True(v.InsertCredit(8, 100).Bytes < v.InsertCredit(8, 90_000).Bytes);
            Assert.True(v.InsertCredit(8, 90_000).Bytes >= 90_000);
            Assert.True(v.InsertCredit(8, 90_000).Bytes < 90_000 + 4 * (v.Height + 2) * 8192L, $"{v.InsertCredit(8, 90_000)}");
            // The fixed tree's cached credit follows its height back down.
            var credit4 = f.InsertCredit(8, 16);
            for (ulong i = 0; i < 200_000 && f.Height > 1; i++) await Ops.Delete(f, Ops.U64(i * 7919 % 1_000_003));
            Assert.Equal(1, f.Height);
            Assert.Equal(byHeight[1].Insert, f.InsertCredit(8, 16));
            Assert.True(f.InsertCredit(8, 16).Bytes < credit4.Bytes);
        });
    }

    /// <summary>
    /// A delete never allocates (a merge moves the parent's separator down with its chunk; a borrow that would
    /// need an out-of-node separator is skipped), so its credit must not carry the longest key ever inserted:
    /// two trees of the same height, one that once held a 1 MiB key and one whose longest key only just went
    /// out of node, ask the same delete credit, a few KiB per level, not the megabyte a separator copy would need.
    /// The exact-credit test above shows the credit still covers every delete.
    /// </summary>
    [Fact]
    public async Task A_delete_credit_does_not_carry_the_longest_key_ever_inserted()
    {
        await using var h = await TreeHost.Start(segmentSize: 16 << 20, logSize: 64 << 20, segmentMaxSize: 64 << 20);
        await h.Run(async seg =>
        {
            var small = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 }, "small");
            var huge = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 }, "huge");
            for (ulong i = 0; i < 400; i++)
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(small, Ops.U64(i * 7919 % 1_000_003), new byte[16]));
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(huge, Ops.U64(i * 7919 % 1_000_003), new byte[16]));
            }
            var justOut = Ops.Bytes(200, 1);  // over the 104-byte inline limit of 512-byte nodes
            var oneMiB = Ops.Bytes(1 << 20, 2);
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(small, justOut, []));
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(huge, oneMiB, [], wait: true));
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(small, justOut));
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(huge, oneMiB));
            Assert.Equal(small.Height, huge.Height);
            Assert.True(huge.Height >= 3, $"height {huge.Height}");
            Assert.Equal(small.DeleteCredit(), huge.DeleteCredit());
            Assert.True(huge.DeleteCredit().Bytes < 16 * 1024 * huge.Height, $"{huge.DeleteCredit()} at height {huge.Height}");
            Ops.AssertHealthy(small);
            Ops.AssertHealthy(huge);
        });
        h.AssertNoCaptureViolations();
    }

    /// <summary>
    /// A fixed-size tree keeps its insert credit per height; node sizes set through another object on the tree (or put
    /// back by an abort) must not leave it stale: it was kept at the old sizes' figure, 10 KB against the 296 KB needed.
    /// </summary>
    [Fact]
    public async Task Insert_credit_follows_node_sizes_set_through_another_object()
    {
        await using var h = await TreeHost.Start(segmentSize: 64 << 20, logSize: 64 << 20);
        await h.Run(async seg =>
        {
            var a = await Ops.Create(seg, new BTreeConfig { KeySize = 8, ValueSize = 8, NodeSize = 512 });
            var small = a.InsertCredit(8, 8);
            var b = Tree.Open(seg, a.Offset);
            using (var tx = await seg.BeginAsync(Tree.SetNodeSizesCredit))
            {
                b.SetNodeSizes(tx, 16384, 16384);
                Assert.Equal(b.InsertCredit(8, 8), a.InsertCredit(8, 8));
                Assert.True(a.InsertCredit(8, 8).Bytes > small.Bytes);
                tx.Abort();
            }
            Assert.Equal(small, a.InsertCredit(8, 8));
        });
    }
}

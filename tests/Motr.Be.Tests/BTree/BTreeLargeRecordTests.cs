using System.Diagnostics;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Keys from 1 byte to 1 MiB and values from 0 to 64 MiB in a variable tree of 4 KiB nodes: in node and out of
/// node, updated across the inline limit both ways, deleted; the out-of-node accounting and the allocator follow.
/// </summary>
public class BTreeLargeRecordTests(ITestOutputHelper output)
{
    private static readonly int[] KeySizes = [1, 100, 5 << 10, BTreeFormatConstants.MaxKeyLength];
    private static readonly int[] ValueSizes = [0, 2 << 10, 1 << 20, BTreeFormatConstants.MaxValueLength];

    /// <summary>MaxInline(4096): ((4096 - 64) / 4 - 2) rounded down to 8.</summary>
    private const int Inline = 1000;

    private static int RecordSize(int k, int v, bool crc) => (8 + k + v + (crc ? 4 : 0) + 7) & ~7;

    /// <summary>Which parts of a leaf record go out of node, by the rule of the format (value first, then the key).</summary>
    private static (bool Key, bool Value) OutOfNode(int k, int v, bool crc)
    {
        if (RecordSize(k, v, crc) <= Inline) return (false, false);
        if (RecordSize(k, 16, crc) <= Inline) return (false, true);
        return (true, RecordSize(16, v, crc) > Inline);
    }

    private static byte[] Key(int size, int variant)
    {
        var k = Ops.Bytes(size, size * 31 + variant);
        k[0] = (byte)(variant * 16 + Array.IndexOf(KeySizes, size)); // distinct even for 1-byte keys
        return k;
    }

    /// <summary>The header's out-of-node counters against the model's leaf records plus the separators found in internal nodes.</summary>
    private static void AssertLargeAccounting(Segment seg, Tree t, SortedDictionary<byte[], byte[]> model, bool crc, string when)
    {
        long chunks = 0, bytes = 0;
        foreach (var (k, v) in model)
        {
            var (kl, vl) = OutOfNode(k.Length, v.Length, crc);
            if (kl) { chunks++; bytes += k.Length; }
            if (vl) { chunks++; bytes += v.Length; }
        }
        var rep = t.Check();
        Assert.True(rep.Healthy, $"{when}: {rep}");
        foreach (var n in Raw.Nodes(seg, rep).Where(n => Raw.Level(seg, n) > 0))
            for (int i = 0; i < Raw.Count(seg, n); i++)
            {
                var r = Raw.VarRecord(seg, n, i);
                if (r.KeyLarge) { chunks++; bytes += r.KeyLength; }
            }
        Assert.Equal((chunks, bytes), (t.Stats.LargeChunks, t.Stats.LargeBytes));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Keys_up_to_1_MiB_and_values_up_to_64_MiB_round_trip_through_updates_deletes_and_reopens(bool crc)
    {
        var sw = Stopwatch.StartNew();
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, logSize: 512 << 20, segmentMaxSize: 1L << 30);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        long usedBefore = 0, usedEmpty = 0;
        var cfg = new BTreeConfig { NodeSize = 4096, RecordChecksums = crc };
        await h.Run(async seg =>
        {
            usedBefore = seg.Allocator.UsedBytes;
            var t = await Ops.Create(seg, cfg);
            usedEmpty = seg.Allocator.UsedBytes;
            // Fillers, so that the large keys sit among others and some become separators.
            for (int i = 0; i < 400; i++)
            {
                var k = Key(100, 100 + i);
                var v = Ops.Bytes(i % 3 == 0 ? 1500 : 300, i);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
                model[k] = v;
            }
            foreach (int ks in KeySizes)
                for (int vi = 0; vi < ValueSizes.Length; vi++)
                {
                    int vs = ValueSizes[vi];
                    // 64 MiB values for the smallest and largest keys only (and once with record checksums).
                    if (vs == BTreeFormatConstants.MaxValueLength && (crc ? ks != 1 : ks != 1 && ks != BTreeFormatConstants.MaxKeyLength)) continue;
                    var k = Key(ks, vi);
                    var v = Ops.Bytes(vs, ks + vi);
                    Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v, wait: vs >= 1 << 20));
                    model[k] = v;
                    Assert.Equal(BTreeStatus.Exists, await Ops.Insert(t, k, [1]));
                }
            Assert.True(t.Height >= 2, $"height {t.Height}");
            Ops.AssertEqual(t, model, "inserted");
            AssertLargeAccounting(seg, t, model, crc, "inserted");
            foreach (var (k, v) in model) Assert.Equal(v, Ops.Get(t, k));
        });
        output.WriteLine($"inserted: {sw.Elapsed}");
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            Ops.AssertEqual(t, model, "reopened");
            AssertLargeAccounting(seg, t, model, crc, "reopened");
            // Updates across the inline limit both ways, for every large key.
            int step = 0;
            foreach (int ks in KeySizes)
            {
                var k = Key(ks, 1); // value 2 KiB now
                int[] sizes = ks == 1 ? [10, 3000, 0, 900, 1 << 20, 5, BTreeFormatConstants.MaxValueLength, 0]
                    : [10, 3000, 0, 900, 1 << 20, 5, 2000, 0];
                foreach (int vs in sizes)
                {
                    var v = Ops.Bytes(vs, 7 * step++);
                    Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, k, v, wait: vs >= 1 << 20));
                    model[k] = v;
                    Assert.Equal(v, Ops.Get(t, k));
                    AssertLargeAccounting(seg, t, model, crc, $"key {ks} updated to {vs}");
                }
            }
            // The 64 MiB value of the largest key shrinks to nothing.
            if (!crc)
            {
                var big = Key(BTreeFormatConstants.MaxKeyLength, 3);
                Assert.Equal(BTreeFormatConstants.MaxValueLength, Ops.Get(t, big)!.Length);
                Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, big, [], wait: true));
                model[big] = [];
            }
            Assert.Equal(BTreeStatus.NotFound, await Ops.Update(t, Key(BTreeFormatConstants.MaxKeyLength, 9), [1]));
            Ops.AssertEqual(t, model, "updated");
            AssertLargeAccounting(seg, t, model, crc, "updated");
        });
        output.WriteLine($"updated: {sw.Elapsed}");
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            Ops.AssertEqual(t, model, "reopened after updates");
            // Delete the large ones first (checking as we go), then the rest.
            foreach (var k in model.Keys.Where(k => k.Length != 100).ToList())
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
                Assert.Null(Ops.Get(t, k));
                AssertLargeAccounting(seg, t, model, crc, $"deleted a key of {k.Length} bytes");
            }
            foreach (var k in model.Keys.ToList())
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
            }
            Assert.Equal(BTreeStatus.NotFound, await Ops.Delete(t, Key(1, 0)));
            Ops.AssertEqual(t, model, "emptied");
            Assert.Equal(1, t.Height);
            Assert.Equal(1, t.NodeCount);
            Assert.Equal((0L, 0L), (t.Stats.LargeChunks, t.Stats.LargeBytes));
            Assert.Equal(usedEmpty, seg.Allocator.UsedBytes);
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            Assert.Equal(0, t.Count);
            Assert.Equal(usedEmpty, seg.Allocator.UsedBytes);
            using var tx = await seg.BeginAsync(Tree.DestroyCredit + Segment.RootCredit);
            t.Destroy(tx);
            Assert.True(seg.RemoveRoot(tx, "t"));
            await tx.Close();
            Assert.Equal(usedBefore, seg.Allocator.UsedBytes);
            Assert.Empty(seg.Allocator.Check());
        });
        output.WriteLine($"done: {sw.Elapsed}");
    }

    /// <summary>
    /// An update whose new value pushes the key out of node while the record keeps its size (old: key and a small
    /// value in node; new: a 16-byte reference to the key and a larger value) rebuilds the record. Written in
    /// place, the value ran past the record into the next one or the next allocator chunk. Every key length for
    /// which the key must go out of node, with its neighbours in the same leaf, both record formats.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_update_that_moves_the_key_out_of_node_at_the_same_record_size_rebuilds_the_record(bool crc)
    {
        await using var h = await TreeHost.Start(segmentSize: 16 << 20, logSize: 64 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096, RecordChecksums = crc });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            int cases = 0;
            for (int k = 8; k <= Inline; k++)
            {
                // The key stays in node with a 16-byte value reference: the value alone goes out instead.
                if (RecordSize(k, 16, crc) <= Inline) continue;
                for (int old = 0; RecordSize(k, old, crc) <= Inline; old++)
                {
                    // The new value that makes the record, with the key out of node, exactly the old size.
                    int size = RecordSize(k, old, crc);
                    int @new = size - 8 - 16 - (crc ? 4 : 0);
                    if (@new < 0 || RecordSize(16, @new, crc) != size || OutOfNode(k, @new, crc) != (true, false)) continue;
                    var key = Ops.Bytes(k, cases);
                    key[0] = (byte)(0x40 + cases % 64); // spread over the leaves, among neighbours
                    var before = Ops.Bytes(old, cases + 1);
                    Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, key, before));
                    model[key] = before;
                    var after = Ops.Bytes(@new, cases + 2);
                    Assert.Equal(BTreeStatus.Ok, await Ops.Update(t, key, after));
                    model[key] = after;
                    cases++;
                }
            }
            Assert.True(cases > 20, $"{cases} cases");
            Ops.AssertEqual(t, model, $"{cases} updates");
            AssertLargeAccounting(seg, t, model, crc, $"{cases} updates");
            foreach (var (k, v) in model) Assert.Equal(v, Ops.Get(t, k));
            Assert.Empty(seg.Allocator.Check());
        });
        h.AssertNoCaptureViolations();
    }

    [Fact]
    public async Task A_1_MiB_key_alone_and_beside_others_splits_merges_and_scans()
    {
        // Many out-of-node keys: every separator is a copy out of node too.
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, logSize: 128 << 20, segmentMaxSize: 1L << 30);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            long usedEmpty = seg.Allocator.UsedBytes;
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            for (int i = 0; i < 60; i++)
            {
                var k = Ops.Bytes(i % 2 == 0 ? 64 << 10 : 2000, i);
                var v = Ops.Bytes(i % 5 * 300, i);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
                model[k] = v;
            }
            Ops.AssertEqual(t, model, "many large keys");
            AssertLargeAccounting(seg, t, model, false, "many large keys");
            var c = t.OpenCursor();
            var first = model.Keys.First();
            Assert.True(c.Seek(first[..100])); // a prefix sorts before the key itself
            Assert.Equal(first, c.Key.ToArray());
            foreach (var k in model.Keys.ToList())
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
            }
            Ops.AssertEqual(t, model, "emptied");
            Assert.Equal(usedEmpty, seg.Allocator.UsedBytes);
        });
        h.AssertNoCaptureViolations();
    }
}

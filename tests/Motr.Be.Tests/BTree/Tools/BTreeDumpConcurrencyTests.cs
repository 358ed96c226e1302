using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>Save and load while other work on the same locality changes the tree or the segment.</summary>
public sealed class BTreeDumpConcurrencyTests
{
    // ---- save under random interleavings: a model of what the save promises -----------------------------

    private static byte[] KeyOf(int id)
    {
        // Every fifth key is out of node in 512-byte nodes; the others are 4 to 23 bytes.
        int len = id % 5 == 0 ? 1500 : 4 + id % 20;
        var k = new byte[len];
        BinaryPrimitives.WriteInt32BigEndian(k, id);
        for (int i = 4; i < len; i++) k[i] = (byte)(id * 31 + i);
        return k;
    }

    private static byte[] ValueOf(Random r)
    {
        int[] sizes = [0, 7, 60, 200, 900, 5000, 30_000, 90_000];
        var v = new byte[sizes[r.Next(sizes.Length)]];
        r.NextBytes(v);
        return v;
    }

    /// <summary>
    /// What SaveAsync promises, checked against a model under random interleavings: the file verifies and loads; its keys
    /// are strictly increasing; every key present for the whole save appears exactly once; every key saved was in the tree
    /// at some moment of the save, with a value it had then. The tree is changed (inserts, deletes, updates that move
    /// values out of node and back, aborted transactions, delete-all) through the saved object and through other objects,
    /// each time the save awaits a write.
    /// </summary>
    [Fact]
    public async Task A_save_under_random_changes_keeps_its_promises()
    {
        await using var h = await ToolsHarness.OpenAsync(logSize: 64 << 20);
        await h.Run(async () =>
        {
            var seg = h.Seg;
            for (int seed = 1; seed <= 24; seed++)
            {
                var r = new Random(seed);
                var t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512 });
                var model = new Dictionary<int, byte[]>();
                const int Ids = 400;
                for (int id = 0; id < Ids; id++)
                {
                    if (r.Next(3) == 0) continue;
                    var v = ValueOf(r);
                    model[id] = v;
                    await ToolsHarness.InsertAllAsync(t, [(KeyOf(id), v)]);
                }
                var always = new HashSet<int>(model.Keys);
                var had = model.ToDictionary(kv => kv.Key, kv => new List<byte[]> { kv.Value });
                var others = new[] { Tree.Open(seg, t.Offset), Tree.Open(seg, t.Offset) };
                int writes = 0;

                async Task Mutate()
                {
                    writes++;
                    int n = r.Next(0, 8);
                    for (int j = 0; j < n; j++)
                    {
                        var via = r.Next(3) == 0 ? t : others[r.Next(2)];
                        int id = r.Next(Ids);
                        bool abort = r.Next(4) == 0;
                        int op = r.Next(20);
                        if (op == 0 && r.Next(6) == 0)
                        {
                            // Delete-all, through some object.
                            await via.DeleteAllAsync(batch: 1 + r.Next(40));
                            model.Clear();
                            always.Clear();
                            continue;
                        }
                        using var tx = await seg.BeginAsync(via.InsertCredit(1500, 90_000) + via.DeleteCredit() + via.UpdateCredit(1500, 90_000));
                        var key = KeyOf(id);
                        BTreeStatus st;
                        byte[]? nv = null;
                        bool present = model.ContainsKey(id);
                        if (!present) { nv = ValueOf(r); st = via.Insert(tx, key, nv); }
                        else if (op < 8) st = via.Delete(tx, key);
                        else { nv = ValueOf(r); st = via.Update(tx, key, nv); }
                        Assert.Equal(BTreeStatus.Ok, st);
                        if (abort)
                        {
                            tx.Abort();
                            continue;
                        }
                        var closed = tx.Close();
                        if (!present || nv != null)
                        {
                            model[id] = nv!;
                            if (!had.TryGetValue(id, out var l)) had[id] = l = new List<byte[]>();
                            l.Add(nv!);
                        }
                        else
                        {
                            model.Remove(id);
                            always.Remove(id);
                        }
                        if (r.Next(3) == 0) await closed;
                    }
                }

                var output = new AsyncHookStream(Mutate);
                long saved = await BTreeDump.SaveAsync(t, output);
                Assert.True(writes > 3, $"seed {seed}: only {writes} writes");

                var loaded = await BTreeDump.LoadAsync(new MemoryStream(output.ToArray()), seg);
                var got = ToolsHarness.Records(loaded);
                Assert.Equal(saved, got.Count);
                var seen = new HashSet<int>();
                foreach (var (k, v) in got)
                {
                    int id = BinaryPrimitives.ReadInt32BigEndian(k);
                    Assert.True(k.AsSpan().SequenceEqual(KeyOf(id)), $"seed {seed}: a key not in the model");
                    Assert.True(seen.Add(id), $"seed {seed}: key {id} saved twice");
                    Assert.True(had.TryGetValue(id, out var values) && values.Any(x => x.AsSpan().SequenceEqual(v)),
                        $"seed {seed}: key {id} saved with a value ({v.Length} bytes) it never had during the save");
                }
                foreach (int id in always) Assert.True(seen.Contains(id), $"seed {seed}: key {id}, present for the whole save, is missing");
                Assert.True(loaded.Check().Healthy);
                Assert.True(t.Check().Healthy);
                // The tree still matches the model.
                var now = ToolsHarness.Records(t);
                Assert.Equal(model.Count, now.Count);
                foreach (var (k, v) in now) Assert.True(model[BinaryPrimitives.ReadInt32BigEndian(k)].AsSpan().SequenceEqual(v));
                await t.DeleteAllAsync();
                await loaded.DeleteAllAsync();
            }
        });
    }

    // ---- loads alongside other work in the same segment ------------------------------------------------------

    private static async Task<(Tree Tree, byte[] Dump)> SourceAsync(Segment seg, int n = 3000, int valueSize = 100)
    {
        var t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 1024 });
        var recs = new List<(byte[], byte[])>();
        for (int i = 0; i < n; i++) recs.Add((ToolsHarness.BigEndianKey(i), new byte[valueSize + i % 50]));
        await ToolsHarness.InsertAllAsync(t, recs);
        var ms = new MemoryStream();
        await BTreeDump.SaveAsync(t, ms);
        return (t, ms.ToArray());
    }

    /// <summary>
    /// Two loads under the same root name at once: one of them gets the name, the other is refused, and nothing leaks
    /// (the name is checked when the load starts, before the await that creates the tree).
    /// </summary>
    [Fact]
    public async Task Two_loads_under_the_same_root_name_at_once_do_not_both_take_it()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, dump) = await SourceAsync(seg);
            var a = BTreeDump.LoadAsync(new YieldingStream(dump), seg, null, "copy", null, CancellationToken.None);
            var b = BTreeDump.LoadAsync(new YieldingStream(dump), seg, null, "copy", null, CancellationToken.None);
            var results = new List<Tree>();
            int refused = 0;
            foreach (var task in new[] { a, b })
            {
                try { results.Add(await task); }
                catch (ArgumentException) { refused++; }
            }
            Assert.Single(results);
            Assert.Equal(1, refused);
            Assert.True(seg.TryGetRoot("copy", out long off));
            Assert.Equal(results[0].Offset, off);
            ToolsHarness.AssertSameRecords(t, results[0]);
            var check = SegmentCheck.Run(seg, [t, results[0]]);
            Assert.True(check.Healthy, check.ToString());
            Assert.Equal(0, check.LeakedBlocks);
        });
    }

    /// <summary>A load that fails removes its root name only if the name still names its tree (it may have been given to another).</summary>
    [Fact]
    public async Task A_failed_load_does_not_remove_a_root_name_that_names_another_tree_now()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, dump) = await SourceAsync(seg);
            using var cts = new CancellationTokenSource();
            var input = new YieldingStream(dump, onRead: (s, n) =>
            {
                if (n == 3)
                {
                    // The caller moves the name to the original tree while the load runs, then cancels it.
                    Assert.True(seg.TryBegin(Segment.RootCredit, out var tx));
                    seg.SetRoot(tx, "copy", t.Offset);
                    _ = tx.Close();
                    cts.Cancel();
                }
            });
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => BTreeDump.LoadAsync(input, seg, null, "copy", null, cts.Token));
            Assert.True(seg.TryGetRoot("copy", out long off));
            Assert.Equal(t.Offset, off);
            var check = SegmentCheck.Run(seg, [t]);
            Assert.True(check.Healthy, check.ToString());
            Assert.Equal(0, check.LeakedBlocks);
        });
    }

    /// <summary>A load cancelled while another load and other changes run in the segment: it alone is removed.</summary>
    [Fact]
    public async Task A_load_cancelled_while_another_runs_removes_only_itself()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, dump) = await SourceAsync(seg, n: 6000);
            var other = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512 }, "other");
            using var cts = new CancellationTokenSource();
            var inA = new YieldingStream(dump, onRead: (s, n) => { if (n == 4) cts.Cancel(); });
            bool stop = false;
            var r = new Random(5);
            var otherModel = new SortedDictionary<long, int>();
            async Task Churn()
            {
                while (!stop)
                {
                    long k = r.Next(500);
                    using (var tx = await seg.BeginAsync(other.InsertCredit(8, 3000) + other.DeleteCredit()))
                    {
                        var st = otherModel.ContainsKey(k) ? other.Delete(tx, ToolsHarness.BigEndianKey(k)) : other.Insert(tx, ToolsHarness.BigEndianKey(k), new byte[r.Next(3000)]);
                        Assert.Equal(BTreeStatus.Ok, st);
                        if (r.Next(3) == 0) tx.Abort();
                        else
                        {
                            _ = tx.Close();
                            if (!otherModel.Remove(k)) otherModel[k] = 0;
                        }
                    }
                    await Task.Yield();
                }
            }
            var churn = Churn();
            var a = BTreeDump.LoadAsync(inA, seg, null, "a", null, cts.Token);
            var b = BTreeDump.LoadAsync(new YieldingStream(dump), seg, null, "b", null, CancellationToken.None);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => a);
            var tb = await b;
            stop = true;
            await churn;
            Assert.False(seg.TryGetRoot("a", out _));
            Assert.True(seg.TryGetRoot("b", out long ob));
            Assert.Equal(tb.Offset, ob);
            ToolsHarness.AssertSameRecords(t, tb);
            Assert.Equal(otherModel.Count, other.Count);
            var check = SegmentCheck.Run(seg, [t, tb, other]);
            Assert.True(check.Healthy, check.ToString());
            Assert.Equal(0, check.LeakedBlocks);
        });
    }

    /// <summary>
    /// Loads that fill the segment while other work changes another tree (every change of it aborted, so it leaves the
    /// allocator as it was): the load that runs out of space leaves the allocator byte for byte as before it.
    /// </summary>
    [Fact]
    public async Task A_load_out_of_space_alongside_other_work_leaves_the_allocator_as_before()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, dump) = await SourceAsync(seg, n: 4000, valueSize: 200);
            var other = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512 });
            await ToolsHarness.InsertAllAsync(other, Enumerable.Range(0, 300).Select(i => (ToolsHarness.BigEndianKey(i * 2L), new byte[i % 40])));
            seg.Allocator.GrowthAllowed = false;
            try
            {
                bool stop = false;
                var r = new Random(9);
                async Task Churn()
                {
                    while (!stop)
                    {
                        using (var tx = await seg.BeginAsync(other.InsertCredit(8, 20_000) * 3 + other.UpdateCredit(8, 20_000)))
                        {
                            for (int j = 0; j < 3; j++) _ = other.Insert(tx, ToolsHarness.BigEndianKey(r.Next(600) * 2L + 1), new byte[r.Next(20_000)]);
                            _ = other.Update(tx, ToolsHarness.BigEndianKey(r.Next(300) * 2L), new byte[r.Next(20_000)]);
                            tx.Abort();
                        }
                        await Task.Yield();
                    }
                }
                var churn = Churn();
                var trees = new List<Tree> { t, other };
                BeException? failure = null;
                long usedBefore = 0, blocksBefore = 0;
                for (int i = 0; i < 40 && failure is null; i++)
                {
                    usedBefore = seg.Allocator.UsedBytes;
                    blocksBefore = SegmentCheck.Run(seg, trees).AllocatedBlocks;
                    try { trees.Add(await BTreeDump.LoadAsync(new YieldingStream(dump), seg, null, $"copy{i}", null, CancellationToken.None)); }
                    catch (BeException e) { failure = e; }
                }
                stop = true;
                await churn;
                Assert.NotNull(failure);
                Assert.Contains("space", failure.Message);
                Assert.False(failure.Data.Contains("Motr.BTreeDump.Cleanup"));
                Assert.Equal(usedBefore, seg.Allocator.UsedBytes);
                var check = SegmentCheck.Run(seg, trees);
                Assert.True(check.Healthy, check.ToString());
                Assert.Equal(0, check.LeakedBlocks);
                Assert.Equal(blocksBefore, check.AllocatedBlocks);
                Assert.Equal(300, other.Count);
                foreach (var copy in trees.Skip(2)) ToolsHarness.AssertSameRecords(t, copy);
            }
            finally
            {
                seg.Allocator.GrowthAllowed = true;
            }
        });
    }

    /// <summary>A stream whose writes first run an async hook on the caller's context (the locality).</summary>
    private sealed class AsyncHookStream(Func<Task> onWrite) : MemoryStream
    {
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await onWrite();
            await base.WriteAsync(buffer, cancellationToken);
        }
    }

    /// <summary>A stream whose reads yield the locality first, so other work runs between them.</summary>
    private sealed class YieldingStream(byte[] data, Action<YieldingStream, int>? onRead = null) : MemoryStream(data)
    {
        private int _reads;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Task.Yield();
            onRead?.Invoke(this, ++_reads);
            return Read(buffer.Span);
        }
    }
}

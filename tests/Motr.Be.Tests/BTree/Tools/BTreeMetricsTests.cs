using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Motr.Be.BTree;
using Motr.Be.Tests.BTree;
using Motr.Be.Tx;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>The instruments read through a MeterListener after known operations.</summary>
public sealed class BTreeMetricsTests
{
    /// <summary>Collects the "Motr.BTree" measurements of one named registration: instrument[/tag value] → value.</summary>
    private sealed class Collector : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly string _name;
        public readonly ConcurrentDictionary<string, long> Values = new();
        public readonly ConcurrentDictionary<string, string> Tags = new();

        public Collector(string name)
        {
            _name = name;
            _listener.InstrumentPublished = (inst, l) =>
            {
                if (inst.Meter.Name == BTreeMetrics.MeterName) l.EnableMeasurementEvents(inst);
            };
            _listener.SetMeasurementEventCallback<long>((inst, value, tags, _) =>
            {
                string? mine = null, extra = null;
                foreach (var t in tags)
                {
                    if (t.Key == BTreeMetrics.NameTag) mine = t.Value as string;
                    else if (t.Key is BTreeMetrics.OperationTag or BTreeMetrics.ResultTag or BTreeMetrics.PartTag) extra = t.Value as string;
                    else Tags[t.Key] = Convert.ToString(t.Value, System.Globalization.CultureInfo.InvariantCulture)!;
                }
                if (mine != _name) return;
                Values[extra is null ? inst.Name : $"{inst.Name}/{extra}"] = value;
            });
            _listener.Start();
        }

        public Dictionary<string, long> Collect()
        {
            Values.Clear();
            _listener.RecordObservableInstruments();
            return new Dictionary<string, long>(Values);
        }

        public void Dispose() => _listener.Dispose();
    }

    [Fact]
    public async Task The_instruments_report_the_trees_counters_and_shape()
    {
        string name = "metrics-" + Guid.NewGuid().ToString("N");
        using var collector = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        Tree t = null!;
        IDisposable reg = null!;
        await h.Run(async () =>
        {
            var seg = h.Seg;
            t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 512 });
            reg = BTreeMetrics.Register(t, name);
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 300; i++) recs.Add((ToolsHarness.BigEndianKey(i), new byte[i == 200 ? 2000 : 40]));
            await ToolsHarness.InsertAllAsync(t, recs);
            for (int i = 0; i < 40; i++)
            {
                using var tx = await seg.BeginAsync(t.DeleteCredit());
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, ToolsHarness.BigEndianKey(i)));
                await tx.Close();
            }
            for (int i = 100; i < 105; i++)
            {
                using var tx = await seg.BeginAsync(t.UpdateCredit(8, 10));
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, ToolsHarness.BigEndianKey(i), new byte[10]));
                await tx.Close();
            }
            for (int i = 0; i < 20; i++) t.Lookup(ToolsHarness.BigEndianKey(i * 10), out _);
            // Cookies: the second lookup of the same key hits, a cookie of a leaf far away misses.
            var cookie = new BTreeCookie();
            t.Lookup(ToolsHarness.BigEndianKey(150), out _, ref cookie); // miss (empty cookie)
            t.Lookup(ToolsHarness.BigEndianKey(150), out _, ref cookie); // hit
            t.Lookup(ToolsHarness.BigEndianKey(299), out _, ref cookie); // miss (another leaf)

            // Collected on the owner thread, every value is current.
            var v = collector.Collect();
            var s = t.Stats;
            Assert.Equal(300, v["motr.btree.operations/insert"]);
            Assert.Equal(40, v["motr.btree.operations/delete"]);
            Assert.Equal(5, v["motr.btree.operations/update"]);
            Assert.Equal(23, v["motr.btree.operations/lookup"]);
            Assert.Equal(s.Splits, v["motr.btree.splits"]);
            Assert.True(s.Splits > 10, $"{s.Splits} splits");
            Assert.Equal(s.Merges, v["motr.btree.merges"]);
            Assert.Equal(s.Rebalances, v["motr.btree.rebalances"]);
            Assert.Equal(s.PrefixShortenings, v["motr.btree.prefix_shortenings"]);
            Assert.True(s.Merges + s.Rebalances > 0, "40 deletes at the left edge of 512-byte nodes merge or rebalance");
            Assert.Equal(1, v["motr.btree.cookie.uses/hit"]);
            Assert.Equal(2, v["motr.btree.cookie.uses/miss"]);
            Assert.Equal(260, v["motr.btree.records"]);
            Assert.Equal(t.Height, v["motr.btree.depth"]);
            Assert.True(t.Height >= 2);
            Assert.Equal(t.NodeCount, v["motr.btree.nodes"]);
            Assert.Equal(t.NodeCount * 512, v["motr.btree.bytes/nodes"]);
            Assert.Equal(2000, v["motr.btree.bytes/out_of_node"]);
            Assert.Equal(((long)seg.Id).ToString(System.Globalization.CultureInfo.InvariantCulture), collector.Tags[BTreeMetrics.SegmentTag]);
        });

        // From another thread: the counters are read as they are; the shape is what the owner read at the
        // previous collection, and is refreshed by the owner for the next.
        await h.Run(async () =>
        {
            using var tx = await h.Seg.BeginAsync(t.InsertCredit(8, 1));
            t.Insert(tx, ToolsHarness.BigEndianKey(1000), [1]);
            await tx.Close();
        });
        var off = collector.Collect();
        Assert.Equal(301, off["motr.btree.operations/insert"]);
        Assert.InRange(off["motr.btree.records"], 260, 261);
        await h.Run(() => Task.CompletedTask); // the refresh posted by that collection has run
        var fresh = collector.Collect();
        Assert.Equal(261, fresh["motr.btree.records"]);

        // Disposed: the tree's series are gone.
        reg.Dispose();
        Assert.Empty(collector.Collect());
    }

    [Fact]
    public async Task Two_registered_trees_have_their_own_series()
    {
        string n1 = "m1-" + Guid.NewGuid().ToString("N"), n2 = "m2-" + Guid.NewGuid().ToString("N");
        using var c1 = new Collector(n1);
        using var c2 = new Collector(n2);
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var a = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { KeySize = 4, ValueSize = 4 });
            var b = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { KeySize = 4, ValueSize = 4 });
            using var ra = BTreeMetrics.Register(a, n1);
            using var rb = BTreeMetrics.Register(b, n2);
            await ToolsHarness.InsertAllAsync(a, [([1, 2, 3, 4], [0, 0, 0, 0])]);
            await ToolsHarness.InsertAllAsync(b, [([1, 2, 3, 4], [0, 0, 0, 0]), ([1, 2, 3, 5], [0, 0, 0, 0])]);
            Assert.Equal(1, c1.Collect()["motr.btree.operations/insert"]);
            var v2 = c2.Collect();
            Assert.Equal(2, v2["motr.btree.operations/insert"]);
            Assert.Equal(2, v2["motr.btree.records"]);
            Assert.Equal(1, v2["motr.btree.depth"]);
        });
    }

    /// <summary>
    /// An insert or update answered OutOfSpace changed nothing: it is not an operation done, and a split it began
    /// (rolled back with it) is not a split. Free space is plentiful in total but in pieces of ~200 bytes, so both
    /// fail only when they ask the allocator for a larger chunk, after the tree has started the operation.
    /// </summary>
    [Theory]
    [InlineData("out-of-node value")]
    [InlineData("node for a split")]
    public async Task Operations_refused_for_space_are_not_counted(string need)
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 16 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            await Ops.FragmentFreeSpace(seg);
            long ok = 0;
            if (need == "out-of-node value")
            {
                Assert.Equal(BTreeStatus.OutOfSpace, await Ops.Insert(t, [1], new byte[3000]));
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [2], new byte[50]));
                ok++;
                Assert.Equal(BTreeStatus.OutOfSpace, await Ops.Update(t, [2], new byte[3000]));
                Assert.Equal(0, t.Stats.Updates);
            }
            else
            {
                BTreeStatus st = BTreeStatus.Ok;
                for (int i = 0; i < 20 && st == BTreeStatus.Ok; i++)
                {
                    st = await Ops.Insert(t, Ops.U64((ulong)i), new byte[60]);
                    if (st == BTreeStatus.Ok) ok++;
                }
                Assert.Equal(BTreeStatus.OutOfSpace, st);
                Assert.Equal(1, t.Height);
            }
            var s = t.Stats;
            Assert.Equal(ok, s.Inserts);
            Assert.Equal(0, s.Splits); // the tree never split: one leaf
            Assert.Equal(1, s.Nodes);
        });
    }

    /// <summary>
    /// The counters are observable counters: an exporter takes a value lower than the last one for a reset. An
    /// insert-in-place whose fill throws is rolled back and not counted, and must not have been visible as counted
    /// meanwhile: a collection from inside the fill (or from another thread at that moment) then after it sees no drop.
    /// </summary>
    [Fact]
    public async Task The_counters_never_go_down_when_an_insert_in_place_is_rolled_back()
    {
        string name = "mono-" + Guid.NewGuid().ToString("N");
        using var collector = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            using var reg = BTreeMetrics.Register(t, name);
            // Insert in place with a fill that collects then throws, until such an insert is one that split a node
            // (its new node is in the header, inside the transaction); a normal insert of the key after each other try.
            Dictionary<string, long> before, inside = null!;
            long nodesInside = 0, nodesBefore;
            int n = 0;
            do
            {
                nodesBefore = t.NodeCount;
                before = collector.Collect();
                using (var tx = await h.Seg.BeginAsync(t.InsertCredit(8, 40)))
                {
                    Assert.Throws<InvalidOperationException>(() => t.InsertInPlace(tx, ToolsHarness.BigEndianKey(n), 40, 0, (span, _) =>
                    {
                        inside = collector.Collect();
                        nodesInside = t.NodeCount;
                        throw new InvalidOperationException("fill failed");
                    }));
                    await tx.Close();
                }
                if (nodesInside > nodesBefore) break;
                using (var tx = await h.Seg.BeginAsync(t.InsertCredit(8, 40)))
                {
                    Assert.Equal(BTreeStatus.Ok, t.Insert(tx, ToolsHarness.BigEndianKey(n++), new byte[40]));
                    await tx.Close();
                }
            }
            while (true);
            Assert.Equal(nodesBefore, t.NodeCount); // rolled back
            var after = collector.Collect();
            foreach (var key in new[] { "motr.btree.operations/insert", "motr.btree.splits", "motr.btree.prefix_shortenings" })
            {
                Assert.True(inside![key] <= after[key], $"{key}: {inside[key]} during the insert, {after[key]} after");
                Assert.Equal(before[key], after[key]); // rolled back: nothing counted
            }
        });
    }
}

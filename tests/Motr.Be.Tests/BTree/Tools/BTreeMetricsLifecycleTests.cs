using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Motr.Be.BTree;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>
/// The instruments over the life of a registration: a tree destroyed while registered, an engine closed (and the
/// folder reopened) under a registration left undisposed, collections from threads that are no locality.
/// </summary>
public sealed class BTreeMetricsLifecycleTests
{
    /// <summary>One measurement: instrument, its extra tag value (operation, result, part) or null, value.</summary>
    private readonly record struct Point(string Instrument, string? Extra, long Value);

    /// <summary>Collects every "Motr.BTree" measurement of one name, keeping duplicates (one entry per series reported).</summary>
    private sealed class Collector : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly string _name;
        private readonly ConcurrentQueue<Point> _points = new();

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
                }
                if (mine == _name) _points.Enqueue(new Point(inst.Name, extra, value));
            });
            _listener.Start();
        }

        /// <summary>Every series of the name reported by one collection (on the calling thread).</summary>
        public List<Point> Collect()
        {
            _points.Clear();
            _listener.RecordObservableInstruments();
            return [.. _points];
        }

        public void Dispose() => _listener.Dispose();
    }

    private static long Only(List<Point> points, string instrument, string? extra = null)
    {
        var found = points.FindAll(p => p.Instrument == instrument && p.Extra == extra);
        Assert.True(found.Count == 1, $"{instrument}/{extra}: {found.Count} series ({string.Join(", ", found)})");
        return found[0].Value;
    }

    [Fact]
    public async Task A_tree_destroyed_while_registered_is_collected_on_its_locality_without_an_exception()
    {
        string name = "gone-" + Guid.NewGuid().ToString("N");
        using var c = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            using var reg = BTreeMetrics.Register(t, name);
            await ToolsHarness.InsertAllAsync(t, [(ToolsHarness.BigEndianKey(1), [1])]);
            Assert.Equal(1, Only(c.Collect(), BTreeMetrics.Records));
            using (var tx = await h.Seg.BeginAsync(t.DeleteCredit() + Tree.DestroyCredit))
            {
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, ToolsHarness.BigEndianKey(1)));
                t.Destroy(tx);
                // Inside the transaction the tree is gone: none of its series is reported.
                Assert.Empty(c.Collect());
                tx.Abort();
            }
            // The abort put it back, record and all.
            var back = c.Collect();
            Assert.Equal(1, Only(back, BTreeMetrics.Records));
            Assert.Equal(1, Only(back, BTreeMetrics.Operations, "delete"));
            using (var tx = await h.Seg.BeginAsync(t.DeleteCredit() + Tree.DestroyCredit))
            {
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, ToolsHarness.BigEndianKey(1)));
                t.Destroy(tx);
                await tx.Close();
            }
            Assert.Empty(c.Collect());
            // Another tree made at its place is not the registered one.
            var other = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            Assert.Equal(t.Offset, other.Offset);
            Assert.Empty(c.Collect());
        });
    }

    [Fact]
    public async Task A_tree_destroyed_while_registered_is_collected_from_another_thread_without_faulting_its_locality()
    {
        string name = "gone-off-" + Guid.NewGuid().ToString("N");
        using var c = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        IDisposable reg = null!;
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            reg = BTreeMetrics.Register(t, name);
            using var tx = await h.Seg.BeginAsync(Tree.DestroyCredit);
            t.Destroy(tx);
            await tx.Close();
        });
        long faults = h.Loc.Faults;
        for (int i = 0; i < 3; i++)
        {
            var v = c.Collect(); // posts a refresh to the locality, which finds the tree gone
            await h.Run(() => Task.CompletedTask); // that refresh has run
            Assert.Equal(faults, h.Loc.Faults);
            if (i > 0) Assert.Empty(v); // the first one reported what the owner read before the destroy
        }
        reg.Dispose();
    }

    [Fact]
    public async Task A_registration_left_when_its_engine_closes_ends_and_does_not_double_the_trees_series_after_a_reopen()
    {
        string name = "reopen-" + Guid.NewGuid().ToString("N");
        using var c = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        long offset = 0;
        Tree old = null!;
        await h.Run(async () =>
        {
            var t = old = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 }, root: "metrics");
            offset = t.Offset;
            _ = BTreeMetrics.Register(t, name); // never disposed
            await ToolsHarness.InsertAllAsync(t, [(ToolsHarness.BigEndianKey(1), [1]), (ToolsHarness.BigEndianKey(2), [2])]);
        });
        Assert.Equal(2, Only(c.Collect(), BTreeMetrics.Operations, "insert"));
        await h.ReopenAsync();

        // The engine is closed: collecting (on a thread that is no locality) neither throws nor reports the old tree.
        Assert.Empty(c.Collect());
        // Nor can the closed engine's tree be registered again (it would report nothing real, for ever).
        Assert.Throws<ObjectDisposedException>(() => BTreeMetrics.Register(old, name));

        IDisposable reg = null!;
        await h.Run(async () =>
        {
            var t = Tree.Open(h.Seg, offset);
            reg = BTreeMetrics.Register(t, name);
            await ToolsHarness.InsertAllAsync(t, [(ToolsHarness.BigEndianKey(3), [3])]);
            var v = c.Collect();
            Assert.Equal(1, Only(v, BTreeMetrics.Operations, "insert"));
            Assert.Equal(3, Only(v, BTreeMetrics.Records));
        });
        reg.Dispose();
        Assert.Empty(c.Collect());
    }

    [Fact]
    public async Task The_same_tree_cannot_be_registered_twice_under_the_same_tags()
    {
        string name = "twice-" + Guid.NewGuid().ToString("N");
        using var c = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            var again = Tree.Open(h.Seg, t.Offset); // another object of the same tree
            using var reg = BTreeMetrics.Register(t, name);
            // Two series of identical tags (segment, offset, name) would be one series to an exporter, its value either's.
            Assert.Throws<InvalidOperationException>(() => BTreeMetrics.Register(t, name));
            Assert.Throws<InvalidOperationException>(() => BTreeMetrics.Register(again, name));
            await ToolsHarness.InsertAllAsync(t, [(ToolsHarness.BigEndianKey(1), [1])]);
            Assert.Equal(1, Only(c.Collect(), BTreeMetrics.Operations, "insert"));

            // Under another name it is another series; once disposed, the tags are free again.
            using (BTreeMetrics.Register(again, name + "-2")) { }
            reg.Dispose();
            using var second = BTreeMetrics.Register(again, name);
            Assert.Equal(0, Only(c.Collect(), BTreeMetrics.Operations, "insert"));

            // A tree destroyed and another made at its place: the old registration reports nothing, the new tree may be registered.
            using (var tx = await h.Seg.BeginAsync(t.DeleteCredit() + Tree.DestroyCredit))
            {
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, ToolsHarness.BigEndianKey(1)));
                t.Destroy(tx);
                await tx.Close();
            }
            var other = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            Assert.Equal(t.Offset, other.Offset);
            using var third = BTreeMetrics.Register(other, name);
            var v = c.Collect();
            Assert.Equal(0, Only(v, BTreeMetrics.Operations, "insert"));
            Assert.Equal(0, Only(v, BTreeMetrics.Records));
        });
    }

    [Fact]
    public async Task A_tree_registered_off_its_locality_reports_its_shape_at_the_first_collection()
    {
        string name = "off-" + Guid.NewGuid().ToString("N");
        using var c = new Collector(name);
        await using var h = await ToolsHarness.OpenAsync();
        Tree t = null!;
        await h.Run(async () =>
        {
            t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 100; i++) recs.Add((ToolsHarness.BigEndianKey(i), new byte[40]));
            await ToolsHarness.InsertAllAsync(t, recs);
        });
        // The locality is busy (a long turn): a refresh posted to it cannot run before the collection below.
        using var release = new ManualResetEventSlim();
        using var entered = new ManualResetEventSlim();
        var busy = h.Loc.RunAsync(() => { entered.Set(); release.Wait(); });
        entered.Wait();
        IDisposable reg;
        List<Point> v;
        try
        {
            reg = BTreeMetrics.Register(t, name); // on a thread that is no locality
            v = c.Collect();
        }
        finally
        {
            release.Set();
        }
        await busy;
        var s = await h.Loc.RunAsync(() => t.Stats);
        Assert.Equal(100, Only(v, BTreeMetrics.Records));
        Assert.Equal(s.Height, Only(v, BTreeMetrics.Depth));
        Assert.Equal(s.Nodes, Only(v, BTreeMetrics.Nodes));
        Assert.Equal(s.Nodes * 512, Only(v, BTreeMetrics.Bytes, "nodes"));
        reg.Dispose();
    }

    [Fact]
    public async Task A_registration_left_when_its_engine_closed_does_not_keep_its_tree_alive_without_a_listener()
    {
        await using var h = await ToolsHarness.OpenAsync();
        var gone = await RegisterAndForgetAsync(h);
        await h.ReopenAsync();
        // No collection in between (no listener at all, say): the next registration drops what the closed engine left.
        IDisposable reg = null!;
        await h.Run(async () => reg = BTreeMetrics.Register(await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 })));
        // A collection running meanwhile in another test holds its snapshot of the registrations for a moment: retry a few times.
        for (int i = 0; i < 20 && gone.IsAlive; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            if (gone.IsAlive) await Task.Yield();
        }
        Assert.False(gone.IsAlive, "the closed engine's tree object is still referenced by its registration");
        reg.Dispose();
    }

    /// <summary>Registers a new tree and forgets the registration; returns a weak reference to the tree object.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> RegisterAndForgetAsync(ToolsHarness h) =>
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 });
            _ = BTreeMetrics.Register(t, "forgotten-" + Guid.NewGuid().ToString("N"));
            return new WeakReference(t);
        });

    [Fact]
    public async Task Registrations_added_and_disposed_on_many_threads_while_a_listener_collects_are_neither_lost_nor_left()
    {
        string prefix = "churn-" + Guid.NewGuid().ToString("N") + "-";
        await using var h = await ToolsHarness.OpenAsync();
        var t = await h.Run(() => ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512 }));
        var seen = new ConcurrentDictionary<string, int>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (inst, l) =>
        {
            if (inst.Meter.Name == BTreeMetrics.MeterName) l.EnableMeasurementEvents(inst);
        };
        listener.SetMeasurementEventCallback<long>((inst, value, tags, _) =>
        {
            if (inst.Name != BTreeMetrics.Records) return;
            foreach (var tag in tags)
                if (tag.Key == BTreeMetrics.NameTag && tag.Value is string n && n.StartsWith(prefix, StringComparison.Ordinal))
                    seen.AddOrUpdate(n, 1, (_, c) => c + 1);
        });
        listener.Start();

        using var stop = new CancellationTokenSource();
        var collector = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested) listener.RecordObservableInstruments(); // posts refreshes to the locality, too
        });
        const int Threads = 4, PerThread = 200;
        var kept = new ConcurrentBag<(string Name, IDisposable Reg)>();
        var churn = Enumerable.Range(0, Threads).Select(th => Task.Run(() =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                string name = $"{prefix}{th}-{i}";
                var reg = BTreeMetrics.Register(t, name);
                if (i % 10 == 0) kept.Add((name, reg));
                else
                {
                    reg.Dispose();
                    if (i % 3 == 0) reg.Dispose(); // twice: nothing more
                }
            }
        })).ToArray();
        await Task.WhenAll(churn);
        stop.Cancel();
        await collector;

        seen.Clear();
        listener.RecordObservableInstruments();
        Assert.Equal(Threads * PerThread / 10, kept.Count);
        foreach (var (name, _) in kept) Assert.True(seen.TryGetValue(name, out int c) && c == 1, $"{name}: {c} series");
        Assert.Equal(kept.Count, seen.Count); // nothing disposed is reported
        foreach (var (_, reg) in kept) reg.Dispose();
        seen.Clear();
        listener.RecordObservableInstruments();
        Assert.Empty(seen);
    }
    [Fact]
    public async Task Trees_of_two_engines_at_the_same_segment_and_offset_publish_distinct_series()
    {
        string name = "two-engines-" + Guid.NewGuid().ToString("N");
        await using var a = await ToolsHarness.OpenAsync();
        await using var b = await ToolsHarness.OpenAsync();
        var ta = await a.Run(() => ToolsHarness.CreateAsync(a.Seg, new BTreeConfig { NodeSize = 512 }));
        var tb = await b.Run(() => ToolsHarness.CreateAsync(b.Seg, new BTreeConfig { NodeSize = 512 }));
        Assert.Equal(ta.Segment.Id, tb.Segment.Id);
        Assert.Equal(ta.Offset, tb.Offset); // what made their series identical before the domain tag
        await a.Run(() => ToolsHarness.InsertAllAsync(ta, [(ToolsHarness.BigEndianKey(1), [1])]));

        var series = new ConcurrentDictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (inst, l) =>
        {
            if (inst.Meter.Name == BTreeMetrics.MeterName && inst.Name == BTreeMetrics.Records) l.EnableMeasurementEvents(inst);
        };
        listener.SetMeasurementEventCallback<long>((inst, value, tags, _) =>
        {
            bool mine = false;
            var all = new List<string>();
            foreach (var t in tags)
            {
                if (t.Key == BTreeMetrics.NameTag && name.Equals(t.Value)) mine = true;
                all.Add($"{t.Key}={t.Value}");
            }
            if (!mine) return;
            all.Sort(StringComparer.Ordinal);
            series[string.Join(",", all)] = value;
        });
        listener.Start();
        using var ra = await a.Run(() => Task.FromResult(BTreeMetrics.Register(ta, name)));
        using var rb = await b.Run(() => Task.FromResult(BTreeMetrics.Register(tb, name)));
        await a.Run(() => { listener.RecordObservableInstruments(); return Task.CompletedTask; });

        // Two series, told apart by where each domain lives; an exporter would otherwise sum or overwrite them.
        Assert.Equal(2, series.Count);
        Assert.Contains(series, kv => kv.Key.Contains($"{BTreeMetrics.DomainTag}={a.Engine.Domain.Location}", StringComparison.Ordinal) && kv.Value == 1);
        Assert.Contains(series, kv => kv.Key.Contains($"{BTreeMetrics.DomainTag}={b.Engine.Domain.Location}", StringComparison.Ordinal) && kv.Value == 0);
    }
}

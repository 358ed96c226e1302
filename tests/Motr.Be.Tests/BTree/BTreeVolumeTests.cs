using System.Diagnostics;
using Motr.Be.BTree;
using Motr.Be.Tx;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Long random runs per leaf format in small nodes (so the tree splits, merges, grows and shrinks often):
/// inserts, in-place inserts, deletes, updates and lookups, each in a transaction with its exact credit, some
/// aborted; every result checked against a SortedDictionary; cursor walks every few thousand operations; a
/// full comparison and fsck every 25k; close and reopen every 100k. MOTR_BTREE_OPS overrides the count.
/// </summary>
public class BTreeVolumeTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("fkv", 512, 500_000)]
    [InlineData("fk", 512, 500_000)]
    [InlineData("var", 512, 500_000)]
    [InlineData("var-crc", 1024, 500_000)]
    public async Task Hundreds_of_thousands_of_random_operations_match_a_sorted_dictionary(string format, int nodeSize, int defaultOps)
    {
        int total = int.TryParse(Environment.GetEnvironmentVariable("MOTR_BTREE_OPS"), out int o) ? o : defaultOps;
        int seed = Ops.Seed();
        output.WriteLine($"{format}/{nodeSize}: seed {seed} (MOTR_SEED={seed}), {total} operations");
        var rng = new Random(seed);
        var shape = TreeShape.Of(format, nodeSize);
        // The key space, made once.
        const int Space = 20_000;
        var keys = new byte[Space][];
        for (int i = 0; i < Space; i++) keys[i] = shape.Key(new Random(i), int.MaxValue);
        keys = keys.Distinct(ByteArrayComparer.Instance).ToArray();
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        // The keys in the model, for picking a present key in O(1).
        var present = new List<byte[]>();
        var where = new Dictionary<byte[], int>(ByteArrayComparer.Instance);
        void Added(byte[] k)
        {
            where[k] = present.Count;
            present.Add(k);
        }
        void Removed(byte[] k)
        {
            int i = where[k];
            var lastKey = present[^1];
            present[i] = lastKey;
            where[lastKey] = i;
            present.RemoveAt(present.Count - 1);
            where.Remove(k);
        }
        byte[] AnyKey() => keys[rng.Next(keys.Length)];
        byte[] PresentKey(int percent) => present.Count > 0 && rng.Next(100) < percent ? present[rng.Next(present.Count)] : AnyKey();
        var counts = new Dictionary<string, long>();
        long done = 0, aborted = 0, cursorSteps = 0;
        int reopens = 0;
        int maxHeight = 0, minHeightAfterPeak = int.MaxValue;
        var sw = Stopwatch.StartNew();
        await using var h = await TreeHost.Start(segmentSize: 16 << 20, logSize: 64 << 20, segmentMaxSize: 256 << 20);
        const int ReopenEvery = 100_000, CompareEvery = 25_000, WalkEvery = 2_000, Phase = 30_000;
        while (done < total)
        {
            await h.Run(async seg =>
            {
                Tree t = seg.TryGetRoot("t", out long off) ? Tree.Open(seg, off) : await Ops.Create(seg, shape.Config);
                Ops.AssertEqual(t, model, $"seed {seed}, after {done} ops (opened)");
                var walker = t.OpenCursor();
                long end = Math.Min(total, done + ReopenEvery);
                TxPersistence last = default;
                while (done < end)
                {
                    // Phases: grow towards ~10k records (height 4 in these node sizes), then shrink to almost nothing.
                    bool grow = done / Phase % 2 == 0;
                    int op = rng.Next(100);
                    string kind = op < 20 ? "lookup"
                        : grow ? (op < 70 ? "insert" : op < 78 ? "in-place" : op < 90 ? "update" : "delete")
                        : (op < 25 ? "insert" : op < 35 ? "update" : "delete");
                    var k = kind switch
                    {
                        "lookup" => PresentKey(50),
                        "update" => PresentKey(80),
                        "delete" => PresentKey(grow ? 0 : 80),
                        _ => AnyKey(),
                    };
                    counts[kind] = counts.GetValueOrDefault(kind) + 1;
                    done++;
                    if (kind == "lookup")
                    {
                        var st = t.Lookup(k, out ReadOnlySpan<byte> v);
                        if (model.TryGetValue(k, out var mv))
                        {
                            if (st != BTreeStatus.Ok || !v.SequenceEqual(mv)) Assert.Fail($"seed {seed}, op {done}: lookup of {Ops.Hex(k)}: {st}, value differs from the model");
                        }
                        else Assert.Equal(BTreeStatus.NotFound, st);
                        continue;
                    }
                    var val = kind == "delete" ? [] : shape.Value(rng);
                    var credit = kind switch
                    {
                        "insert" or "in-place" => t.InsertCredit(k.Length, val.Length),
                        "update" => t.UpdateCredit(k.Length, val.Length),
                        _ => t.DeleteCredit(),
                    };
                    using var tx = await seg.BeginAsync(credit);
                    var s = kind switch
                    {
                        "insert" => t.Insert(tx, k, val),
                        "in-place" => t.InsertInPlace(tx, k, val.Length, val, static (span, v) => v.CopyTo(span)),
                        "update" => t.Update(tx, k, val),
                        _ => t.Delete(tx, k),
                    };
                    bool had = model.ContainsKey(k);
                    var expect = kind is "insert" or "in-place" ? (had ? BTreeStatus.Exists : BTreeStatus.Ok) : (had ? BTreeStatus.Ok : BTreeStatus.NotFound);
                    if (s != expect) Assert.Fail($"seed {seed}, op {done}: {kind} of {Ops.Hex(k)} gave {s}, expected {expect}");
                    if (rng.Next(20) == 0)
                    {
                        tx.Abort();
                        aborted++;
                    }
                    else
                    {
                        last = tx.Close();
                        if (s == BTreeStatus.Ok)
                        {
                            if (kind == "delete")
                            {
                                model.Remove(k);
                                Removed(k);
                            }
                            else
                            {
                                if (!had) Added(k);
                                model[k] = val;
                            }
                        }
                    }
                    if (done % 64 == 0) await last;
                    int height = t.Height;
                    maxHeight = Math.Max(maxHeight, height);
                    if (maxHeight >= 4) minHeightAfterPeak = Math.Min(minHeightAfterPeak, height);

                    if (done % WalkEvery == 0 && model.Count > 0)
                    {
                        // A walk from a random key, forwards or backwards, against the model.
                        var from = keys[rng.Next(keys.Length)];
                        bool fwd = rng.Next(2) == 0;
                        var expected = (fwd ? model.Keys.Where(x => ByteArrayComparer.Instance.Compare(x, from) >= 0)
                            : model.Keys.Reverse().Where(x => ByteArrayComparer.Instance.Compare(x, from) <= 0)).Take(300).ToList();
                        bool ok = walker.Seek(from);
                        if (!fwd)
                        {
                            if (!ok) ok = walker.SeekLast();
                            else if (ByteArrayComparer.Instance.Compare(walker.Key.ToArray(), from) > 0) ok = walker.MovePrev();
                        }
                        foreach (var x in expected)
                        {
                            Assert.True(ok, $"seed {seed}, op {done}: walk ended early");
                            if (!walker.Key.SequenceEqual(x)) Assert.Fail($"seed {seed}, op {done}: walk at {Ops.Hex(walker.Key)}, model {Ops.Hex(x)}");
                            if (!walker.Value.SequenceEqual(model[x])) Assert.Fail($"seed {seed}, op {done}: walk value differs at {Ops.Hex(x)}");
                            ok = fwd ? walker.MoveNext() : walker.MovePrev();
                            cursorSteps++;
                        }
                    }
                    if (done % CompareEvery == 0) Ops.AssertEqual(t, model, $"seed {seed}, after {done} ops");
                }
                await seg.FlushAsync();
                Ops.AssertEqual(t, model, $"seed {seed}, after {done} ops (closing)");
            });
            await h.Reopen();
            reopens++;
        }
        output.WriteLine($"{done} operations ({string.Join(", ", counts.OrderBy(kv => kv.Key).Select(kv => $"{kv.Value} {kv.Key}"))}), {aborted} aborted, " +
            $"{cursorSteps} cursor steps, {reopens} reopens; max height {maxHeight}, back down to {minHeightAfterPeak}; {model.Count} records at the end; {sw.Elapsed.TotalSeconds:F1} s");
        Assert.True(maxHeight >= 4, $"max height {maxHeight}");
        Assert.True(minHeightAfterPeak <= maxHeight - 1, "the tree never shrank");
    }
}

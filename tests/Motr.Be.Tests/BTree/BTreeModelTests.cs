using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Random inserts, deletes, updates and lookups, each in a transaction opened with exactly the operation's
/// credit, a tenth aborted, against SortedDictionary with bytewise order; full forward and backward scans
/// and fsck every few hundred steps; close-and-reopen in between. For every leaf format and two node sizes.
/// </summary>
public class BTreeModelTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("fkv", 512)]
    [InlineData("fkv", 4096)]
    [InlineData("fk", 512)]
    [InlineData("fk", 4096)]
    [InlineData("var", 512)]
    [InlineData("var", 4096)]
    [InlineData("var-crc", 1024)]
    [InlineData("var-edge", 512)]
    [InlineData("var-edge", 4096)]
    public async Task Random_operations_match_a_sorted_dictionary(string format, int nodeSize)
    {
        var shape = TreeShape.Of(format, nodeSize);
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 1, segmentSize: 8 << 20, logSize: 32 << 20);
        o.VerifyCaptures = true;
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        int seed = int.TryParse(Environment.GetEnvironmentVariable("MOTR_SEED"), out int fixedSeed) ? fixedSeed : Random.Shared.Next();
        var rng = new Random(seed);
        output.WriteLine($"{format}/{nodeSize}: seed {seed} (rerun with MOTR_SEED={seed})");
        const int Rounds = 4, Steps = 4000, Space = 3000;
        long ops = 0, aborts = 0;
        for (int round = 0; round < Rounds; round++)
        {
            await using var e = await Engines.Open(o);
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                Tree tree;
                if (seg.TryGetRoot("t", out long off)) tree = Tree.Open(seg, off);
                else
                {
                    using var tx = await seg.BeginAsync(Tree.CreateCredit + Segment.RootCredit);
                    tree = Tree.Create(tx, seg, shape.Config);
                    seg.SetRoot(tx, "t", tree.Offset);
                    await tx.Close();
                }
                Compare(tree, model, $"seed {seed}, round {round} start");
                for (int step = 0; step < Steps; step++, ops++)
                {
                    int op = rng.Next(100);
                    var key = shape.Key(rng, Space);
                    bool abort = rng.Next(10) == 0;
                    if (op < 20)
                    {
                        var st = tree.Lookup(key, out ReadOnlySpan<byte> v);
                        if (model.TryGetValue(key, out var mv))
                        {
                            Assert.Equal(BTreeStatus.Ok, st);
                            Assert.True(v.SequenceEqual(mv), $"step {ops}: lookup value differs");
                        }
                        else Assert.Equal(BTreeStatus.NotFound, st);
                        continue;
                    }
                    TxCredit credit;
                    var value = shape.Value(rng);
                    if (op < 60) credit = tree.InsertCredit(key.Length, value.Length);
                    else if (op < 85) credit = tree.DeleteCredit();
                    else credit = tree.UpdateCredit(key.Length, value.Length);
                    using var tx = await seg.BeginAsync(credit);
                    BTreeStatus s;
                    if (op < 60)
                    {
                        s = tree.Insert(tx, key, value);
                        Assert.Equal(model.ContainsKey(key) ? BTreeStatus.Exists : BTreeStatus.Ok, s);
                        if (s == BTreeStatus.Ok && !abort) model[key] = value;
                    }
                    else if (op < 85)
                    {
                        s = tree.Delete(tx, key);
                        Assert.Equal(model.ContainsKey(key) ? BTreeStatus.Ok : BTreeStatus.NotFound, s);
                        if (s == BTreeStatus.Ok && !abort) model.Remove(key);
                    }
                    else
                    {
                        s = tree.Update(tx, key, value);
                        Assert.Equal(model.ContainsKey(key) ? BTreeStatus.Ok : BTreeStatus.NotFound, s);
                        if (s == BTreeStatus.Ok && !abort) model[key] = value;
                    }
                    if (abort)
                    {
                        tx.Abort();
                        aborts++;
                    }
                    else _ = tx.Close();
                    if (step % 500 == 0) Compare(tree, model, $"seed {seed}, step {ops}");
                }
                Compare(tree, model, $"round {round} end");
                await seg.FlushAsync();
            });
            Assert.Empty(e.Domain.CaptureViolations);
        }
        output.WriteLine($"{format}/{nodeSize}: {ops} steps, {aborts} aborted, {model.Count} records at the end, {Rounds} reopens");
    }

    internal static void Compare(Tree tree, SortedDictionary<byte[], byte[]> model, string when)
    {
        var report = tree.Check();
        Assert.True(report.Healthy, $"{when}: {report}");
        Assert.Equal(model.Count, tree.Count);
        var c = tree.OpenCursor();
        int i = 0;
        bool ok = c.SeekFirst();
        foreach (var (k, v) in model)
        {
            Assert.True(ok, $"{when}: the cursor ended after {i} of {model.Count} records");
            Assert.True(c.Key.SequenceEqual(k), $"{when}: record {i}: key differs");
            Assert.True(c.Value.SequenceEqual(v), $"{when}: record {i}: value differs");
            ok = c.MoveNext();
            i++;
        }
        Assert.False(ok, $"{when}: the cursor has more records than the model");
        // Backwards too.
        ok = c.SeekLast();
        foreach (var (k, _) in model.Reverse())
        {
            Assert.True(ok && c.Key.SequenceEqual(k), $"{when}: backward scan differs");
            ok = c.MovePrev();
        }
        Assert.False(ok);
    }
}

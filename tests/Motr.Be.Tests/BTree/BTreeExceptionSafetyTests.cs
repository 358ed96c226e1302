using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Exceptions in the middle of an operation (from the caller's callbacks and comparer, from the transaction
/// it was given): after one, the segment must be as before the operation — whether the caller then aborts the
/// transaction or catches the exception and closes it — and the tree and its cursors must stay usable.
/// </summary>
public sealed class BTreeExceptionSafetyTests
{
    private sealed class Boom : Exception
    {
        public Boom() : base("boom") { }
    }

    private static byte[] Snapshot(Segment seg) => seg.Bytes(0, checked((int)seg.Size)).ToArray();

    private static void AssertUnchanged(Segment seg, byte[] before, string what)
    {
        Assert.True(seg.Size == before.Length, $"{what}: the segment grew from {before.Length} to {seg.Size} bytes");
        var now = seg.Bytes(0, before.Length);
        int at = now.CommonPrefixLength(before);
        if (at == before.Length) at = -1;
        Assert.True(at < 0, $"{what}: the segment changed at 0x{at:X}");
    }

    // ---- InsertInPlace's fill ------------------------------------------------------------------------

    /// <summary>
    /// A fill that writes part of the value and throws: the insert must leave nothing behind — not a record
    /// counted but never finished (its out-of-node value's or record's checksum unset), which a caller that
    /// catches and closes would commit as damage. Every key is tried first with a throwing fill (in a leaf with
    /// room, and in a full leaf, where the split has been made by then), then inserted for real.
    /// </summary>
    [Theory]
    [InlineData("in node")]
    [InlineData("in node, record checksums")]
    [InlineData("out-of-node value")]
    public async Task A_fill_that_throws_leaves_no_trace_when_the_transaction_is_closed(string kind)
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, RecordChecksums = kind.Contains("checksums") });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            int vlen = kind == "out-of-node value" ? 300 : 40;
            var rng = new Random(11);
            for (int i = 0; i < 120; i++)
            {
                var k = Ops.U64((ulong)rng.NextInt64());
                var v = Ops.Bytes(vlen, i);
                var before = Snapshot(seg);
                long count = t.Count;
                using (var tx = await seg.BeginAsync(t.InsertCredit(k.Length, vlen)))
                {
                    Assert.Throws<Boom>(() => t.InsertInPlace(tx, k, vlen, v, static (span, val) =>
                    {
                        val.AsSpan(0, span.Length / 2).CopyTo(span);
                        throw new Boom();
                    }));
                    AssertUnchanged(seg, before, $"insert {i}: a fill that threw");
                    Assert.Equal(default, tx.Used);
                    await tx.Close(); // the caller caught it and went on
                }
                Assert.Equal(count, t.Count);
                using (var tx = await seg.BeginAsync(t.InsertCredit(k.Length, vlen)))
                {
                    Assert.Equal(BTreeStatus.Ok, t.InsertInPlace(tx, k, vlen, v, static (span, val) => val.CopyTo(span)));
                    await tx.Close();
                }
                model[k] = v;
            }
            Assert.True(t.Height >= 2);
            Ops.AssertEqual(t, model, "after the throwing fills");
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertHealthy(Ops.Open(seg), "reopened"));
    }

    // ---- OutOfSpace ----------------------------------------------------------------------------------

    /// <summary>
    /// An update that answers OutOfSpace must leave its transaction as it found it (docs/transactions.md: it may
    /// then wait across turns): no capture — the leaf's header was captured before the space check.
    /// </summary>
    [Fact]
    public async Task An_update_refused_for_space_leaves_the_transaction_without_captures()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, logSize: 32 << 20, segmentMaxSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [1], [1, 2, 3]));
            var big = new byte[1_200_000]; // more than the segment may ever hold
            var before = Snapshot(seg);
            using var tx = await seg.BeginAsync(t.UpdateCredit(1, big.Length));
            Assert.Equal(BTreeStatus.OutOfSpace, t.Update(tx, [1], big));
            AssertUnchanged(seg, before, "update refused for space");
            Assert.Equal(default, tx.Used);
            await Task.Yield(); // a transaction that holds no capture may wait
            await tx.Close();
            Assert.Equal([1, 2, 3], Ops.Get(t, [1]));
            Ops.AssertHealthy(t, "after the refused update");
        });
    }

    // ---- credit --------------------------------------------------------------------------------------

    /// <summary>Credits short of <paramref name="need"/> by one region or one byte, and a few far below it.</summary>
    private static IEnumerable<TxCredit> ShortOf(TxCredit need)
    {
        yield return new TxCredit(need.Regions - 1, need.Bytes);
        yield return new TxCredit(need.Regions, need.Bytes - 1);
        for (int r = 0; r < need.Regions; r += Math.Max(1, need.Regions / 16)) yield return new TxCredit(r, need.Bytes);
        for (long b = 0; b < need.Bytes; b += Math.Max(1, need.Bytes / 16)) yield return new TxCredit(need.Regions, b);
    }

    /// <summary>
    /// Every operation given a transaction with less credit than it declares throws TxUsageException before
    /// changing anything (docs/btree.md, Credits) — segment memory byte for byte, allocator and tree header
    /// included — so a caller that catches it and closes the transaction commits nothing half-done.
    /// </summary>
    [Fact]
    public async Task Every_operation_short_of_its_credit_throws_before_changing_anything()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            var empty = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 }, "empty");
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            await Ops.Fill(t, model, TreeShape.Of("var", 512), new Random(3), 300, 100_000);
            var key = model.Keys.ElementAt(model.Count / 2);
            var fresh = new byte[] { 0xFF, 0xFE, 0xFD };

            async Task Refused(string op, TxCredit need, Action<Transaction> run)
            {
                foreach (var credit in ShortOf(need))
                {
                    var before = Snapshot(seg);
                    using var tx = await seg.BeginAsync(credit);
                    var e = Record.Exception(() => run(tx));
                    Assert.True(e is TxUsageException, $"{op} with credit {credit} of {need}: {e?.GetType().Name ?? "no exception"} {e?.Message}");
                    AssertUnchanged(seg, before, $"{op} with credit {credit} of {need}");
                    await tx.Close();
                }
            }

            await Refused("insert", t.InsertCredit(fresh.Length, 3000), tx => t.Insert(tx, fresh, new byte[3000]));
            await Refused("insert in place", t.InsertCredit(fresh.Length, 3000), tx => t.InsertInPlace(tx, fresh, 3000, 0, static (s, _) => s.Fill(7)));
            await Refused("update", t.UpdateCredit(key.Length, 3000), tx => t.Update(tx, key, new byte[3000]));
            await Refused("delete", t.DeleteCredit(), tx => t.Delete(tx, key));
            await Refused("set node sizes", Tree.SetNodeSizesCredit, tx => t.SetNodeSizes(tx, 1024, 1024));
            await Refused("create", Tree.CreateCredit, tx => Tree.Create(tx, seg, new BTreeConfig { NodeSize = 512 }));
            await Refused("destroy", Tree.DestroyCredit, tx => empty.Destroy(tx));

            Ops.AssertEqual(t, model, "after the refusals");
            Ops.AssertHealthy(empty, "the empty tree after the refused destroys");
            Assert.Empty(seg.Allocator.Check());
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit))
            {
                empty.Destroy(tx);
                await tx.Close();
            }
        });
    }

    // ---- a transaction that cannot be used -----------------------------------------------------------

    /// <summary>
    /// An operation given a transaction of another segment must refuse it before changing anything: the
    /// transaction captures (and an abort restores) its own segment's bytes only, so the tree's changes would be
    /// neither logged nor undone. Closed and aborted transactions are refused too.
    /// </summary>
    [Fact]
    public async Task A_transaction_of_another_segment_or_not_open_is_refused_before_any_change()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 2, segmentSize: 1 << 20, logSize: 32 << 20);
        o.VerifyCaptures = true;
        await using var engine = await Engines.Open(o);
        Locality a = engine.Localities[0], b = engine.Localities[1];
        Segment segA = a.Segment!, segB = b.Segment!;
        var (t, empty, model) = await a.RunAsync(async () =>
        {
            var t = await Ops.Create(segA, new BTreeConfig { NodeSize = 512 });
            var e = await Ops.Create(segA, new BTreeConfig { NodeSize = 512 }, "empty");
            var m = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            await Ops.Fill(t, m, TreeShape.Of("var", 512), new Random(4), 200, 100_000);
            return (t, e, m);
        });
        var key = model.Keys.First();
        var big = new TxCredit(10_000, 4 << 20);
        var actions = new (string Op, Action<Transaction> Run)[]
        {
            ("insert", tx => t.Insert(tx, [0xFF, 1], [1])),
            ("insert in place", tx => t.InsertInPlace(tx, [0xFF, 2], 3, 0, static (s, _) => s.Fill(1))),
            ("update", tx => t.Update(tx, key, [9, 9])),
            ("delete", tx => t.Delete(tx, key)),
            ("set node sizes", tx => t.SetNodeSizes(tx, 1024, 1024)),
            ("destroy", tx => empty.Destroy(tx)),
            ("create", tx => Tree.Create(tx, segA, new BTreeConfig())),
        };
        foreach (var (op, run) in actions)
        {
            // Opened on its own segment's locality, capturing nothing there; used on the tree's.
            var foreign = await b.RunAsync(() => segB.BeginAsync(big).AsTask());
            var beforeB = await b.RunAsync(() => Snapshot(segB));
            await a.RunAsync(() =>
            {
                var before = Snapshot(segA);
                var e = Record.Exception(() => run(foreign));
                Assert.True(e is ArgumentException or TxUsageException, $"{op} with a transaction of segment {segB.Id}: {e?.GetType().Name ?? "no exception"} {e?.Message}");
                AssertUnchanged(segA, before, $"{op} with a transaction of another segment");
            });
            await b.RunAsync(() =>
            {
                Assert.Equal(default, foreign.Used);
                AssertUnchanged(segB, beforeB, $"{op}: the other segment");
                foreign.Dispose();
            });
            foreach (bool close in new[] { true, false })
            {
                await a.RunAsync(async () =>
                {
                    var tx = await segA.BeginAsync(big);
                    if (close) await tx.Close();
                    else tx.Abort();
                    var before = Snapshot(segA);
                    var e = Record.Exception(() => run(tx));
                    Assert.True(e is TxUsageException, $"{op} with a {tx.State} transaction: {e?.GetType().Name ?? "no exception"} {e?.Message}");
                    AssertUnchanged(segA, before, $"{op} with a {tx.State} transaction");
                    tx.Dispose();
                });
            }
        }
        await a.RunAsync(() =>
        {
            Ops.AssertEqual(t, model, "after the refusals");
            Ops.AssertHealthy(empty, "empty");
            Assert.Empty(segA.Allocator.Check());
        });
        Assert.Empty(engine.Domain.CaptureViolations);
    }

    // ---- a comparer that throws ----------------------------------------------------------------------

    /// <summary>A comparer whose <see cref="IKeyComparer.Name"/> throws: Create reads it, and must do so before it changes anything.</summary>
    private sealed class NamelessComparer : IKeyComparer
    {
        public string Name => throw new Boom();
        public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => a.SequenceCompareTo(b);
    }

    [Fact]
    public async Task A_comparer_whose_name_throws_leaves_create_without_a_trace()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20);
        await h.Run(async seg =>
        {
            var before = Snapshot(seg);
            using var tx = await seg.BeginAsync(Tree.CreateCredit);
            Assert.Throws<Boom>(() => Tree.Create(tx, seg, new BTreeConfig { Comparer = new NamelessComparer() }));
            AssertUnchanged(seg, before, "create with a comparer whose name throws");
            Assert.Equal(default, tx.Used);
            await tx.Close();
            Assert.Empty(seg.Allocator.Check());
        });
    }
}

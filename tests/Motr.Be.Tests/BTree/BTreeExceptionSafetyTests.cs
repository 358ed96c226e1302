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

    /// <summary>Bytewise order that throws at its Nth call from now (<see cref="ThrowAt"/>); 0: never.</summary>
    private sealed class ThrowingComparer : IKeyComparer
    {
        public int Countdown;
        public long Calls;
        public string Name => "throwing-bytewise";

        public void ThrowAt(int n) => Countdown = n;

        public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        {
            Calls++;
            if (Countdown > 0 && --Countdown == 0) throw new Boom();
            return a.SequenceCompareTo(b);
        }
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

    // ---- the allocator failing part-way ---------------------------------------------------------------

    /// <summary>
    /// Damage the allocator finds while an insert is part-way — the leaf touched and its record placed, or the leaf
    /// already split — throws BeCorruptionException naming it; the insert must be rolled back like one that ran out
    /// of space, so that a caller that catches the exception and closes the transaction commits nothing half-done
    /// (a split whose right half no parent points at loses its records). Here the free chunk an out-of-node value
    /// would take has a damaged header; every insert of such a value fails, in a leaf with room and in a full one.
    /// </summary>
    [Fact]
    public async Task Allocator_damage_found_part_way_through_an_insert_leaves_no_trace_when_the_transaction_is_closed()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, verifyCaptures: false); // the damage is written outside any transaction
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            // A free 304-byte block, the head of its exact-fit list, with a guard behind it; then its header damaged.
            long x;
            using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit * 2))
            {
                x = seg.Allocator.Alloc(tx, 300);
                seg.Allocator.Alloc(tx, 600); // from the wilderness, after x (no free chunk is that large)
                await tx.Close();
            }
            using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.FreeCredit))
            {
                seg.Allocator.Free(tx, x);
                await tx.Close();
            }
            await seg.FlushAsync();
            seg.At<byte>(x - 32) ^= 0x40; // the chunk's magic
            Assert.NotEmpty(seg.Allocator.Check());
            int failed = 0;
            for (int i = 0; i < 60; i++)
            {
                var k = Ops.U64((ulong)(2 * i));
                var v = Ops.Bytes(40, i);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
                model[k] = v;
                var before = Snapshot(seg);
                long nodes = t.NodeCount;
                using (var tx = await seg.BeginAsync(t.InsertCredit(8, 300)))
                {
                    var ex = Assert.Throws<BeCorruptionException>(() => t.Insert(tx, Ops.U64((ulong)(2 * i + 1)), new byte[300]));
                    Assert.Contains($"0x{x - 32:X}", ex.Message);
                    AssertUnchanged(seg, before, $"insert {i}: damage found part-way");
                    Assert.Equal(default, tx.Used);
                    await tx.Close(); // the caller caught it and went on
                }
                Assert.Equal(nodes, t.NodeCount);
                failed++;
            }
            seg.At<byte>(x - 32) ^= 0x40; // repaired
            Ops.AssertEqual(t, model, "after the failed inserts");
            Assert.True(t.Height >= 2);
            Assert.Empty(seg.Allocator.Check());
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(1), new byte[300]));
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertHealthy(Ops.Open(seg), "reopened"));
    }

    /// <summary>
    /// A delete (or an update) whose record's out-of-node value has a damaged chunk header: the allocator refuses to free
    /// it (naming the chunk) after the delete touched the leaf; the operation must leave no trace, so a caller that catches and
    /// closes commits nothing, and once the chunk is repaired the record deletes normally.
    /// </summary>
    [Fact]
    public async Task A_delete_refused_by_the_allocator_leaves_no_trace_when_the_transaction_is_closed()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, verifyCaptures: false); // the damage is written outside any transaction
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            for (int i = 0; i < 40; i++)
            {
                var k = Ops.U64((ulong)i);
                model[k] = Ops.Bytes(300, i);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, model[k]));
            }
            await seg.FlushAsync();
            var report = t.Check();
            long chunk = report.Chunks[^1]; // an out-of-node value (the walk lists them after the nodes)
            var victim = model.First(r => t.Lookup(r.Key, out ReadOnlySpan<byte> _) == BTreeStatus.Ok && ValueChunk(seg, t, r.Key) == chunk).Key;
            seg.At<byte>(chunk - 32) ^= 0x40; // its chunk header's magic
            var before = Snapshot(seg);
            using (var tx = await seg.BeginAsync(t.DeleteCredit()))
            {
                var ex = Assert.ThrowsAny<BeException>(() => t.Delete(tx, victim));
                Assert.Contains($"0x{chunk:X}", ex.Message);
                AssertUnchanged(seg, before, "a delete the allocator refused");
                Assert.Equal(default, tx.Used);
                await tx.Close();
            }
            // An update replacing that value frees the chunk too: refused the same way, whatever the new value's size.
            foreach (int len in new[] { 10, 300, 2000 })
                using (var tx = await seg.BeginAsync(t.UpdateCredit(victim.Length, len)))
                {
                    before = Snapshot(seg);
                    var ex = Assert.ThrowsAny<BeException>(() => t.Update(tx, victim, new byte[len]));
                    Assert.Contains($"0x{chunk:X}", ex.Message);
                    AssertUnchanged(seg, before, $"an update to {len} bytes the allocator refused");
                    Assert.Equal(default, tx.Used);
                    await tx.Close();
                }
            seg.At<byte>(chunk - 32) ^= 0x40; // repaired
            Ops.AssertEqual(t, model, "after the refused delete");
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, victim));
            model.Remove(victim);
            Ops.AssertEqual(t, model, "deleted");
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertHealthy(Ops.Open(seg), "reopened"));
    }

    /// <summary>
    /// Destroy clears the root's magic and frees it, then the header; an allocator that refuses a free (here the header's
    /// chunk header is damaged, which the root's free sees in its neighbour) must leave the tree whole, root and all,
    /// whether the caller then aborts or closes.
    /// </summary>
    [Fact]
    public async Task A_destroy_refused_by_the_allocator_half_way_leaves_the_tree_whole()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20, verifyCaptures: false); // the damage is written outside any transaction
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            await seg.FlushAsync();
            seg.At<byte>(t.Offset - 32) ^= 0x40; // the header's chunk header's magic
            var before = Snapshot(seg);
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit))
            {
                var ex = Assert.ThrowsAny<BeException>(() => t.Destroy(tx));
                Assert.Contains($"segment {seg.Id} ({seg.FileName}): allocator free", ex.Message);
                AssertUnchanged(seg, before, "a destroy the allocator refused");
                Assert.Equal(default, tx.Used);
                await tx.Close();
            }
            seg.At<byte>(t.Offset - 32) ^= 0x40; // repaired
            Ops.AssertHealthy(t, "after the refused destroy");
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [1], [2]));
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertHealthy(Ops.Open(seg), "reopened"));
    }

    /// <summary>The chunk of the out-of-node value of <paramref name="key"/>: the span a lookup returns starts there.</summary>
    private static unsafe long ValueChunk(Segment seg, Tree t, byte[] key)
    {
        Assert.Equal(BTreeStatus.Ok, t.Lookup(key, out ReadOnlySpan<byte> v));
        fixed (byte* p = v) fixed (byte* b = seg.Bytes(0, 1)) return p - b;
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

    /// <summary>
    /// A cursor that must find its place again after the tree changed, whose comparer throws on the way: the
    /// exception reaches the caller, and the cursor must still be lost-and-findable, not take the stale leaf it
    /// cached for current — the next move must go on from its key, as if the exception never happened.
    /// </summary>
    [Theory]
    [InlineData("next")]
    [InlineData("prev")]
    [InlineData("key")]
    public async Task A_cursor_whose_refinding_throws_finds_its_place_on_the_next_move(string move)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            byte[]? Move(BTreeCursor c) => move switch
            {
                "next" => c.MoveNext() ? c.Key.ToArray() : null,
                "prev" => c.MovePrev() ? c.Key.ToArray() : null,
                _ => c.Key.ToArray(),
            };
            int thrown = 0;
            // The comparer throws at its nth call of the move: in the descent, or in the leaf's search after it.
            for (int n = 1; n <= 12; n++)
            {
                var cmp = new ThrowingComparer();
                var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 16, Comparer = cmp }, $"t{n}");
                var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
                async Task Put(ulong i)
                {
                    var v = Ops.Bytes(16, (int)i);
                    Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(i), v));
                    model[Ops.U64(i)] = v;
                }
                for (ulong i = 0; i < 400; i += 4) await Put(i);
                var c = t.OpenCursor();
                Assert.True(c.Seek(Ops.U64(200)));
                // The cursor's leaf splits and its key moves away: keys just below it go in.
                for (ulong i = 197; i > 120; i--)
                    if (i % 4 != 0) await Put(i);
                var at = Ops.U64(200);
                var expected = move switch
                {
                    "next" => model.Keys.First(k => ByteArrayComparer.Instance.Compare(k, at) > 0),
                    "prev" => model.Keys.Last(k => ByteArrayComparer.Instance.Compare(k, at) < 0),
                    _ => at,
                };
                cmp.ThrowAt(n);
                byte[]? got;
                try { got = Move(c); }
                catch (Boom)
                {
                    thrown++;
                    cmp.ThrowAt(0);
                    got = Move(c); // the caller retries
                }
                cmp.ThrowAt(0);
                Assert.True(got is not null && got.AsSpan().SequenceEqual(expected),
                    $"comparer throwing at call {n} of the move: the cursor then went to {(got is null ? "the end" : Ops.Hex(got))}, expected {Ops.Hex(expected)}");
                Ops.AssertEqual(t, model, $"n={n}");
            }
            Assert.True(thrown >= 3, $"the comparer threw in only {thrown} moves");
        });
    }

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

    /// <summary>
    /// A random workload whose comparer throws now and then, at a random call of an operation: the segment is as
    /// before the operation when the exception comes out, whether the caller then closes or aborts; a cursor kept
    /// across it all goes on in order; fsck and the model agree throughout.
    /// </summary>
    [Fact]
    public async Task A_comparer_throwing_at_random_calls_changes_nothing_and_cursors_go_on()
    {
        int seed = Ops.Seed();
        await using var h = await TreeHost.Start(segmentSize: 1 << 20);
        await h.Run(async seg =>
        {
            var rng = new Random(seed);
            var cmp = new ThrowingComparer();
            var shape = TreeShape.Of("var", 512);
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, Comparer = cmp });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            var c = t.OpenCursor();
            byte[]? at = null; // the cursor's key, null when unpositioned
            int booms = 0;
            for (int step = 0; step < 3000; step++)
            {
                string when = $"seed {seed}, step {step}";
                var k = shape.Key(rng, 600);
                var v = shape.Value(rng);
                int op = rng.Next(6);
                if (op == 5)
                {
                    // The cursor: next, or a seek when it is unpositioned.
                    if (rng.Next(3) == 0) cmp.ThrowAt(rng.Next(1, 10));
                    byte[]? expected = at is null ? model.Keys.FirstOrDefault(x => ByteArrayComparer.Instance.Compare(x, k) >= 0)
                        : model.Keys.FirstOrDefault(x => ByteArrayComparer.Instance.Compare(x, at) > 0);
                    bool ok;
                    try { ok = at is null ? c.Seek(k) : c.MoveNext(); }
                    catch (Boom)
                    {
                        booms++;
                        cmp.ThrowAt(0);
                        if (at is null) continue; // a failed seek leaves it unpositioned: seek again later
                        ok = c.MoveNext();
                    }
                    cmp.ThrowAt(0);
                    byte[]? got = ok ? c.Key.ToArray() : null;
                    Assert.True(expected is null ? got is null : got is not null && got.AsSpan().SequenceEqual(expected),
                        $"{when}: the cursor from {(at is null ? "a seek" : Ops.Hex(at))} went to {(got is null ? "the end" : Ops.Hex(got))}, expected {(expected is null ? "the end" : Ops.Hex(expected))}");
                    at = got;
                    continue;
                }
                TxCredit credit = op switch
                {
                    0 or 1 => t.InsertCredit(k.Length, v.Length),
                    2 => t.UpdateCredit(k.Length, v.Length),
                    _ => t.DeleteCredit(),
                };
                var before = Snapshot(seg);
                using var tx = await seg.BeginAsync(credit);
                bool arm = rng.Next(2) == 0;
                if (arm) cmp.ThrowAt(rng.Next(1, 12));
                BTreeStatus st;
                try
                {
                    st = op switch
                    {
                        0 => t.Insert(tx, k, v),
                        1 => t.InsertInPlace(tx, k, v.Length, v, static (span, val) => val.CopyTo(span)),
                        2 => t.Update(tx, k, v),
                        3 => t.Delete(tx, k),
                        _ => t.Lookup(k, out ReadOnlySpan<byte> _),
                    };
                }
                catch (Boom)
                {
                    booms++;
                    cmp.ThrowAt(0);
                    AssertUnchanged(seg, before, $"{when}: op {op} threw");
                    if (rng.Next(2) == 0) await tx.Close();
                    else tx.Abort();
                    continue;
                }
                cmp.ThrowAt(0);
                if (rng.Next(8) == 0)
                {
                    tx.Abort();
                    AssertUnchanged(seg, before, $"{when}: op {op} aborted");
                    continue;
                }
                await tx.Close();
                if (st != BTreeStatus.Ok || op == 4) continue;
                if (op == 3) model.Remove(k);
                else model[k] = v;
                if (step % 1000 == 999)
                {
                    if (rng.Next(2) == 0)
                    {
                        cmp.ThrowAt(rng.Next(1, 500));
                        try { t.Check(); } catch (Boom) { booms++; }
                        cmp.ThrowAt(0);
                    }
                    Ops.AssertEqual(t, model, when);
                    Assert.Empty(seg.Allocator.Check());
                }
            }
            Assert.True(booms > 300, $"only {booms} exceptions");
            Ops.AssertEqual(t, model, "end");
        });
        await h.Reopen();
    }

    /// <summary>
    /// Delete-all interrupted by its comparer or by a cancellation through its progress callback: what it deleted is
    /// a prefix, the tree is intact, and a second call finishes the job.
    /// </summary>
    [Theory]
    [InlineData("comparer")]
    [InlineData("cancel")]
    [InlineData("progress throws")]
    public async Task Delete_all_interrupted_leaves_an_intact_suffix_and_resumes(string how)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var cmp = new ThrowingComparer();
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, Comparer = cmp });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            await Ops.Fill(t, model, TreeShape.Of("var", 512), new Random(8), 1500, 100_000);
            var keys = model.Keys.ToList();
            for (int n = 1; n <= 6; n++)
            {
                using var cts = new CancellationTokenSource();
                int reports = 0;
                var progress = new SyncProgress(_ =>
                {
                    if (++reports < n) return;
                    if (how == "cancel") cts.Cancel();
                    else if (how == "progress throws") throw new Boom();
                });
                if (how == "comparer") cmp.ThrowAt(n * 97);
                var e = await Record.ExceptionAsync(() => t.DeleteAllAsync(16, progress, cts.Token));
                cmp.ThrowAt(0);
                Assert.True(e is Boom or OperationCanceledException, $"{how} {n}: {e}");
                long left = t.Count;
                Assert.True(left > 0);
                var rest = Ops.Keys(t);
                Assert.Equal(keys.Skip(keys.Count - (int)left).Select(k => Ops.Hex(k)), rest.Select(k => Ops.Hex(k)));
                Ops.AssertHealthy(t, $"{how} {n}");
                keys = rest;
            }
            await t.DeleteAllAsync(16);
            Assert.Equal(0, t.Count);
            Ops.AssertHealthy(t, "emptied");
            Assert.Equal(2, t.Check().Chunks.Count); // the header and the root
        });
    }

    /// <summary>
    /// A load stopped at each of its reads (cancelled there, or the comparer throwing at a chosen call while it
    /// checks the dump's order or inserts) removes what it loaded; a save stopped the same way leaves its tree as it was.
    /// </summary>
    [Fact]
    public async Task Dump_tools_stopped_at_every_read_or_compare_leave_the_segment_as_before()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var cmp = new ThrowingComparer();
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024, Comparer = cmp });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            var rng = new Random(21);
            for (int i = 0; i < 6000; i++)
            {
                var k = Ops.U64((ulong)rng.NextInt64());
                var v = Ops.Bytes(100, i);
                if (await Ops.Insert(t, k, v) == BTreeStatus.Ok) model[k] = v;
            }
            var dump = new MemoryStream();
            Assert.Equal(model.Count, await BTreeDump.SaveAsync(t, dump));
            byte[] good = dump.ToArray();
            Assert.True(good.Length > 2 * BTreeDumpFormat.TargetBlockBytes);

            long used = seg.Allocator.UsedBytes;
            int stops = 0;
            for (int k = 1; ; k++)
            {
                using var cts = new CancellationTokenSource();
                var input = new CancelAtRead(good, k, cts);
                Tree? copy = null;
                var e = await Record.ExceptionAsync(async () => copy = await BTreeDump.LoadAsync(input, seg, new BTreeConfig { NodeSize = 1024, Comparer = cmp }, "copy", null, cts.Token));
                if (e is null)
                {
                    // Past the last read: loaded whole. Remove it again.
                    Assert.Equal(model.Count, copy!.Count);
                    await copy.DeleteAllAsync();
                    using var tx = await seg.BeginAsync(Tree.DestroyCredit + Segment.RootCredit);
                    copy.Destroy(tx);
                    seg.RemoveRoot(tx, "copy");
                    await tx.Close();
                    Assert.Equal(used, seg.Allocator.UsedBytes);
                    break;
                }
                Assert.True(e is OperationCanceledException, $"read {k}: {e}");
                Assert.False(e.Data.Contains("Motr.BTreeDump.Cleanup"));
                Assert.False(seg.TryGetRoot("copy", out _), $"read {k}");
                Assert.Equal(used, seg.Allocator.UsedBytes);
                stops++;
            }
            Assert.True(stops >= 6, $"{stops} reads");
            foreach (int n in new[] { 1, 500, 6000, 9000, 20_000 })
            {
                cmp.ThrowAt(n);
                var e = await Record.ExceptionAsync(() => BTreeDump.LoadAsync(new MemoryStream(good), seg, new BTreeConfig { NodeSize = 1024, Comparer = cmp }, "copy", null, default));
                cmp.ThrowAt(0);
                Assert.True(e is Boom, $"comparer throwing at {n}: {e}");
                Assert.False(e.Data.Contains("Motr.BTreeDump.Cleanup"));
                Assert.False(seg.TryGetRoot("copy", out _));
                Assert.Equal(used, seg.Allocator.UsedBytes);
                cmp.ThrowAt(n);
                e = await Record.ExceptionAsync(() => BTreeDump.SaveAsync(t, new MemoryStream()));
                cmp.ThrowAt(0);
                Assert.True(e is null or Boom, $"save, comparer throwing at {n}: {e}");
            }
            Ops.AssertEqual(t, model, "after the stopped loads and saves");
            Assert.Empty(seg.Allocator.Check());
        });
    }

    /// <summary>Cancels the token as its <c>k</c>th read starts.</summary>
    private sealed class CancelAtRead(byte[] data, int k, CancellationTokenSource cts) : MemoryStream(data)
    {
        private int _reads;

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (++_reads == k) cts.Cancel();
            return base.ReadAsync(buffer, cancellationToken);
        }
    }

    /// <summary>
    /// A destroy whose transaction is then aborted (an exception after it, and the transaction's <c>using</c>) leaves
    /// the tree in place: the object must go on serving it, not refuse it as destroyed for good.
    /// </summary>
    [Fact]
    public async Task A_destroy_rolled_back_by_an_abort_leaves_the_object_usable()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            var before = Snapshot(seg);
            void DestroyThenFail(Transaction tx)
            {
                t.Destroy(tx);
                throw new Boom(); // e.g. the root name's removal failed
            }
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit + Segment.RootCredit))
                Assert.Throws<Boom>(() => DestroyThenFail(tx)); // the caller's using aborts it
            AssertUnchanged(seg, before, "destroy aborted");
            Assert.Equal(0, t.Count);
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [1], [2]));
            Assert.Equal([2], Ops.Get(t, [1]));
            Ops.AssertHealthy(t, "after the aborted destroy");
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, [1]));
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit))
            {
                t.Destroy(tx);
                await tx.Close();
            }
            Assert.Throws<ObjectDisposedException>(() => t.Count);
        });
    }

    /// <summary>Bytewise order, or its reverse while <see cref="Lie"/> is set: a comparer that is not a total order over time.</summary>
    private sealed class LyingComparer : IKeyComparer
    {
        public bool Lie;
        public string Name => "lying-bytewise";
        public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => Lie ? b.SequenceCompareTo(a) : a.SequenceCompareTo(b);
    }

    /// <summary>
    /// A comparer that answered inconsistently once left a key out of place: fsck names it, and delete-all, which
    /// deletes the first key again and again, must fail rather than spin for ever on a first key its descent cannot find.
    /// </summary>
    [Fact]
    public async Task Delete_all_refuses_a_tree_out_of_order_instead_of_spinning()
    {
        await using var h = await TreeHost.Start(segmentSize: 1 << 20);
        await h.Run(async seg =>
        {
            var cmp = new LyingComparer();
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, Comparer = cmp });
            for (byte i = 1; i <= 5; i++) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [i], [i]));
            cmp.Lie = true;
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, [9], [9])); // goes first
            cmp.Lie = false;
            Assert.Equal([9], Ops.Keys(t)[0]);
            Assert.False(t.Check().Healthy);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            var e = await Record.ExceptionAsync(() => t.DeleteAllAsync(4, null, cts.Token));
            Assert.True(e is BeCorruptionException, $"{e}");
            Assert.Contains("out of order", e.Message);
            Assert.Equal(6, t.Count);
        });
    }
}

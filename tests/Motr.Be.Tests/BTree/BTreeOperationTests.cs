using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>Each operation's contract: in-place inserts, NotFound cases, slant, min/max, cursors (also across changes), delete-all, destroy, comparers.</summary>
public class BTreeOperationTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task InsertInPlace_writes_the_value_in_place_and_does_not_call_back_for_an_existing_key(bool crc)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, RecordChecksums = crc });
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            int calls = 0;
            foreach (int len in new[] { 0, 1, 40, 104, 105, 3000, 100_000 })
                for (int j = 0; j < 30; j++)
                {
                    var k = Ops.U64((ulong)(len * 100 + j));
                    var v = Ops.Bytes(len, len + j);
                    using var tx = await seg.BeginAsync(t.InsertCredit(k.Length, len));
                    var s = t.InsertInPlace(tx, k, len, v, (span, state) =>
                    {
                        calls++;
                        Assert.Equal(state.Length, span.Length);
                        state.CopyTo(span);
                    });
                    _ = tx.Close();
                    Assert.Equal(BTreeStatus.Ok, s);
                    model[k] = v;
                }
            Assert.Equal(7 * 30, calls);
            Ops.AssertEqual(t, model, "in place");
            // An existing key: Exists, the callback is not called, nothing is captured.
            foreach (var k in model.Keys.Where((_, i) => i % 17 == 0))
            {
                using var tx = await seg.BeginAsync(t.InsertCredit(8, 5000));
                var s = t.InsertInPlace(tx, k, 5000, 0, (_, _) => Assert.Fail("the callback ran for an existing key"));
                Assert.Equal(BTreeStatus.Exists, s);
                Assert.Equal(0, tx.Used.Regions);
                await tx.Close();
            }
            Ops.AssertEqual(t, model, "after Exists");
        });
        await h.Reopen();
        await h.Run(seg => Assert.Equal(210, Ops.Open(seg).Count));
    }

    [Fact]
    public async Task Update_and_Delete_of_a_missing_key_are_NotFound_and_capture_nothing()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            using (var tx = await seg.BeginAsync(t.UpdateCredit(1, 1) + t.DeleteCredit()))
            {
                Assert.Equal(BTreeStatus.NotFound, t.Update(tx, [1], [1]));
                Assert.Equal(BTreeStatus.NotFound, t.Delete(tx, [1]));
                Assert.Equal(0, tx.Used.Regions);
                await tx.Close();
            }
            for (int i = 0; i < 500; i += 2) await Ops.Insert(t, Ops.U64((ulong)i), [(byte)i]);
            for (int i = 1; i < 500; i += 50)
            {
                using var tx = await seg.BeginAsync(t.UpdateCredit(8, 1) + t.DeleteCredit());
                Assert.Equal(BTreeStatus.NotFound, t.Update(tx, Ops.U64((ulong)i), [1]));
                Assert.Equal(BTreeStatus.NotFound, t.Delete(tx, Ops.U64((ulong)i)));
                Assert.Equal(BTreeStatus.NotFound, t.Delete(tx, Ops.U64(1000 + (ulong)i)));
                Assert.Equal(0, tx.Used.Regions);
                await tx.Close();
            }
            Assert.Equal(250, t.Count);
            Assert.Equal(0, t.Stats.Updates);
            Assert.Equal(0, t.Stats.Deletes);
            Assert.False(t.Contains(Ops.U64(1)));
            Assert.True(t.Contains(Ops.U64(2)));
            // Lookup into a caller's buffer: copied when it fits, the length either way.
            var buf = new byte[1];
            Assert.Equal(BTreeStatus.Ok, t.Lookup(Ops.U64(4), buf, out int len));
            Assert.Equal((1, (byte)4), (len, buf[0]));
            Assert.Equal(BTreeStatus.Ok, t.Lookup(Ops.U64(6), Span<byte>.Empty, out len));
            Assert.Equal(1, len);
            Assert.Equal(BTreeStatus.NotFound, t.Lookup(Ops.U64(7), buf, out _));
            Ops.AssertHealthy(t);
        });
    }

    [Fact]
    public async Task Slant_Min_and_Max_find_the_nearest_keys_across_leaves()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 });
            Assert.Equal(BTreeStatus.NotFound, t.Min(out _, out _));
            Assert.Equal(BTreeStatus.NotFound, t.Max(out _, out _));
            Assert.Equal(BTreeStatus.NotFound, t.Slant(Ops.U64(0), out _, out _));
            var keys = new List<ulong>();
            for (ulong i = 1; i <= 2000; i++)
            {
                await Ops.Insert(t, Ops.U64(i * 10), Ops.U64(i));
                keys.Add(i * 10);
            }
            Assert.True(t.Height >= 3);
            Assert.Equal(BTreeStatus.Ok, t.Min(out var mk, out var mv));
            Assert.Equal(Ops.U64(10), mk.ToArray());
            Assert.Equal(Ops.U64(1), mv.ToArray());
            Assert.Equal(BTreeStatus.Ok, t.Max(out mk, out mv));
            Assert.Equal(Ops.U64(20000), mk.ToArray());
            Assert.Equal(Ops.U64(2000), mv.ToArray());
            // Every probe: the smallest key not below it.
            for (ulong p = 0; p <= 20001; p += 3)
            {
                var st = t.Slant(Ops.U64(p), out var fk, out var fv);
                ulong want = (p + 9) / 10 * 10;
                if (want == 0) want = 10;
                if (want > 20000)
                {
                    Assert.Equal(BTreeStatus.NotFound, st);
                    continue;
                }
                Assert.Equal(BTreeStatus.Ok, st);
                Assert.Equal(Ops.U64(want), fk.ToArray());
                Assert.Equal(Ops.U64(want / 10), fv.ToArray());
            }
            Assert.Equal(BTreeStatus.NotFound, t.Slant(Ops.U64(ulong.MaxValue), out _, out _));
            // Min and max follow deletes at the edges.
            for (ulong i = 1; i <= 300; i++)
            {
                await Ops.Delete(t, Ops.U64(i * 10));
                await Ops.Delete(t, Ops.U64((2001 - i) * 10));
                Assert.Equal(BTreeStatus.Ok, t.Min(out mk, out _));
                Assert.Equal(Ops.U64((i + 1) * 10), mk.ToArray());
                Assert.Equal(BTreeStatus.Ok, t.Max(out mk, out _));
                Assert.Equal(Ops.U64((2000 - i) * 10), mk.ToArray());
            }
            Assert.Equal(BTreeStatus.Ok, t.Slant(Ops.U64(0), out var first, out _));
            Assert.Equal(Ops.U64(3010), first.ToArray());
            Ops.AssertHealthy(t);
        });
        h.AssertNoCaptureViolations();
    }

    [Theory]
    [InlineData("var", 512)]
    [InlineData("fk", 1024)]
    [InlineData("fkv", 512)]
    public async Task Cursors_walk_seek_and_stop_at_bounds_like_the_model(string format, int nodeSize)
    {
        int seed = Ops.Seed();
        output.WriteLine($"seed {seed} (MOTR_SEED={seed})");
        var rng = new Random(seed);
        var shape = TreeShape.Of(format, nodeSize);
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, shape.Config);
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            var c = t.OpenCursor();
            Assert.False(c.SeekFirst());
            Assert.False(c.SeekLast());
            Assert.False(c.Seek(shape.Key(rng, 10)));
            Assert.False(c.IsValid);
            Assert.False(c.MoveNext());
            Assert.False(c.MovePrev());
            Assert.Throws<InvalidOperationException>(() => c.Key.Length);
            await Ops.Fill(t, model, shape, rng, 3000, 5000);
            var keys = model.Keys.ToList();
            Ops.AssertEqual(t, model, "filled");
            for (int probe = 0; probe < 400; probe++)
            {
                var p = shape.Key(rng, 10000);
                int at = LowerBound(keys, p);
                bool ok = c.Seek(p);
                Assert.Equal(at < keys.Count, ok);
                if (!ok) continue;
                Assert.Equal(keys[at], c.Key.ToArray());
                Assert.Equal(model[keys[at]], c.Value.ToArray());
                // A few steps either way.
                int pos = at;
                for (int s = 0; s < 12; s++)
                {
                    bool fwd = rng.Next(2) == 0;
                    bool moved = fwd ? c.MoveNext() : c.MovePrev();
                    int next = fwd ? pos + 1 : pos - 1;
                    Assert.Equal(next >= 0 && next < keys.Count, moved);
                    if (!moved)
                    {
                        Assert.False(c.IsValid);
                        break;
                    }
                    pos = next;
                    Assert.Equal(keys[pos], c.Key.ToArray());
                }
                // Next-upto a bound: inclusive and exclusive.
                if (c.Seek(p))
                {
                    var bound = keys[Math.Min(keys.Count - 1, at + rng.Next(0, 40))];
                    bool inclusive = rng.Next(2) == 0;
                    int n = 1;
                    while (c.MoveNextUpTo(bound, inclusive)) n++;
                    int expect = LowerBound(keys, bound) - at + (inclusive ? 1 : 0);
                    Assert.Equal(Math.Max(expect, 1), n);
                    Assert.False(c.IsValid);
                }
            }
            Assert.True(c.SeekLast());
            Assert.Equal(keys[^1], c.Key.ToArray());
            Assert.False(c.MoveNext());
            Assert.True(c.SeekFirst());
            Assert.Equal(keys[0], c.Key.ToArray());
            Assert.False(c.MovePrev());
        });
    }

    [Theory]
    [InlineData("var", 512)]
    [InlineData("fkv", 512)]
    public async Task Cursors_kept_across_other_transactions_find_their_place_again(string format, int nodeSize)
    {
        int seed = Ops.Seed();
        output.WriteLine($"seed {seed} (MOTR_SEED={seed})");
        var rng = new Random(seed);
        var shape = TreeShape.Of(format, nodeSize);
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, shape.Config);
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            await Ops.Fill(t, model, shape, rng, 2000, 3000);
            // The deleted-current-key case, explicitly.
            var keys = model.Keys.ToList();
            var c = t.OpenCursor();
            Assert.True(c.Seek(keys[100]));
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, keys[100]));
            model.Remove(keys[100]);
            Assert.True(c.MoveNext());
            Assert.Equal(keys[101], c.Key.ToArray());
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, keys[101]));
            model.Remove(keys[101]);
            Assert.True(c.MovePrev());
            Assert.Equal(keys[99], c.Key.ToArray());
            // A key inserted just after the cursor is seen by the next step.
            if (format != "fkv") // (fixed-size keys have no key right after another)
            {
                var between = keys[99].Concat(new byte[] { 0 }).ToArray();
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, between, [5]));
                model[between] = [5];
                Assert.True(c.MoveNext());
                Assert.Equal(between, c.Key.ToArray());
            }

            // Random: several cursors, each stepped after random changes in other transactions, one in ten aborted.
            var cursors = Enumerable.Range(0, 6).Select(_ => (Cursor: t.OpenCursor(), Last: (byte[]?)null)).ToArray();
            long steps = 0;
            for (int round = 0; round < 3000; round++)
            {
                int ci = rng.Next(cursors.Length);
                var (cur, last) = cursors[ci];
                var ks = model.Keys.ToList();
                if (last is null || rng.Next(20) == 0)
                {
                    var p = shape.Key(rng, 3000);
                    int at = LowerBound(ks, p);
                    Assert.Equal(at < ks.Count, cur.Seek(p));
                    cursors[ci].Last = at < ks.Count ? ks[at] : null;
                    if (at < ks.Count) Assert.Equal(ks[at], cur.Key.ToArray());
                }
                else
                {
                    bool fwd = rng.Next(3) != 0;
                    bool moved = fwd ? cur.MoveNext() : cur.MovePrev();
                    steps++;
                    // The model's neighbour of the last key seen (which may have been deleted since).
                    byte[]? want = fwd ? model.Keys.FirstOrDefault(k => ByteArrayComparer.Instance.Compare(k, last) > 0)
                        : model.Keys.LastOrDefault(k => ByteArrayComparer.Instance.Compare(k, last) < 0);
                    Assert.True(want is not null == moved, $"round {round}: cursor {ci} {(fwd ? "next" : "prev")} from {Ops.Hex(last)}: moved {moved}, model {(want is null ? "none" : Ops.Hex(want))}");
                    if (moved)
                    {
                        Assert.True(want.AsSpan().SequenceEqual(cur.Key), $"round {round}: cursor at {Ops.Hex(cur.Key)}, model {Ops.Hex(want)}");
                        Assert.Equal(model[want!], cur.Value.ToArray());
                    }
                    cursors[ci].Last = want;
                }
                // Changes in other transactions.
                for (int j = rng.Next(0, 4); j > 0; j--)
                {
                    var k = shape.Key(rng, 3000);
                    bool abort = rng.Next(10) == 0;
                    int op = rng.Next(3);
                    var v = shape.Value(rng);
                    using var tx = await seg.BeginAsync(op == 0 ? t.InsertCredit(k.Length, v.Length) : op == 1 ? t.DeleteCredit() : t.UpdateCredit(k.Length, v.Length));
                    var st = op == 0 ? t.Insert(tx, k, v) : op == 1 ? t.Delete(tx, k) : t.Update(tx, k, v);
                    if (abort)
                    {
                        tx.Abort();
                        continue;
                    }
                    _ = tx.Close();
                    if (st != BTreeStatus.Ok) continue;
                    if (op == 1) model.Remove(k);
                    else model[k] = v;
                }
            }
            output.WriteLine($"{steps} cursor steps, {model.Count} records");
            Ops.AssertEqual(t, model, "end");
        });
        h.AssertNoCaptureViolations();
    }

    /// <summary>
    /// Reading the key of a cursor whose record was deleted in another transaction throws (as documented); the
    /// next MoveNext must still go to the next larger key, not skip it.
    /// </summary>
    [Fact]
    public async Task MoveNext_after_reading_a_deleted_current_key_does_not_skip_the_next_key()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (byte i = 1; i <= 10; i++) await Ops.Insert(t, [i], [i]);
            var c = t.OpenCursor();
            Assert.True(c.Seek([5]));
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, [5]));
            var e = Assert.Throws<InvalidOperationException>(() => c.Key.Length);
            Assert.Contains("the record under the cursor was deleted", e.Message);
            Assert.True(c.MoveNext());
            Assert.Equal([6], c.Key.ToArray());
            // The same for MovePrev.
            Assert.True(c.Seek([8]));
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, [8]));
            Assert.Throws<InvalidOperationException>(() => c.Value.Length);
            Assert.True(c.MovePrev());
            Assert.Equal([7], c.Key.ToArray());
        });
    }

    /// <summary>
    /// An abort restores nodes behind the cursors' backs: a cursor positioned inside the aborted transaction keeps
    /// the key it was at and finds it again, one positioned before finds its own again, and neither needs telling.
    /// </summary>
    [Fact]
    public async Task Cursors_find_their_place_again_after_an_abort()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (byte i = 1; i <= 100; i++) await Ops.Insert(t, [i], [i]);
            var before = t.OpenCursor();
            Assert.True(before.Seek([50]));
            var inside = t.OpenCursor();
            using (var tx = await seg.BeginAsync(t.DeleteCredit()))
            {
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, [50]));
                Assert.True(inside.Seek([50]));
                Assert.Equal([51], inside.Key.ToArray());
                tx.Abort();
            }
            Assert.Equal([51], inside.Key.ToArray());
            Assert.True(inside.MovePrev());
            Assert.Equal([50], inside.Key.ToArray()); // the abort restored it
            Assert.Equal([50], before.Key.ToArray());
            Assert.True(before.MoveNext());
            Assert.Equal([51], before.Key.ToArray());
            Assert.Equal(100, t.Count);
            Ops.AssertHealthy(t);
        });
    }

    /// <summary>
    /// A rollback to a savepoint inside an open transaction restores nodes too: a cursor positioned between the
    /// savepoint and the rollback, on a leaf the rollback changes back, finds its key again.
    /// </summary>
    [Fact]
    public async Task Cursors_find_their_place_again_after_a_rollback_to_a_savepoint()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (int i = 0; i < 200; i += 2) await Ops.Insert(t, [(byte)i], [(byte)i]);
            var c = t.OpenCursor();
            using (var tx = await seg.BeginAsync(t.InsertCredit(1, 1) * 40))
            {
                var sp = tx.Savepoint();
                // Odd keys: the leaves split and records shift under the cursor's index.
                for (int i = 1; i < 80; i += 2) Assert.Equal(BTreeStatus.Ok, t.Insert(tx, [(byte)i], [(byte)i]));
                Assert.True(c.Seek([61]));
                tx.RollbackTo(sp);
                // 61 is gone, as after a delete: the cursor says so, and moves on from its place.
                Assert.Contains("the record under the cursor was deleted", Assert.Throws<InvalidOperationException>(() => c.Key.Length).Message);
                Assert.True(c.MovePrev());
                Assert.Equal([60], c.Key.ToArray());
                Assert.True(c.MoveNext());
                Assert.Equal([62], c.Key.ToArray());
                tx.Abort();
            }
            Assert.Equal([62], c.Key.ToArray());
            Ops.AssertHealthy(t);
        });
    }

    /// <summary>
    /// Cursors keep their keys before an abort restores bytes; one whose key cannot be read (its out-of-node
    /// reference damaged) must not stop the abort from restoring: it is left lost, and asks for a seek.
    /// </summary>
    [Fact]
    public async Task An_abort_restores_even_when_a_cursors_key_cannot_be_read()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            var big = new byte[3000];
            big[0] = 5;
            await Ops.Insert(t, [1], [1]);
            await Ops.Insert(t, big, [2]);
            await Ops.Insert(t, [9], [3]);
            var c = t.OpenCursor();
            Assert.True(c.Seek(big));
            var cookie = default(BTreeCookie);
            Assert.Equal(BTreeStatus.Ok, t.Lookup(big, out _, ref cookie));
            var r = Raw.VarRecord(seg, cookie.Leaf, 1);
            Assert.True(r.KeyLarge);
            long chunkAt = cookie.Leaf + r.Rec + 8; // the key's LargeRef.Chunk
            long good = seg.At<long>(chunkAt);
            seg.At<long>(chunkAt) = seg.Size + (1 << 20); // damage, outside any transaction
            long used = seg.Allocator.UsedBytes;
            using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit))
            {
                seg.Allocator.Alloc(tx, 100);
                Assert.NotEqual(used, seg.Allocator.UsedBytes);
                tx.Abort();
            }
            Assert.Equal(used, seg.Allocator.UsedBytes);
            Assert.Contains("seek", Assert.Throws<InvalidOperationException>(() => c.MoveNext()).Message);
            seg.At<long>(chunkAt) = good;
            Assert.True(c.Seek(big));
            Assert.True(c.MoveNext());
            Assert.Equal([9], c.Key.ToArray());
            Ops.AssertHealthy(t);
        });
    }

    /// <summary>
    /// A scan that meets a damaged leaf throws; a caller that retries the move must not be told the scan ended (the
    /// cursor had lost its place): it throws again while the node is damaged, and goes on once it is readable.
    /// </summary>
    [Fact]
    public async Task A_move_that_meets_a_damaged_leaf_keeps_its_place_for_a_retry()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (int i = 0; i < 200; i++) await Ops.Insert(t, [(byte)i], [(byte)i]);
            foreach (bool forward in new[] { true, false })
            {
                var c = t.OpenCursor();
                Assert.True(forward ? c.SeekFirst() : c.SeekLast());
                var cookie = default(BTreeCookie);
                Assert.Equal(BTreeStatus.Ok, t.Lookup(c.Key, out _, ref cookie));
                long first = cookie.Leaf;
                var here = c.Key.ToArray();
                // Walk to the edge of the first leaf, then damage the leaf after it.
                while (true)
                {
                    Assert.True(forward ? c.MoveNext() : c.MovePrev());
                    Assert.Equal(BTreeStatus.Ok, t.Lookup(c.Key, out _, ref cookie));
                    if (cookie.Leaf != first) break;
                    here = c.Key.ToArray();
                }
                long next = cookie.Leaf;
                var nextKey = c.Key.ToArray();
                Assert.True(c.Seek(here));
                uint magic = seg.At<uint>(next);
                seg.At<uint>(next) = 0x0BAD0BAD;
                var ex = Assert.Throws<BeCorruptionException>(() => forward ? c.MoveNext() : c.MovePrev());
                Assert.Equal(next, ex.Offset);
                Assert.Throws<BeCorruptionException>(() => forward ? c.MoveNext() : c.MovePrev()); // before: false, "the end"
                seg.At<uint>(next) = magic;
                Assert.True(forward ? c.MoveNext() : c.MovePrev());
                Assert.Equal(nextKey, c.Key.ToArray());
            }
            Ops.AssertHealthy(t);
        });
    }

    /// <summary>
    /// A cursor at a record whose out-of-node key cannot be read (its reference damaged) must not stop every change to
    /// the tree: an operation through any object on it asks all its cursors to keep their keys first, and this one is
    /// left lost instead (its next move asks for a seek), as at an abort. Before, the insert of a key in another leaf
    /// threw, through any object on the tree, for as long as the cursor lived.
    /// </summary>
    [Fact]
    public async Task A_cursor_whose_key_cannot_be_read_does_not_stop_changes_to_the_tree()
    {
        await using var h = await TreeHost.Start(verifyCaptures: false); // the damage is written outside any transaction
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            for (int i = 0; i < 250; i++) await Ops.Insert(t, [(byte)i], new byte[100]);
            var big = new byte[3000];
            big[0] = 5;
            await Ops.Insert(t, big, [2]);
            Assert.True(t.Height >= 2);
            var c = t.OpenCursor();
            Assert.True(c.Seek(big));
            var cookie = default(BTreeCookie);
            Assert.Equal(BTreeStatus.Ok, t.Lookup(big, out _, ref cookie));
            int at = Enumerable.Range(0, Raw.Count(seg, cookie.Leaf)).Single(i => Raw.VarRecord(seg, cookie.Leaf, i).KeyLarge);
            var r = Raw.VarRecord(seg, cookie.Leaf, at);
            Assert.True(r.KeyLarge);
            long chunkAt = cookie.Leaf + r.Rec + 8; // the key's LargeRef.Chunk
            long good = seg.At<long>(chunkAt);
            seg.At<long>(chunkAt) = seg.Size + (1 << 20);
            var other = Tree.Open(seg, t.Offset);
            var far = new byte[] { 240, 1 };
            var leafOfFar = default(BTreeCookie);
            Assert.Equal(BTreeStatus.NotFound, other.Lookup(far, out _, ref leafOfFar));
            Assert.NotEqual(cookie.Leaf, leafOfFar.Leaf);
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(other, far, [4]));
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, [241]));
            Assert.Contains("seek", Assert.Throws<InvalidOperationException>(() => c.MoveNext()).Message);
            seg.At<long>(chunkAt) = good;
            Assert.True(c.Seek(big));
            Assert.True(c.MoveNext());
            Assert.Equal([6], c.Key.ToArray());
            Assert.Equal([4], Ops.Get(t, far));
            Ops.AssertHealthy(t);
        });
    }

    /// <summary>
    /// Every change walks the cursors registered on the tree, through every object on it. Cursors gone (say those of
    /// short-lived objects, each registering the one behind Min and Slant) must not stay in that walk: before, they
    /// were dropped only when a registration found the list full, so after a burst every later change walked them all.
    /// </summary>
    [Fact]
    public async Task Cursors_gone_leave_the_walk_every_change_makes()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            await Ops.Insert(t, [1], [1]);
            MinThroughShortLivedObjects(seg, t.Offset, 5000);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            await Ops.Insert(t, [2], [2]);
            Assert.True(Registered(t) < 16, $"{Registered(t)} cursors still walked after the burst");
        });
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void MinThroughShortLivedObjects(Motr.Be.Segments.Segment seg, long offset, int n)
    {
        for (int i = 0; i < n; i++) Assert.Equal(BTreeStatus.Ok, Tree.Open(seg, offset).Min(out _, out _));
    }

    private static int Registered(Tree t)
    {
        const System.Reflection.BindingFlags F = System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance;
        var watch = typeof(Tree).GetField("_watch", F)!.GetValue(t)!;
        return (int)watch.GetType().GetField("_count", F)!.GetValue(watch)!;
    }

    /// <summary>
    /// Two objects on one tree: a cursor of one finds its place again after changes made through the other (the
    /// objects share the tree's cursor registry), instead of reading a shifted leaf.
    /// </summary>
    [Fact]
    public async Task A_cursor_sees_changes_made_through_another_object_on_the_tree()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var a = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (int i = 0; i < 200; i += 2) await Ops.Insert(a, [(byte)i], [(byte)i]);
            var b = Tree.Open(seg, a.Offset);
            var c = a.OpenCursor();
            Assert.True(c.Seek([100]));
            for (int i = 1; i < 100; i += 2) await Ops.Insert(b, [(byte)i], [(byte)i]); // shifts and splits the leaves
            Assert.Equal([100], c.Key.ToArray());
            Assert.True(c.MovePrev());
            Assert.Equal([99], c.Key.ToArray());
            Assert.Equal(BTreeStatus.Ok, await Ops.Delete(b, [99]));
            var e = Assert.Throws<InvalidOperationException>(() => c.Key.Length);
            Assert.Contains("the record under the cursor was deleted", e.Message);
            Assert.True(c.MoveNext());
            Assert.Equal([100], c.Key.ToArray());
            Ops.AssertHealthy(a);
        });
    }

    private sealed class CancelAt(CancellationTokenSource cts, long at) : IProgress<long>
    {
        public readonly List<long> Reports = [];
        public void Report(long value)
        {
            Reports.Add(value);
            if (value >= at) cts.Cancel();
        }
    }

    [Fact]
    public async Task DeleteAll_cancelled_midway_resumes_after_reopen_and_Destroy_frees_everything()
    {
        await using var h = await TreeHost.Start(segmentSize: 16 << 20, logSize: 64 << 20);
        long usedBeforeCreate = 0, usedEmpty = 0, deletedFirst = 0;
        const int N = 20_000;
        await h.Run(async seg =>
        {
            usedBeforeCreate = seg.Allocator.UsedBytes;
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024 });
            usedEmpty = seg.Allocator.UsedBytes;
            var rng = new Random(3);
            for (int i = 0; i < N; i++)
            {
                var v = Ops.Bytes(rng.Next(30) == 0 ? 2000 : rng.Next(0, 60), i);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64((ulong)i * 0x9E3779B97F4A7C15UL), v));
                if (i % 64 == 0) await seg.FlushAsync();
            }
            Assert.True(t.Height >= 3);
            Assert.True(t.Stats.LargeChunks > 500);
            using var cts = new CancellationTokenSource();
            var progress = new CancelAt(cts, 7000);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => t.DeleteAllAsync(batch: 48, progress, cts.Token));
            deletedFirst = progress.Reports[^1];
            Assert.InRange(deletedFirst, 7000, 7000 + 48);
            Assert.Equal(N - deletedFirst, t.Count);
            Assert.Equal(Enumerable.Range(1, progress.Reports.Count).Select(i => Math.Min(48L * i, N)), progress.Reports);
            Ops.AssertHealthy(t, "cancelled");
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            Assert.Equal(N - deletedFirst, t.Count);
            // The smallest keys went first.
            Assert.Equal(BTreeStatus.Ok, t.Min(out var min, out _));
            var all = Enumerable.Range(0, N).Select(i => Ops.U64((ulong)i * 0x9E3779B97F4A7C15UL)).OrderBy(k => k, ByteArrayComparer.Instance).ToList();
            Assert.Equal(all[(int)deletedFirst], min.ToArray());
            long rest = await t.DeleteAllAsync(batch: 32);
            Assert.Equal(N - deletedFirst, rest);
            Assert.Equal(0, t.Count);
            Assert.Equal(1, t.Height);
            Assert.Equal(1, t.NodeCount);
            Assert.Equal((0L, 0L), (t.Stats.LargeChunks, t.Stats.LargeBytes));
            Ops.AssertHealthy(t, "emptied");
            Assert.Equal(0, await t.DeleteAllAsync());
            Assert.Equal(usedEmpty, seg.Allocator.UsedBytes);
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            Assert.Equal(usedEmpty, seg.Allocator.UsedBytes);
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit + Segment.RootCredit))
            {
                t.Destroy(tx);
                Assert.True(seg.RemoveRoot(tx, "t"));
                await tx.Close();
            }
            Assert.Equal(usedBeforeCreate, seg.Allocator.UsedBytes);
            Assert.Empty(seg.Allocator.Check());
        });
        await h.Reopen();
        await h.Run(seg =>
        {
            Assert.False(seg.TryGetRoot("t", out _));
            Assert.Equal(usedBeforeCreate, seg.Allocator.UsedBytes);
        });
    }

    [Fact]
    public async Task DeleteAll_on_a_small_log_cuts_its_batches_to_what_the_log_takes()
    {
        // A 2 MiB log and a tree of 1 KiB nodes three levels deep: the worst case of 64 deletes (every level merging)
        // is more log than one transaction may reserve, so a batch of 64 as asked would be refused outright.
        await using var h = await TreeHost.Start(segmentSize: 16 << 20, logSize: 2 << 20);
        const int N = 1_500;
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 1024 });
            long usedEmpty = seg.Allocator.UsedBytes;
            for (int i = 0; i < N; i++)
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64((ulong)i * 0x9E3779B97F4A7C15UL), Ops.Bytes(i % 50 == 0 ? 1500 : 100, i)));
                if (i % 256 == 0) await seg.FlushAsync();
            }
            Assert.True(t.Height >= 3, $"height {t.Height}");
            var askedFor = t.DeleteCredit() * 64;
            Assert.Throws<TxUsageException>(() => { _ = seg.BeginAsync(askedFor); });
            var reports = new List<long>();
            long deleted = await t.DeleteAllAsync(batch: 64, new SyncProgress(reports.Add));
            Assert.Equal(N, deleted);
            Assert.Equal(0, t.Count);
            Assert.Equal(1, t.Height);
            Assert.Equal(usedEmpty, seg.Allocator.UsedBytes);
            // Smaller batches than asked for, and more of them; never more than asked for.
            Assert.True(reports.Count > N / 64, $"{reports.Count} batches for {N} records");
            long previous = 0;
            foreach (var r in reports)
            {
                Assert.InRange(r - previous, 1, 64);
                previous = r;
            }
            Ops.AssertHealthy(t, "emptied");
        });
    }

    [Fact]
    public async Task Destroy_right_after_create_gives_back_every_byte()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            long used = seg.Allocator.UsedBytes;
            foreach (var cfg in new[] { new BTreeConfig(), new BTreeConfig { NodeSize = 65536, InternalNodeSize = 512 }, new BTreeConfig { KeySize = 8, ValueSize = 8 } })
            {
                using var tx = await seg.BeginAsync(Tree.CreateCredit + Tree.DestroyCredit);
                var t = Tree.Create(tx, seg, cfg);
                Assert.True(seg.Allocator.UsedBytes > used);
                t.Destroy(tx);
                await tx.Close();
                Assert.Equal(used, seg.Allocator.UsedBytes);
            }
            // Insert then delete, then destroy.
            var t2 = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            await Ops.Insert(t2, [1], new byte[2000]);
            await Ops.Delete(t2, [1]);
            using (var tx = await seg.BeginAsync(Tree.DestroyCredit + Segment.RootCredit))
            {
                t2.Destroy(tx);
                seg.RemoveRoot(tx, "t");
                await tx.Close();
            }
            Assert.Equal(used, seg.Allocator.UsedBytes);
        });
        h.AssertNoCaptureViolations();
    }

    [Theory]
    [InlineData("reverse")]
    [InlineData("u64-le")]
    public async Task A_custom_comparer_orders_scans_and_survives_reopen(string which)
    {
        int seed = Ops.Seed();
        output.WriteLine($"seed {seed} (MOTR_SEED={seed})");
        var rng = new Random(seed);
        IKeyComparer cmp = which == "reverse" ? ReverseBytewiseComparer.Instance : U64LittleEndianComparer.Instance;
        var mcmp = (IComparer<byte[]>)cmp;
        var cfg = which == "reverse" ? new BTreeConfig { NodeSize = 512, Comparer = cmp } : new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8, Comparer = cmp };
        byte[] Key() => which == "reverse" ? Ops.Bytes(rng.Next(1, 20), rng.Next(4000)) : BitConverter.GetBytes((ulong)rng.Next(4000) * 1000003UL);
        byte[] Value() => which == "reverse" ? Ops.Bytes(rng.Next(0, 50), rng.Next()) : BitConverter.GetBytes(rng.NextInt64());
        var model = new SortedDictionary<byte[], byte[]>(mcmp);
        await using var h = await TreeHost.Start();
        for (int round = 0; round < 3; round++)
        {
            await h.Run(async seg =>
            {
                var t = round == 0 ? await Ops.Create(seg, cfg) : Ops.Open(seg, comparer: cmp);
                Ops.AssertEqual(t, model, $"round {round} start");
                for (int i = 0; i < 3000; i++)
                {
                    var k = Key();
                    if (rng.Next(3) == 0)
                    {
                        Assert.Equal(model.Remove(k) ? BTreeStatus.Ok : BTreeStatus.NotFound, await Ops.Delete(t, k));
                    }
                    else
                    {
                        var v = Value();
                        Assert.Equal(model.TryAdd(k, v) ? BTreeStatus.Ok : BTreeStatus.Exists, await Ops.Insert(t, k, v));
                    }
                }
                Ops.AssertEqual(t, model, $"round {round} end");
                // Seek follows the comparer: the first key not below the probe in its order.
                var keys = model.Keys.ToList();
                var c = t.OpenCursor();
                for (int i = 0; i < 200; i++)
                {
                    var p = Key();
                    int at = keys.BinarySearch(p, mcmp);
                    if (at < 0) at = ~at;
                    Assert.Equal(at < keys.Count, c.Seek(p));
                    if (at < keys.Count) Assert.Equal(keys[at], c.Key.ToArray());
                }
                // The order differs from bytewise (else the test proves nothing).
                Assert.NotEqual(keys, keys.OrderBy(k => k, ByteArrayComparer.Instance).ToList());
            });
            await h.Reopen();
        }
    }

    private static int LowerBound(List<byte[]> keys, byte[] p)
    {
        int at = keys.BinarySearch(p, ByteArrayComparer.Instance);
        return at < 0 ? ~at : at;
    }
}

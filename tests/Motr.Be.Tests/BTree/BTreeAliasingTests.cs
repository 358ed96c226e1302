using Motr.Be.BTree;
using Motr.Be.Tx;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Changes given spans that point into the tree's own memory — a value or key read by a lookup or a cursor,
/// passed straight back: copy record A's value to key B, shrink a value from its own bytes, a key cut from
/// another record, delete by a cursor's key. The operations move and free records (a shift in a node, a
/// compaction, a split, a merge, an out-of-node chunk freed and reused) at the moment of the call; the
/// model is built from copies taken before each call, so any read of moved or freed bytes shows.
/// </summary>
public class BTreeAliasingTests(ITestOutputHelper output)
{
    public static TheoryData<string, int> Shapes => new()
    {
        { "fkv", 512 }, { "fk", 512 }, { "var", 512 }, { "var-crc", 512 }, { "var-edge", 512 }, { "var", 1024 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task Spans_into_the_tree_passed_back_into_its_changes_store_the_bytes_they_held_at_the_call(string format, int nodeSize)
    {
        int seed = Ops.Seed();
        output.WriteLine($"seed {seed} (MOTR_SEED)");
        var shape = TreeShape.Of(format, nodeSize);
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, shape.Config);
            var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
            var rng = new Random(seed);
            const int space = 600;
            await Ops.Fill(t, model, shape, rng, 250, space);
            int[] counts = new int[9];
            for (int step = 0; step < 6000; step++)
            {
                var credit = TxCredit.Max(TxCredit.Max(t.InsertCredit(1100, 3100), t.UpdateCredit(1100, 3100)), t.DeleteCredit());
                using var tx = await seg.BeginAsync(credit);
                int kind = rng.Next(9);
                string what = Step(t, tx, rng, model, shape, space, kind, out byte[]? touched);
                if (rng.Next(12) == 0)
                {
                    tx.Abort();
                    // The step changed the model; undo it by reading the tree back for the touched key.
                    if (touched is not null)
                    {
                        var v = Ops.Get(t, touched);
                        if (v is null) model.Remove(touched); else model[touched] = v;
                    }
                    // An abort restores the tree as before: a full comparison below catches any other difference.
                }
                else _ = tx.Close();
                if (what.Length > 0) counts[kind]++;
                if (touched is not null)
                {
                    var got = Ops.Get(t, touched);
                    model.TryGetValue(touched, out var want);
                    if (!(got is null ? want is null : want is not null && got.AsSpan().SequenceEqual(want)))
                        Assert.Fail($"step {step} ({what}), seed {seed}: key {Ops.Hex(touched)} holds {(got is null ? "nothing" : Ops.Hex(got))}, expected {(want is null ? "nothing" : Ops.Hex(want))}");
                }
                if (step % 500 == 499) Ops.AssertEqual(t, model, $"step {step} ({what}), seed {seed}");
            }
            Ops.AssertEqual(t, model, $"end, seed {seed}");
            output.WriteLine($"steps by kind: {string.Join(", ", counts)}; {t.Stats}");
        });
    }

    /// <summary>Even keys 0, 2, 4, ... (big-endian) with values of <paramref name="valueLength"/>(i) bytes: full 512-byte leaves.</summary>
    private static async Task<(Tree Tree, SortedDictionary<byte[], byte[]> Model)> Filled(Motr.Be.Segments.Segment seg, BTreeConfig cfg, int count, Func<int, byte[]> value, int shuffle = 0)
    {
        var t = await Ops.Create(seg, cfg);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        var order = Enumerable.Range(0, count).ToArray();
        if (shuffle != 0) new Random(shuffle).Shuffle(order);
        foreach (int i in order)
        {
            var k = Ops.U64((ulong)(2 * i));
            var v = value(i);
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
            model[k] = v;
        }
        return (t, model);
    }

    private static TxCredit Credit(Tree t) => TxCredit.Max(t.InsertCredit(8, 4096), t.UpdateCredit(8, 4096));

    [Fact]
    public async Task Insert_of_another_records_value_that_the_split_moves_stores_that_value()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 120, i => Ops.Bytes(24 + i % 40, i));
            long splits = t.Stats.Splits;
            // For every record A and every new key B near it, B with A's value straight from the tree, then an abort:
            // the leaves are full, so each insert splits a leaf, and moves A, or reuses the place A's bytes were in,
            // before the value is copied, for some pairs.
            foreach (var a in model.Keys.ToList())
            {
                long ka = (long)BitConverter.ToUInt64(a.Reverse().ToArray());
                for (long kb = Math.Max(1, ka - 15); kb <= ka + 15; kb += 2)
                {
                    var b = Ops.U64((ulong)kb);
                    using var tx = await seg.BeginAsync(Credit(t));
                    Assert.Equal(BTreeStatus.Ok, t.Lookup(a, out ReadOnlySpan<byte> va));
                    Assert.Equal(BTreeStatus.Ok, t.Insert(tx, b, va));
                    if (!t.Lookup(b, out ReadOnlySpan<byte> got).Equals(BTreeStatus.Ok) || !got.SequenceEqual(model[a]))
                        Assert.Fail($"B {kb} given the value of A {ka}: holds {Ops.Hex(got)}, expected {Ops.Hex(model[a])}");
                    tx.Abort();
                }
            }
            Assert.True(t.Stats.Splits - splits > 1000, t.Stats.ToString());
            Ops.AssertEqual(t, model, "after the aborts");
        });
    }

    [Theory]
    [InlineData(30)]   // in node: the old record is freed, its place taken by the new one and cleared
    [InlineData(2000)] // out of node: the chunk is freed (its free-list links over the value's first bytes) and reused
    public async Task Update_of_a_value_with_a_slice_of_its_own_bytes_stores_the_slice(int length)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 60, i => Ops.Bytes(length + i % 7, i));
            int i = 0;
            foreach (var a in model.Keys.ToList())
            {
                using var tx = await seg.BeginAsync(Credit(t));
                Assert.Equal(BTreeStatus.Ok, t.Lookup(a, out ReadOnlySpan<byte> v));
                // Shrink from either end, or to a small in-node value.
                var slice = (i++ % 3) switch { 0 => v[1..], 1 => v[..^9], _ => v[5..17] };
                var want = slice.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, a, slice));
                _ = tx.Close();
                model[a] = want;
            }
            Ops.AssertEqual(t, model, "after shrinking every value from its own bytes");
        });
    }

    [Fact]
    public async Task Update_with_a_neighbours_value_that_the_leaf_compaction_or_split_moves_stores_that_value()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 150, i => Ops.Bytes(8 + i * 13 % 70, i));
            var keys = model.Keys.ToList();
            for (int j = 0; j + 1 < keys.Count; j++)
            {
                // A takes B's value (its neighbour, usually in the same leaf): A's record is rebuilt, which may
                // compact or split the leaf and so move B's bytes first.
                byte[] a = keys[j], b = keys[j + 1];
                using var tx = await seg.BeginAsync(Credit(t));
                Assert.Equal(BTreeStatus.Ok, t.Lookup(b, out ReadOnlySpan<byte> vb));
                var want = vb.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, a, vb));
                _ = tx.Close();
                model[a] = want;
                // Then B grows again from a longer record two places on, so that the next round moves things anew.
                if (j + 2 < keys.Count)
                {
                    using var tx2 = await seg.BeginAsync(Credit(t));
                    var grown = Ops.Bytes(60 + j % 30, 1000 + j);
                    Assert.Equal(BTreeStatus.Ok, t.Update(tx2, b, grown));
                    _ = tx2.Close();
                    model[b] = grown;
                }
            }
            Ops.AssertEqual(t, model, "after every record took its neighbour's value");
        });
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Insert_of_a_key_read_from_another_records_value_stores_that_key(bool inPlace)
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            // Each value holds the keys of the records to link to (odd keys near its own, not in the tree): a caller
            // following a link inserts it with the key straight from the value. The leaves are full, so each
            // insert splits a leaf and may move the value, or reuse its place, before the key is written.
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 120,
                i => [.. Enumerable.Range(0, 8).SelectMany(j => Ops.U64((ulong)Math.Max(1, 2 * i - 7 + 2 * j))), .. Ops.Bytes(i % 24, i)], shuffle: 11);
            // Every third record deleted: leaves with holes, whose inserts compact the leaf (moving the value) before
            // they write the key, when the record fits the free bytes but not the contiguous space.
            foreach (var d in model.Keys.Where((_, i) => i % 3 == 1).ToList())
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, d));
                model.Remove(d);
            }
            var v = Ops.Bytes(90, 5); // a record larger than any hole: it needs a compaction (or a split)
            foreach (var a in model.Keys.ToList())
                for (int j = 0; j < 8; j++)
                {
                    using var tx = await seg.BeginAsync(Credit(t));
                    Assert.Equal(BTreeStatus.Ok, t.Lookup(a, out ReadOnlySpan<byte> va));
                    var link = va.Slice(8 * j, 8);
                    var k = link.ToArray();
                    var st = inPlace ? t.InsertInPlace(tx, link, v.Length, v, static (d, x) => x.CopyTo(d)) : t.Insert(tx, link, v);
                    Assert.Equal(BTreeStatus.Ok, st);
                    if (!t.Lookup(k, out ReadOnlySpan<byte> got).Equals(BTreeStatus.Ok) || !got.SequenceEqual(v))
                        Assert.Fail($"key {Ops.Hex(k)} (link {j} of {Ops.Hex(a)}) not found after its insert");
                    Ops.AssertHealthy(t, $"link {j} of {Ops.Hex(a)}");
                    tx.Abort();
                }
            Ops.AssertEqual(t, model, "after the aborts");
        });
    }

    [Fact]
    public async Task An_insert_in_place_whose_fill_reads_the_tree_sees_it_whole_with_the_new_records_place_made()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, RecordChecksums = true }, 120, i => Ops.Bytes(24 + i % 40, i));
            long splits = t.Stats.Splits;
            // A span taken before the call may be moved by the insert; the fill, which runs once the record's place
            // is made (splits done), reads A's value from the tree itself.
            foreach (var a in model.Keys.ToList())
            {
                var b = Ops.U64(BitConverter.ToUInt64(a.Reverse().ToArray()) + 1);
                var want = model[a];
                using var tx = await seg.BeginAsync(Credit(t));
                Assert.Equal(BTreeStatus.Ok, t.InsertInPlace(tx, b, want.Length, (t, a), static (d, s) =>
                {
                    Assert.Equal(BTreeStatus.Ok, s.t.Lookup(s.a, out ReadOnlySpan<byte> va));
                    va.CopyTo(d);
                }));
                _ = tx.Close();
                model[b] = want;
            }
            Assert.True(t.Stats.Splits - splits > 20, t.Stats.ToString());
            Ops.AssertEqual(t, model, "after the inserts in place");
        });
    }

    [Fact]
    public async Task Cursor_seeks_and_bounds_given_keys_of_the_tree_itself_walk_as_with_copies()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Filled(seg, new BTreeConfig { NodeSize = 512 }, 150, i => Ops.Bytes(10 + i % 50, i), shuffle: 3);
            var keys = model.Keys.ToList();
            var c = t.OpenCursor();
            var other = t.OpenCursor();
            for (int i = 0; i < keys.Count; i += 7)
            {
                // Seek by the cursor's own key, then walk to a bound that is another cursor's key (both spans into leaves).
                Assert.True(c.Seek(keys[i]));
                Assert.True(c.Seek(c.Key));
                Assert.Equal(keys[i], c.Key.ToArray());
                int j = Math.Min(keys.Count - 1, i + 20);
                Assert.True(other.Seek(keys[j]));
                int n = 1;
                while (c.MoveNextUpTo(other.Key, inclusive: i % 2 == 0)) n++;
                Assert.Equal(j - i + (i % 2 == 0 ? 1 : 0), n);
            }
        });
    }

    [Fact]
    public async Task A_capture_then_a_copy_from_an_overlapping_span_of_the_segment_moves_the_bytes_and_an_abort_restores_them()
    {
        await using var h = await TreeHost.Start();
        long off = 0;
        byte[] expect = [];
        await h.Run(async seg =>
        {
            using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit + TxCredit.Region(256)))
            {
                off = seg.Allocator.Alloc(tx, 256);
                Ops.Bytes(256, 9).CopyTo(tx.Capture(off, 256));
                await tx.Close();
            }
            var before = seg.Bytes(off, 256).ToArray();
            var moved = before.AsSpan();
            expect = before.ToArray();
            moved[..200].CopyTo(expect.AsSpan(40)); // memmove semantics: the source as it was
            foreach (bool abort in new[] { true, false })
            {
                using var tx = await seg.BeginAsync(TxCredit.Region(200));
                seg.Bytes(off, 200).CopyTo(tx.Capture(off + 40, 200)); // source [0, 200), destination [40, 240): overlapping
                Assert.Equal(expect, seg.Bytes(off, 256).ToArray());
                if (abort)
                {
                    tx.Abort();
                    Assert.Equal(before, seg.Bytes(off, 256).ToArray());
                }
                else await tx.Close();
            }
            Assert.Equal(expect, seg.Bytes(off, 256).ToArray());
        });
        await h.Reopen(); // the moved bytes are what was logged
        await h.Run(seg => Assert.Equal(expect, seg.Bytes(off, 256).ToArray()));
    }

    [Fact]
    public async Task A_span_into_the_memory_of_a_closed_engines_segment_is_never_read()
    {
        await using var h = await TreeHost.Start();
        Tree? t = null;
        nint p = 0;
        int length = 0;
        await h.Run(async seg =>
        {
            (t, _) = await Filled(seg, new BTreeConfig { NodeSize = 512, KeySize = 8 }, 10, i => Ops.Bytes(30, i));
            Assert.Equal(BTreeStatus.Ok, t.Lookup(Ops.U64(4), out ReadOnlySpan<byte> v));
            unsafe { p = (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(v)); }
            length = v.Length;
        });
        await h.Close(); // the segment's memory is unmapped: reading the span would fault the process
        unsafe
        {
            Assert.Throws<ObjectDisposedException>(() => t!.Insert(null!, Ops.U64(5), new ReadOnlySpan<byte>((void*)p, length)));
            Assert.Throws<ObjectDisposedException>(() => t!.Insert(null!, new ReadOnlySpan<byte>((void*)p, 8), Ops.Bytes(30, 1)));
            Assert.Throws<ObjectDisposedException>(() => t!.Update(null!, Ops.U64(4), new ReadOnlySpan<byte>((void*)p, length)));
            Assert.Throws<ObjectDisposedException>(() => t!.InsertInPlace(null!, new ReadOnlySpan<byte>((void*)p, 8), 1, 0, static (_, _) => { }));
        }
    }

    private static byte[]? AnyKey(SortedDictionary<byte[], byte[]> model, Random rng) =>
        model.Count == 0 ? null : model.Keys.ElementAt(rng.Next(model.Count));

    /// <summary>A span into the tree: the value of <paramref name="k"/>, by a lookup or a cursor.</summary>
    private static ReadOnlySpan<byte> ValueSpan(Tree t, byte[] k, Random rng)
    {
        if (rng.Next(2) == 0)
        {
            Assert.Equal(BTreeStatus.Ok, t.Lookup(k, out ReadOnlySpan<byte> v));
            return v;
        }
        var c = t.OpenCursor();
        Assert.True(c.Seek(k));
        return c.Value;
    }

    private static ReadOnlySpan<byte> KeySpan(Tree t, byte[] k)
    {
        var c = t.OpenCursor();
        Assert.True(c.Seek(k));
        return c.Key;
    }

    /// <summary>One operation whose key or value (or both) lie in the tree's memory; the model is changed from copies made before it.</summary>
    private static string Step(Tree t, Transaction tx, Random rng, SortedDictionary<byte[], byte[]> model, TreeShape shape, int space, int kind, out byte[]? touched)
    {
        touched = null;
        bool fixedValue = (shape.Config.ValueSize ?? -1) >= 0;
        int keySize = shape.Config.KeySize ?? -1;
        var a = AnyKey(model, rng);
        var b = AnyKey(model, rng);
        if (a is null || b is null) return "";
        switch (kind)
        {
            case 0:
            {
                // Insert a new key with the value of A (or a slice of it).
                var k = shape.Key(rng, space);
                if (model.ContainsKey(k)) return "";
                var v = ValueSpan(t, a, rng);
                if (!fixedValue && v.Length > 0 && rng.Next(2) == 0) v = v[..rng.Next(v.Length)];
                var want = v.ToArray();
                var st = rng.Next(2) == 0 ? t.Insert(tx, k, v) : InsertWithCookie(t, tx, k, v);
                Assert.Equal(BTreeStatus.Ok, st);
                model[k] = want;
                touched = k;
                return "insert value of A";
            }
            case 1:
            {
                // Insert a key cut from another record's value or key, with A's value.
                ReadOnlySpan<byte> key;
                if (rng.Next(2) == 0)
                {
                    var v = ValueSpan(t, b, rng);
                    int len = keySize > 0 ? keySize : rng.Next(1, 25);
                    if (v.Length < len) return "";
                    key = v[..len];
                }
                else
                {
                    if (keySize > 0) return "";
                    var kk = KeySpan(t, b);
                    if (kk.Length < 2) return "";
                    key = kk[..^1];
                }
                var kc = key.ToArray();
                if (model.ContainsKey(kc)) return "";
                var val = ValueSpan(t, a, rng);
                var want = val.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, key, val));
                model[kc] = want;
                touched = kc;
                return "insert key cut from B";
            }
            case 2:
            {
                // Update A with a slice of its own value (shrink), or all of it.
                if (fixedValue) goto case 3;
                var v = ValueSpan(t, a, rng);
                if (v.Length > 0 && rng.Next(4) != 0) v = v[rng.Next(v.Length)..];
                var want = v.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, a, v));
                model[a] = want;
                touched = a;
                return "update A from its own value";
            }
            case 3:
            {
                // Update A with B's value, the key given as a span of the tree too.
                var key = rng.Next(2) == 0 ? KeySpan(t, a) : a;
                var v = ValueSpan(t, b, rng);
                var want = v.ToArray();
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, key, v));
                model[a] = want;
                touched = a;
                return "update A with B's value";
            }
            case 4:
            {
                // Delete by the cursor's key.
                var key = KeySpan(t, a);
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, key));
                model.Remove(a);
                touched = a;
                return "delete by cursor key";
            }
            case 5:
            {
                // Insert in place with a key cut from B's value.
                if (keySize > 0 && rng.Next(2) == 0) return "";
                var v = ValueSpan(t, b, rng);
                int len = keySize > 0 ? keySize : rng.Next(1, 25);
                if (v.Length < len) return "";
                var key = v[..len];
                var kc = key.ToArray();
                if (model.ContainsKey(kc)) return "";
                var want = shape.Value(rng);
                Assert.Equal(BTreeStatus.Ok, t.InsertInPlace(tx, key, want.Length, want, static (d, w) => w.CopyTo(d)));
                model[kc] = want;
                touched = kc;
                return "insert in place, key cut from B";
            }
            case 6:
            {
                // Update A, the key from a cursor (in node or out of node), with a new value of another size: the
                // record is rebuilt, its out-of-node key chunk freed, the leaf compacted or split.
                var want = fixedValue ? shape.Value(rng) : Ops.Bytes(rng.Next(2) == 0 ? rng.Next(0, 40) : rng.Next(100, 2500), rng.Next());
                Assert.Equal(BTreeStatus.Ok, t.Update(tx, KeySpan(t, a), want));
                model[a] = want;
                touched = a;
                return "update A (cursor key) with a new value";
            }
            default:
            {
                // Churn with plain arrays: inserts and deletes, so nodes split and merge.
                if (rng.Next(2) == 0)
                {
                    var k = shape.Key(rng, space);
                    var v = shape.Value(rng);
                    if (t.Insert(tx, k, v) == BTreeStatus.Ok) { model[k] = v; touched = k; }
                    return "churn insert";
                }
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, a));
                model.Remove(a);
                touched = a;
                return "churn delete";
            }
        }
    }

    private static BTreeStatus InsertWithCookie(Tree t, Transaction tx, byte[] k, ReadOnlySpan<byte> v)
    {
        BTreeCookie cookie = default;
        t.Lookup(k, out _, ref cookie);
        return t.Insert(tx, k, v, ref cookie);
    }
}

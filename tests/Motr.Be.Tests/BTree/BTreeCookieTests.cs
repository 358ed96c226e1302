using System.Buffers.Binary;
using Motr.Be.BTree;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Cookies: a lookup or insert whose key falls in the remembered leaf goes straight there (a hit); one whose
/// leaf split, merged, was freed, belongs to another tree, or was made before an abort or a reopen falls back to a
/// descent (a miss) with the same result.
/// </summary>
public class BTreeCookieTests
{
    private static byte[] K(ulong i) => Ops.U64(i);

    private static ulong N(ReadOnlySpan<byte> k) => BinaryPrimitives.ReadUInt64BigEndian(k);

    /// <summary>Allocates 512-byte blocks until the freed block at <paramref name="leaf"/> comes back, and writes <paramref name="image"/> into it.</summary>
    private static async Task PlaceCopy(Motr.Be.Segments.Segment seg, long leaf, byte[] image)
    {
        using var tx = await seg.BeginAsync((Motr.Be.Alloc.Allocator.AllocCredit + Motr.Be.Tx.TxCredit.Region(512)) * 4096);
        long got = seg.Allocator.Alloc(tx, 512);
        for (int i = 0; i < 4096 && got != leaf; i++)
        {
            if (got < leaf && got + 512 + 32 > leaf)
            {
                // The freed node joined a free chunk before it: take that chunk's front, then the node's place.
                seg.Allocator.Free(tx, got);
                seg.Allocator.Alloc(tx, leaf - got - 32);
            }
            got = seg.Allocator.Alloc(tx, 512);
        }
        Assert.Equal(leaf, got);
        image.CopyTo(tx.Capture(leaf, 512));
        await tx.Close();
    }

    private static async Task<(Tree Tree, SortedDictionary<byte[], byte[]> Model)> Fill(Motr.Be.Segments.Segment seg, string name = "t")
    {
        var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 }, name);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        // In a shuffled order: leaves partly full, as a tree of random inserts has them (keys in order would fill
        // them, and the tests below need room in a leaf and merges of its neighbours).
        var rng = new Random(5);
        foreach (ulong i in Enumerable.Range(0, 2000).Select(i => (ulong)i).OrderBy(_ => rng.Next()).ToList())
        {
            var v = Ops.Bytes(20, (int)i);
            Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, K(i * 100), v));
            model[K(i * 100)] = v;
        }
        Assert.True(t.Height >= 3);
        return (t, model);
    }

    [Fact]
    public async Task Lookups_and_inserts_in_the_remembered_leaf_hit_and_a_split_leaf_misses_with_correct_results()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Fill(seg);
            var cookie = default(BTreeCookie);
            Assert.False(cookie.IsSet);
            var s0 = t.Stats;
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_000), out var v, ref cookie));
            Assert.Equal(model[K(100_000)], v.ToArray());
            Assert.True(cookie.IsSet);
            Assert.Equal((s0.CookieHits, s0.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses)); // an unset cookie is a miss
            // Every key of that leaf: hits.
            var leafKeys = Raw.VarLeafKeys(seg, cookie.Leaf);
            Assert.True(leafKeys.Count >= 3);
            var s1 = t.Stats;
            foreach (var k in leafKeys)
            {
                Assert.Equal(BTreeStatus.Ok, t.Lookup(k, out v, ref cookie));
                Assert.Equal(model[k], v.ToArray());
            }
            // Absent keys inside the leaf's range: hits, NotFound.
            Assert.Equal(BTreeStatus.NotFound, t.Lookup(K(N(leafKeys[0]) + 1), out _, ref cookie));
            Assert.Equal((s1.CookieHits + leafKeys.Count + 1, s1.CookieMisses), (t.Stats.CookieHits, t.Stats.CookieMisses));
            Assert.Equal(s1.Lookups + leafKeys.Count + 1, t.Stats.Lookups);

            // Inserts into the range with the cookie: hits until the leaf splits; the cookie follows the key.
            var original = cookie;
            long leaf0 = cookie.Leaf;
            ulong lo = N(leafKeys[0]), hi = N(leafKeys[^1]);
            var s2 = t.Stats;
            int inserted = 0;
            for (ulong x = lo + 1; t.Stats.Splits == s2.Splits; x += 3)
            {
                Assert.True(x < hi, "the leaf never split");
                var val = Ops.Bytes(20, (int)x);
                using var tx = await seg.BeginAsync(t.InsertCredit(8, 20));
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, K(x), val, ref cookie));
                _ = tx.Close();
                model[K(x)] = val;
                inserted++;
            }
            Assert.Equal(s2.CookieHits + inserted, t.Stats.CookieHits);
            Assert.Equal(s2.CookieMisses, t.Stats.CookieMisses);
            // The original leaf kept the lower half; a key that moved right now misses with the old cookie.
            var left = Raw.VarLeafKeys(seg, leaf0);
            Assert.True(left.Count < leafKeys.Count + inserted);
            var moved = model.Keys.First(k => ByteArrayComparer.Instance.Compare(k, left[^1]) > 0);
            var s3 = t.Stats;
            var old = original;
            Assert.Equal(BTreeStatus.Ok, t.Lookup(moved, out v, ref old));
            Assert.Equal(model[moved], v.ToArray());
            Assert.Equal((s3.CookieHits, s3.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses));
            Assert.NotEqual(leaf0, old.Leaf); // now remembers the right half
            // An insert of an existing key through a cookie: Exists, and a hit.
            using (var tx = await seg.BeginAsync(t.InsertCredit(8, 20)))
            {
                Assert.Equal(BTreeStatus.Exists, t.Insert(tx, moved, new byte[20], ref old));
                await tx.Close();
            }
            Assert.Equal(s3.CookieHits + 1, t.Stats.CookieHits);
            // A key outside the leaf's range with a valid cookie: a miss, correct.
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(0), out v, ref old));
            Assert.Equal(model[K(0)], v.ToArray());
            Assert.Equal(s3.CookieMisses + 2, t.Stats.CookieMisses);
            Ops.AssertEqual(t, model, "after cookie inserts");
        });
        h.AssertNoCaptureViolations();
    }

    [Fact]
    public async Task A_cookie_of_a_freed_or_merged_leaf_of_another_tree_or_from_before_a_reopen_misses_silently()
    {
        await using var h = await TreeHost.Start();
        var keep = default(BTreeCookie);
        byte[] keptKey = [];
        byte[] keptValue = [];
        await h.Run(async seg =>
        {
            var (t, model) = await Fill(seg);
            var (other, _) = await Fill(seg, "other");
            // Cookies on many leaves, then delete most keys: leaves merge and are freed.
            var cookies = new List<(BTreeCookie Cookie, byte[] Key)>();
            for (ulong i = 0; i < 2000; i += 20)
            {
                var c = default(BTreeCookie);
                Assert.Equal(BTreeStatus.Ok, t.Lookup(K(i * 100), out _, ref c));
                cookies.Add((c, K(i * 100)));
            }
            var rng = new Random(9);
            foreach (var k in model.Keys.ToList())
                if (rng.Next(10) != 0 && N(k) < 150_000)
                {
                    Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                    model.Remove(k);
                }
            Assert.True(t.Stats.Merges > 10);
            int freed = cookies.Count(c => Raw.Magic(seg, c.Cookie.Leaf) != Raw.NodeMagic);
            Assert.True(freed > 5, $"{freed} freed leaves");
            var s = t.Stats;
            int hits = 0;
            foreach (var (c0, k) in cookies)
            {
                var c = c0;
                bool wasLive = Raw.Magic(seg, c.Leaf) == Raw.NodeMagic;
                var st = t.Lookup(k, out var v, ref c);
                if (model.TryGetValue(k, out var mv))
                {
                    Assert.Equal(BTreeStatus.Ok, st);
                    Assert.Equal(mv, v.ToArray());
                }
                else Assert.Equal(BTreeStatus.NotFound, st);
                if (t.Stats.CookieHits > s.CookieHits + hits)
                {
                    hits++;
                    Assert.True(wasLive, "a hit on a freed leaf");
                }
                // The cookie now points at the leaf that holds the key's place.
                Assert.Equal(Raw.NodeMagic, Raw.Magic(seg, c.Leaf));
                Assert.Equal(0, Raw.Level(seg, c.Leaf));
            }
            Assert.Equal(s.CookieMisses + cookies.Count - hits, t.Stats.CookieMisses);
            Assert.True(cookies.Count - hits >= freed, $"{cookies.Count - hits} misses, {freed} freed leaves");
            // A cookie of another tree misses, even for a key both trees hold.
            var oc = default(BTreeCookie);
            Assert.Equal(BTreeStatus.Ok, other.Lookup(K(190_000), out _, ref oc));
            var s4 = t.Stats;
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(190_000), out var v2, ref oc));
            Assert.Equal(model[K(190_000)], v2.ToArray());
            Assert.Equal((s4.CookieHits, s4.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses));
            // Keep one for after the reopen.
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(180_000), out _, ref keep));
            keptKey = Raw.VarLeafKeys(seg, keep.Leaf)[0]; // the leaf's first key: the next integer is inside its range
            keptValue = model[keptKey];
            Ops.AssertEqual(t, model, "after deletes");
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            // A cookie kept across a reopen misses once (the segment's restore count never repeats), and is refreshed.
            Assert.Equal(BTreeStatus.Ok, t.Lookup(keptKey, out var v, ref keep));
            Assert.Equal(keptValue, v.ToArray());
            Assert.Equal((0L, 1L), (t.Stats.CookieHits, t.Stats.CookieMisses));
            var next = K(N(keptKey) + 1);
            using var tx = await seg.BeginAsync(t.InsertCredit(8, 3));
            Assert.Equal(BTreeStatus.Ok, t.Insert(tx, next, [1, 2, 3], ref keep));
            await tx.Close();
            Assert.Equal(1, t.Stats.CookieHits);
            Assert.Equal([1, 2, 3], Ops.Get(t, next));
            Ops.AssertHealthy(t);
        });
        h.AssertNoCaptureViolations();
    }
    /// <summary>
    /// A cookie kept past its leaf's free, where the block came back from the allocator holding a byte-exact copy of
    /// that node (say a value some application keeps): magic, owner, level, checksum and key range all pass, so the
    /// cookie must be refused for the free itself. Trusting it answered from the copy: a deleted key found.
    /// </summary>
    [Fact]
    public async Task A_cookie_of_a_freed_leaf_whose_block_holds_a_copy_of_the_node_misses()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, model) = await Fill(seg);
            var cookie = default(BTreeCookie);
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_000), out _, ref cookie));
            long leaf = cookie.Leaf;
            byte[] image = seg.Bytes(leaf, 512).ToArray();
            var keys = Raw.VarLeafKeys(seg, leaf);
            // Delete from the leaf's first key on until the leaf is merged away and freed.
            var doomed = model.Keys.Where(k => N(k) >= N(keys[0])).ToList();
            int d = 0;
            while (Raw.Magic(seg, leaf) == Raw.NodeMagic)
            {
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, doomed[d]));
                model.Remove(doomed[d++]);
            }
            Assert.True(d >= 2, $"freed after {d} deletes"); // keys[1] is gone from the tree, not from the copy
            // Someone allocates blocks of the node's size until the freed one comes back, and writes the copy into it.
            await PlaceCopy(seg, leaf, image);
            var s = t.Stats;
            var stale = cookie;
            Assert.Equal(BTreeStatus.NotFound, t.Lookup(keys[1], out _, ref cookie));
            Assert.Equal((s.CookieHits, s.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses));
            Assert.NotEqual(leaf, cookie.Leaf);
            // An insert given such a cookie goes to the tree, not into the copy.
            using (var tx = await seg.BeginAsync(t.InsertCredit(8, 3)))
            {
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, keys[1], [1, 2, 3], ref stale));
                await tx.Close();
            }
            model[keys[1]] = [1, 2, 3];
            Assert.Equal(image, seg.Bytes(leaf, 512).ToArray());
            Assert.Equal([1, 2, 3], Ops.Get(t, keys[1]));
            Assert.Equal(model.Count, t.Count);
        });
    }

    /// <summary>An abort or rollback anywhere in the segment may turn a leaf back into what its block was: cookies made before miss once, then hit again.</summary>
    [Fact]
    public async Task A_cookie_made_before_an_abort_misses_once()
    {
        await using var h = await TreeHost.Start();
        await h.Run(async seg =>
        {
            var (t, _) = await Fill(seg);
            var other = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 }, "other");
            var cookie = default(BTreeCookie);
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_000), out _, ref cookie));
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_100), out _, ref cookie));
            var s = t.Stats;
            using (var tx = await seg.BeginAsync(other.InsertCredit(8, 1)))
            {
                Assert.Equal(BTreeStatus.Ok, other.Insert(tx, K(1), [1]));
                tx.Abort();
            }
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_000), out _, ref cookie));
            Assert.Equal((s.CookieHits, s.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses));
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_100), out _, ref cookie));
            Assert.Equal((s.CookieHits + 1, s.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses));
        });
    }

    /// <summary>
    /// A cookie made inside a transaction that then aborted names a node whose allocation the abort undid. The segment's
    /// restore count refuses it while the segment stays open; kept across a close and reopen it must still be refused: its block is free in the reopened segment and may come back holding a byte-exact copy
    /// of the node (a value some application keeps), and a lookup through the cookie answered from the copy.
    /// </summary>
    [Fact]
    public async Task A_cookie_of_a_node_an_abort_unmade_misses_after_a_reopen()
    {
        await using var h = await TreeHost.Start();
        var stale = default(BTreeCookie);
        byte[] image = [];
        byte[] ghost = [];
        await h.Run(async seg =>
        {
            var (t, _) = await Fill(seg);
            var cookie = default(BTreeCookie);
            Assert.Equal(BTreeStatus.Ok, t.Lookup(K(100_000), out _, ref cookie));
            long leaf0 = cookie.Leaf;
            var keys = Raw.VarLeafKeys(seg, leaf0);
            ulong lo = N(keys[0]), hi = N(keys[^1]);
            var s0 = t.Stats;
            using (var tx = await seg.BeginAsync(t.InsertCredit(8, 20) * 64))
            {
                // Inserts into the leaf's range until it splits: the upper half goes to a node this transaction allocates.
                var inserted = new List<byte[]>();
                for (ulong x = lo + 1; t.Stats.Splits == s0.Splits; x += 3)
                {
                    Assert.True(x < hi, "the leaf never split");
                    Assert.Equal(BTreeStatus.Ok, t.Insert(tx, K(x), Ops.Bytes(20, (int)x)));
                    inserted.Add(K(x));
                }
                ghost = inserted[^1];
                Assert.Equal(BTreeStatus.Ok, t.Lookup(ghost, out _, ref stale));
                Assert.NotEqual(leaf0, stale.Leaf);
                image = seg.Bytes(stale.Leaf, 512).ToArray();
                tx.Abort();
            }
            Assert.Equal(BTreeStatus.NotFound, t.Lookup(ghost, out _));
        });
        await h.Reopen();
        await h.Run(async seg =>
        {
            var t = Ops.Open(seg);
            long leaf = stale.Leaf;
            // A byte-exact copy of the node, with a valid checksum (as it would have been placed), lands in its freed block.
            Motr.Be.Segments.BlockChecksum.Seal(image, NodeHeader.CrcOffset);
            await PlaceCopy(seg, leaf, image);
            var s = t.Stats;
            Assert.Equal(BTreeStatus.NotFound, t.Lookup(ghost, out _, ref stale));
            Assert.Equal((s.CookieHits, s.CookieMisses + 1), (t.Stats.CookieHits, t.Stats.CookieMisses));
            Assert.NotEqual(leaf, stale.Leaf);
        });
    }
}

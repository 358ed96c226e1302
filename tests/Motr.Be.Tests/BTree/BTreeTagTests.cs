using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Tests.TestSupport;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Node key prefixes and index tags (node format 2): the bit arithmetic against a bit-by-bit reference, searches
/// where tags cannot tell keys apart, a prefix that must shorten, and fsck finding a wrong tag or prefix.
/// </summary>
public class BTreeTagTests
{
    private static unsafe int ComparePrefix(byte[] key, byte[] prefix, int bits)
    {
        fixed (byte* p = prefix) return Tree.ComparePrefix(key, p, bits);
    }

    private static int Bit(ReadOnlySpan<byte> k, int i) => i < 8 * k.Length ? (k[i >> 3] >> (7 - (i & 7))) & 1 : 0;

    private static ushort RefTag(byte[] k, int bits)
    {
        int t = 0;
        for (int i = 0; i < 16; i++) t = (t << 1) | Bit(k, bits + i);
        return (ushort)t;
    }

    private static int RefCommon(byte[] a, byte[] b)
    {
        int n = Math.Min(Math.Min(a.Length, b.Length) * 8, Tree.MaxPrefixBits), i = 0;
        while (i < n && Bit(a, i) == Bit(b, i)) i++;
        return i;
    }

    /// <summary>
    /// The branch-free tag search against a linear scan: every range of sorted indexes of both strides with
    /// runs of equal tags, tags at 0 and 0xFFFF, and targets below, between, on and above them.
    /// </summary>
    [Fact]
    public unsafe void Tag_bound_finds_what_a_linear_scan_finds()
    {
        var rng = new Random(12345);
        int checks = 0;
        for (int round = 0; round < 300; round++)
        {
            int count = rng.Next(0, 70);
            var tags = new uint[count];
            for (int i = 0; i < count; i++)
                tags[i] = round % 3 == 0 ? (uint)rng.Next(0, 4) * 0x5555 : (uint)rng.Next(0, 0x10000); // runs, and the extremes
            Array.Sort(tags);
            foreach (int stride in new[] { 1, 2 })
            {
                var idx = new uint[Math.Max(1, count * stride)];
                for (int i = 0; i < count; i++)
                {
                    idx[i * stride] = tags[i] << 16 | (uint)rng.Next(0, 0x10000); // the low half is the record's offset
                    if (stride == 2) idx[i * stride + 1] = (uint)rng.Next();
                }
                var targets = new List<uint> { 0, 1, 0xFFFE, 0xFFFF, (uint)rng.Next(0, 0x10000) };
                foreach (uint tag in tags) targets.Add(tag);
                fixed (uint* p = idx)
                {
                    for (int lo = 0; lo <= count; lo++)
                        for (int hi = lo; hi <= count; hi++)
                            foreach (uint t in targets)
                                foreach (bool above in new[] { false, true })
                                {
                                    int expected = lo;
                                    while (expected < hi && (above ? tags[expected] <= t : tags[expected] < t)) expected++;
                                    int got = Tree.TagBound(p, stride, lo, hi, t, above);
                                    if (got != expected)
                                        Assert.Fail($"tags [{string.Join(",", tags)}], stride {stride}, [{lo}, {hi}), t {t}, above {above}: got {got}, expected {expected}");
                                    checks++;
                                }
                }
            }
        }
        Assert.True(checks > 1_000_000, $"only {checks} checks");
    }

    /// <summary>Keys that share prefixes of every length, so prefixes end inside bytes and at key ends.</summary>
    private static byte[] RandomKey(Random rng, byte[] stem)
    {
        var k = new byte[rng.Next(1, 22)];
        int shared = rng.Next(0, Math.Min(k.Length, stem.Length) + 1);
        stem.AsSpan(0, shared).CopyTo(k);
        rng.NextBytes(k.AsSpan(shared));
        if (shared < k.Length && rng.Next(2) == 0) k[shared] = (byte)(stem.Length > shared ? stem[shared] ^ (1 << rng.Next(8)) : 0);
        return k;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Tags_prefix_comparisons_and_common_bits_agree_with_a_bit_by_bit_reference(int seed)
    {
        var rng = new Random(seed);
        var stem = new byte[24];
        rng.NextBytes(stem);
        var prefix = new byte[16];
        for (int round = 0; round < 20_000; round++)
        {
            var a = RandomKey(rng, stem);
            var b = RandomKey(rng, stem);
            int common = Tree.CommonBits(a, b);
            Assert.Equal(RefCommon(a, b), common);
            int bits = rng.Next(0, Math.Min(common, Tree.MaxPrefixBits) + 1);
            Assert.Equal(RefTag(a, bits), Tree.TagOf(a, bits));
            // Both keys begin with a's first `bits` bits; tags never fall as keys rise.
            Array.Clear(prefix);
            for (int i = 0; i < bits; i++) prefix[i >> 3] |= (byte)(Bit(a, i) << (7 - (i & 7)));
            Assert.Equal(0, ComparePrefix(a, prefix, bits));
            Assert.Equal(0, ComparePrefix(b, prefix, bits));
            int order = a.AsSpan().SequenceCompareTo(b);
            if (order < 0) Assert.True(Tree.TagOf(a, bits) <= Tree.TagOf(b, bits), $"{Ops.Hex(a)} < {Ops.Hex(b)} at {bits} bits");
            if (order > 0) Assert.True(Tree.TagOf(a, bits) >= Tree.TagOf(b, bits), $"{Ops.Hex(a)} > {Ops.Hex(b)} at {bits} bits");
            // Any key against the prefix: the sign of comparing it with every key that begins with the prefix.
            var c = RandomKey(rng, stem);
            int want = 0;
            for (int i = 0; i < bits && want == 0; i++)
                want = i >= 8 * c.Length ? -1 : Bit(c, i) - Bit(prefix, i);
            Assert.Equal(Math.Sign(want), Math.Sign(ComparePrefix(c, prefix, bits)));
        }
    }

    /// <summary>
    /// Keys that begin with the same 18 bytes, longer than any node prefix, or are prefixes of those bytes:
    /// within a node every tag is the same, so each search compares whole keys among equal tags. Random
    /// inserts, deletes, lookups and seeks against the model.
    /// </summary>
    [Fact]
    public async Task Keys_that_tags_cannot_tell_apart_still_match_a_sorted_dictionary()
    {
        int seed = Ops.Seed();
        var rng = new Random(seed);
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, logSize: 64 << 20);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        var stem = new byte[18];
        rng.NextBytes(stem);
        byte[] Key()
        {
            if (rng.Next(10) == 0) return stem.AsSpan(0, rng.Next(1, 19)).ToArray();
            var k = new byte[18 + rng.Next(1, 5)];
            stem.CopyTo(k, 0);
            rng.NextBytes(k.AsSpan(18));
            return k;
        }
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
            for (int op = 0; op < 6000; op++)
            {
                var k = Key();
                int what = rng.Next(10);
                if (what < 6)
                {
                    var v = new byte[rng.Next(0, 24)];
                    rng.NextBytes(v);
                    var st = await Ops.Insert(t, k, v);
                    Assert.Equal(model.ContainsKey(k) ? BTreeStatus.Exists : BTreeStatus.Ok, st);
                    model.TryAdd(k, v);
                }
                else if (what < 8)
                {
                    Assert.Equal(model.Remove(k) ? BTreeStatus.Ok : BTreeStatus.NotFound, await Ops.Delete(t, k));
                }
                else
                {
                    Assert.Equal(model.TryGetValue(k, out var v) ? v : null, Ops.Get(t, k));
                    var c = t.OpenCursor();
                    var above = model.Keys.FirstOrDefault(x => ByteArrayComparer.Instance.Compare(x, k) >= 0);
                    Assert.Equal(above != null, c.Seek(k));
                    if (above != null) Assert.Equal(above, c.Key.ToArray());
                }
                if (op % 1000 == 999) Ops.AssertEqual(t, model, $"seed {seed}, op {op}");
            }
            Assert.True(t.Height >= 3, $"height {t.Height}: the tree should have internal levels");
            Ops.AssertEqual(t, model, $"seed {seed}, end");
        });
        h.AssertNoCaptureViolations();
    }

    /// <summary>
    /// A leaf left with one record whose left sibling is full cannot merge, and cannot borrow when the separator
    /// would be an out-of-node key (deletes never allocate); deleting that record frees the leaf, and its range
    /// passes to the left neighbour, whose prefix was set for a narrower one. Inserting into the taken-over range
    /// shortens the neighbour's prefix; everything stays in order.
    /// </summary>
    [Fact]
    public async Task A_node_that_takes_over_a_freed_neighbours_range_shortens_its_prefix()
    {
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, logSize: 64 << 20);
        var model = new SortedDictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 4096 });
            // Keys of 1,200 bytes (out of node) beginning with i << 56 | low, so neighbours' bounds share few bits;
            // values of 900 bytes (in node): records of 924 bytes, four to a leaf.
            static byte[] Key(ulong i, byte low)
            {
                var k = Ops.Bytes(1200, (int)i * 256 + low);
                Ops.U64(i << 56 | low).CopyTo(k, 0);
                return k;
            }
            async Task Put(ulong i, byte low, int valueLength)
            {
                var k = Key(i, low);
                var v = Ops.Bytes(valueLength, (int)i * 256 + low);
                Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, k, v));
                model[k] = v;
            }
            async Task Remove(ulong i, byte low)
            {
                var k = Key(i, low);
                Assert.Equal(BTreeStatus.Ok, await Ops.Delete(t, k));
                model.Remove(k);
            }
            // Ascending inserts leave leaves of two records; a second key beside each fills every leaf.
            for (ulong i = 1; i <= 60; i++) await Put(i, 0, 900);
            for (ulong i = 1; i <= 60; i++) await Put(i, 1, 900);
            // Empty the leaves in the middle one by one, from the right: each, down to one record, has a full left
            // sibling, so it is freed when its last record goes, not merged.
            long nodes = t.NodeCount, merges = t.Stats.Merges, shortenedBefore = t.Stats.PrefixShortenings;
            for (ulong i = 45; i >= 15; i--)
            {
                await Remove(i, 1);
                await Remove(i, 0);
            }
            Assert.Equal(merges, t.Stats.Merges);
            Assert.True(t.NodeCount < nodes - 10, $"{t.NodeCount} nodes left of {nodes}: the emptied leaves should be gone");
            // Refill the freed ranges with small records: they land in the neighbour that took them over.
            for (ulong i = 15; i <= 45; i++)
            {
                await Put(i, 0xFF, 100);
                Ops.AssertHealthy(t, $"refilled {i}");
            }
            Assert.True(t.Stats.PrefixShortenings > shortenedBefore, "no node had to shorten its prefix");
            Ops.AssertEqual(t, model, "end");
        });
        await h.Reopen();
        await h.Run(seg => Ops.AssertEqual(Ops.Open(seg), model, "reopened"));
        h.AssertNoCaptureViolations();
    }

    /// <summary>A damaged tag or prefix under a valid node checksum: fsck names the node and the record.</summary>
    [Theory]
    [InlineData("tag")]
    [InlineData("prefix")]
    public async Task Fsck_finds_a_wrong_tag_or_prefix_with_the_node_offset(string what)
    {
        await using var h = await TreeHost.Start();
        long leaf = 0;
        int size = 0, count = 0;
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 });
            for (ulong i = 0; i < 200; i++) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(0x1234_5600_0000_0000 + i * 3), new byte[8]));
            // A leaf away from the edges: it has a prefix from its bounds.
            var leaves = Raw.Nodes(seg, t.Check()).Where(n => Raw.Level(seg, n) == 0)
                .Where(n => seg.At<NodeHeader>(n).PrefixBits > 8).ToList();
            Assert.NotEmpty(leaves);
            leaf = leaves[leaves.Count / 2];
            size = Raw.Size(seg, leaf);
            count = Raw.Count(seg, leaf);
        });
        await h.Close();
        Raw.RewriteNode(h.SegmentFile, leaf, size, node =>
        {
            if (what == "tag") node[NodeHeader.SizeOf + NodeHeader.LeafEntrySize * (count / 2) + 3] ^= 0x40;
            else node[NodeHeader.PrefixOffset] ^= 0x01; // every key now leaves the prefix
        });
        await h.Open();
        await h.Run(seg =>
        {
            var rep = Ops.Open(seg).Check();
            Assert.False(rep.Healthy);
            string expect = what == "tag" ? $"node 0x{leaf:X}: record {count / 2}: index tag" : $"node 0x{leaf:X}: record 0: key does not begin with the node's";
            Assert.Contains(rep.Problems, p => p.Contains(expect));
        });
    }

    /// <summary>A node of an older format (version 1, untagged index; 2, a key in internal record 0) is refused by name, not misread.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_node_of_an_older_format_version_is_refused_with_its_offset(byte version)
    {
        await using var h = await TreeHost.Start();
        long leaf = 0;
        int size = 0;
        byte[] inside = [];
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 });
            for (ulong i = 0; i < 200; i++) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(i), new byte[8]));
            leaf = Raw.Nodes(seg, t.Check()).First(n => Raw.Level(seg, n) == 0 && Raw.Count(seg, n) > 0);
            size = Raw.Size(seg, leaf);
            inside = seg.Bytes(leaf + Raw.RecordOffset(seg, leaf, 0), 8).ToArray();
        });
        await h.Close();
        Raw.RewriteNode(h.SegmentFile, leaf, size, node => node[4] = version);
        await h.Open();
        await h.Run(seg =>
        {
            var t = Ops.Open(seg);
            var e = Assert.Throws<BeCorruptionException>(() => t.Lookup(inside, out _));
            Assert.Equal(leaf, e.Offset);
            Assert.Contains($"node format version {version} is not supported", e.Message);
            Assert.Contains(t.Check().Problems, p => p.Contains($"node 0x{leaf:X}: node format version {version} is not supported"));
        });
    }

    /// <summary>An internal node's index keeps each child beside the record's copy: a damaged one is named by fsck.</summary>
    [Fact]
    public async Task Fsck_finds_an_index_child_that_differs_from_its_record()
    {
        await using var h = await TreeHost.Start();
        long inner = 0;
        int size = 0;
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 8 });
            for (ulong i = 0; i < 2000; i++) Assert.Equal(BTreeStatus.Ok, await Ops.Insert(t, Ops.U64(i * 7), new byte[8]));
            Assert.True(t.Height >= 3);
            inner = Raw.Nodes(seg, t.Check()).First(n => Raw.Level(seg, n) == 1 && Raw.Count(seg, n) > 2);
            size = Raw.Size(seg, inner);
        });
        await h.Close();
        Raw.RewriteNode(h.SegmentFile, inner, size, node => node[NodeHeader.SizeOf + NodeHeader.InternalEntrySize * 2 + 4] ^= 0x01);
        await h.Open();
        await h.Run(seg =>
        {
            var rep = Ops.Open(seg).Check();
            Assert.Contains(rep.Problems, p => p.Contains($"node 0x{inner:X}: record 2: index child"));
        });
    }
}

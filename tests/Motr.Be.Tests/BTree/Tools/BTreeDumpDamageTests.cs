using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>
/// Every kind of damage to a dump gives its documented error, with the byte offset, and the partly loaded
/// tree is removed again: the segment is as before (same allocated blocks, no root left, fsck healthy).
/// </summary>
public sealed class BTreeDumpDamageTests
{
    private const int N = 6000;

    /// <summary>A tree of N records (8-byte keys, 100-byte values, variable format: three blocks) and its dump.</summary>
    private static async Task<(Tree Tree, byte[] Dump)> MakeAsync(Segment seg)
    {
        var t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { NodeSize = 1024 }, "original");
        var recs = new List<(byte[], byte[])>();
        for (int i = 0; i < N; i++)
        {
            var v = new byte[100];
            new Random(i).NextBytes(v);
            recs.Add((ToolsHarness.BigEndianKey(10L * i), v));
        }
        await ToolsHarness.InsertAllAsync(t, recs);
        var ms = new MemoryStream();
        await BTreeDump.SaveAsync(t, ms);
        return (t, ms.ToArray());
    }

    /// <summary>Loads <paramref name="dump"/> expecting damage; checks the offset and message, and that nothing was left behind.</summary>
    private static async Task<BeCorruptionException> ExpectDamage(Segment seg, Tree original, byte[] dump, long offset, string message, Stream? input = null)
    {
        var before = SegmentCheck.Run(seg, [original]);
        Assert.True(before.Healthy, before.ToString());
        var e = await Assert.ThrowsAsync<BeCorruptionException>(() =>
            BTreeDump.LoadAsync(input ?? new MemoryStream(dump), seg, null, "partial", null, CancellationToken.None));
        Assert.Contains(message, e.Message);
        Assert.Equal(offset, e.Offset);
        Assert.False(e.Data.Contains("Motr.BTreeDump.Cleanup"), e.Data["Motr.BTreeDump.Cleanup"]?.ToString());
        // Nothing leaked: the partial tree and its root are gone, every allocated block belongs to the original.
        Assert.False(seg.TryGetRoot("partial", out _));
        var after = SegmentCheck.Run(seg, [original]);
        Assert.True(after.Healthy, after.ToString());
        Assert.Equal(before.AllocatedBlocks, after.AllocatedBlocks);
        Assert.Equal(before.AllocatedBytes, after.AllocatedBytes);
        return e;
    }

    [Theory]
    [InlineData("flip-block-payload")]
    [InlineData("flip-block-length")]
    [InlineData("flip-header")]
    [InlineData("bad-magic")]
    [InlineData("unsupported-version")]
    [InlineData("unknown-flags")]
    [InlineData("truncated-header")]
    [InlineData("truncated-block-header")]
    [InlineData("truncated-block")]
    [InlineData("no-trailer")]
    [InlineData("truncated-trailer")]
    [InlineData("reordered-records")]
    [InlineData("repeated-key")]
    [InlineData("trailer-count")]
    [InlineData("trailer-crc")]
    [InlineData("block-dropped")]
    [InlineData("garbage-after-trailer")]
    [InlineData("record-past-block")]
    [InlineData("fixed-value-variable-key")]
    [InlineData("fixed-records-too-big")]
    public async Task A_damaged_dump_is_refused_with_its_offset_and_leaves_nothing(string damage)
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, good) = await MakeAsync(seg);
            var L = ToolsHarness.Parse(good);
            Assert.Equal(3, L.Blocks.Count);
            long b1 = L.Blocks[1], b2 = L.Blocks[2];
            var d = (byte[])good.Clone();
            switch (damage)
            {
                case "flip-block-payload":
                    d[b1 + 16 + 5000] ^= 0x40;
                    await ExpectDamage(seg, t, d, b1, "block 1 (");
                    await ExpectDamage(seg, t, d, b1, "checksum mismatch");
                    break;
                case "flip-block-length":
                    // A length still in range: the CRC covers the header's length and count too.
                    d[b1 + 4] ^= 0x01;
                    await ExpectDamage(seg, t, d, b1, "checksum mismatch");
                    break;
                case "flip-header":
                    d[100] ^= 0x01; // inside the comparer name
                    await ExpectDamage(seg, t, d, 0, "dump header [0, 256): checksum mismatch");
                    break;
                case "bad-magic":
                    d[0] = (byte)'X';
                    await ExpectDamage(seg, t, d, 0, "not a b+tree dump: magic");
                    break;
                case "unsupported-version":
                    BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(8), 2);
                    ToolsHarness.ResealHeader(d);
                    await ExpectDamage(seg, t, d, 8, "dump format version 2 is not supported; this build reads version 1");
                    break;
                case "unknown-flags":
                    d[12] = 0x80;
                    ToolsHarness.ResealHeader(d);
                    await ExpectDamage(seg, t, d, 12, "dump flags 0x00000080 are not supported");
                    break;
                case "truncated-header":
                    await ExpectDamage(seg, t, good[..100], 100, "truncated: the file is 100 bytes, shorter than the 256-byte dump header");
                    break;
                case "truncated-block-header":
                    await ExpectDamage(seg, t, good[..(int)(b2 + 10)], b2 + 10, "truncated");
                    break;
                case "truncated-block":
                    await ExpectDamage(seg, t, good[..(int)(b1 + 16 + 777)], b1 + 16 + 777, "truncated: block 1 at");
                    break;
                case "no-trailer":
                    await ExpectDamage(seg, t, good[..(int)L.Trailer], L.Trailer, "without a trailer");
                    break;
                case "truncated-trailer":
                    await ExpectDamage(seg, t, good[..(int)(L.Trailer + 20)], L.Trailer + 20, "inside the trailer");
                    break;
                case "reordered-records":
                {
                    // Swap records 5 and 6 of block 1 (same size) and reseal the block: only the order is wrong.
                    var r = L.RecordOffsets[1];
                    int a = (int)r[5], b = (int)r[6], len = b - a;
                    var tmp = d.AsSpan(a, len).ToArray();
                    d.AsSpan(b, len).CopyTo(d.AsSpan(a, len));
                    tmp.CopyTo(d.AsSpan(b, len));
                    ToolsHarness.ResealBlock(d, b1);
                    long index = L.RecordOffsets[0].Count + 6;
                    await ExpectDamage(seg, t, d, b, $"keys out of order: record {index} is below the record before it");
                    break;
                }
                case "repeated-key":
                {
                    var r = L.RecordOffsets[2];
                    d.AsSpan((int)r[3] + 8, 8).CopyTo(d.AsSpan((int)r[4] + 8, 8));
                    ToolsHarness.ResealBlock(d, b2);
                    long index = L.RecordOffsets[0].Count + L.RecordOffsets[1].Count + 4;
                    await ExpectDamage(seg, t, d, r[4], $"record {index} repeats the key of the record before it");
                    break;
                }
                case "trailer-count":
                    BinaryPrimitives.WriteInt64LittleEndian(d.AsSpan((int)L.Trailer + 8), N + 1);
                    ToolsHarness.ResealTrailer(d, L.Trailer);
                    await ExpectDamage(seg, t, d, L.Trailer + 8, $"trailer says {N + 1} records; the file holds {N}");
                    break;
                case "trailer-crc":
                    BinaryPrimitives.WriteInt64LittleEndian(d.AsSpan((int)L.Trailer + 8), N - 1);
                    await ExpectDamage(seg, t, d, L.Trailer, "trailer: checksum mismatch");
                    break;
                case "block-dropped":
                {
                    // The last block cut out and the trailer fixed to the new count: the block CRC chain tells.
                    var cut = good[..(int)b2].Concat(good[(int)L.Trailer..]).ToArray();
                    long trailer = b2;
                    long kept = L.RecordOffsets[0].Count + L.RecordOffsets[1].Count;
                    BinaryPrimitives.WriteInt64LittleEndian(cut.AsSpan((int)trailer + 8), kept);
                    BinaryPrimitives.WriteInt64LittleEndian(cut.AsSpan((int)trailer + 16), 2);
                    ToolsHarness.ResealTrailer(cut, trailer);
                    await ExpectDamage(seg, t, cut, trailer + 24, "the blocks' checksums do not add up");
                    break;
                }
                case "garbage-after-trailer":
                    await ExpectDamage(seg, t, [.. good, 0], good.Length, "unexpected bytes after the trailer");
                    break;
                case "record-past-block":
                {
                    // The last record of block 0 claims a longer value than the block holds (block resealed).
                    var r = L.RecordOffsets[0];
                    int last = (int)r[^1];
                    BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(last + 4), 101);
                    ToolsHarness.ResealBlock(d, L.Blocks[0]);
                    await ExpectDamage(seg, t, d, last, "run past the end of block 0");
                    break;
                }
                case "fixed-value-variable-key":
                    // A shape no tree can have, under a valid header checksum: variable keys with a fixed value size.
                    BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(24), 5);
                    ToolsHarness.ResealHeader(d);
                    await ExpectDamage(seg, t, d, 24, "value size 5 with variable keys");
                    break;
                case "fixed-records-too-big":
                    // Fixed records of 300-byte keys and values in 512-byte nodes: not four to a node, so no tree to load into.
                    d[16] = (byte)NodeFormat.FixedKeyValue;
                    BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(20), 300);
                    BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(24), 300);
                    BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(28), 512);
                    BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(32), 512);
                    ToolsHarness.ResealHeader(d);
                    await ExpectDamage(seg, t, d, 20, "do not fit four to a node");
                    break;
                default:
                    throw new ArgumentException(damage);
            }
            // The original is untouched by all this.
            Assert.Equal(N, t.Count);
            Assert.True(t.Check().Healthy);
        });
    }

    [Fact]
    public async Task A_damaged_file_is_named_in_the_error()
    {
        using var dir = new TempDir();
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, good) = await MakeAsync(seg);
            var L = ToolsHarness.Parse(good);
            good[L.Blocks[2] + 100] ^= 1;
            string path = Path.Combine(dir.Path, "t.motrdump");
            await File.WriteAllBytesAsync(path, good);
            await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096, useAsync: true);
            var e = await ExpectDamage(seg, t, good, L.Blocks[2], "block 2", fs);
            Assert.Equal(path, e.File);
            Assert.StartsWith($"{path} @ 0x{L.Blocks[2]:X}", e.Message);
        });
    }

    [Fact]
    public async Task A_cancelled_load_removes_the_partial_tree()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, good) = await MakeAsync(seg);
            var before = SegmentCheck.Run(seg, [t]);
            using var cts = new CancellationTokenSource();
            // Cancelled after the first block's records went in: they are deleted again.
            var input = new CancelAfterFirstBlock(good, cts);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => BTreeDump.LoadAsync(input, seg, null, "partial", null, cts.Token));
            Assert.True(input.Cancelled);
            Assert.False(seg.TryGetRoot("partial", out _));
            var after = SegmentCheck.Run(seg, [t]);
            Assert.True(after.Healthy, after.ToString());
            Assert.Equal(before.AllocatedBlocks, after.AllocatedBlocks);
        });
    }

    [Fact]
    public async Task Load_refuses_a_root_name_in_use_and_a_record_that_does_not_fit_the_config()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, good) = await MakeAsync(seg);
            await Assert.ThrowsAsync<ArgumentException>(() => BTreeDump.LoadAsync(new MemoryStream(good), seg, null, "original", null, CancellationToken.None));
            // The dump has variable keys of 8 bytes; a tree of 4-byte keys cannot take them: the first record is named.
            var e = await Assert.ThrowsAsync<BeCorruptionException>(() => BTreeDump.LoadAsync(new MemoryStream(good), seg, new BTreeConfig { KeySize = 4 }));
            Assert.Equal(BTreeDumpFormat.HeaderSize + BTreeDumpFormat.BlockHeaderSize, e.Offset);
            Assert.Contains("record 0: key of 8 bytes does not fit the new tree, whose keys are 4 bytes", e.Message);
            var check = SegmentCheck.Run(seg, [t]);
            Assert.True(check.Healthy, check.ToString());
        });
    }

    [Fact]
    public async Task A_load_that_runs_out_of_space_removes_the_partial_tree()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var (t, good) = await MakeAsync(seg);
            seg.Allocator.GrowthAllowed = false; // the segment stays at 8 MiB: copies fill it
            try
            {
                var trees = new List<Tree> { t };
                BeException? failure = null;
                SegmentCheckReport before = null!;
                for (int i = 0; i < 30 && failure is null; i++)
                {
                    before = SegmentCheck.Run(seg, trees);
                    Assert.True(before.Healthy, before.ToString());
                    try { trees.Add(await BTreeDump.LoadAsync(new MemoryStream(good), seg, null, $"copy{i}", null, CancellationToken.None)); }
                    catch (BeException e) { failure = e; }
                }
                Assert.NotNull(failure);
                Assert.IsNotType<BeCorruptionException>(failure);
                Assert.True(trees.Count >= 3, $"{trees.Count - 1} copies fit");
                Assert.Contains("space", failure.Message);
                Assert.False(failure.Data.Contains("Motr.BTreeDump.Cleanup"));
                Assert.False(seg.TryGetRoot($"copy{trees.Count - 1}", out _));
                var after = SegmentCheck.Run(seg, trees);
                Assert.True(after.Healthy, after.ToString());
                Assert.Equal(before.AllocatedBlocks, after.AllocatedBlocks);
                Assert.Equal(before.AllocatedBytes, after.AllocatedBytes);
                foreach (var copy in trees) ToolsHarness.AssertSameRecords(t, copy);
            }
            finally
            {
                seg.Allocator.GrowthAllowed = true;
            }
        });
    }

    /// <summary>Cancels the token once the second block header has been read (the first block's records are loaded by then).</summary>
    private sealed class CancelAfterFirstBlock(byte[] data, CancellationTokenSource cts) : MemoryStream(data)
    {
        private int _blockHeaders;
        public bool Cancelled;

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Position >= BTreeDumpFormat.HeaderSize && buffer.Length == BTreeDumpFormat.BlockHeaderSize && ++_blockHeaders == 2)
            {
                cts.Cancel();
                Cancelled = true;
            }
            return base.ReadAsync(buffer, cancellationToken);
        }
    }

    // ---- a comparer that is not a total order ------------------------------------------------------------

    /// <summary>Bytewise order, or, once <see cref="Lie"/> is set, one that is not a total order.</summary>
    private sealed class LyingComparer : IKeyComparer
    {
        public enum Lies { None, Reversed, EveryOtherKeyAbove }
        public Lies Lie;
        public string Name => "lying-bytewise";
        public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => Lie switch
        {
            Lies.Reversed => b.SequenceCompareTo(a),
            // Of two keys, each is above the other: a seek (which compares each record with the key sought) goes to the first.
            Lies.EveryOtherKeyAbove => a.SequenceEqual(b) ? 0 : 1,
            _ => a.SequenceCompareTo(b),
        };
    }

    /// <summary>Discards what is written; at each write, runs <paramref name="onWrite"/> (on the writer's thread, the locality).</summary>
    private sealed class SinkStream(Func<Task>? onWrite) : Stream
    {
        public int Writes;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Writes++;
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Writes++;
            if (onWrite != null) await onWrite();
        }
    }

    /// <summary>
    /// A save seeked past the last key of each block it wrote, trusting the comparer. With one that is not a total order
    /// the seek could land on a key already saved, and the save went round the tree for ever. Now: while the tree does not
    /// change, the save steps on from its place and finishes whatever the comparer says ("step"); when the tree changed
    /// during the write and it must seek ("seek"), the key reached must be above the last saved both ways round; and every
    /// key must be above the one before it ("reversed": a tree out of order for its comparer). Otherwise it fails naming
    /// the tree, the comparer and both keys. The token is only a guard: a save that spins is cancelled, failing the test.
    /// </summary>
    [Theory]
    [InlineData("step")]
    [InlineData("seek")]
    [InlineData("reversed")]
    public async Task A_save_fails_on_keys_out_of_order_for_its_comparer_instead_of_going_round_for_ever(string mode)
    {
        await using var h = await ToolsHarness.OpenAsync(logSize: 64 << 20);
        await h.Run(async () =>
        {
            var cmp = new LyingComparer();
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 512, Comparer = cmp });
            // 4 KiB values: about 64 records a block, so the save passes a block's last key several times.
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 300; i++) recs.Add((ToolsHarness.BigEndianKey(10L * i), new byte[4096]));
            await ToolsHarness.InsertAllAsync(t, recs);
            var other = Tree.Open(h.Seg, t.Offset, cmp);
            int extra = 0;
            var lie = mode == "reversed" ? LyingComparer.Lies.Reversed : LyingComparer.Lies.EveryOtherKeyAbove;
            var sink = new SinkStream(mode == "seek" ? async () =>
            {
                // The tree changes while each block is written (through another object, in the honest order), so the
                // save must seek again from the root.
                cmp.Lie = LyingComparer.Lies.None;
                var k = ToolsHarness.BigEndianKey(10L * 1000 + extra++);
                using (var tx = await h.Seg.BeginAsync(other.InsertCredit(k.Length, 1)))
                {
                    Assert.Equal(BTreeStatus.Ok, other.Insert(tx, k, [1]));
                    _ = tx.Close();
                }
                cmp.Lie = lie;
            } : null);
            cmp.Lie = lie;
            using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            long saved = 0;
            var e = await Record.ExceptionAsync(async () => saved = await BTreeDump.SaveAsync(t, sink, null, guard.Token));
            cmp.Lie = LyingComparer.Lies.None;
            Ops.AssertHealthy(t); // the tree is as it was, in the honest order
            if (mode == "step")
            {
                Assert.Null(e);
                Assert.Equal(300, saved);
                return;
            }
            Assert.True(e is BeCorruptionException, $"{e}");
            Assert.Contains($"b+tree 0x{t.Offset:X}", e.Message);
            Assert.Contains("lying-bytewise", e.Message);
            var m = System.Text.RegularExpressions.Regex.Match(e.Message, "next key ([0-9A-F]+) is not above the last key saved ([0-9A-F]+)");
            Assert.True(m.Success, e.Message);
            long next = BinaryPrimitives.ReadInt64BigEndian(Convert.FromHexString(m.Groups[1].Value));
            long last = BinaryPrimitives.ReadInt64BigEndian(Convert.FromHexString(m.Groups[2].Value));
            if (mode == "reversed")
            {
                // The second record, found by a step, is below the first for this comparer.
                Assert.Equal((10, 0), (next, last));
                Assert.Equal(1, sink.Writes); // the header only
            }
            else
            {
                // The seek after the first block went back to the first key.
                Assert.Equal(0, next);
                Assert.True(last > 0, e.Message);
                Assert.Equal(2, sink.Writes); // the header and the first block
            }
        });
    }
}

using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>Save then load, for every leaf format, compared record by record; durability of the loaded tree; progress; a tree changing during a save.</summary>
public sealed class BTreeDumpRoundTripTests
{
    /// <summary>A data set per leaf format, deterministic.</summary>
    private static (BTreeConfig Config, List<(byte[] Key, byte[] Value)> Records) DataSet(string shape)
    {
        int seed = 17;
        foreach (char ch in shape) seed = seed * 31 + ch;
        var r = new Random(seed);
        var records = new List<(byte[], byte[])>();
        var seen = new HashSet<string>();
        void Add(byte[] k, byte[] v)
        {
            if (seen.Add(Convert.ToHexString(k))) records.Add((k, v));
        }
        byte[] Bytes(int n)
        {
            var b = new byte[n];
            r.NextBytes(b);
            return b;
        }
        switch (shape)
        {
            case "fkv":
                for (int i = 0; i < 5000; i++) Add(Bytes(8), Bytes(16));
                return (new BTreeConfig { NodeSize = 512, KeySize = 8, ValueSize = 16 }, records);
            case "fkv-crc":
                for (int i = 0; i < 3000; i++) Add(Bytes(12), Bytes(4));
                return (new BTreeConfig { NodeSize = 1024, KeySize = 12, ValueSize = 4, RecordChecksums = true }, records);
            case "fk":
                // Fixed keys, variable values: small, up to a node, and three of a few MiB (out of node).
                for (int i = 0; i < 3000; i++) Add(Bytes(16), Bytes(r.Next(10) == 0 ? r.Next(500, 6000) : r.Next(0, 100)));
                for (int i = 0; i < 3; i++) Add(Bytes(16), Bytes(r.Next(1 << 20, 3 << 20)));
                return (new BTreeConfig { NodeSize = 4096, KeySize = 16 }, records);
            case "var":
                for (int i = 0; i < 5000; i++) Add(Bytes(r.Next(1, 64)), Bytes(r.Next(0, 200)));
                return (new BTreeConfig { NodeSize = 1024 }, records);
            case "var-large-crc":
                // Variable keys and values with record checksums: large keys (5 to 600 KiB), large values (a few MiB), small ones between.
                for (int i = 0; i < 200; i++) Add(Bytes(r.Next(1, 40)), Bytes(r.Next(0, 300)));
                for (int i = 0; i < 6; i++) Add(Bytes(r.Next(5 << 10, 600 << 10)), Bytes(r.Next(0, 100)));
                for (int i = 0; i < 4; i++) Add(Bytes(r.Next(1, 40)), Bytes(r.Next(1 << 20, 4 << 20)));
                Add(Bytes(300 << 10), Bytes(2 << 20));
                return (new BTreeConfig { NodeSize = 4096, RecordChecksums = true }, records);
            default:
                throw new ArgumentException(shape);
        }
    }

    [Theory]
    [InlineData("fkv")]
    [InlineData("fkv-crc")]
    [InlineData("fk")]
    [InlineData("var")]
    [InlineData("var-large-crc")]
    public async Task Save_then_load_gives_the_same_records_and_survives_a_reopen(string shape)
    {
        var (config, records) = DataSet(shape);
        await using var h = await ToolsHarness.OpenAsync(logSize: 64 << 20);
        byte[] dump = [];
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var t = await ToolsHarness.CreateAsync(seg, config, "original");
            await ToolsHarness.InsertAllAsync(t, records);
            var ms = new MemoryStream();
            long saved = await BTreeDump.SaveAsync(t, ms, null, CancellationToken.None);
            Assert.Equal(records.Count, saved);
            dump = ms.ToArray();

            var loaded = await BTreeDump.LoadAsync(new MemoryStream(dump), seg, null, "loaded", null, CancellationToken.None);
            Assert.True(seg.TryGetRoot("loaded", out long off));
            Assert.Equal(loaded.Offset, off);
            Assert.Equal(t.LeafFormat, loaded.LeafFormat);
            Assert.Equal(t.KeySize, loaded.KeySize);
            Assert.Equal(t.ValueSize, loaded.ValueSize);
            Assert.Equal(t.LeafNodeSize, loaded.LeafNodeSize);
            Assert.Equal(t.InternalNodeSize, loaded.InternalNodeSize);
            Assert.Equal(records.Count, loaded.Count);
            ToolsHarness.AssertSameRecords(t, loaded);
            var check = SegmentCheck.Run(seg, [t, loaded]);
            Assert.True(check.Healthy, check.ToString());
            Assert.Equal(0, check.LeakedBlocks);
            Assert.Equal(2L * records.Count, check.Records);
        });

        // The file describes the tree it came from.
        Assert.Equal(BTreeDumpFormat.FileMagic, BinaryPrimitives.ReadUInt64LittleEndian(dump));
        Assert.Equal(BTreeDumpFormat.Version, BinaryPrimitives.ReadUInt16LittleEndian(dump.AsSpan(8)));
        Assert.Equal(records.Count, BinaryPrimitives.ReadInt64LittleEndian(dump.AsSpan(40)));
        Assert.Equal(config.RecordChecksums ? 1 : 0, dump[17]);
        Assert.Equal(config.KeySize ?? -1, BinaryPrimitives.ReadInt32LittleEndian(dump.AsSpan(20)));
        Assert.Equal(config.ValueSize ?? -1, BinaryPrimitives.ReadInt32LittleEndian(dump.AsSpan(24)));
        var layout = ToolsHarness.Parse(dump);
        Assert.Equal(records.Count, layout.RecordOffsets.Sum(b => b.Count));
        Assert.Equal(records.Count, BinaryPrimitives.ReadInt64LittleEndian(dump.AsSpan((int)layout.Trailer + 8)));
        Assert.Equal(layout.Blocks.Count, BinaryPrimitives.ReadInt64LittleEndian(dump.AsSpan((int)layout.Trailer + 16)));

        // Durable: after recovery both trees are there, equal, and the segment is whole.
        await h.ReopenAsync();
        await h.Run(() =>
        {
            var seg = h.Seg;
            Assert.True(seg.TryGetRoot("original", out long o));
            Assert.True(seg.TryGetRoot("loaded", out long l));
            var t = Tree.Open(seg, o);
            var loaded = Tree.Open(seg, l);
            ToolsHarness.AssertSameRecords(t, loaded);
            var check = SegmentCheck.Run(seg, [t, loaded]);
            Assert.True(check.Healthy, check.ToString());
            return Task.CompletedTask;
        });
    }

    [Fact]
    public async Task An_empty_tree_round_trips()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { KeySize = 4 });
            var ms = new MemoryStream();
            Assert.Equal(0, await BTreeDump.SaveAsync(t, ms));
            Assert.Equal(BTreeDumpFormat.HeaderSize + BTreeDumpFormat.TrailerSize, ms.Length);
            var loaded = await BTreeDump.LoadAsync(new MemoryStream(ms.ToArray()), h.Seg);
            Assert.Equal(0, loaded.Count);
            Assert.Equal(NodeFormat.FixedKey, loaded.LeafFormat);
            Assert.True(SegmentCheck.Run(h.Seg, [t, loaded]).Healthy);
        });
    }

    [Fact]
    public async Task Progress_is_reported_every_ten_thousand_records_and_at_the_end()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { KeySize = 8, ValueSize = 8 });
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 25_000; i++) recs.Add((ToolsHarness.BigEndianKey(i), BitConverter.GetBytes((long)i * 3)));
            await ToolsHarness.InsertAllAsync(t, recs);
            var save = new ProgressLog();
            var ms = new MemoryStream();
            await BTreeDump.SaveAsync(t, ms, save);
            Assert.Equal([10_000L, 20_000L, 25_000L], save.Values);
            var load = new ProgressLog();
            var loaded = await BTreeDump.LoadAsync(new MemoryStream(ms.ToArray()), h.Seg, null, load);
            Assert.Equal([10_000L, 20_000L, 25_000L], load.Values);
            ToolsHarness.AssertSameRecords(t, loaded);
        });
    }

    [Fact]
    public async Task Load_takes_another_node_size_from_the_config()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { NodeSize = 4096 });
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 3000; i++) recs.Add((ToolsHarness.BigEndianKey(i * 7L, 10), new byte[i % 50]));
            await ToolsHarness.InsertAllAsync(t, recs);
            var ms = new MemoryStream();
            await BTreeDump.SaveAsync(t, ms);
            var loaded = await BTreeDump.LoadAsync(new MemoryStream(ms.ToArray()), h.Seg, new BTreeConfig { NodeSize = 512 });
            Assert.Equal(512, loaded.LeafNodeSize);
            Assert.True(loaded.NodeCount > t.NodeCount, $"{loaded.NodeCount} nodes of 512 bytes vs {t.NodeCount} of 4096");
            ToolsHarness.AssertSameRecords(t, loaded);

            // A config that contradicts the dump is refused before anything is made.
            long before = h.Seg.Allocator.UsedBytes;
            var e = await Assert.ThrowsAsync<ArgumentException>(() =>
                BTreeDump.LoadAsync(new MemoryStream(ms.ToArray()), h.Seg, new BTreeConfig { Comparer = new ReverseComparer() }));
            Assert.Contains("'bytewise' order", e.Message);
            Assert.Equal(before, h.Seg.Allocator.UsedBytes);
        });
    }

    [Fact]
    public async Task A_dump_of_a_custom_comparer_loads_only_with_that_comparer()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { Comparer = new ReverseComparer() });
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 500; i++) recs.Add((ToolsHarness.BigEndianKey(i), [(byte)i]));
            await ToolsHarness.InsertAllAsync(t, recs);
            var ms = new MemoryStream();
            await BTreeDump.SaveAsync(t, ms);
            var dump = ms.ToArray();
            Assert.Equal("reverse", System.Text.Encoding.UTF8.GetString(dump, 96, BinaryPrimitives.ReadUInt16LittleEndian(dump.AsSpan(18))));
            var e = await Assert.ThrowsAsync<ArgumentException>(() => BTreeDump.LoadAsync(new MemoryStream(dump), h.Seg));
            Assert.Contains("'reverse' order", e.Message);
            var loaded = await BTreeDump.LoadAsync(new MemoryStream(dump), h.Seg, new BTreeConfig { Comparer = new ReverseComparer() });
            ToolsHarness.AssertSameRecords(t, loaded);
            Assert.True(loaded.Min(out var k, out _) == BTreeStatus.Ok && k.SequenceEqual(ToolsHarness.BigEndianKey(499)));
        });
    }

    /// <summary>
    /// The save is not a snapshot: records inserted or deleted ahead of the cursor while a block is being
    /// written are seen, those behind it are not, and the file stays in key order.
    /// </summary>
    [Fact]
    public async Task A_tree_changing_during_the_save_gives_an_ordered_dump_of_what_the_cursor_met()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var seg = h.Seg;
            var t = await ToolsHarness.CreateAsync(seg, new BTreeConfig { KeySize = 8, ValueSize = 200 });
            const int N = 6000;
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < N; i++) recs.Add((ToolsHarness.BigEndianKey(2L * i), new byte[200]));
            await ToolsHarness.InsertAllAsync(t, recs);

            int firstBlock = -1;
            var output = new HookStream(buffer =>
            {
                // Called by the save on the locality, while it awaits the write: change the tree then, once.
                if (firstBlock >= 0 || buffer.Length < BTreeDumpFormat.BlockHeaderSize || BinaryPrimitives.ReadUInt32LittleEndian(buffer.Span) != BTreeDumpFormat.BlockMagic) return;
                firstBlock = (int)BinaryPrimitives.ReadUInt32LittleEndian(buffer.Span[8..]);
                // Records [0, firstBlock) are in this block; record firstBlock is copied and waits for the next one
                // (it did not fit); the cursor sits on it.
                void Op(Func<Transaction, BTreeStatus> op, TxCredit credit)
                {
                    Assert.True(seg.TryBegin(credit, out var tx));
                    Assert.Equal(BTreeStatus.Ok, op(tx));
                    _ = tx.Close();
                }
                byte[] K(long i) => ToolsHarness.BigEndianKey(i);
                Op(tx => t.Delete(tx, K(2L * firstBlock)), t.DeleteCredit());           // under the cursor, already copied: saved
                Op(tx => t.Delete(tx, K(2L * (firstBlock + 1))), t.DeleteCredit());     // just ahead: not saved
                Op(tx => t.Insert(tx, K(2L * (firstBlock + 1) + 1), new byte[200]), t.InsertCredit(8, 200)); // ahead: saved
                Op(tx => t.Delete(tx, K(0)), t.DeleteCredit());                          // behind: saved already
                Op(tx => t.Insert(tx, K(1), new byte[200]), t.InsertCredit(8, 200));     // behind: not saved
                Op(tx => t.Delete(tx, K(2L * (N - 1))), t.DeleteCredit());               // the last one: not saved
                // An aborted insert ahead: not saved.
                Assert.True(seg.TryBegin(t.InsertCredit(8, 200), out var aborted));
                Assert.Equal(BTreeStatus.Ok, t.Insert(aborted, K(2L * (firstBlock + 5) + 1), new byte[200]));
                aborted.Abort();
                // An insert ahead through another object of the same tree: saved (the save seeks from the root after every write).
                var other = Tree.Open(seg, t.Offset);
                Assert.True(seg.TryBegin(other.InsertCredit(8, 200), out var viaOther));
                Assert.Equal(BTreeStatus.Ok, other.Insert(viaOther, K(2L * (firstBlock + 7) + 1), new byte[200]));
                _ = viaOther.Close();
            });
            long saved = await BTreeDump.SaveAsync(t, output);
            Assert.True(firstBlock > 0);

            var expected = new List<long>();
            for (int i = 0; i < N; i++) expected.Add(2L * i);
            expected.Remove(2L * (firstBlock + 1));
            expected.Remove(2L * (N - 1));
            expected.Add(2L * (firstBlock + 1) + 1);
            expected.Add(2L * (firstBlock + 7) + 1);
            expected.Sort();
            Assert.Equal(expected.Count, saved);

            var loaded = await BTreeDump.LoadAsync(new MemoryStream(output.ToArray()), seg);
            var got = ToolsHarness.Records(loaded);
            Assert.Equal(expected.Count, got.Count);
            for (int i = 0; i < got.Count; i++)
                Assert.Equal(expected[i], BinaryPrimitives.ReadInt64BigEndian(got[i].Key));
            Assert.True(loaded.Check().Healthy);
        });
    }

    [Fact]
    public async Task Progress_is_not_repeated_when_the_count_is_a_multiple_of_the_interval()
    {
        await using var h = await ToolsHarness.OpenAsync();
        await h.Run(async () =>
        {
            var t = await ToolsHarness.CreateAsync(h.Seg, new BTreeConfig { KeySize = 8, ValueSize = 1 });
            var recs = new List<(byte[], byte[])>();
            for (int i = 0; i < 20_000; i++) recs.Add((ToolsHarness.BigEndianKey(i), [1]));
            await ToolsHarness.InsertAllAsync(t, recs);
            var save = new ProgressLog();
            var ms = new MemoryStream();
            await BTreeDump.SaveAsync(t, ms, save);
            Assert.Equal([10_000L, 20_000L], save.Values);
            var load = new ProgressLog();
            await BTreeDump.LoadAsync(new MemoryStream(ms.ToArray()), h.Seg, null, load);
            Assert.Equal([10_000L, 20_000L], load.Values);
        });
    }

    private sealed class HookStream(Action<ReadOnlyMemory<byte>> onWrite) : MemoryStream
    {
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            onWrite(buffer);
            return base.WriteAsync(buffer, cancellationToken);
        }
    }
}

/// <summary>Descending bytewise order.</summary>
internal sealed class ReverseComparer : IKeyComparer
{
    public string Name => "reverse";
    public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => b.SequenceCompareTo(a);
}

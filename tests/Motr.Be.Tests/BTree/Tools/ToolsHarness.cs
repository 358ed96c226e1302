using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree.Tools;

/// <summary>An engine with one segment, and helpers to fill, compare and parse dumps.</summary>
internal sealed class ToolsHarness : IAsyncDisposable
{
    private readonly TempDir _dir = new();
    public Engine Engine { get; private set; } = null!;
    public Locality Loc => Engine.Localities[0];
    public Segment Seg => Loc.Segment!;
    private readonly long _logSize;

    private ToolsHarness(long logSize) => _logSize = logSize;

    public static async Task<ToolsHarness> OpenAsync(long logSize = 32 << 20)
    {
        var h = new ToolsHarness(logSize);
        await h.ReopenAsync();
        return h;
    }

    public DomainOptions Options => new()
    {
        Path = _dir.Path,
        Segments = 1,
        SegmentSize = 8 << 20,
        SegmentMaxSize = 512L << 20,
        LogSize = _logSize,
        VerifyCaptures = true,
    };

    /// <summary>Closes the engine (if open) and opens it again: recovery.</summary>
    public async Task ReopenAsync()
    {
        if (Engine != null)
        {
            Assert.Empty(Engine.Domain.CaptureViolations);
            await Engine.DisposeAsync();
        }
        Engine = await Engine.OpenAsync(Options);
    }

    public Task Run(Func<Task> f) => Loc.RunAsync(f);

    public Task<T> Run<T>(Func<Task<T>> f) => Loc.RunAsync(f);

    public async ValueTask DisposeAsync()
    {
        if (Engine != null)
        {
            Assert.Empty(Engine.Domain.CaptureViolations);
            await Engine.DisposeAsync();
        }
        _dir.Dispose();
    }

    // ---- on the locality ----------------------------------------------------------------------------

    public static async Task<Tree> CreateAsync(Segment seg, BTreeConfig config, string? root = null)
    {
        using var tx = await seg.BeginAsync(Tree.CreateCredit + Segment.RootCredit);
        var t = Tree.Create(tx, seg, config);
        if (root != null) seg.SetRoot(tx, root, t.Offset);
        await tx.Close();
        return t;
    }

    /// <summary>Inserts every record, one transaction each with exactly its credit; waits for durability at the end.</summary>
    public static async Task InsertAllAsync(Tree t, IEnumerable<(byte[] Key, byte[] Value)> records)
    {
        var seg = t.Segment;
        Motr.Be.Tx.TxPersistence last = default;
        foreach (var (k, v) in records)
        {
            using var tx = await seg.BeginAsync(t.InsertCredit(k.Length, v.Length));
            Assert.Equal(BTreeStatus.Ok, t.Insert(tx, k, v));
            last = tx.Close();
        }
        await last;
    }

    /// <summary>The tree's records in key order, copied.</summary>
    public static List<(byte[] Key, byte[] Value)> Records(Tree t)
    {
        var list = new List<(byte[], byte[])>();
        var c = t.OpenCursor();
        for (bool ok = c.SeekFirst(); ok; ok = c.MoveNext()) list.Add((c.Key.ToArray(), c.Value.ToArray()));
        return list;
    }

    /// <summary>Both trees hold the same records, compared one by one with two cursors; both pass fsck.</summary>
    public static void AssertSameRecords(Tree expected, Tree actual)
    {
        var a = expected.Check();
        Assert.True(a.Healthy, a.ToString());
        var b = actual.Check();
        Assert.True(b.Healthy, b.ToString());
        Assert.Equal(expected.Count, actual.Count);
        var ca = expected.OpenCursor();
        var cb = actual.OpenCursor();
        bool oa = ca.SeekFirst(), ob = cb.SeekFirst();
        long i = 0;
        while (oa && ob)
        {
            Assert.True(ca.Key.SequenceEqual(cb.Key), $"record {i}: keys differ ({ca.Key.Length} / {cb.Key.Length} bytes)");
            Assert.True(ca.Value.SequenceEqual(cb.Value), $"record {i}: values differ ({ca.Value.Length} / {cb.Value.Length} bytes)");
            oa = ca.MoveNext();
            ob = cb.MoveNext();
            i++;
        }
        Assert.False(oa, $"the loaded tree ends after {i} records");
        Assert.False(ob, $"the loaded tree has more than {i} records");
        Assert.Equal(expected.Count, i);
    }

    // ---- dump parsing, for the damage tests -------------------------------------------------------------

    /// <summary>Where a dump's blocks, records and trailer are.</summary>
    public sealed record Layout(List<long> Blocks, List<List<long>> RecordOffsets, long Trailer);

    public static Layout Parse(byte[] dump)
    {
        var blocks = new List<long>();
        var recs = new List<List<long>>();
        long pos = BTreeDumpFormat.HeaderSize;
        while (BinaryPrimitives.ReadUInt64LittleEndian(dump.AsSpan((int)pos)) != BTreeDumpFormat.TrailerMagic)
        {
            Assert.Equal(BTreeDumpFormat.BlockMagic, BinaryPrimitives.ReadUInt32LittleEndian(dump.AsSpan((int)pos)));
            int payload = (int)BinaryPrimitives.ReadUInt32LittleEndian(dump.AsSpan((int)pos + 4));
            int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(dump.AsSpan((int)pos + 8));
            blocks.Add(pos);
            var offs = new List<long>();
            long r = pos + BTreeDumpFormat.BlockHeaderSize;
            for (int i = 0; i < count; i++)
            {
                offs.Add(r);
                r += 8 + BinaryPrimitives.ReadUInt32LittleEndian(dump.AsSpan((int)r)) + BinaryPrimitives.ReadUInt32LittleEndian(dump.AsSpan((int)r + 4));
            }
            Assert.Equal(pos + BTreeDumpFormat.BlockHeaderSize + payload, r);
            recs.Add(offs);
            pos = r;
        }
        Assert.Equal(pos + BTreeDumpFormat.TrailerSize, dump.Length);
        return new Layout(blocks, recs, pos);
    }

    /// <summary>Recomputes the CRC of the block at <paramref name="block"/> (after a deliberate change to its records).</summary>
    public static void ResealBlock(byte[] dump, long block)
    {
        int b = (int)block;
        int payload = (int)BinaryPrimitives.ReadUInt32LittleEndian(dump.AsSpan(b + 4));
        uint crc = Crc32C.Compute(dump.AsSpan(b + 4, 8), dump.AsSpan(b + 16, payload));
        BinaryPrimitives.WriteUInt32LittleEndian(dump.AsSpan(b + 12), crc);
    }

    /// <summary>Recomputes the trailer's own CRC.</summary>
    public static void ResealTrailer(byte[] dump, long trailer)
    {
        int t = (int)trailer;
        BinaryPrimitives.WriteUInt32LittleEndian(dump.AsSpan(t + 28), Crc32C.Compute(dump.AsSpan(t, 28)));
    }

    /// <summary>Recomputes the header's CRC.</summary>
    public static void ResealHeader(byte[] dump) =>
        BinaryPrimitives.WriteUInt32LittleEndian(dump.AsSpan(252), Crc32C.Compute(dump.AsSpan(0, 252)));

    public static byte[] BigEndianKey(long i, int length = 8)
    {
        var k = new byte[length];
        BinaryPrimitives.WriteInt64BigEndian(k.AsSpan(length - 8), i);
        return k;
    }
}

/// <summary>Records every report, synchronously (Progress&lt;T&gt; would post them).</summary>
internal sealed class ProgressLog : IProgress<long>
{
    public readonly List<long> Values = new();
    public void Report(long value) => Values.Add(value);
}

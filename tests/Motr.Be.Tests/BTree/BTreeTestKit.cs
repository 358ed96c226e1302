using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// One domain with one segment in a temp folder, for b+tree tests: run code on its locality, close and
/// reopen it, and check the shadow verifier's capture violations at every close.
/// </summary>
internal sealed class TreeHost : IAsyncDisposable
{
    private readonly TempDir _dir = new();
    private Engine? _engine;

    private TreeHost(long segmentSize, long logSize, long segmentMaxSize, bool verifyCaptures)
    {
        Options = Engines.Options(_dir.Path, segments: 1, segmentSize: segmentSize, logSize: logSize);
        Options.SegmentMaxSize = segmentMaxSize;
        Options.VerifyCaptures = verifyCaptures;
    }

    public DomainOptions Options { get; }

    public Engine Engine => _engine ?? throw new InvalidOperationException("the engine is closed");

    public Locality Loc => Engine.Localities[0];

    public string SegmentFile => Path.Combine(_dir.Path, BeConstants.SegmentFileName(1));

    public static async Task<TreeHost> Start(long segmentSize = 8 << 20, long logSize = 32 << 20, long segmentMaxSize = 64 << 20, bool verifyCaptures = true)
    {
        var host = new TreeHost(segmentSize, logSize, segmentMaxSize, verifyCaptures);
        await host.Open();
        return host;
    }

    public Task Run(Func<Segment, Task> f) => Loc.RunAsync(() => f(Loc.Segment!));

    public Task<T> Run<T>(Func<Segment, Task<T>> f) => Loc.RunAsync(() => f(Loc.Segment!));

    public Task Run(Action<Segment> f) => Loc.RunAsync(() => f(Loc.Segment!));

    public Task<T> Run<T>(Func<Segment, T> f) => Loc.RunAsync(() => f(Loc.Segment!));

    public void AssertNoCaptureViolations() => Assert.Empty(Engine.Domain.CaptureViolations);

    /// <summary>Disposes the engine (the last group sealed, everything placed and checkpointed), then checks the capture violations, the closing seal's included.</summary>
    public async Task Close()
    {
        var e = Engine;
        _engine = null;
        await e.DisposeAsync();
        Assert.Empty(e.Domain.CaptureViolations);
    }

    public async Task Open() => _engine = await Engines.Open(Options);

    public async Task Reopen()
    {
        await Close();
        await Open();
    }

    /// <summary>Closes the engine if open and fails on capture violations (every test checks them this way at its end).</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_engine is not null)
            {
                var e = _engine;
                _engine = null;
                await e.DisposeAsync();
                if (e.Domain.CaptureViolations.Count > 0)
                    throw new Xunit.Sdk.XunitException("capture violations: " + string.Join("; ", e.Domain.CaptureViolations.Take(5)));
            }
        }
        finally
        {
            _dir.Dispose();
        }
    }
}

/// <summary>Tree operations each in its own transaction opened with exactly the operation's credit.</summary>
/// <summary>Reports on the caller's thread, at once (<see cref="Progress{T}"/> posts).</summary>
internal sealed class SyncProgress(Action<long> report) : IProgress<long>
{
    public void Report(long value) => report(value);
}

internal static class Ops
{
    public static async Task<Tree> Create(Segment seg, BTreeConfig config, string name = "t")
    {
        using var tx = await seg.BeginAsync(Tree.CreateCredit + Segment.RootCredit);
        var t = Tree.Create(tx, seg, config);
        seg.SetRoot(tx, name, t.Offset);
        await tx.Close();
        return t;
    }

    public static Tree Open(Segment seg, string name = "t", IKeyComparer? comparer = null)
    {
        Assert.True(seg.TryGetRoot(name, out long off), $"no root '{name}'");
        return Tree.Open(seg, off, comparer);
    }

    public static async Task<BTreeStatus> Insert(Tree t, byte[] k, byte[] v, bool wait = false)
    {
        using var tx = await t.Segment.BeginAsync(t.InsertCredit(k.Length, v.Length));
        var s = t.Insert(tx, k, v);
        var p = tx.Close();
        if (wait) await p;
        return s;
    }

    public static async Task<BTreeStatus> Delete(Tree t, byte[] k, bool wait = false)
    {
        using var tx = await t.Segment.BeginAsync(t.DeleteCredit());
        var s = t.Delete(tx, k);
        var p = tx.Close();
        if (wait) await p;
        return s;
    }

    public static async Task<BTreeStatus> Update(Tree t, byte[] k, byte[] v, bool wait = false)
    {
        using var tx = await t.Segment.BeginAsync(t.UpdateCredit(k.Length, v.Length));
        var s = t.Update(tx, k, v);
        var p = tx.Close();
        if (wait) await p;
        return s;
    }

    /// <summary>
    /// Inserts <paramref name="count"/> random records of <paramref name="shape"/>, keys drawn from
    /// <paramref name="keySpace"/>, into <paramref name="model"/> too when the insert took.
    /// </summary>
    public static async Task Fill(Tree t, SortedDictionary<byte[], byte[]> model, TreeShape shape, Random rng, int count, int keySpace)
    {
        for (int i = 0; i < count; i++)
        {
            var k = shape.Key(rng, keySpace);
            var v = shape.Value(rng);
            if (await Insert(t, k, v) == BTreeStatus.Ok) model[k] = v;
        }
    }

    /// <summary>The value of <paramref name="k"/>, copied, or null.</summary>
    /// <summary>
    /// Fills the segment with 200-byte chunks, then frees every other one: about half the segment is free, none of
    /// it in a piece of more than ~200 bytes (an insert needing a larger chunk then fails part-way).
    /// </summary>
    public static async Task FragmentFreeSpace(Segment seg)
    {
        var chunks = new List<long>();
        bool full = false;
        while (!full)
        {
            using var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit * 64);
            for (int i = 0; i < 64; i++)
            {
                if (seg.Allocator.TryAlloc(tx, 200, 8, out long c) != Motr.Be.Alloc.AllocStatus.Ok) { full = true; break; }
                chunks.Add(c);
            }
            await tx.Close();
        }
        for (int i = 0; i < chunks.Count; i += 2 * 32)
        {
            using var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.FreeCredit * 32);
            for (int j = i; j < Math.Min(i + 64, chunks.Count); j += 2) seg.Allocator.Free(tx, chunks[j]);
            await tx.Close();
        }
    }

    public static byte[]? Get(Tree t, byte[] k) => t.Lookup(k, out ReadOnlySpan<byte> v) == BTreeStatus.Ok ? v.ToArray() : null;

    /// <summary>Every record by a forward cursor scan.</summary>
    public static List<(byte[] Key, byte[] Value)> Scan(Tree t)
    {
        var list = new List<(byte[], byte[])>();
        var c = t.OpenCursor();
        for (bool ok = c.SeekFirst(); ok; ok = c.MoveNext()) list.Add((c.Key.ToArray(), c.Value.ToArray()));
        return list;
    }

    public static List<byte[]> Keys(Tree t) => Scan(t).Select(r => r.Key).ToList();

    public static void AssertHealthy(Tree t, string when = "")
    {
        var r = t.Check();
        Assert.True(r.Healthy, $"{when}: {r}\n{string.Join("\n", r.Problems.Take(10))}");
    }

    /// <summary>Keys and values equal to the model (in the model's order), forward and backward; fsck healthy.</summary>
    public static void AssertEqual(Tree t, SortedDictionary<byte[], byte[]> model, string when)
    {
        AssertHealthy(t, when);
        Assert.Equal(model.Count, t.Count);
        var c = t.OpenCursor();
        bool ok = c.SeekFirst();
        int i = 0;
        foreach (var (k, v) in model)
        {
            Assert.True(ok, $"{when}: the cursor ended after {i} of {model.Count} records");
            if (!c.Key.SequenceEqual(k)) Assert.Fail($"{when}: record {i}: key {Hex(c.Key)}, expected {Hex(k)}");
            if (!c.Value.SequenceEqual(v)) Assert.Fail($"{when}: record {i} ({Hex(k)}): value of {c.Value.Length} bytes differs from the model's {v.Length}");
            ok = c.MoveNext();
            i++;
        }
        Assert.False(ok, $"{when}: the cursor has more records than the model's {model.Count}");
        ok = c.SeekLast();
        i = 0;
        foreach (var (k, _) in model.Reverse())
        {
            Assert.True(ok, $"{when}: backward scan ended after {i} records");
            if (!c.Key.SequenceEqual(k)) Assert.Fail($"{when}: backward record {i}: key {Hex(c.Key)}, expected {Hex(k)}");
            ok = c.MovePrev();
            i++;
        }
        Assert.False(ok, $"{when}: the backward scan has more records than the model");
    }

    public static string Hex(ReadOnlySpan<byte> b) => b.Length <= 24 ? Convert.ToHexString(b) : $"{Convert.ToHexString(b[..24])}..({b.Length} bytes)";

    public static byte[] U64(ulong x)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, x);
        return b;
    }

    public static byte[] Bytes(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    public static int Seed(int? fixedSeed = null) =>
        fixedSeed ?? (int.TryParse(Environment.GetEnvironmentVariable("MOTR_SEED"), out int s) ? s : Random.Shared.Next());
}

/// <summary>Reads node headers and leaf records straight from segment memory, by the documented layout (BTreeFormat.cs).</summary>
internal static class Raw
{
    public const uint NodeMagic = 0x444E5442;

    // Header fields through the format's own struct (the tests may see internals), so a layout change moves them too.
    private static ref NodeHeader H(Segment seg, long off) => ref seg.At<NodeHeader>(off);
    public static uint Magic(Segment seg, long off) => BinaryPrimitives.ReadUInt32LittleEndian(seg.Bytes(off, 4));
    public static int Level(Segment seg, long off) => seg.Bytes(off + 6, 1)[0];
    public static int Format(Segment seg, long off) => H(seg, off).Format;
    public static int Size(Segment seg, long off) => (int)BinaryPrimitives.ReadUInt32LittleEndian(seg.Bytes(off + 8, 4));
    public static int Count(Segment seg, long off) => H(seg, off).Count;
    /// <summary>Bytes per index entry of the node: 4 in leaves, 8 in internal nodes (which keep the child there too).</summary>
    public static int EntrySize(Segment seg, long off) => Level(seg, off) == 0 ? NodeHeader.LeafEntrySize : NodeHeader.InternalEntrySize;
    public static int RecordOffset(Segment seg, long off, int i) => BinaryPrimitives.ReadUInt16LittleEndian(seg.Bytes(off + NodeHeader.SizeOf + EntrySize(seg, off) * i, 2)) << 3;

    /// <summary>Bytes between the node's index and its heap.</summary>
    public static int ContiguousFree(Segment seg, long off) => (int)H(seg, off).HeapTop - (NodeHeader.SizeOf + EntrySize(seg, off) * H(seg, off).Count);

    /// <summary>Whether the node has free space between its index and its heap.</summary>
    public static bool HasFreeSpace(Segment seg, long off) => H(seg, off).HeapTop > NodeHeader.SizeOf + EntrySize(seg, off) * H(seg, off).Count;

    /// <summary>A byte of the node's free space (between the index and the heap): only the node checksum covers it.</summary>
    public static long FreeByte(Segment seg, long off)
    {
        ref NodeHeader h = ref H(seg, off);
        int indexEnd = NodeHeader.SizeOf + EntrySize(seg, off) * h.Count;
        Assert.True(h.HeapTop > indexEnd, $"node 0x{off:X} has no free space");
        return off + (indexEnd + (int)h.HeapTop) / 2;
    }

    /// <summary>Offset of node header field <paramref name="name"/> within a node (for crafted nodes).</summary>
    public static int NodeHeaderField(string name) => (int)System.Runtime.InteropServices.Marshal.OffsetOf<NodeHeader>(name);

    /// <summary>Offset of a tree header field that only the header checksum covers at open (the node counter).</summary>
    public static long TreeHeaderCounterByte(long header) =>
        header + System.Runtime.InteropServices.Marshal.OffsetOf<TreeHeader>(nameof(TreeHeader.Nodes)).ToInt64();

    /// <summary>The tree's nodes (from fsck's chunk list: those that start with the node magic).</summary>
    public static List<long> Nodes(Segment seg, BTreeCheckReport report) =>
        report.Chunks.Where(c => seg.Size - c >= 64 && Magic(seg, c) == NodeMagic).ToList();

    /// <summary>Record <paramref name="i"/> of a <see cref="NodeFormat.Variable"/> node: (offset in node, key length, value length), lengths without the out-of-node flag.</summary>
    public static (int Rec, int KeyLength, int ValueLength, bool KeyLarge, bool ValueLarge) VarRecord(Segment seg, long node, int i)
    {
        int rec = RecordOffset(seg, node, i);
        uint kl = BinaryPrimitives.ReadUInt32LittleEndian(seg.Bytes(node + rec, 4));
        uint vl = BinaryPrimitives.ReadUInt32LittleEndian(seg.Bytes(node + rec + 4, 4));
        return (rec, (int)(kl & 0x7FFF_FFFF), (int)(vl & 0x7FFF_FFFF), (kl & 0x8000_0000) != 0, (vl & 0x8000_0000) != 0);
    }

    /// <summary>In-node keys of a <see cref="NodeFormat.Variable"/> leaf.</summary>
    public static List<byte[]> VarLeafKeys(Segment seg, long node)
    {
        var keys = new List<byte[]>();
        for (int i = 0; i < Count(seg, node); i++)
        {
            var r = VarRecord(seg, node, i);
            Assert.False(r.KeyLarge);
            keys.Add(seg.Bytes(node + r.Rec + 8, r.KeyLength).ToArray());
        }
        return keys;
    }

    /// <summary>Child <paramref name="i"/> of a <see cref="NodeFormat.Variable"/> internal node (in-node separators).</summary>
    public static long VarChild(Segment seg, long node, int i)
    {
        var r = VarRecord(seg, node, i);
        int keyPart = r.KeyLarge ? 16 : r.KeyLength;
        return BinaryPrimitives.ReadInt64LittleEndian(seg.Bytes(node + r.Rec + 8 + keyPart, 8));
    }

    /// <summary>
    /// Reads the <paramref name="size"/>-byte node at <paramref name="offset"/> of a closed segment file, lets
    /// <paramref name="edit"/> change it, seals its node checksum again and writes it back: damage that only
    /// deeper checks (record checksums, record lengths) can find.
    /// </summary>
    public static void RewriteNode(string file, long offset, int size, Action<byte[]> edit)
    {
        using var f = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite);
        var node = new byte[size];
        Assert.Equal(size, RandomAccess.Read(f, node, offset));
        edit(node);
        Motr.Be.Segments.BlockChecksum.Seal(node, NodeHeader.CrcOffset);
        RandomAccess.Write(f, node, offset);
    }

    /// <summary>Flips the bits <paramref name="mask"/> of the byte at <paramref name="offset"/> of a closed segment file.</summary>
    public static void FlipByte(string file, long offset, byte mask = 0x10)
    {
        using var f = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[1];
        Assert.Equal(1, RandomAccess.Read(f, b, offset));
        b[0] ^= mask;
        RandomAccess.Write(f, b, offset);
        RandomAccess.FlushToDisk(f);
    }
}

/// <summary>Keys in reverse bytewise order.</summary>
public sealed class ReverseBytewiseComparer : IKeyComparer, IComparer<byte[]>
{
    public static readonly ReverseBytewiseComparer Instance = new();
    public string Name => "reverse-bytewise";
    public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => b.SequenceCompareTo(a);
    public int Compare(byte[]? a, byte[]? b) => Compare(a.AsSpan(), b.AsSpan());
}

/// <summary>8-byte keys ordered as little-endian unsigned integers (not bytewise order).</summary>
public sealed class U64LittleEndianComparer : IKeyComparer, IComparer<byte[]>
{
    public static readonly U64LittleEndianComparer Instance = new();
    public string Name => "u64-little-endian";
    public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) =>
        BinaryPrimitives.ReadUInt64LittleEndian(a).CompareTo(BinaryPrimitives.ReadUInt64LittleEndian(b));
    public int Compare(byte[]? a, byte[]? b) => Compare(a.AsSpan(), b.AsSpan());
}

/// <summary>The harness itself: a write that bypasses the transaction is caught when the host closes, so every test's end check can fail.</summary>
public class BTreeTestKitTests
{
    [Fact]
    public async Task A_write_without_a_capture_fails_the_host_at_close()
    {
        var e = await Assert.ThrowsAsync<Xunit.Sdk.XunitException>(async () =>
        {
            await using var h = await TreeHost.Start();
            await h.Run(async seg =>
            {
                var t = await Ops.Create(seg, new BTreeConfig { NodeSize = 512 });
                await Ops.Insert(t, [1], [1], wait: true);
                var root = Raw.Nodes(seg, t.Check())[0];
                seg.Bytes(Raw.FreeByte(seg, root), 1)[0] ^= 1; // no capture
                await Ops.Insert(t, [2], [2], wait: true);
            });
        });
        Assert.Contains("capture violations", e.Message);
    }
}

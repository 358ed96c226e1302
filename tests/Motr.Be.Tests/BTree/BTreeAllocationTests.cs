using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Xunit.Abstractions;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// The hot paths allocate nothing on the heap: every b+tree operation, in steady state, over <see cref="N"/>
/// operations measured on the locality thread that runs them. Only the operation itself is measured; the
/// transaction around it has its own test (Tx/TxAllocationTests.cs).
/// </summary>
/// <remarks>
/// The whole sequence runs once to warm up (first calls, tiering, the one-off growth of scratch buffers), then
/// <see cref="Passes"/> times measured, and each path counts its least pass: an allocation per operation (or per
/// pass) shows in every pass, while a one-off of the runtime on this thread (a method compiled for on-stack
/// replacement resolving the string literals of an inlined throw path, a few KB, seen once in many runs) shows in one.
/// </remarks>
public class BTreeAllocationTests(ITestOutputHelper output)
{
    private const int N = 10_000;
    private const int Passes = 3;

    /// <summary>Bytes allocated on this thread by the code between <see cref="Start"/> and <see cref="Stop"/>, summed.</summary>
    private sealed class Meter
    {
        private long _at;
        public long Bytes;
        public void Start() => _at = GC.GetAllocatedBytesForCurrentThread();
        public void Stop() => Bytes += GC.GetAllocatedBytesForCurrentThread() - _at;
    }

    /// <summary>Runs <paramref name="op"/> for 0..<paramref name="count"/>-1, measured.</summary>
    private static long Measure(Action<int> op, int count = N)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < count; i++) op(i);
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    /// <summary>
    /// Each of 0..<paramref name="count"/>-1 in its own transaction of <paramref name="credit"/>, closed without waiting;
    /// only <paramref name="op"/> is measured. Every operation must succeed.
    /// </summary>
    private static async Task<long> MeasureEach(Segment seg, Func<int, TxCredit> credit, Func<Transaction, int, BTreeStatus> op, int count = N)
    {
        var m = new Meter();
        for (int i = 0; i < count; i++)
        {
            using var tx = await seg.BeginAsync(credit(i));
            m.Start();
            var st = op(tx, i);
            m.Stop();
            if (st != BTreeStatus.Ok) throw new InvalidOperationException($"operation {i}: {st}");
            _ = tx.Close();
        }
        return m.Bytes;
    }

    private static BTreeConfig Config(string format) => format switch
    {
        "fkv" => new BTreeConfig { KeySize = 8, ValueSize = 16 },
        "fk" => new BTreeConfig { KeySize = 8 },
        "var" => new BTreeConfig(),
        "var-crc" => new BTreeConfig { RecordChecksums = true },
        _ => throw new ArgumentException(format),
    };

    /// <summary>Distinct keys in random order: 8 bytes for fixed-key formats, 4 to 24 for variable ones.</summary>
    private static byte[][] Keys(string format, int count, int seed)
    {
        var r = new Random(seed);
        var set = new HashSet<byte[]>(ByteArrayComparer.Instance);
        var keys = new byte[count][];
        for (int i = 0; i < count;)
        {
            var k = new byte[format.StartsWith("f") ? 8 : r.Next(4, 25)];
            r.NextBytes(k);
            if (set.Add(k)) keys[i++] = k;
        }
        return keys;
    }

    private static int ValueLength(string format, int i) => format == "fkv" ? 16 : 8 + i % 64;

    [Theory]
    [InlineData("fkv")]
    [InlineData("fk")]
    [InlineData("var")]
    [InlineData("var-crc")]
    public async Task Tree_operations_allocate_nothing_in_steady_state(string format)
    {
        await using var h = await TreeHost.Start(segmentSize: 32 << 20, segmentMaxSize: 256 << 20, verifyCaptures: false);
        var results = new List<(string Path, long Bytes, int Ops)>();
        int pass = 0;
        void Add(string path, long bytes, int ops = N)
        {
            if (pass == 0) return; // the warm-up
            int at = results.FindIndex(r => r.Path == path);
            if (at < 0) results.Add((path, bytes, ops));
            else if (bytes < results[at].Bytes) results[at] = (path, bytes, ops);
        }
        await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, Config(format));
            byte[][] keys = Keys(format, 2 * N, 1), sorted = keys[..N].Order(ByteArrayComparer.Instance).ToArray();
            byte[][] extra = keys[N..];
            long sink = 0;
            var value = new byte[256];
            new Random(2).NextBytes(value);
            ReadOnlySpan<byte> V(int i, int grow = 0) => value.AsSpan(0, ValueLength(format, i) + grow);
            int Vl(int i, int grow = 0) => ValueLength(format, i) + grow;

            // The tree: N records (not measured).
            for (int i = 0; i < N; i++)
            {
                using var tx = await seg.BeginAsync(t.InsertCredit(keys[i].Length, Vl(i)));
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, keys[i], V(i)));
                _ = tx.Close();
            }

            var extraSorted = extra.Order(ByteArrayComparer.Instance).ToArray();
            var cookie = default(BTreeCookie);
            var large = new byte[Tree.MaxInline(t.LeafNodeSize) + 100];
            var some = extra[..(N / 4)]; // out-of-node values: 11 MB of them
            var buffer = new byte[256];
            var c = t.OpenCursor();
            var last = sorted[^1];
            Func<int, TxCredit> deleteCredit = _ => t.DeleteCredit();
            for (pass = 0; pass <= Passes; pass++)
            {
                // ---- inserts and deletes: the tree is as before after each
                async Task InsertsAndDeletes(string what, string deletes, byte[][] ks, int valueLength, Func<Transaction, int, BTreeStatus> insert)
                {
                    int n = ks.Length;
                    Add(what, await MeasureEach(seg, i => t.InsertCredit(ks[i].Length, valueLength > 0 ? valueLength : Vl(i)), insert, n), n);
                    if (valueLength > 0) Add("Lookup (value out of node)", Measure(i => sink += t.Lookup(ks[i], out ReadOnlySpan<byte> v) == BTreeStatus.Ok ? v.Length : -1, n), n);
                    Add(deletes, await MeasureEach(seg, deleteCredit, (tx, i) => t.Delete(tx, ks[i]), n), n);
                }
                await InsertsAndDeletes("Insert", "Delete", extra, 0, (tx, i) => t.Insert(tx, extra[i], V(i)));
                await InsertsAndDeletes("Insert with cookie", "Delete in key order", extraSorted, 0, (tx, i) => t.Insert(tx, extraSorted[i], V(i), ref cookie));
                await InsertsAndDeletes("InsertInPlace", "Delete (2)", extra, 0,
                    (tx, i) => t.InsertInPlace(tx, extra[i], Vl(i), i, static (dest, x) => BinaryPrimitives.WriteInt32LittleEndian(dest, x)));
                // Out of node: the value goes to a chunk of the segment's allocator (segment memory, not the heap).
                if (format != "fkv") await InsertsAndDeletes("Insert (value out of node)", "Delete (value out of node)", some, large.Length, (tx, i) => t.Insert(tx, some[i], large));
                // A span into the segment passed back (copied out on the stack first: BTree.Aliasing.cs).
                Add("Insert (value from the tree)", await MeasureEach(seg, i => t.InsertCredit(extra[i].Length, format == "fkv" ? 16 : 8 + 63), (tx, i) =>
                {
                    if (t.Lookup(keys[i], out ReadOnlySpan<byte> v) != BTreeStatus.Ok) return BTreeStatus.NotFound;
                    return t.Insert(tx, extra[i], v);
                }));
                Add("Delete (3)", await MeasureEach(seg, deleteCredit, (tx, i) => t.Delete(tx, extra[i])));

                // ---- updates: values back to V(i) after each pass
                if (format != "fkv")
                {
                    Add("Update grow", await MeasureEach(seg, i => t.UpdateCredit(keys[i].Length, Vl(i, 24)), (tx, i) => t.Update(tx, keys[i], V(i, 24))));
                    Add("Update shrink", await MeasureEach(seg, i => t.UpdateCredit(keys[i].Length, Vl(i)), (tx, i) => t.Update(tx, keys[i], V(i))));
                }
                Add("Update same size", await MeasureEach(seg, i => t.UpdateCredit(keys[i].Length, Vl(i)), (tx, i) => t.Update(tx, keys[i], V(i))));
                Add("Update from its own value", await MeasureEach(seg, i => t.UpdateCredit(keys[i].Length, format == "fkv" ? 16 : 8 + 63), (tx, i) =>
                {
                    if (t.Lookup(keys[i], out ReadOnlySpan<byte> v) != BTreeStatus.Ok) return BTreeStatus.NotFound;
                    return t.Update(tx, keys[i], v);
                }));

                // ---- lookups
                Add("Lookup (span)", Measure(i => { if (t.Lookup(keys[i], out ReadOnlySpan<byte> v) == BTreeStatus.Ok) sink += v.Length; else sink--; }));
                Add("Lookup (copy)", Measure(i => { if (t.Lookup(keys[i], buffer, out int length) == BTreeStatus.Ok) sink += length; else sink--; }));
                Add("Lookup with cookie", Measure(i => { if (t.Lookup(sorted[i], out ReadOnlySpan<byte> v, ref cookie) == BTreeStatus.Ok) sink += v.Length; else sink--; }));
                Add("Lookup absent", Measure(i => { if (t.Lookup(extra[i], out ReadOnlySpan<byte> v) == BTreeStatus.NotFound) sink++; }));
                Add("Contains", Measure(i => { if (t.Contains(keys[i])) sink++; }));
                Add("Slant", Measure(i => { if (t.Slant(extra[i], out var k, out var v) == BTreeStatus.Ok) sink += k.Length + v.Length; }));
                Add("Min", Measure(i => { if (t.Min(out var k, out var v) == BTreeStatus.Ok) sink += k.Length + v.Length; }));
                Add("Max", Measure(i => { if (t.Max(out var k, out var v) == BTreeStatus.Ok) sink += k.Length + v.Length; }));

                // ---- cursors
                Add("Cursor Seek", Measure(i => { if (c.Seek(extra[i])) sink += c.Key.Length + c.Value.Length; }));
                Add("Cursor SeekFirst+MoveNext", Measure(i =>
                {
                    if (i == 0) Assert.True(c.SeekFirst());
                    else if (!c.MoveNext()) throw new InvalidOperationException("ran off the end");
                    sink += c.Key.Length + c.Value.Length;
                }));
                Add("Cursor SeekLast+MovePrev", Measure(i =>
                {
                    if (i == 0) Assert.True(c.SeekLast());
                    else if (!c.MovePrev()) throw new InvalidOperationException("ran off the start");
                    sink += c.Key.Length + c.Value.Length;
                }));
                Add("Cursor MoveNextUpTo", Measure(i =>
                {
                    if (i == 0) Assert.True(c.SeekFirst());
                    else if (!c.MoveNextUpTo(last)) throw new InvalidOperationException("ran past the bound");
                    sink += c.Key.Length;
                }));

                // The tree changes under a positioned cursor: the change saves its key, the cursor's next use finds its place again.
                var moves = new Meter();
                Assert.True(c.SeekFirst());
                long changes = await MeasureEach(seg, i => t.UpdateCredit(sorted[i].Length, Vl(i)), (tx, i) =>
                {
                    var st = t.Update(tx, sorted[i], V(i));
                    moves.Start();
                    // Each a step forward, three ways: the key read first (Reposition) then a step; a step; a step back and two on.
                    if (i % 3 == 0) sink += c.Key.Length;
                    bool more = i % 3 != 2 ? c.MoveNext() : c.MovePrev() && c.MoveNext() && c.MoveNext();
                    if (more) sink += c.Key.Length;
                    moves.Stop();
                    return more || i == N - 1 ? st : BTreeStatus.NotFound;
                });
                Add("Update with a cursor open", changes - moves.Bytes);
                Add("Cursor re-finding its place", moves.Bytes);

                // ---- credits and counters
                Add("InsertCredit", Measure(i => sink += t.InsertCredit(keys[i].Length, Vl(i)).Bytes));
                Add("DeleteCredit", Measure(i => sink += t.DeleteCredit().Bytes));
                Add("UpdateCredit", Measure(i => sink += t.UpdateCredit(keys[i].Length, Vl(i)).Bytes));
                Add("Count/Height", Measure(i => sink += t.Count + t.Height));
            }
            Assert.NotEqual(0, sink);
            Ops.AssertHealthy(t);
            Assert.Equal(N, t.Count);
        });
        foreach (var (path, bytes, ops) in results) output.WriteLine($"{format,-8} {path,-30} {bytes,10} B over {ops} ops ({bytes / (double)ops:F2} B/op)");
        var allocating = results.Where(r => r.Bytes != 0).Select(r => $"{r.Path}: {r.Bytes} B over {r.Ops} ops").ToList();
        Assert.True(allocating.Count == 0, $"{format}: paths that allocated: {string.Join("; ", allocating)}");
    }
}

using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.CrashChild;

/// <summary>
/// The "btree" workload. Per locality (segment): a b+tree of 512-byte nodes (named root <see cref="RootName"/>)
/// holding a counter C under <see cref="CounterKey"/> and a sliding window of records: transaction c (for c = C + 1)
/// sets the counter to c, inserts key c (the counter's 8 big-endian bytes) with <see cref="Value"/>(locality, c) and
/// deletes key c - <see cref="Window"/>. So the tree is "the state after tx c" exactly when it holds the counter c and
/// the keys (c - W, c] with their values, nothing else. Transaction 1 of each segment creates the tree with the counter
/// at 0; every later transaction is one step, so C = the segment's last tx id - 1.
/// </summary>
public static class BTreeWorkload
{
    /// <summary>The tree's name in the segment dictionary.</summary>
    public const string RootName = "t";

    /// <summary>Node size: the smallest, for deep trees and many splits and merges.</summary>
    public const int NodeSize = 512;

    /// <summary>Records kept (W): inserting c deletes c - W.</summary>
    public const int Window = 96;

    /// <summary>Concurrent writers per locality.</summary>
    public const int WritersPerLocality = 8;

    /// <summary>Largest value (a tenth of the values are 300 to this many bytes: out of node).</summary>
    public const int MaxValue = 2000;

    /// <summary>The counter's key: one 0xFF byte, after every record key (counters stay below 2^56).</summary>
    public static readonly byte[] CounterKey = [0xFF];

    /// <summary>The key of record <paramref name="c"/>: its 8 big-endian bytes (so keys sort as numbers).</summary>
    public static byte[] Key(long c)
    {
        var k = new byte[8];
        BinaryPrimitives.WriteInt64BigEndian(k, c);
        return k;
    }

    /// <summary>The value of record <paramref name="c"/> of <paramref name="locality"/>: 0-300 bytes, a tenth 300-2000 bytes, all derived from (locality, c).</summary>
    public static byte[] Value(int locality, long c)
    {
        ulong state = ((ulong)locality << 56) ^ (ulong)c ^ 0x9E3779B97F4A7C15UL;
        ulong x = SplitMix(ref state);
        int len = x % 10 == 0 ? 300 + (int)((x >> 8) % (MaxValue - 300 + 1)) : (int)((x >> 8) % 301);
        var v = new byte[len];
        for (int i = 0; i < len; i += 8)
        {
            ulong r = SplitMix(ref state);
            for (int b = 0; b < 8 && i + b < len; b++) v[i + b] = (byte)(r >> (8 * b));
        }
        return v;
    }

    private static ulong SplitMix(ref ulong s)
    {
        ulong z = s += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>
    /// Checks that <paramref name="seg"/> (recovered; on its owner, or with no owner running) is exactly the state
    /// after one transaction of this workload, and returns its counter C (0 if the tree was never created): the tree
    /// opens, fsck finds it healthy, C = LastTxId - 1, a full scan finds exactly the keys (C - W, C] with their values
    /// and the counter, and the tree's chunks are exactly the allocator's blocks (nothing leaked). Problem is null if so.
    /// </summary>
    public static (long Counter, string? Problem) ReadAndCheck(Segment seg, int locality)
    {
        string at = $"locality {locality} (segment {seg.Id}, last tx {seg.LastTxId})";
        try
        {
            if (!seg.TryGetRoot(RootName, out long off))
                return (0, seg.LastTxId == 0 ? null : $"{at}: no tree, but {seg.LastTxId} txs were recovered");
            var t = BTree.Open(seg, off);
            if (t.Lookup(CounterKey, out ReadOnlySpan<byte> cv) != BTreeStatus.Ok || cv.Length != 8) return (0, $"{at}: no 8-byte counter in the tree");
            long c = BinaryPrimitives.ReadInt64BigEndian(cv);
            if (TreeChecks.Segment(seg, t, out long fsckRecords) is { } bad) return (c, $"{at}: counter {c}: {bad}");
            if (c != seg.LastTxId - 1) return (c, $"{at}: counter {c}, but the tree's creation and one tx per step make it LastTxId - 1 = {seg.LastTxId - 1}");
            long first = Math.Max(1, c - Window + 1);
            var expected = new List<(byte[] Key, byte[] Value)>();
            for (long k = first; k <= c; k++) expected.Add((Key(k), Value(locality, k)));
            expected.Add((CounterKey, (byte[])cv.ToArray()));
            // Both directions: a cursor walks the leaves through the parents, forwards and backwards.
            var forward = new List<(byte[] Key, byte[] Value)>();
            var cursor = t.OpenCursor();
            for (bool ok = cursor.SeekFirst(); ok && forward.Count <= expected.Count; ok = cursor.MoveNext()) forward.Add((cursor.Key.ToArray(), cursor.Value.ToArray()));
            if (Diff(forward, expected) is { } fd) return (c, $"{at}: counter {c}, so records {first}..{c} and the counter; a forward scan: {fd}");
            var backward = new List<(byte[] Key, byte[] Value)>();
            for (bool ok = cursor.SeekLast(); ok && backward.Count <= expected.Count; ok = cursor.MovePrev()) backward.Add((cursor.Key.ToArray(), cursor.Value.ToArray()));
            backward.Reverse();
            if (Diff(backward, expected) is { } bd) return (c, $"{at}: counter {c}, so records {first}..{c} and the counter; a backward scan: {bd}");
            long records = c - first + 2;
            if (t.Count != records || fsckRecords != records) return (c, $"{at}: counter {c}: {records} records expected, the header counts {t.Count}, fsck {fsckRecords}");
            return (c, null);
        }
        catch (Exception e)
        {
            return (0, $"{at}: checking the tree threw {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>Null if <paramref name="actual"/> equals <paramref name="expected"/>, else the first difference.</summary>
    private static string? Diff(List<(byte[] Key, byte[] Value)> actual, List<(byte[] Key, byte[] Value)> expected)
    {
        static string Name(byte[] key) => key.Length == 8 ? $"record {BinaryPrimitives.ReadInt64BigEndian(key)}" : key.AsSpan().SequenceEqual(CounterKey) ? "the counter" : $"key {Convert.ToHexString(key)}";
        for (int i = 0; i < Math.Min(actual.Count, expected.Count); i++)
        {
            if (!actual[i].Key.AsSpan().SequenceEqual(expected[i].Key))
                return $"{actual.Count} records found; position {i} holds {Name(actual[i].Key)}, expected {Name(expected[i].Key)}";
            if (!actual[i].Value.AsSpan().SequenceEqual(expected[i].Value))
                return $"{Name(actual[i].Key)} holds a value of {actual[i].Value.Length} bytes, not its {expected[i].Value.Length}-byte value";
        }
        if (actual.Count < expected.Count) return $"{actual.Count} records found, {expected.Count} expected: {Name(expected[actual.Count].Key)} and after are missing";
        if (actual.Count > expected.Count) return $"more than {expected.Count} records found: {Name(actual[expected.Count].Key)} should not be there";
        return null;
    }

    /// <summary>
    /// Runs until the process is killed: creates the tree of a locality that has none (tx 1), then
    /// <see cref="WritersPerLocality"/> writers per locality each step the counter in a loop, printing
    /// <c>P &lt;locality&gt; &lt;c&gt;</c> once step c is persistent.
    /// </summary>
    public static Task RunAsync(Engine engine, int seed, TextWriter stdout, CancellationToken ct)
    {
        var tasks = new List<Task>();
        foreach (var loc in engine.Localities)
        {
            var seg = loc.Segment!;
            int index = loc.Index;
            tasks.Add(loc.RunAsync(async () =>
            {
                BTree t;
                if (seg.TryGetRoot(RootName, out long off)) t = BTree.Open(seg, off);
                else
                {
                    var config = new BTreeConfig { NodeSize = NodeSize };
                    // Tx 1: the tree and its counter (an insert into an empty tree needs far less than the extra credit).
                    using var tx = await seg.BeginAsync(BTree.CreateCredit + Segment.RootCredit + new TxCredit(1024, 64 * 1024));
                    t = BTree.Create(tx, seg, config);
                    seg.SetRoot(tx, RootName, t.Offset);
                    if (!tx.Credit.Covers(tx.Used + t.InsertCredit(CounterKey.Length, 8)))
                        throw new InvalidOperationException($"locality {index}: the creating tx has too little credit for the counter");
                    Expect(t.Insert(tx, CounterKey, new byte[8]), BTreeStatus.Ok, index, 0, "insert the counter");
                    await tx.Close();
                }
                var writers = new List<Task>();
                for (int w = 0; w < WritersPerLocality; w++)
                {
                    var rng = new Random(unchecked(seed * 31 + index * 1_009 + w));
                    writers.Add(loc.RunAsync(() => Step(t, seg, index, rng, stdout, ct)));
                }
                await Task.WhenAll(writers);
            }));
        }
        return Task.WhenAll(tasks);
    }

    private static async Task Step(BTree t, Segment seg, int index, Random rng, TextWriter stdout, CancellationToken ct)
    {
        var counter = new byte[8];
        while (!ct.IsCancellationRequested)
        {
            var credit = Credit(t);
            using var tx = await seg.BeginAsync(credit, ct);
            // No await from here to Close (DESIGN invariant 1). The tree may have grown while this writer waited for
            // log space, or grow by the insert below: then the credit may be short; abort (nothing done) and retry.
            if (!credit.Covers(Credit(t)))
            {
                tx.Abort();
                continue;
            }
            if (t.Lookup(CounterKey, out ReadOnlySpan<byte> cv) != BTreeStatus.Ok) throw new InvalidOperationException($"locality {index}: the counter is gone");
            long c = BinaryPrimitives.ReadInt64BigEndian(cv) + 1;
            BinaryPrimitives.WriteInt64BigEndian(counter, c);
            Expect(t.Update(tx, CounterKey, counter), BTreeStatus.Ok, index, c, "update the counter");
            Expect(t.Insert(tx, Key(c), Value(index, c)), BTreeStatus.Ok, index, c, "insert");
            if (c > Window)
            {
                if (!new TxCredit(tx.Credit.Regions - tx.Used.Regions, tx.Credit.Bytes - tx.Used.Bytes).Covers(t.DeleteCredit()))
                {
                    tx.Abort();
                    continue;
                }
                Expect(t.Delete(tx, Key(c - Window)), BTreeStatus.Ok, index, c, $"delete {c - Window}");
            }
            if (rng.Next(64) == 0) tx.Force();
            var persisted = tx.Close();
            await persisted;
            stdout.WriteLine($"P {index} {c}");
            if (rng.Next(8) == 0) await Task.Yield();
        }
    }

    /// <summary>Credit of a step at the tree's current height: the counter's update, an insert of the largest value, a delete.</summary>
    private static TxCredit Credit(BTree t) => t.UpdateCredit(CounterKey.Length, 8) + t.InsertCredit(8, MaxValue) + t.DeleteCredit();

    private static void Expect(BTreeStatus got, BTreeStatus expected, int locality, long c, string what)
    {
        if (got != expected) throw new InvalidOperationException($"locality {locality}, step {c}: {what} returned {got}, expected {expected}");
    }
}
